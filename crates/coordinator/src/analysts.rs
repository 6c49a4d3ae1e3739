//! County analysts registered at the city work at their node: the leading replica sends
//! each node the analysts bound to it, by the SHA-256 of their tokens, as soon as they
//! change and again every [`RESEND`], for a node that restarted and holds none.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use sunlight_meta::{MetaState, Replica, Role};
use sunlight_proto::v1::{Analyst, Analysts};
use tonic::transport::ClientTlsConfig;

use crate::nodes::{Target, node_call, targets};

/// How often the leader looks for changed analysts.
const CHECK: Duration = Duration::from_millis(500);

/// How long a node goes without being sent its analysts, or after a failed send.
const RESEND: Duration = Duration::from_secs(15);

/// What was last sent to a node: the analysts it acknowledged (none after a failed
/// send), and when.
struct Sent {
    acknowledged: Option<Vec<Analyst>>,
    at: Instant,
}

/// Sends the nodes their analysts while this replica leads.
pub fn spawn_analyst_sync(
    replica: Arc<Replica>,
    tls: Option<ClientTlsConfig>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut sent: HashMap<String, Sent> = HashMap::new();
        let mut ticks = tokio::time::interval(CHECK);
        loop {
            ticks.tick().await;
            if replica.status().leader != Some(replica.id()) {
                sent.clear();
                continue;
            }
            let ((mut by_node, group), version) = replica
                .read_indexed(|state| (analysts_by_node(state), state.audit.first_sha256.clone()));
            let due: Vec<(Target, Vec<Analyst>)> = targets(&replica, tls.as_ref())
                .into_values()
                .map(|target| {
                    let analysts = by_node.remove(&target.code).unwrap_or_default();
                    (target, analysts)
                })
                .filter(|(target, analysts)| {
                    sent.get(&target.code).is_none_or(|s| {
                        s.at.elapsed() >= RESEND
                            || s.acknowledged.as_ref().is_some_and(|a| a != analysts)
                    })
                })
                .collect();
            let sends = due.iter().map(|(target, analysts)| {
                send(
                    target,
                    Analysts {
                        version,
                        analysts: analysts.clone(),
                        group: group.clone(),
                    },
                )
            });
            for ((target, analysts), taken) in due.iter().zip(join_all(sends).await) {
                let acknowledged = taken.then(|| analysts.clone());
                let at = Instant::now();
                sent.insert(target.code.clone(), Sent { acknowledged, at });
            }
        }
    })
}

/// Sends `analysts` to `target`; whether it took them, or declined them by its config
/// (then it is not asked again before [`RESEND`]).
async fn send(target: &Target, analysts: Analysts) -> bool {
    let result = match node_call(target, analysts).await {
        Ok((mut client, request)) => client.set_analysts(request).await,
        Err(status) => Err(status),
    };
    match result {
        Ok(_) => true,
        Err(status) if status.code() == tonic::Code::FailedPrecondition => {
            tracing::debug!(node = %target.code, "{}", status.message());
            true
        }
        Err(status) => {
            tracing::warn!(
                node = %target.code,
                "county analysts not sent: {}",
                status.message()
            );
            false
        }
    }
}

/// The county analysts whose tokens work, by the code of their node, ordered by name.
fn analysts_by_node(state: &MetaState) -> HashMap<String, Vec<Analyst>> {
    let mut by_node: HashMap<String, Vec<Analyst>> = HashMap::new();
    let analysts = state
        .users
        .values()
        .filter(|u| u.role == Role::CountyAnalyst && u.revoked_ms.is_none());
    for user in analysts {
        if let Some(node) = &user.node {
            by_node.entry(node.clone()).or_default().push(Analyst {
                name: user.name.clone(),
                token_sha256: user.token_sha256.clone(),
                expires_ms: user.expires_ms.unwrap_or(0),
            });
        }
    }
    by_node
}
