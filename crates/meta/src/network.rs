//! Raft between replicas over tonic, with link faults that tests can inject.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Entry, OptionalSend, Snapshot, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sunlight_proto::v1::raft_client::RaftClient;
use sunlight_proto::v1::{RaftPayload, SnapshotChunk};
use tonic::transport::{Channel, ClientTlsConfig};

use crate::types::{ReplicaId, TypeConfig};

/// The largest raft message a replica takes, with room to spare: an AppendEntries message
/// holds an entry as large as a statement the city takes and [`APPEND_BYTES`] more.
pub(crate) const MAX_RAFT_MESSAGE: usize = 1 << 30;

/// Bytes of JSON of the entries in one AppendEntries message, beyond its first entry: the
/// message must be sent and stored within the heartbeat interval, which openraft allows
/// each, and entries of the audit log can be megabytes.
const APPEND_BYTES: usize = 4 << 20;

/// Bytes of a snapshot in one message; a snapshot of any size travels as many.
const SNAPSHOT_CHUNK: usize = 4 << 20;

/// The slowest a snapshot may cross, in bytes a second: sending one may take as long as
/// its size at this rate, on top of a raft call's timeout, which is for small messages.
const SNAPSHOT_RATE: f64 = (8 << 20) as f64;

/// Entries openraft hands over for one AppendEntries call at the most, which go as one
/// message or more ([`APPEND_BYTES`]): an entry holds a whole statement of the audit log,
/// up to the 4 MiB a Flight SQL request may carry.
pub(crate) const MAX_PAYLOAD_ENTRIES: u64 = 64;

/// Links between replicas that should fail, for fault-injection tests. Empty by default.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<FaultRules>>);

#[derive(Debug, Default)]
struct FaultRules {
    cut: BTreeSet<(ReplicaId, ReplicaId)>,
    drop_one_in: u32,
    counter: u64,
}

impl Faults {
    /// Cuts the links between `replica` and each of `others`, both ways.
    pub fn isolate(&self, replica: ReplicaId, others: &[ReplicaId]) {
        let mut rules = self.0.lock().expect("fault lock");
        for &other in others {
            rules.cut.insert((replica, other));
            rules.cut.insert((other, replica));
        }
    }

    /// Drops one call in `n` on every link (0 drops none).
    pub fn drop_one_in(&self, n: u32) {
        self.0.lock().expect("fault lock").drop_one_in = n;
    }

    /// Restores every link.
    pub fn heal(&self) {
        let mut rules = self.0.lock().expect("fault lock");
        rules.cut.clear();
        rules.drop_one_in = 0;
    }

    fn fails(&self, from: ReplicaId, to: ReplicaId) -> bool {
        let mut rules = self.0.lock().expect("fault lock");
        rules.counter += 1;
        rules.cut.contains(&(from, to))
            || (rules.drop_one_in > 0 && rules.counter.is_multiple_of(u64::from(rules.drop_one_in)))
    }
}

/// Opens clients to peer replicas.
#[derive(Debug, Clone)]
pub struct RaftNetworkClients {
    from: ReplicaId,
    secret: Arc<str>,
    tls: Option<ClientTlsConfig>,
    faults: Faults,
}

impl RaftNetworkClients {
    /// Clients that present `secret` as replica `from`, over TLS when `tls` is given.
    pub fn new(
        from: ReplicaId,
        secret: &str,
        tls: Option<ClientTlsConfig>,
        faults: Faults,
    ) -> Self {
        Self {
            from,
            secret: secret.into(),
            tls,
            faults,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for RaftNetworkClients {
    type Network = PeerClient;

    async fn new_client(&mut self, target: ReplicaId, node: &BasicNode) -> PeerClient {
        let channel = sunlight_flightsql::endpoint(&node.addr, self.tls.as_ref())
            .map(|e| {
                e.connect_timeout(Duration::from_secs(1))
                    .tcp_nodelay(true)
                    .connect_lazy()
            })
            .ok();
        PeerClient {
            clients: self.clone(),
            target,
            addr: node.addr.clone(),
            client: channel.map(|c| {
                RaftClient::new(c)
                    .max_encoding_message_size(MAX_RAFT_MESSAGE)
                    .max_decoding_message_size(MAX_RAFT_MESSAGE)
            }),
        }
    }
}

/// The link to one peer.
#[derive(Debug)]
pub struct PeerClient {
    clients: RaftNetworkClients,
    target: ReplicaId,
    addr: String,
    client: Option<RaftClient<Channel>>,
}

/// How a call failed before any answer of the peer.
enum CallError {
    Unreachable(Unreachable),
    Network(NetworkError),
}

impl<E: std::error::Error> From<CallError> for RPCError<ReplicaId, BasicNode, E> {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unreachable(e) => RPCError::Unreachable(e),
            CallError::Network(e) => RPCError::Network(e),
        }
    }
}

impl From<CallError> for StreamingError<TypeConfig, Fatal<ReplicaId>> {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unreachable(e) => StreamingError::Unreachable(e),
            CallError::Network(e) => StreamingError::Network(e),
        }
    }
}

fn network<E: std::error::Error + 'static>(e: E) -> CallError {
    CallError::Network(NetworkError::new(&e))
}

/// A piece of a snapshot being sent, if it could be read.
fn readable(piece: Result<Vec<u8>, openraft::StorageError<ReplicaId>>) -> Option<Vec<u8>> {
    piece
        .inspect_err(|e| tracing::warn!("a snapshot being sent cannot be read: {e}"))
        .ok()
}

impl PeerClient {
    async fn call<F, Fut>(&mut self, ttl: Duration, send: F) -> Result<Vec<u8>, CallError>
    where
        F: FnOnce(RaftClient<Channel>, String, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
    {
        let unreachable = |message: String| {
            CallError::Unreachable(Unreachable::new(&std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                message,
            )))
        };
        if self.clients.faults.fails(self.clients.from, self.target) {
            return Err(unreachable(format!(
                "link to replica {} is cut",
                self.target
            )));
        }
        let client = self
            .client
            .clone()
            .ok_or_else(|| unreachable(format!("bad replica address {:?}", self.addr)))?;
        let bearer = format!("Bearer {}", self.clients.secret);
        match send(client, bearer, ttl).await {
            Ok(reply) => Ok(reply.into_inner().json),
            Err(status) if status.code() == tonic::Code::Unavailable => Err(unreachable(format!(
                "replica {} at {}: {}",
                self.target,
                self.addr,
                status.message()
            ))),
            Err(status) => Err(network(status)),
        }
    }

    async fn rpc<Req, Resp, E>(
        &mut self,
        method: Method,
        request: &Req,
        option: RPCOption,
    ) -> Result<Resp, RPCError<ReplicaId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let json = serde_json::to_vec(request).map_err(|e| RPCError::from(network(e)))?;
        let from = self.clients.from;
        let bytes = self
            .call(
                option.hard_ttl(),
                move |mut client, bearer, ttl| async move {
                    let mut request = tonic::Request::new(RaftPayload { from, json });
                    request.set_timeout(ttl);
                    request
                        .metadata_mut()
                        .insert("authorization", bearer.parse().expect("ascii secret"));
                    match method {
                        Method::Vote => client.vote(request).await,
                        Method::AppendEntries => client.append_entries(request).await,
                    }
                },
            )
            .await?;
        let answer: Result<Resp, E> =
            serde_json::from_slice(&bytes).map_err(|e| RPCError::from(network(e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// How many of `entries`, from the first, one message carries: the first, and those after
/// it while their JSON fits in [`APPEND_BYTES`].
fn fitting(entries: &[Entry<TypeConfig>]) -> usize {
    let mut bytes = 0;
    let fits = entries.iter().skip(1).take_while(|entry| {
        bytes += serde_json::to_vec(entry).map_or(0, |json| json.len());
        bytes <= APPEND_BYTES
    });
    (1 + fits.count()).min(entries.len())
}

#[derive(Clone, Copy)]
enum Method {
    Vote,
    AppendEntries,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        AppendEntriesResponse<ReplicaId>,
        RPCError<ReplicaId, BasicNode, RaftError<ReplicaId>>,
    > {
        let fitting = fitting(&rpc.entries);
        let cut = fitting < rpc.entries.len();
        rpc.entries.truncate(fitting);
        let last = rpc.entries.last().map(|e| e.log_id);
        Ok(match self.rpc(Method::AppendEntries, &rpc, option).await? {
            // The entries left out go in the next message.
            AppendEntriesResponse::Success if cut => AppendEntriesResponse::PartialSuccess(last),
            answer => answer,
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<ReplicaId>,
        option: RPCOption,
    ) -> Result<VoteResponse<ReplicaId>, RPCError<ReplicaId, BasicNode, RaftError<ReplicaId>>> {
        self.rpc(Method::Vote, &rpc, option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<ReplicaId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<ReplicaId>, StreamingError<TypeConfig, Fatal<ReplicaId>>> {
        let data = *snapshot.snapshot;
        let size = data.size().map_err(network)?;
        let ttl = option.hard_ttl() + Duration::from_secs_f64(size as f64 / SNAPSHOT_RATE);
        let mut first = Some(SnapshotChunk {
            from: self.clients.from,
            vote: serde_json::to_vec(&vote).map_err(network)?,
            meta: serde_json::to_vec(&snapshot.meta).map_err(network)?,
            data: Vec::new(),
        });
        // Made one at a time as the transport takes them: the snapshot is not copied whole.
        // A piece that cannot be read ends the stream, and the peer refuses what it got.
        let pieces = data.pieces(SNAPSHOT_CHUNK).map_err(network)?;
        let chunks = futures::stream::iter(pieces.map_while(readable).map(move |piece| {
            let mut chunk = first.take().unwrap_or_default();
            chunk.data = piece;
            chunk
        }));
        let sent = self.call(ttl, move |mut client, bearer, ttl| async move {
            let mut request = tonic::Request::new(chunks);
            request.set_timeout(ttl);
            request
                .metadata_mut()
                .insert("authorization", bearer.parse().expect("ascii secret"));
            client.install_snapshot(request).await
        });
        // A large snapshot takes long: stop sending it once this replica stops replicating
        // to the peer, as when it is no longer the leader.
        let bytes = tokio::select! {
            sent = sent => sent?,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let answer: Result<SnapshotResponse<ReplicaId>, Fatal<ReplicaId>> =
            serde_json::from_slice(&bytes).map_err(network)?;
        answer.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}
