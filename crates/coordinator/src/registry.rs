//! The federation's node registry and the Flight SQL users, both read from this replica's
//! copy of the replicated metadata.

use std::sync::Arc;

use sunlight_federation::{NodeEndpoint, NodeRegistry};
use sunlight_flightsql::Credentials;
use sunlight_meta::{Replica, Role};
use tonic::Status;

/// Nodes as registered with `sunlight admin node add`.
#[derive(Debug)]
pub struct ReplicatedRegistry(pub Arc<Replica>);

impl NodeRegistry for ReplicatedRegistry {
    fn nodes(&self) -> Vec<NodeEndpoint> {
        self.0.read(|state| {
            state
                .nodes
                .values()
                // Codes are checked when a node is added.
                .filter_map(|n| {
                    Some(NodeEndpoint {
                        code: n.code.parse().ok()?,
                        addr: n.addr.clone(),
                        token: n.token.clone(),
                    })
                })
                .collect()
        })
    }
}

/// Users as added with `sunlight admin user add`; a revoked token stops working as soon
/// as this replica applies the revocation. County analysts query their own node, not the
/// city.
#[derive(Debug)]
pub struct ReplicatedUsers(pub Arc<Replica>);

impl Credentials for ReplicatedUsers {
    fn user(&self, token: &str) -> Result<String, Status> {
        let user = self
            .0
            .read(|state| state.user_by_token(token).cloned())
            .map_err(Status::unauthenticated)?;
        match user.role {
            Role::CountyAnalyst => Err(Status::permission_denied(format!(
                "{} is a county analyst of {}; county analysts query their own node, not the city",
                user.name,
                user.node.as_deref().unwrap_or("no node")
            ))),
            Role::Auditor => Err(Status::permission_denied(format!(
                "{} is an auditor; auditors read the audit log (sunlight audit), not the data",
                user.name
            ))),
            _ => Ok(user.name),
        }
    }

    fn refused(&self, token: Option<&str>, reason: &str) {
        self.0.audit_refusal("flight-sql", token, reason);
    }
}
