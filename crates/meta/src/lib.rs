//! Replicated coordinator metadata: the node registry, users with hashed API tokens, the
//! model registry and rollout state, and the hash-chained audit log.
//!
//! Every change is a [`Command`] proposed to an [openraft] 0.9 group of coordinator
//! replicas and applied, in log order, to [`MetaState`] on each of them. A write is
//! acknowledged once a majority has it on disk, so losing a replica loses nothing.
//!
//! # Storage
//!
//! Each replica keeps its raft log, vote, commit index, latest snapshot and the audit log's
//! records in one [redb](https://docs.rs/redb) file. redb is a pure-Rust, copy-on-write B-tree with ACID
//! transactions and a stable file format: a crash between two writes leaves the last
//! committed transaction intact, there is no C toolchain or background compaction thread
//! to manage, and one write transaction per raft append keeps the log's fsync explicit.
//! Writes are fsynced before they are acknowledged (`fsync = true` by default).
//!
//! The state machine lives in memory, but for the audit log, which grows with every query:
//! its records are written to the file a batch at a time as their entries are applied, and
//! only its head (length and hashes) and the last batch are held. The rest is small
//! (registry, users, models, runs) and rebuilt at start from the last snapshot plus the
//! committed log. A snapshot is taken every [`ReplicaConfig::snapshot_every`] entries and
//! the log before it is purged; it stores the small state only, its audit records being
//! those already in the file. It is sent to a peer as the state followed by the records,
//! read as they go, and the peer receives it into a file and installs it a record at a
//! time, checking the hash chain.
//!
//! # Network
//!
//! Replicas talk over the tonic `Raft` service of `proto/sunlight/v1/raft.proto`,
//! authenticated with a cluster secret; a call from a replica outside the membership is
//! refused. Each call must cross within openraft's timeouts whatever the state's size: an
//! AppendEntries message carries a few megabytes of entries and the rest follow, and a
//! snapshot travels in pieces under a deadline that grows with it. Administrators use the `Admin` service (`admin.proto`): writes go to the
//! leader, and any other replica answers with the leader's address in the
//! `sunlight-leader` header, which [`AdminClient`] follows.
#![warn(missing_docs)]

mod client;
mod error;
mod network;
mod replica;
mod service;
mod state;
mod store;
mod types;

pub use client::{AdminClient, Proposed};
pub use error::{Error, LEADER_HEADER, Result};
pub use network::Faults;
pub use replica::{Replica, ReplicaConfig};
pub use service::{AdminService, RaftService, admin_service, raft_service};
pub use state::{AuditHead, MetaState, audit_sha256, token_sha256, verify_chain};
pub use sunlight_proto::v1::{
    CaseReply, CaseRequest, ClusterStatusReply, HitsReply, HitsRequest, LinkRequest, NodeRun,
    ReplicaStatus, RunModelsReply, RunModelsRequest, RunSummary, Section, ShadowReply,
    ShadowRequest,
};
pub use types::{
    Actor, AuditRecord, Command, ModelRecord, ModelStatus, NodeRecord, Outcome, Proposal,
    ReplicaId, Role, RunCounts, RunRecord, UserRecord,
};
