//! The node's `sunlight.v1.NodeService`: what the node is and which tables it serves.

use std::sync::Arc;

use sunlight_proto::v1::node_service_server::NodeService;
use sunlight_proto::v1::table_status::State;
use sunlight_proto::v1::{DescribeRequest, NodeDescription, TableStatus};
use tonic::{Request, Response, Status};

use crate::catalog::TableState;
use crate::node::Node;

/// Answers `Describe` from the node's catalog.
pub struct NodeDescriber {
    node: Arc<Node>,
}

impl NodeDescriber {
    /// Describes `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl NodeService for NodeDescriber {
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
                    TableState::Served { files } => (State::Served, *files as u32, vec![]),
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
