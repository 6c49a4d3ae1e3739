//! Every city query into the replicated, hash-chained audit log: who, when, the
//! statement and its plan hash, the rows and bytes that left each node, and the decision.

use std::sync::Arc;

use serde_json::json;
use sunlight_federation::{QueryAudit, QueryEvent};
use sunlight_meta::{Actor, Command, Replica};

/// Appends the city's query events through raft; a follower hands them to the leader.
#[derive(Debug)]
pub struct ReplicatedAudit {
    replica: Arc<Replica>,
}

impl ReplicatedAudit {
    /// Audits through `replica`.
    pub fn new(replica: Arc<Replica>) -> Self {
        Self { replica }
    }
}

#[tonic::async_trait]
impl QueryAudit for ReplicatedAudit {
    async fn record(&self, event: QueryEvent) -> Result<(), String> {
        let role = self
            .replica
            .read(|s| s.users.get(&event.user).map(|u| u.role));
        let nodes: serde_json::Map<String, serde_json::Value> = event
            .received
            .iter()
            .map(|(code, t)| (code.to_string(), json!({"rows": t.rows, "bytes": t.bytes})))
            .collect();
        let detail = json!({
            "sql": event.sql,
            "plan_sha256": event.plan_sha256,
            "nodes": nodes,
            "missing": event.missing.keys().map(ToString::to_string).collect::<Vec<_>>(),
            "suppressed_groups": event.suppressed,
        });
        let decision = match &event.result {
            Ok(rows) => format!("allowed: {rows} rows"),
            Err(reason) => format!("refused: {reason}"),
        };
        let command = Command::Audit {
            subject: Some(Actor {
                user: event.user,
                role,
            }),
            action: "query".into(),
            detail: detail.to_string(),
            decision,
        };
        self.replica.audit(command).await.map_err(|e| e.to_string())
    }
}
