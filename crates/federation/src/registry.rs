//! Where the nodes are: the registry the coordinator federates over.

use std::collections::BTreeMap;
use std::sync::Arc;

use sunlight_domain::NodeCode;

/// How the city reaches one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEndpoint {
    /// The node's code.
    pub code: NodeCode,
    /// Flight address, `host:port` or a URL.
    pub addr: String,
    /// Bearer token the city presents to the node.
    pub token: String,
}

/// The source of the node list. Static configuration now; the replicated registry later.
pub trait NodeRegistry: Send + Sync + std::fmt::Debug {
    /// The registered nodes, ordered by code.
    fn nodes(&self) -> Vec<NodeEndpoint>;
}

/// A fixed list of nodes.
#[derive(Debug, Clone, Default)]
pub struct StaticRegistry {
    nodes: BTreeMap<NodeCode, NodeEndpoint>,
}

impl StaticRegistry {
    /// A registry of `nodes`; a later entry for the same code replaces an earlier one.
    pub fn new(nodes: impl IntoIterator<Item = NodeEndpoint>) -> Arc<Self> {
        Arc::new(Self {
            nodes: nodes.into_iter().map(|n| (n.code, n)).collect(),
        })
    }
}

impl NodeRegistry for StaticRegistry {
    fn nodes(&self) -> Vec<NodeEndpoint> {
        self.nodes.values().cloned().collect()
    }
}
