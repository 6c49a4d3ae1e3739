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
use crate::config::LinkageConfig;
use crate::models::ModelRunner;
use crate::node::Node;
use crate::quality::data_quality;
use crate::served::Served;
use crate::shared;

/// Answers `Describe` from the node's catalog and runs model steps.
pub struct NodeControl {
    served: Arc<Served>,
    linkage: LinkageConfig,
}

impl NodeControl {
    /// Controls `served`, running model steps with its `linkage` key.
    pub fn new(served: Arc<Served>, linkage: LinkageConfig) -> Self {
        Self { served, linkage }
    }

    /// A runner of model steps over `node`.
    fn runner(&self, node: Arc<Node>) -> ModelRunner {
        ModelRunner::new(node, self.served.root().clone(), self.linkage.clone())
    }

    /// The node as it serves calls now, if `user` is the city's coordinator, the only
    /// caller that may `action`.
    fn for_city(&self, user: &str, action: &str) -> Result<Arc<Node>, Status> {
        let node = self.served.node();
        node.city_only(user, action)?;
        Ok(node)
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
        let node = self.for_city(&caller(&request), "model step")?;
        let reply = self.runner(node).step(request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn open_case(&self, request: Request<CaseOpening>) -> Result<Response<CaseRows>, Status> {
        let node = self.for_city(&caller(&request), "case opening")?;
        let arrow_ipc = self
            .runner(node)
            .hits()
            .open_case(request.get_ref())
            .await?;
        Ok(Response::new(CaseRows { arrow_ipc }))
    }

    async fn list_hits(&self, request: Request<RunHits>) -> Result<Response<CaseRows>, Status> {
        let node = self.for_city(&caller(&request), "hit listing")?;
        let arrow_ipc = self.runner(node).hits().listed(request.get_ref()).await?;
        Ok(Response::new(CaseRows { arrow_ipc }))
    }

    async fn record_outcome(
        &self,
        request: Request<Outcome>,
    ) -> Result<Response<OutcomeReply>, Status> {
        let user = caller(&request);
        let recorded_at = self
            .runner(self.served.node())
            .hits()
            .record_outcome(request.get_ref(), &user)
            .await?;
        Ok(Response::new(OutcomeReply { recorded_at }))
    }

    async fn person_tokens(
        &self,
        request: Request<PersonTokensRequest>,
    ) -> Result<Response<PersonTokenSet>, Status> {
        let tokens = shared::person_tokens(&self.served.node(), &caller(&request)).await?;
        Ok(Response::new(tokens))
    }

    async fn share_persons(
        &self,
        request: Request<SharedPersons>,
    ) -> Result<Response<SharedPersonsReply>, Status> {
        let user = caller(&request);
        let reply = shared::share_persons(&self.served.node(), &user, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn set_analysts(
        &self,
        request: Request<Analysts>,
    ) -> Result<Response<AnalystsReply>, Status> {
        let user = caller(&request);
        let node = self.for_city(&user, "county analysts")?;
        if node.privacy().local_analysts_only {
            return Err(Status::failed_precondition(format!(
                "node {} takes no county analysts from the city ([auth] local_analysts_only)",
                node.code()
            )));
        }
        let (changed, reply) = node.analysts().replace(request.get_ref())?;
        if changed {
            node.audit().record(
                &user,
                "county analysts",
                &format!("version {}", reply.version),
                &format!("holds {}", node.analysts().names().join(", ")),
            );
        }
        Ok(Response::new(reply))
    }

    async fn describe(
        &self,
        _request: Request<DescribeRequest>,
    ) -> Result<Response<NodeDescription>, Status> {
        let node = self.served.node();
        let tables = node
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
        let code = node.code();
        let data_quality = data_quality(&node).await?.to_vec();
        Ok(Response::new(NodeDescription {
            code: code.to_string(),
            name: code.info().name.to_string(),
            tables,
            version: env!("CARGO_PKG_VERSION").to_string(),
            data_quality,
        }))
    }
}
