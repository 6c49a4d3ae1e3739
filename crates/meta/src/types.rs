//! The raft type configuration, the records of the metadata and the commands that change
//! them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// Types of the coordinator's raft group.
    pub TypeConfig:
        D = Proposal,
        R = Outcome,
        NodeId = ReplicaId,
        Node = openraft::BasicNode,
        SnapshotData = crate::store::SnapshotData,
);

/// Identifier of a coordinator replica in the raft group.
pub type ReplicaId = u64;

/// A log id of the coordinator's raft group.
pub type LogId = openraft::LogId<ReplicaId>;

/// What a user may do; checked at the coordinator and the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Cross-county SQL, aggregates only.
    CityAnalyst,
    /// Audited case openings.
    Investigator,
    /// Full SQL over one county's node.
    CountyAnalyst,
    /// Models, rollout, nodes, users.
    Administrator,
    /// Reads the audit log.
    Auditor,
}

impl Role {
    /// Every role, in the order of the docs.
    pub const ALL: [Role; 5] = [
        Role::CityAnalyst,
        Role::Investigator,
        Role::CountyAnalyst,
        Role::Administrator,
        Role::Auditor,
    ];

    /// The role's name as written in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::CityAnalyst => "city_analyst",
            Role::Investigator => "investigator",
            Role::CountyAnalyst => "county_analyst",
            Role::Administrator => "administrator",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Role::ALL.iter().map(|r| r.name()).collect();
                format!("unknown role {s:?}; expected one of {}", names.join(", "))
            })
    }
}

/// A county (or city) node the coordinator federates over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node code, e.g. `140215`.
    pub code: String,
    /// Flight address of the node.
    pub addr: String,
    /// Token the coordinator presents to the node.
    pub token: String,
}

/// A user of the platform. Only the SHA-256 of the API token is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Login name.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// The node a county analyst is bound to.
    pub node: Option<String>,
    /// Hex SHA-256 of the API token.
    pub token_sha256: String,
    /// Milliseconds since the epoch when the user was added.
    pub created_ms: i64,
    /// Milliseconds since the epoch when the token was revoked.
    pub revoked_ms: Option<i64>,
    /// Milliseconds since the epoch after which the token no longer works.
    #[serde(default)]
    pub expires_ms: Option<i64>,
}

/// Where a model version stands in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    /// Written, not yet approved.
    Draft,
    /// Approved by someone other than its author; may be rolled out.
    Approved,
}

/// One version of a detection model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// Model id, e.g. `dibao_payroll`.
    pub id: String,
    /// Version, counting from 1.
    pub version: u32,
    /// The model package as submitted.
    pub package: String,
    /// Who wrote it.
    pub author: String,
    /// Who approved it.
    pub approver: Option<String>,
    /// Lifecycle status.
    pub status: ModelStatus,
}

/// Hits of a model run on one node, summed by township.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    /// Hit rows.
    pub hits: u64,
    /// Distinct persons behind them.
    pub persons: u64,
    /// Their amount in yuan, two decimals.
    pub amount: String,
}

/// What one node reported for one run of one model version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run, shared by every node and model of one `sunlight model run`.
    pub run_id: String,
    /// Model id.
    pub model_id: String,
    /// Model version.
    pub version: u32,
    /// Node code.
    pub node: String,
    /// Milliseconds since the epoch when it was recorded.
    pub at_ms: i64,
    /// Whole-node totals.
    pub total: RunCounts,
    /// Totals by township.
    pub townships: BTreeMap<String, RunCounts>,
    /// Milliseconds the node spent.
    pub elapsed_ms: u64,
}

/// One entry of the hash-chained audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log, counting from 1.
    pub seq: u64,
    /// Milliseconds since the epoch, as proposed.
    pub at_ms: i64,
    /// Who acted.
    pub user: String,
    /// The actor's role, if the actor is a user.
    pub role: Option<Role>,
    /// What happened, e.g. `node.add` or `query`.
    pub action: String,
    /// The subject of the action: a statement, a node code, a user name.
    pub detail: String,
    /// `allowed`, `refused: <rule>` or the outcome of a change.
    pub decision: String,
    /// Hex SHA-256 of the previous record; empty for the first.
    pub prev_sha256: String,
    /// Hex SHA-256 over `prev_sha256` and this record's fields.
    pub sha256: String,
}

/// Who proposes a change, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// User name, or `replica-N` for a replica acting for the cluster.
    pub user: String,
    /// The user's role.
    pub role: Option<Role>,
}

/// An entry of the raft log: a command, its actor and the proposal time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Who asked for the change.
    pub actor: Actor,
    /// Milliseconds since the epoch at the replica that proposed it.
    pub at_ms: i64,
    /// The change.
    pub command: Command,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} by {}", self.command.action(), self.actor.user)
    }
}

/// A change to the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Registers a node, or changes its address or token.
    AddNode(NodeRecord),
    /// Removes a node from the registry.
    RemoveNode {
        /// Node code.
        code: String,
    },
    /// Adds a user with a hashed token.
    AddUser {
        /// Login name.
        name: String,
        /// Role.
        role: Role,
        /// Node of a county analyst.
        node: Option<String>,
        /// Hex SHA-256 of the API token.
        token_sha256: String,
        /// When the token stops working, in milliseconds since the epoch.
        #[serde(default)]
        expires_ms: Option<i64>,
    },
    /// Revokes a user's token.
    RevokeUser {
        /// Login name.
        name: String,
    },
    /// Gives a user a new token in place of the old one, revoked or expired as it may
    /// be; the user keeps their name, role and node.
    RenewToken {
        /// Login name.
        name: String,
        /// Hex SHA-256 of the new API token.
        token_sha256: String,
        /// When the new token stops working, in milliseconds since the epoch.
        expires_ms: Option<i64>,
    },
    /// Adds a draft model version; versions only grow.
    AddModel {
        /// Model id.
        id: String,
        /// The package's version.
        version: u32,
        /// The model package (JSON).
        package: String,
    },
    /// Approves a draft model version.
    ApproveModel {
        /// Model id.
        id: String,
        /// Version to approve.
        version: u32,
    },
    /// Assigns an approved version to nodes.
    AssignModel {
        /// Model id.
        id: String,
        /// Version to run.
        version: u32,
        /// Node codes.
        nodes: Vec<String>,
    },
    /// Records what one node found in a model run, as runs were recorded before
    /// [`Command::RecordRuns`]: a run then showed in the report a node at a time. Kept so
    /// that such entries of a log still apply.
    RecordRun(RunRecord),
    /// Records what each node found in one run of the models, all at once, so that the
    /// report goes from one run to the next whole.
    RecordRuns {
        /// Each node's summary of each model.
        runs: Vec<RunRecord>,
    },
    /// Records an access decision made outside the metadata (a query, a case opening).
    Audit {
        /// Whom the record is about, when a replica writes it for a user.
        subject: Option<Actor>,
        /// What happened.
        action: String,
        /// Its subject.
        detail: String,
        /// The decision.
        decision: String,
    },
}

impl Command {
    /// The audit action name of the command.
    pub fn action(&self) -> &str {
        match self {
            Command::AddNode(_) => "node.add",
            Command::RemoveNode { .. } => "node.remove",
            Command::AddUser { .. } => "user.add",
            Command::RevokeUser { .. } => "user.revoke",
            Command::RenewToken { .. } => "user.renew",
            Command::AddModel { .. } => "model.add",
            Command::ApproveModel { .. } => "model.approve",
            Command::AssignModel { .. } => "model.assign",
            Command::RecordRun(_) | Command::RecordRuns { .. } => "model.run",
            Command::Audit { action, .. } => action,
        }
    }
}

/// What applying a proposal did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied; the audit record it wrote, if any.
    Applied {
        /// Sequence number of the audit record.
        audit_seq: u64,
        /// What the command produced, e.g. the new model version.
        detail: String,
    },
    /// Not applied, with the reason; the refusal itself is audited.
    Refused(String),
    /// A membership change or blank entry; nothing to report.
    Internal,
}
