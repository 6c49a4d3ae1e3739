//! Coordinator configuration: defaults < TOML file < `SUNLIGHT_COORDINATOR_*`
//! environment < flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use sunlight_meta::ReplicaConfig;

use crate::{Error, Result};

/// Everything the coordinator needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Address of the Flight SQL, admin, raft and health services; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Address the other replicas reach this one at; defaults to the bound address.
    pub advertise: Option<String>,
    /// Bootstrap administrators, written to the replicated user table by `--init`.
    pub auth: CoordinatorAuth,
    /// Bootstrap nodes, written to the replicated registry by `--init`.
    pub nodes: Vec<NodeEntry>,
    /// This replica of the replicated metadata.
    pub replica: ReplicaConfig,
    /// Mutual TLS towards the nodes: this coordinator's certificate and the nodes' CA.
    pub node_tls: Option<sunlight_flightsql::TlsFiles>,
    /// Run every assigned model this often, in seconds, on the leader; 0 runs them only
    /// on demand (`sunlight model run`).
    pub model_schedule_secs: u64,
    /// Read the nodes' `subsidy_standards` again this often, in seconds, and use the copy
    /// most hold; 0 reads them only at start.
    pub standards_check_secs: u64,
    /// Every node must have answered a query within this many milliseconds, counted anew
    /// when the city runs it again (groups held back, a node that failed in part).
    pub fragment_timeout_ms: u64,
    /// Attempts per fragment while a node is unavailable.
    pub fragment_attempts: u32,
    /// Memory in MiB this replica's queries may hold at once, merging what the nodes
    /// send; unset for no limit.
    pub memory_limit_mb: Option<usize>,
}

/// Bootstrap administrator tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorAuth {
    /// User name to API token.
    pub tokens: BTreeMap<String, String>,
}

/// One bootstrap node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Node code.
    pub code: String,
    /// Flight address of the node.
    pub addr: String,
    /// Token the coordinator presents to the node.
    pub token: String,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50050)),
            advertise: None,
            auth: CoordinatorAuth::default(),
            nodes: Vec::new(),
            fragment_timeout_ms: 30_000,
            fragment_attempts: 3,
            memory_limit_mb: None,
            replica: ReplicaConfig::default(),
            model_schedule_secs: 0,
            standards_check_secs: 60,
            node_tls: None,
        }
    }
}

impl CoordinatorConfig {
    /// Layers the defaults, an optional TOML file, the `SUNLIGHT_COORDINATOR_*`
    /// environment and `flags`, whose unset fields are skipped.
    pub fn load(file: Option<&Path>, flags: impl Serialize) -> Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(CoordinatorConfig::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(Error::Config(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment
            .merge(Env::prefixed("SUNLIGHT_COORDINATOR_").split("__"))
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(|e| Error::ConfigLoad(Box::new(e)))
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<()> {
        for node in &self.nodes {
            node.code
                .parse::<sunlight_domain::NodeCode>()
                .map_err(|e| Error::Config(e.to_string()))?;
        }
        self.replica
            .validate()
            .map_err(|e| Error::Config(format!("[replica]: {e}")))?;
        if self.fragment_timeout_ms == 0 {
            return Err(Error::Config("fragment_timeout_ms must be positive".into()));
        }
        if self.memory_limit_mb == Some(0) {
            return Err(Error::Config(
                "memory_limit_mb is 0; leave it unset for no limit".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_loads_and_validates() {
        #[derive(Serialize)]
        struct NoFlags {}
        let example = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/config/coordinator.example.toml");
        let config = CoordinatorConfig::load(Some(&example), NoFlags {}).unwrap();
        config.validate().unwrap();
        assert_eq!(config.replica.id, 1);
        assert!(config.replica.fsync);
        assert_eq!(config.nodes.len(), 2);
        assert_eq!(config.memory_limit_mb, None);

        let zero = CoordinatorConfig {
            memory_limit_mb: Some(0),
            ..config
        };
        let err = zero.validate().unwrap_err().to_string();
        assert!(err.contains("memory_limit_mb is 0"), "{err}");
    }
}
