//! The node's `sunlight.v1.NodeService`: what the node is, which tables it serves, and
//! the steps of problem models.

use std::sync::Arc;

use sunlight_flightsql::Caller;
use sunlight_proto::v1::node_service_server::NodeService;
use sunlight_proto::v1::table_status::State;
use sunlight_proto::v1::{
    Analysts, AnalystsReply, CaseOpening, CaseRows, DescribeRequest, ModelStep, ModelStepReply,
    NodeDescription, Outcome, OutcomeReply, PersonTokenSet, PersonTokensRequest, RunHits,
    SharedPersons, SharedPersonsReply, TableStatus,
};
use tonic::{Request, Response, Status};

use crate::catalog::TableState;
use crate::models::ModelRunner;
use crate::node::Node;
use crate::shared;

/// Answers `Describe` from the node's catalog and runs model steps.
pub struct NodeControl {
    node: Arc<Node>,
    runner: ModelRunner,
}

impl NodeControl {
    /// Controls `node`, running models with `runner`.
    pub fn new(node: Arc<Node>, runner: ModelRunner) -> Self {
        Self { node, runner }
    }
}

/// The user that makes `request`, as the token check found it.
fn caller<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Caller>()
        .map(|c| c.user.clone())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl NodeService for NodeControl {
    async fn run_model(
        &self,
        request: Request<ModelStep>,
    ) -> Result<Response<ModelStepReply>, Status> {
        self.node.city_only(&caller(&request), "model step")?;
        Ok(Response::new(self.runner.step(request.into_inner()).await?))
    }

    async fn open_case(&self, request: Request<CaseOpening>) -> Result<Response<CaseRows>, Status> {
        self.node.city_only(&caller(&request), "case opening")?;
        let arrow_ipc = self.runner.hits().open_case(request.get_ref()).await?;
        Ok(Response::new(CaseRows { arrow_ipc }))
    }

    async fn list_hits(&self, request: Request<RunHits>) -> Result<Response<CaseRows>, Status> {
        self.node.city_only(&caller(&request), "hit listing")?;
        let arrow_ipc = self.runner.hits().listed(request.get_ref()).await?;
        Ok(Response::new(CaseRows { arrow_ipc }))
    }

    async fn record_outcome(
        &self,
        request: Request<Outcome>,
    ) -> Result<Response<OutcomeReply>, Status> {
        let user = caller(&request);
        let recorded_at = self
            .runner
            .hits()
            .record_outcome(request.get_ref(), &user)
            .await?;
        Ok(Response::new(OutcomeReply { recorded_at }))
    }

    async fn person_tokens(
        &self,
        request: Request<PersonTokensRequest>,
    ) -> Result<Response<PersonTokenSet>, Status> {
        let tokens = shared::person_tokens(&self.node, &caller(&request)).await?;
        Ok(Response::new(tokens))
    }

    async fn share_persons(
        &self,
        request: Request<SharedPersons>,
    ) -> Result<Response<SharedPersonsReply>, Status> {
        let user = caller(&request);
        let reply = shared::share_persons(&self.node, &user, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn set_analysts(
        &self,
        request: Request<Analysts>,
    ) -> Result<Response<AnalystsReply>, Status> {
        let user = caller(&request);
        self.node.city_only(&user, "county analysts")?;
        if self.node.privacy().local_analysts_only {
            return Err(Status::failed_precondition(format!(
                "node {} takes no county analysts from the city ([auth] local_analysts_only)",
                self.node.code()
            )));
        }
        let (changed, reply) = self.node.analysts().replace(request.get_ref())?;
        if changed {
            self.node.audit().record(
                &user,
                "county analysts",
                &format!("version {}", reply.version),
                &format!("holds {}", self.node.analysts().names().join(", ")),
            );
        }
        Ok(Response::new(reply))
    }

    async fn describe(
        &self,
        _request: Request<DescribeRequest>,
    ) -> Result<Response<NodeDescription>, Status> {
        let tables = self
            .node
            .tables()
            .iter()
            .map(|(table, state)| {
                let (state, files, problems) = match state {
                    TableState::Served { files } => (State::Served, files.len() as u32, vec![]),
                    TableState::Missing => (State::Missing, 0, vec![]),
                    TableState::Refused(problems) => (
                        State::Refused,
                        0,
                        problems.iter().map(ToString::to_string).collect(),
                    ),
                };
                TableStatus {
                    table: table.name().to_string(),
                    state: state as i32,
                    files,
                    problems,
                }
            })
            .collect();
        let code = self.node.code();
        Ok(Response::new(NodeDescription {
            code: code.to_string(),
            name: code.info().name.to_string(),
            tables,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}
