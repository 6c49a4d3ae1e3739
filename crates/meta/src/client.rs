//! A client of the admin service that finds the leader: it follows redirects and moves
//! on to the next replica when one is down.

use std::time::Duration;

use sunlight_proto::v1::admin_client::AdminClient as AdminRpc;
use sunlight_proto::v1::models_client::ModelsClient;
use sunlight_proto::v1::{
    AddReplicaRequest, CaseReply, CaseRequest, ClusterStatusReply, ClusterStatusRequest, HitsReply,
    HitsRequest, LinkRequest, ProposeRequest, ReadRequest, RemoveReplicaRequest, RunModelsReply,
    RunModelsRequest, Section, ShadowReply, ShadowRequest,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig};

use crate::error::{Error, LEADER_HEADER, Result};
use crate::types::{Command, ReplicaId};

/// Attempts before a call gives up; with the pause below, about ten seconds.
const ATTEMPTS: usize = 40;
const PAUSE: Duration = Duration::from_millis(250);
/// The largest reply taken: a page of the audit log holds one record at least, and a
/// record holds its statement.
const MAX_REPLY: usize = 64 << 20;

/// The models service over `channel`, taking replies up to [`MAX_REPLY`]: hit listings
/// and case openings carry rows.
fn models(channel: Channel) -> ModelsClient<Channel> {
    ModelsClient::new(channel).max_decoding_message_size(MAX_REPLY)
}

type Bearer = MetadataValue<Ascii>;

fn authorized<T>(message: T, bearer: Bearer) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", bearer);
    request
}

/// What a proposal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proposed {
    /// Applied, with what it produced and its audit record.
    Applied {
        /// E.g. the new model version.
        detail: String,
        /// The audit record written.
        audit_seq: u64,
    },
    /// Refused by the state machine, with the reason.
    Refused(String),
}

/// Calls the coordinator replicas' admin service with one token.
#[derive(Debug, Clone)]
pub struct AdminClient {
    replicas: Vec<String>,
    token: String,
    tls: Option<ClientTlsConfig>,
    current: usize,
    /// The open channel to `replicas[current]`.
    channel: Option<(usize, Channel)>,
}

impl AdminClient {
    /// A client of the replicas at `replicas` (any order; the leader is found).
    pub fn new(replicas: &[String], token: &str) -> Result<Self> {
        if replicas.is_empty() {
            return Err(Error::Invalid("no coordinator address given".into()));
        }
        Ok(Self {
            replicas: replicas.to_vec(),
            token: token.to_string(),
            tls: None,
            current: 0,
            channel: None,
        })
    }

    /// Reaches the replicas over TLS when `tls` is given.
    pub fn with_tls(mut self, tls: Option<ClientTlsConfig>) -> Self {
        self.tls = tls;
        self
    }

    async fn connect(&mut self, addr: &str) -> Result<Channel> {
        if let Some((at, channel)) = &self.channel
            && *at == self.current
        {
            return Ok(channel.clone());
        }
        let unreachable = |message: String| Error::Unreachable {
            addr: addr.to_string(),
            message,
        };
        let channel = sunlight_flightsql::endpoint(addr, self.tls.as_ref())
            .map_err(|e| unreachable(e.to_string()))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(600))
            .connect()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        self.channel = Some((self.current, channel.clone()));
        Ok(channel)
    }

    /// Runs `call` against the leader, following `sunlight-leader` redirects.
    async fn call<T, F, Fut>(&mut self, mut call: F) -> Result<T>
    where
        F: FnMut(Channel, Bearer) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let bearer: Bearer = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| Error::Invalid("the token is not printable ASCII".into()))?;
        let mut last = Error::Invalid("no attempt made".into());
        for _ in 0..ATTEMPTS {
            let addr = self.replicas[self.current].clone();
            let client = match self.connect(&addr).await {
                Ok(client) => client,
                Err(e) => {
                    last = e;
                    self.current = (self.current + 1) % self.replicas.len();
                    tokio::time::sleep(PAUSE).await;
                    continue;
                }
            };
            match call(client, bearer.clone()).await {
                Ok(reply) => return Ok(reply.into_inner()),
                Err(status) => {
                    let leader = status
                        .metadata()
                        .get(LEADER_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    // Retry where the leader is elsewhere or unknown, or the replica is down.
                    let retry = leader.is_some() || status.code() == tonic::Code::Unavailable;
                    let leader = leader.filter(|l| !l.is_empty());
                    last = Error::Remote {
                        addr,
                        code: status.code(),
                        message: status.message().to_string(),
                    };
                    if !retry {
                        return Err(last);
                    }
                    match leader {
                        Some(leader) => self.current = self.position(&leader),
                        None => {
                            self.current = (self.current + 1) % self.replicas.len();
                            tokio::time::sleep(PAUSE).await;
                        }
                    }
                }
            }
        }
        Err(last)
    }

    fn position(&mut self, addr: &str) -> usize {
        match self.replicas.iter().position(|a| a == addr) {
            Some(i) => i,
            None => {
                self.replicas.push(addr.to_string());
                self.replicas.len() - 1
            }
        }
    }

    /// Proposes `command` and waits until the leader applied it.
    pub async fn propose(&mut self, command: &Command) -> Result<Proposed> {
        let command_json =
            serde_json::to_vec(command).map_err(|e| Error::Invalid(e.to_string()))?;
        let reply = self
            .call(|channel, bearer| {
                let request = authorized(
                    ProposeRequest {
                        command_json: command_json.clone(),
                    },
                    bearer,
                );
                async move { AdminRpc::new(channel).propose(request).await }
            })
            .await?;
        Ok(if reply.applied {
            Proposed::Applied {
                detail: reply.detail,
                audit_seq: reply.audit_seq,
            }
        } else {
            Proposed::Refused(reply.detail)
        })
    }

    /// A read of `section`, as JSON: linearizable, or for the audit log and the run
    /// records, which only grow, page by page, each linearizable.
    pub async fn read(&mut self, section: Section) -> Result<serde_json::Value> {
        let mut entries = Vec::new();
        let mut from = 0;
        loop {
            let reply = self
                .call(|channel, bearer| {
                    let request = authorized(
                        ReadRequest {
                            section: section.into(),
                            from,
                        },
                        bearer,
                    );
                    async move {
                        AdminRpc::new(channel)
                            .max_decoding_message_size(MAX_REPLY)
                            .read(request)
                            .await
                    }
                })
                .await?;
            let json: serde_json::Value =
                serde_json::from_slice(&reply.json).map_err(|e| Error::Invalid(e.to_string()))?;
            let serde_json::Value::Array(page) = json else {
                return Ok(json);
            };
            entries.extend(page);
            if reply.next == 0 {
                return Ok(serde_json::Value::Array(entries));
            }
            from = reply.next;
        }
    }

    /// The group as the first reachable replica sees it (no redirect).
    pub async fn status(&mut self) -> Result<ClusterStatusReply> {
        self.call(|channel, bearer| {
            let request = authorized(ClusterStatusRequest {}, bearer);
            async move { AdminRpc::new(channel).cluster_status(request).await }
        })
        .await
    }

    /// Adds replica `id` at `addr` to the group.
    pub async fn add_replica(&mut self, id: ReplicaId, addr: &str) -> Result<ClusterStatusReply> {
        self.call(|channel, bearer| {
            let request = authorized(
                AddReplicaRequest {
                    id,
                    addr: addr.to_string(),
                },
                bearer,
            );
            async move { AdminRpc::new(channel).add_replica(request).await }
        })
        .await
    }

    /// Runs the assigned model versions on the nodes (at the leader).
    pub async fn run_models(&mut self, request: RunModelsRequest) -> Result<RunModelsReply> {
        self.call(|channel, bearer| {
            let request = authorized(request.clone(), bearer);
            async move { models(channel).run(request).await }
        })
        .await
    }

    /// Runs a candidate version beside the live ones, recording nothing (at any replica).
    pub async fn shadow(&mut self, request: ShadowRequest) -> Result<ShadowReply> {
        self.call(|channel, bearer| {
            let request = authorized(request.clone(), bearer);
            async move { models(channel).shadow(request).await }
        })
        .await
    }

    /// The recorded outcomes of the models' hits on each assigned node.
    pub async fn outcomes(&mut self, request: RunModelsRequest) -> Result<RunModelsReply> {
        self.call(|channel, bearer| {
            let request = authorized(request.clone(), bearer);
            async move { models(channel).outcomes(request).await }
        })
        .await
    }

    /// Installs the selected models' assigned versions on their nodes.
    pub async fn install(&mut self, request: RunModelsRequest) -> Result<RunModelsReply> {
        self.call(|channel, bearer| {
            let request = authorized(request.clone(), bearer);
            async move { models(channel).install(request).await }
        })
        .await
    }

    /// Links rows across every node on keyed tokens of `request.keys`; records nothing.
    pub async fn link(&mut self, request: LinkRequest) -> Result<RunModelsReply> {
        self.call(|channel, bearer| {
            let request = authorized(request.clone(), bearer);
            async move { models(channel).link(request).await }
        })
        .await
    }

    /// Opens named hits of a model for a case (investigators only).
    pub async fn open_case(&mut self, request: CaseRequest) -> Result<CaseReply> {
        self.call(|channel, bearer| {
            let request = authorized(request.clone(), bearer);
            async move { models(channel).open_case(request).await }
        })
        .await
    }

    /// The hits of each node's latest run of a model, class-P columns only (investigators
    /// only).
    pub async fn list_hits(&mut self, request: HitsRequest) -> Result<HitsReply> {
        self.call(|channel, bearer| {
            let request = authorized(request.clone(), bearer);
            async move { models(channel).list_hits(request).await }
        })
        .await
    }

    /// Removes replica `id` from the group.
    pub async fn remove_replica(&mut self, id: ReplicaId) -> Result<ClusterStatusReply> {
        self.call(|channel, bearer| {
            let request = authorized(RemoveReplicaRequest { id }, bearer);
            async move { AdminRpc::new(channel).remove_replica(request).await }
        })
        .await
    }
}
