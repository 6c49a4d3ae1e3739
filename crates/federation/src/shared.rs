//! [`SharedPersons`]: the persons more than one node holds. A distinct count of persons
//! across nodes would otherwise list every person's token; with a shared set a node
//! lists only the tokens of its shared persons and counts the others, which no other
//! node holds, so that the city's count stays exact (see the policy crate's
//! `as_planned`). The city reads every node's tokens once, finds those held at two nodes
//! or more, tells each node which of its persons they are under a new epoch, and names
//! that epoch in the fragments of queries over those nodes only. A node that restarted
//! since does not hold the epoch and refuses, and the city counts again without it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use sunlight_domain::NodeCode;
use sunlight_policy::{TOKEN_BYTES, Token};
use sunlight_proto::v1::node_service_client::NodeServiceClient;
use sunlight_proto::v1::{PersonTokensRequest, SharedPersons as SharedPersonsRequest};
use tonic::Request;

use crate::fragment_exec::Channels;
use crate::registry::{NodeEndpoint, NodeRegistry};

/// The least time between two renewals the city starts by itself.
const RENEWAL_PAUSE: Duration = Duration::from_secs(60);

/// Largest message of person tokens: 16 bytes a person.
const MAX_TOKENS_MESSAGE: usize = 1 << 30;

/// A shared set the nodes hold.
#[derive(Debug, Clone)]
struct Epoch {
    id: u64,
    /// The nodes that hold it, with the address they were reached at.
    nodes: BTreeMap<NodeCode, String>,
}

/// What a renewal found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Nodes that hold the new set.
    pub nodes: Vec<NodeCode>,
    /// Persons held at two nodes or more.
    pub shared: usize,
    /// Persons, all nodes' together, counting a shared person once per node.
    pub persons: usize,
    /// Bytes of tokens the nodes sent.
    pub bytes: usize,
    /// Nodes that could not take part, with the reason.
    pub failed: BTreeMap<NodeCode, String>,
}

/// The city's shared-person set, and its renewals.
#[derive(Debug)]
pub struct SharedPersons {
    registry: Arc<dyn NodeRegistry>,
    channels: Arc<Channels>,
    current: Mutex<Option<Epoch>>,
    /// When the last renewal started; held while one runs.
    renewing: Arc<tokio::sync::Mutex<Option<Instant>>>,
}

impl SharedPersons {
    /// No set yet, over `registry`'s nodes.
    pub fn new(registry: Arc<dyn NodeRegistry>, channels: Arc<Channels>) -> Self {
        Self {
            registry,
            channels,
            current: Mutex::default(),
            renewing: Arc::default(),
        }
    }

    /// The epoch to name in fragments for `nodes`, if every one holds the current set.
    /// Otherwise none, and the city renews the set, so that it comes to hold them.
    pub fn covering(self: &Arc<Self>, nodes: &[NodeEndpoint]) -> Option<u64> {
        let current = self.current.lock().expect("not poisoned").clone();
        let covered = current.as_ref().is_some_and(|epoch| {
            nodes
                .iter()
                .all(|n| epoch.nodes.get(&n.code) == Some(&n.addr))
        });
        match (covered, current) {
            (true, Some(epoch)) => Some(epoch.id),
            _ => {
                self.renew_later();
                None
            }
        }
    }

    /// Forgets `epoch`, which a node no longer holds, and renews the set.
    pub fn expire(self: &Arc<Self>, epoch: u64) {
        let mut current = self.current.lock().expect("not poisoned");
        if current.as_ref().is_some_and(|e| e.id == epoch) {
            *current = None;
        }
        drop(current);
        self.renew_later();
    }

    /// Starts a renewal in the background, unless one runs or ran lately.
    fn renew_later(self: &Arc<Self>) {
        let Ok(mut last) = self.renewing.clone().try_lock_owned() else {
            return;
        };
        if last.is_some_and(|at| at.elapsed() < RENEWAL_PAUSE) {
            return;
        }
        *last = Some(Instant::now());
        let shared = self.clone();
        tokio::spawn(async move {
            let renewal = shared.renew_held().await;
            drop(last);
            log(&renewal);
        });
    }

    /// Reads every node's person tokens and gives the nodes a new shared set.
    pub async fn renew(&self) -> Renewal {
        let mut last = self.renewing.lock().await;
        *last = Some(Instant::now());
        let renewal = self.renew_held().await;
        log(&renewal);
        renewal
    }

    /// [`Self::renew`], while holding the renewal lock.
    async fn renew_held(&self) -> Renewal {
        let nodes = self.registry.nodes();
        let mut renewal = Renewal::default();
        let read = join_all(nodes.iter().map(|n| self.tokens_of(n))).await;
        let mut answered = Vec::new();
        for (node, tokens) in nodes.iter().zip(read) {
            match tokens {
                Ok((instance, tokens)) => answered.push((node, instance, tokens)),
                Err(e) => {
                    renewal.failed.insert(node.code, e);
                }
            }
        }
        let tokens: Vec<&[u8]> = answered.iter().map(|(_, _, t)| t.as_slice()).collect();
        let shared = shared_tokens(&tokens);
        renewal.bytes = tokens.iter().map(|t| t.len()).sum();
        renewal.persons = renewal.bytes / TOKEN_BYTES;
        renewal.shared = shared.iter().map(|s| s.len()).sum::<usize>() / TOKEN_BYTES;
        let id = uuid::Uuid::new_v4().as_u64_pair().0;
        let marked = join_all(
            answered
                .iter()
                .zip(shared)
                .map(|((node, instance, _), tokens)| {
                    self.share(
                        node,
                        SharedPersonsRequest {
                            epoch: id,
                            instance: *instance,
                            tokens,
                        },
                    )
                }),
        )
        .await;
        let mut epoch = Epoch {
            id,
            nodes: BTreeMap::new(),
        };
        for ((node, _, _), result) in answered.iter().zip(marked) {
            match result {
                Ok(()) => {
                    epoch.nodes.insert(node.code, node.addr.clone());
                    renewal.nodes.push(node.code);
                }
                Err(e) => {
                    renewal.failed.insert(node.code, e);
                }
            }
        }
        *self.current.lock().expect("not poisoned") = Some(epoch);
        renewal
    }

    /// `node`'s process and the tokens of its persons.
    async fn tokens_of(&self, node: &NodeEndpoint) -> Result<(u64, Vec<u8>), String> {
        let mut client = self.client(node)?;
        let set = client
            .person_tokens(with_token(node, PersonTokensRequest {})?)
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        if !set.tokens.len().is_multiple_of(TOKEN_BYTES) {
            return Err(format!(
                "sent {} bytes of tokens, not a whole number of {TOKEN_BYTES}-byte tokens",
                set.tokens.len()
            ));
        }
        Ok((set.instance, set.tokens))
    }

    async fn share(
        &self,
        node: &NodeEndpoint,
        request: SharedPersonsRequest,
    ) -> Result<(), String> {
        let mut client = self.client(node)?;
        client
            .share_persons(with_token(node, request)?)
            .await
            .map_err(|s| s.message().to_string())?;
        Ok(())
    }

    fn client(
        &self,
        node: &NodeEndpoint,
    ) -> Result<NodeServiceClient<tonic::transport::Channel>, String> {
        let channel = self.channels.get(node).map_err(|e| e.to_string())?;
        Ok(NodeServiceClient::new(channel)
            .max_decoding_message_size(MAX_TOKENS_MESSAGE)
            .max_encoding_message_size(MAX_TOKENS_MESSAGE))
    }
}

/// `message` with the bearer token `node` expects of the city.
fn with_token<T>(node: &NodeEndpoint, message: T) -> Result<Request<T>, String> {
    let mut request = Request::new(message);
    let bearer = format!("Bearer {}", node.token)
        .parse()
        .map_err(|_| "the node's token is not a valid header".to_string())?;
    request.metadata_mut().insert("authorization", bearer);
    Ok(request)
}

fn log(renewal: &Renewal) {
    tracing::info!(
        nodes = renewal.nodes.len(),
        persons = renewal.persons,
        shared = renewal.shared,
        bytes = renewal.bytes,
        "shared persons renewed"
    );
    for (node, reason) in &renewal.failed {
        tracing::warn!(%node, "left out of the shared persons: {reason}");
    }
}

/// Per node of `tokens` (each node's tokens, 16 bytes each, distinct), its tokens that
/// another node holds too, concatenated.
fn shared_tokens(tokens: &[&[u8]]) -> Vec<Vec<u8>> {
    // Tokens sort as 128-bit numbers, many times faster than as byte strings.
    let mut all: Vec<(u128, usize)> = tokens
        .iter()
        .enumerate()
        .flat_map(|(node, t)| {
            t.chunks_exact(TOKEN_BYTES).map(move |t| {
                let token: Token = t.try_into().expect("chunks of a token");
                (u128::from_be_bytes(token), node)
            })
        })
        .collect();
    all.sort_unstable();
    let mut shared = vec![Vec::new(); tokens.len()];
    for run in all.chunk_by(|a, b| a.0 == b.0) {
        if run.len() > 1 {
            for (token, node) in run {
                shared[*node].extend_from_slice(&token.to_be_bytes());
            }
        }
    }
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_two_nodes_hold_is_shared_at_both() {
        let token = |b: u8| [b; TOKEN_BYTES];
        let a: Vec<u8> = [token(1), token(2), token(3)].concat();
        let b: Vec<u8> = [token(3), token(4)].concat();
        let c: Vec<u8> = [token(2), token(3), token(5)].concat();
        let shared = shared_tokens(&[&a, &b, &c, &[]]);
        assert_eq!(shared[0], [token(2), token(3)].concat());
        assert_eq!(shared[1], token(3));
        assert_eq!(shared[2], [token(2), token(3)].concat());
        assert!(shared[3].is_empty());
    }
}
