//! One coordinator replica: raft over its store, proposals, fresh reads and membership.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use openraft::error::{ForwardToLeader, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use sunlight_flightsql::{COORDINATOR_TLS_NAME, TlsFiles, trust};
use sunlight_proto::v1::{ClusterStatusReply, ReplicaStatus};
use tonic::metadata::MetadataMap;
use tonic::transport::ClientTlsConfig;

use crate::client::AdminClient;
use crate::error::{Error, Result};
use crate::network::{Faults, MAX_PAYLOAD_ENTRIES, RaftNetworkClients};
use crate::service::bearer;
use crate::state::{MetaState, token_sha256};
use crate::store::{Applied, MetaStateMachine, MetaStore};
use crate::types::{Actor, AuditRecord, Command, Outcome, Proposal, ReplicaId, Role, TypeConfig};

/// How a replica stores and times its raft group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicaConfig {
    /// This replica's id, unique and stable within the group.
    pub id: ReplicaId,
    /// Directory of the replica's redb file.
    pub data: PathBuf,
    /// Shared secret the replicas present to each other.
    pub secret: String,
    /// Sync every write to disk before acknowledging it.
    pub fsync: bool,
    /// Leader heartbeat interval in milliseconds.
    pub heartbeat_ms: u64,
    /// Elections start after a random silence between this and twice this, in milliseconds.
    pub election_timeout_ms: u64,
    /// Build a snapshot (and compact the log) after this many entries.
    pub snapshot_every: u64,
    /// Serve clients and peers over TLS with `cert` and `key`, and reach peers checking
    /// their certificate chains to `ca` and names `sunlight-coordinator`.
    pub tls: Option<TlsFiles>,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            id: 1,
            data: PathBuf::from("meta"),
            secret: String::new(),
            fsync: true,
            heartbeat_ms: 100,
            election_timeout_ms: 500,
            snapshot_every: 5_000,
            tls: None,
        }
    }
}

impl ReplicaConfig {
    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<()> {
        if self.id == 0 {
            return Err(Error::Invalid("replica id must be 1 or more".into()));
        }
        if self.secret.len() < 16 {
            return Err(Error::Invalid(
                "the cluster secret must be at least 16 characters".into(),
            ));
        }
        if self.heartbeat_ms == 0 || self.election_timeout_ms <= 2 * self.heartbeat_ms {
            return Err(Error::Invalid(
                "election_timeout_ms must exceed twice heartbeat_ms".into(),
            ));
        }
        Ok(())
    }
}

/// A running replica of the coordinator's metadata.
pub struct Replica {
    id: ReplicaId,
    secret: String,
    peer_tls: Option<ClientTlsConfig>,
    raft: Raft<TypeConfig>,
    applied: Arc<RwLock<Applied>>,
    /// Taken at shutdown, so that the file closes once raft and the reads under way let
    /// it go.
    store: RwLock<Option<MetaStore>>,
    /// Held through a change of the group's members: raft takes one at a time, and
    /// refuses a second while the first is under way.
    membership_change: tokio::sync::Mutex<()>,
    file_closed: tokio::sync::Mutex<tokio::sync::watch::Receiver<()>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("id", &self.id).finish()
    }
}

impl Replica {
    /// Opens the replica's store and starts raft. `faults` is empty outside tests.
    pub async fn open(config: &ReplicaConfig, faults: Faults) -> Result<Arc<Self>> {
        config.validate()?;
        let (store, file_closed) = MetaStore::open(&config.data, config.id, config.fsync)?;
        let state_machine = MetaStateMachine::open(store.clone())?;
        let applied = state_machine.applied();
        let raft_config = openraft::Config {
            cluster_name: "sunlight-coordinator".into(),
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_timeout_ms,
            election_timeout_max: config.election_timeout_ms * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: 100,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Invalid(e.to_string()))?;
        let peer_tls = config
            .tls
            .as_ref()
            .map(|t| trust(&t.ca, COORDINATOR_TLS_NAME))
            .transpose()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let network = RaftNetworkClients::new(config.id, &config.secret, peer_tls.clone(), faults);
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            network,
            store.clone(),
            state_machine,
        )
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
        Ok(Arc::new(Self {
            id: config.id,
            secret: config.secret.clone(),
            peer_tls,
            raft,
            applied,
            store: RwLock::new(Some(store)),
            membership_change: tokio::sync::Mutex::new(()),
            file_closed: tokio::sync::Mutex::new(file_closed),
        }))
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// The raft handle, for the raft service.
    pub(crate) fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// How this replica reaches its peers: over TLS when the group serves it.
    pub fn peer_tls(&self) -> Option<ClientTlsConfig> {
        self.peer_tls.clone()
    }

    /// Whether `secret` is the cluster secret.
    pub(crate) fn is_cluster_secret(&self, secret: &str) -> bool {
        !self.secret.is_empty() && sunlight_flightsql::same_secret(&self.secret, secret)
    }

    /// This replica acting for the cluster, as an administrator.
    pub fn actor(&self) -> Actor {
        Actor {
            user: format!("replica-{}", self.id),
            role: Some(Role::Administrator),
        }
    }

    /// The caller of a gRPC call, from its bearer token: a user holding one of `allowed`,
    /// or a replica presenting the cluster secret where administrators are allowed.
    /// Every refusal is audited.
    pub fn authorize(self: &Arc<Self>, metadata: &MetadataMap, allowed: &[Role]) -> Result<Actor> {
        let token = match bearer(metadata) {
            Ok(token) => token,
            Err(e) => {
                self.audit_refusal("admin", None, &e.to_string());
                return Err(e);
            }
        };
        if self.is_cluster_secret(token) && allowed.contains(&Role::Administrator) {
            return Ok(self.actor());
        }
        let user = self
            .read(|state| state.user_by_token(token).cloned())
            .map_err(|reason| {
                self.audit_refusal("admin", Some(token), &reason);
                Error::Unauthenticated(reason)
            })?;
        if !allowed.contains(&user.role) {
            let names: Vec<_> = allowed.iter().map(|r| r.name()).collect();
            let reason = format!(
                "{} has the role {}; this call needs the role {}",
                user.name,
                user.role,
                names.join(" or ")
            );
            self.audit_refusal("admin", Some(token), &reason);
            return Err(Error::Denied(reason));
        }
        Ok(Actor {
            user: user.name,
            role: Some(user.role),
        })
    }

    /// Appends an audit record: on the leader directly, elsewhere through the leader.
    pub async fn audit(&self, command: Command) -> Result<()> {
        match self.propose(self.actor(), command.clone()).await {
            Ok(_) => Ok(()),
            // Hand the record to the leader; if it has just gone, the client finds the next.
            Err(Error::NotLeader { leader, .. }) => {
                let mut peers: Vec<String> = leader.into_iter().map(|(_, addr)| addr).collect();
                peers.extend(self.status().replicas.into_iter().map(|r| r.addr));
                AdminClient::new(&peers, &self.secret)?
                    .with_tls(self.peer_tls())
                    .propose(&command)
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Audits, in the background, a call to `service` refused for `reason`: the holder of
    /// `token` when it is a known user's (revoked or expired), and a prefix of the token's
    /// hash, never the token.
    pub fn audit_refusal(self: &Arc<Self>, service: &str, token: Option<&str>, reason: &str) {
        let subject = token
            .and_then(|t| {
                self.read(|s| {
                    s.holder(t).map(|u| Actor {
                        user: u.name.clone(),
                        role: Some(u.role),
                    })
                })
            })
            .unwrap_or(Actor {
                user: "unknown".into(),
                role: None,
            });
        let detail = serde_json::json!({
            "service": service,
            "token_sha256_prefix": token.map(|t| token_sha256(t)[..12].to_string()),
        });
        let command = Command::Audit {
            subject: Some(subject),
            action: "access".into(),
            detail: detail.to_string(),
            decision: format!("refused: {reason}"),
        };
        let replica = self.clone();
        tokio::spawn(async move {
            if let Err(e) = replica.audit(command).await {
                tracing::warn!("a refused call could not be audited: {e}");
            }
        });
    }

    /// Makes this replica a one-member group reachable at `addr`, and says whether it
    /// did; a group that already exists is left alone.
    pub async fn initialize(&self, addr: &str) -> Result<bool> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| Error::Raft(e.to_string()))?
        {
            return Ok(false);
        }
        let members = BTreeMap::from([(self.id, BasicNode::new(addr))]);
        self.raft
            .initialize(members)
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        let mut metrics = self.raft.metrics();
        metrics
            .wait_for(|m| m.current_leader == Some(self.id))
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        Ok(true)
    }

    /// Proposes `command` as `actor` and waits until it is applied here.
    pub async fn propose(&self, actor: Actor, command: Command) -> Result<Outcome> {
        let proposal = Proposal {
            actor,
            at_ms: chrono::Utc::now().timestamp_millis(),
            command,
        };
        self.raft
            .client_write(proposal)
            .await
            .map(|reply| reply.data)
            .map_err(|e| self.raft_error(e))
    }

    /// Reads the state as applied on this replica, possibly behind the leader.
    pub fn read<T>(&self, f: impl FnOnce(&MetaState) -> T) -> T {
        f(&self.applied.read().expect("state lock").state)
    }

    /// Reads the state after every write acknowledged before the call (leader only).
    pub async fn read_fresh<T>(&self, f: impl FnOnce(&MetaState) -> T) -> Result<(T, u64)> {
        self.linearizable().await?;
        Ok(self.read_indexed(f))
    }

    /// Waits until this replica has applied every write acknowledged before the call, or
    /// says it is not the leader.
    async fn linearizable(&self) -> Result<()> {
        self.raft
            .ensure_linearizable()
            .await
            .map_err(|e| self.raft_error(e))?;
        Ok(())
    }

    /// The audit log's records as applied on this replica, oldest first.
    pub fn audit_records(&self) -> Result<Vec<AuditRecord>> {
        let store = self.store()?;
        let applied = self.applied.read().expect("state lock");
        applied.audit_records(&store)
    }

    /// Where this replica stores its raft log and its audit log's records, until it is
    /// shut down.
    pub(crate) fn store(&self) -> Result<MetaStore> {
        let store = self.store.read().expect("store lock").clone();
        store.ok_or_else(|| Error::Raft(format!("replica {} is shut down", self.id)))
    }

    /// [`Replica::read_fresh`], `read` also given the JSON of the audit log's records
    /// from position `from` (0 for the first), read as they are taken.
    pub(crate) async fn read_fresh_with_audit<T>(
        &self,
        from: u64,
        read: impl FnOnce(&MetaState, &mut dyn Iterator<Item = Result<Vec<u8>>>) -> T,
    ) -> Result<(T, u64)> {
        self.linearizable().await?;
        let store = self.store()?;
        let applied = self.applied.read().expect("state lock");
        let unreadable = |e| store.unreadable_audit(e);
        let mut records = applied
            .audit_json(&store, from.saturating_add(1)..=u64::MAX)
            .map_err(unreadable)?
            .map(|json| json.map_err(unreadable));
        let index = applied.last.map_or(0, |l| l.index);
        Ok((read(&applied.state, &mut records), index))
    }

    /// Reads the state as applied on this replica, with the index of the last log entry
    /// applied to it.
    pub fn read_indexed<T>(&self, f: impl FnOnce(&MetaState) -> T) -> (T, u64) {
        let applied = self.applied.read().expect("state lock");
        (f(&applied.state), applied.last.map_or(0, |l| l.index))
    }

    /// Whether `peer` is a member (voter or learner) of the group, or the group is new.
    pub(crate) fn knows_peer(&self, peer: ReplicaId) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let mut nodes = membership.nodes().peekable();
        nodes.peek().is_none() || membership.get_node(&peer).is_some()
    }

    /// The group as this replica sees it.
    pub fn status(&self) -> ClusterStatusReply {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<_> = membership.voter_ids().collect();
        ClusterStatusReply {
            id: self.id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            replicas: membership
                .nodes()
                .map(|(id, node)| ReplicaStatus {
                    id: *id,
                    addr: node.addr.clone(),
                    voter: voters.contains(id),
                })
                .collect(),
        }
    }

    /// Adds replica `id` at `addr`: first as a learner that catches up, then as a voter.
    pub async fn add_replica(&self, id: ReplicaId, addr: &str) -> Result<ClusterStatusReply> {
        if id == 0 {
            return Err(Error::Invalid("replica id must be 1 or more".into()));
        }
        let _one_at_a_time = self.membership_change.lock().await;
        self.raft
            .add_learner(id, BasicNode::new(addr), true)
            .await
            .map_err(|e| self.raft_error(e))?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.raft_error(e))?;
        Ok(self.status())
    }

    /// Removes replica `id` from the group.
    pub async fn remove_replica(&self, id: ReplicaId) -> Result<ClusterStatusReply> {
        let _one_at_a_time = self.membership_change.lock().await;
        let voters: BTreeSet<_> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if !voters.contains(&id) {
            return Err(Error::Invalid(format!("replica {id} is not a voter")));
        }
        if voters.len() == 1 {
            return Err(Error::Invalid(format!(
                "replica {id} is the last voter; the group cannot be empty"
            )));
        }
        self.raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.raft_error(e))?;
        Ok(self.status())
    }

    /// Stops raft and waits (up to five seconds) until its tasks have closed the file, so
    /// that the replica can be opened again at once.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(replica = self.id, "raft did not stop cleanly: {e}");
        }
        drop(self.store.write().expect("store lock").take());
        let mut closed = self.file_closed.lock().await;
        let wait = async { while closed.changed().await.is_ok() {} };
        if tokio::time::timeout(std::time::Duration::from_secs(5), wait)
            .await
            .is_err()
        {
            tracing::warn!(
                replica = self.id,
                "the store file is still open after shutdown"
            );
        }
    }

    fn raft_error<E>(&self, error: RaftError<ReplicaId, E>) -> Error
    where
        E: std::error::Error + openraft::TryAsRef<ForwardToLeader<ReplicaId, BasicNode>>,
    {
        match error.forward_to_leader::<BasicNode>() {
            Some(forward) => Error::NotLeader {
                replica: self.id,
                leader: forward
                    .leader_id
                    .zip(forward.leader_node.as_ref().map(|n| n.addr.clone())),
            },
            None => Error::Raft(error.to_string()),
        }
    }
}
