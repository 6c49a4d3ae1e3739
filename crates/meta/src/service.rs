//! The gRPC services of a replica: raft between peers, and administration.

use std::io::Seek;
use std::sync::Arc;

use openraft::Snapshot;
use serde_json::json;
use sunlight_proto::v1::admin_server::{Admin, AdminServer};
use sunlight_proto::v1::raft_server::{Raft as RaftRpc, RaftServer};
use sunlight_proto::v1::{
    AddReplicaRequest, ClusterStatusReply, ClusterStatusRequest, ProposeReply, ProposeRequest,
    RaftPayload, ReadReply, ReadRequest, RemoveReplicaRequest, Section, SnapshotChunk,
};
use tokio::io::AsyncWriteExt;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::network::MAX_RAFT_MESSAGE;
use crate::replica::Replica;
use crate::state::MetaState;
use crate::store::SnapshotData;
use crate::types::{Command, Outcome, Role};

/// The raft service of `replica`. A batch of entries is one message, and entries hold
/// whole statements of the audit log: far more than gRPC's 4 MiB default.
pub fn raft_service(replica: Arc<Replica>) -> RaftServer<RaftService> {
    RaftServer::new(RaftService { replica }).max_decoding_message_size(MAX_RAFT_MESSAGE)
}

/// The admin service of `replica`.
pub fn admin_service(replica: Arc<Replica>) -> AdminServer<AdminService> {
    AdminServer::new(AdminService { replica })
}

pub(crate) fn bearer(metadata: &MetadataMap) -> Result<&str, Error> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            Error::Unauthenticated("no credentials: send `authorization: Bearer <token>`".into())
        })
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::from(Error::Invalid(format!("malformed {what}: {e}"))))
}

/// Bytes of JSON a page of the audit log or the run records holds, at least one entry.
const PAGE_BYTES: usize = 2 << 20;

/// The JSON `values` from position `start` of `total` that fit in [`PAGE_BYTES`] (one at
/// least), as a JSON array, and where the next page starts, or 0 after the last.
fn page(
    values: impl Iterator<Item = Result<Vec<u8>, Status>>,
    start: u64,
    total: u64,
) -> Result<(Vec<u8>, u64), Status> {
    let (mut json, mut taken) = (vec![b'['], 0);
    for value in values {
        let value = value?;
        if taken > 0 {
            if json.len() + value.len() > PAGE_BYTES {
                break;
            }
            json.push(b',');
        }
        json.extend(value);
        taken += 1;
    }
    json.push(b']');
    let end = start + taken;
    let next = if end < total { end } else { 0 };
    Ok((json, next))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))
}

/// Raft calls from peers, authenticated by the cluster secret and the membership.
#[derive(Debug)]
pub struct RaftService {
    replica: Arc<Replica>,
}

impl RaftService {
    fn admit(&self, metadata: &MetadataMap, from: u64) -> Result<(), Status> {
        if !self.replica.is_cluster_secret(bearer(metadata)?) {
            return Err(
                Error::Unauthenticated("raft call without the cluster secret".into()).into(),
            );
        }
        if !self.replica.knows_peer(from) {
            return Err(Error::UnknownPeer { peer: from }.into());
        }
        Ok(())
    }
}

/// The JSON of `section` of `state` from position `from`, and where its next page starts
/// (0 after the last), for any section but the audit log, whose records are stored.
fn state_section(state: &MetaState, section: Section, from: u64) -> Result<(Vec<u8>, u64), Status> {
    match section {
        // Node tokens and token hashes never leave the replicas.
        Section::Nodes => Ok((
            encode(&json!(
                state
                    .nodes
                    .values()
                    .map(|n| json!({"code": n.code, "addr": n.addr}))
                    .collect::<Vec<_>>()
            ))?,
            0,
        )),
        Section::Users => Ok((
            encode(&json!(
                state
                    .users
                    .values()
                    .map(|u| json!({
                        "name": u.name, "role": u.role, "node": u.node,
                        "created_ms": u.created_ms, "revoked_ms": u.revoked_ms,
                    }))
                    .collect::<Vec<_>>()
            ))?,
            0,
        )),
        Section::Models => Ok((
            encode(&json!({"models": state.models, "assignments": state.assignments}))?,
            0,
        )),
        Section::Runs => page(
            state
                .runs
                .iter()
                .skip(usize::try_from(from).unwrap_or(usize::MAX))
                .map(encode),
            from,
            state.runs.len() as u64,
        ),
        Section::Audit => unreachable!("the audit log is read with its stored records"),
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.admit(request.metadata(), request.get_ref().from)?;
        let vote = decode(&request.get_ref().json, "vote request")?;
        let answer = self.replica.raft().vote(vote).await;
        Ok(Response::new(RaftPayload {
            from: self.replica.id(),
            json: encode(&answer)?,
        }))
    }

    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.admit(request.metadata(), request.get_ref().from)?;
        let append = decode(&request.get_ref().json, "append-entries request")?;
        let answer = self.replica.raft().append_entries(append).await;
        Ok(Response::new(RaftPayload {
            from: self.replica.id(),
            json: encode(&answer)?,
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftPayload>, Status> {
        let metadata = request.metadata().clone();
        let mut chunks = request.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::from(Error::Invalid("a snapshot call sent no piece".into())))?;
        self.admit(&metadata, first.from)?;
        let vote = decode(&first.vote, "snapshot vote")?;
        let meta = decode(&first.meta, "snapshot meta")?;
        // Into a file as it comes, not memory: the snapshot holds the whole audit log.
        let spooled =
            |e: std::io::Error| Status::internal(format!("a snapshot cannot be received: {e}"));
        let spool = self.replica.store()?.spool().map_err(spooled)?;
        let mut file = tokio::fs::File::from_std(spool);
        file.write_all(&first.data).await.map_err(spooled)?;
        while let Some(chunk) = chunks.message().await? {
            file.write_all(&chunk.data).await.map_err(spooled)?;
        }
        file.flush().await.map_err(spooled)?;
        let mut file = file.into_std().await;
        file.rewind().map_err(spooled)?;
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(SnapshotData::Received(file)),
        };
        let answer = self
            .replica
            .raft()
            .install_full_snapshot(vote, snapshot)
            .await;
        Ok(Response::new(RaftPayload {
            from: self.replica.id(),
            json: encode(&answer)?,
        }))
    }
}

/// Administration by users with the right role, or by a replica with the cluster secret.
#[derive(Debug)]
pub struct AdminService {
    replica: Arc<Replica>,
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposeReply>, Status> {
        let actor = self
            .replica
            .authorize(request.metadata(), &[Role::Administrator])?;
        let command: Command = decode(&request.get_ref().command_json, "command")?;
        if matches!(command, Command::Audit { .. }) && !actor.user.starts_with("replica-") {
            return Err(Error::Denied(
                "audit records are written by the coordinator itself, not through admin calls"
                    .into(),
            )
            .into());
        }
        let reply = match self.replica.propose(actor, command).await? {
            Outcome::Applied { audit_seq, detail } => ProposeReply {
                applied: true,
                detail,
                audit_seq,
            },
            Outcome::Refused(reason) => ProposeReply {
                applied: false,
                detail: reason,
                audit_seq: 0,
            },
            Outcome::Internal => ProposeReply::default(),
        };
        Ok(Response::new(reply))
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadReply>, Status> {
        let section = request.get_ref().section();
        let allowed: &[Role] = match section {
            Section::Audit => &[Role::Auditor, Role::Administrator],
            Section::Runs => &[
                Role::CityAnalyst,
                Role::Investigator,
                Role::Administrator,
                Role::Auditor,
            ],
            _ => &[Role::Administrator],
        };
        self.replica.authorize(request.metadata(), allowed)?;
        let from = request.get_ref().from;
        // Only the audit section reads the stored audit records.
        let (reply, applied_index) = match section {
            Section::Audit => {
                self.replica
                    .read_fresh_with_audit(from, |state, records| {
                        let records = records.map(|r| r.map_err(Status::from));
                        page(records, from, state.audit.len)
                    })
                    .await?
            }
            _ => {
                self.replica
                    .read_fresh(|state| state_section(state, section, from))
                    .await?
            }
        };
        let (json, next) = reply?;
        Ok(Response::new(ReadReply {
            json,
            applied_index,
            next,
        }))
    }

    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusReply>, Status> {
        self.replica
            .authorize(request.metadata(), &[Role::Administrator, Role::Auditor])?;
        Ok(Response::new(self.replica.status()))
    }

    async fn add_replica(
        &self,
        request: Request<AddReplicaRequest>,
    ) -> Result<Response<ClusterStatusReply>, Status> {
        self.replica
            .authorize(request.metadata(), &[Role::Administrator])?;
        let AddReplicaRequest { id, addr } = request.into_inner();
        Ok(Response::new(self.replica.add_replica(id, &addr).await?))
    }

    async fn remove_replica(
        &self,
        request: Request<RemoveReplicaRequest>,
    ) -> Result<Response<ClusterStatusReply>, Status> {
        self.replica
            .authorize(request.metadata(), &[Role::Administrator])?;
        let id = request.into_inner().id;
        Ok(Response::new(self.replica.remove_replica(id).await?))
    }
}
