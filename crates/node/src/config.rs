//! Node configuration: defaults < TOML file < `SUNLIGHT_NODE_*` environment < flags.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use sunlight_domain::NodeCode;
use sunlight_policy::{DEFAULT_MIN_GROUP_SIZE, Tokenizer};

use crate::{Error, Result};

/// Everything a node needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// GB/T 2260 code of the node, one of `DOMAIN.md`'s node codes.
    pub code: String,
    /// Data root: an object store URL (`file:///...`, `s3://bucket/prefix`) or a local path.
    pub data: String,
    /// Address of the Flight SQL and health services; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Who may call the node.
    pub auth: AuthConfig,
    /// Settings for an `s3://` data root.
    pub s3: S3Config,
    /// The key of linkage tokens, shared by the nodes and never by the coordinator.
    pub linkage: LinkageConfig,
    /// Serve over TLS and admit only clients with a certificate from `tls.ca`.
    pub tls: Option<sunlight_flightsql::TlsFiles>,
    /// The node's own disclosure policy.
    pub privacy: PrivacyConfig,
    /// Append every SQL statement, fragment and refused call to this hash-chained JSON
    /// lines file; without it they go to the log output only.
    pub audit_log: Option<std::path::PathBuf>,
    /// Partitions a query or fragment runs over at the node; by default one per core.
    /// Nodes that share a machine should share its cores.
    pub partitions: Option<usize>,
    /// Memory, in MiB, that the node's queries and fragments may hold at once. Past it,
    /// sorts and aggregates spill to disk, and a query that still needs more (a hash
    /// join's table, say) fails with an error that says so, while the node serves on.
    /// Unbounded when unset.
    pub memory_limit_mb: Option<usize>,
    /// Seconds between two listings of the data root. When a table's Parquet files
    /// changed (a file imported, replaced or removed), the node checks its files again
    /// and serves them as they are from then on.
    pub rescan_seconds: u64,
}

/// The node's disclosure policy, applied to everything fragments send.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Distinct persons every group that leaves must count (k); at least the city's 5.
    pub min_group_size: usize,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            min_group_size: DEFAULT_MIN_GROUP_SIZE,
        }
    }
}

/// The node's linkage key. Tokens are HMAC-SHA256 under `key`; every node of the city
/// holds the same key for the same `epoch`, and rotating it means a new epoch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkageConfig {
    /// The secret key (at least 32 characters); rules that span nodes need it.
    pub key: Option<String>,
    /// The key's epoch, reported with every token set.
    pub epoch: u32,
}

impl LinkageConfig {
    /// Tokens under this key and epoch; `None` without a key.
    pub fn tokenizer(&self) -> Option<Tokenizer> {
        self.key.as_ref().map(|key| Tokenizer::new(key, self.epoch))
    }
}

/// Bearer tokens accepted by the node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// User name to API token.
    pub tokens: BTreeMap<String, String>,
    /// Users that are the city's coordinator: they send plan fragments, which pass the
    /// egress guard, and model steps, but may not run SQL here. The other users are the
    /// county's own analysts, with full SQL over the node's data.
    pub city: BTreeSet<String>,
    /// Take no county analysts from the city: only the users of `tokens` run SQL here.
    /// Otherwise the analysts the city's administrators register for this node do too,
    /// as the coordinator sends them.
    pub local_analysts_only: bool,
}

/// Connection settings of an S3-compatible store; unset values come from the usual
/// `AWS_*` environment variables.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint of an S3-compatible service, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Region name.
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Allow plain HTTP endpoints.
    pub allow_http: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            code: String::new(),
            data: String::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            auth: AuthConfig::default(),
            s3: S3Config::default(),
            linkage: LinkageConfig::default(),
            tls: None,
            privacy: PrivacyConfig::default(),
            audit_log: None,
            partitions: None,
            memory_limit_mb: None,
            rescan_seconds: 5,
        }
    }
}

impl NodeConfig {
    /// Layers the defaults, an optional TOML file, the `SUNLIGHT_NODE_*` environment
    /// (`__` separates nested keys) and `flags`, whose unset fields are skipped. The
    /// result is checked by [`NodeConfig::validate`] when the node starts.
    pub fn load(file: Option<&Path>, flags: impl Serialize) -> Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(NodeConfig::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(Error::Config(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        let config: NodeConfig = figment
            .merge(Env::prefixed("SUNLIGHT_NODE_").split("__"))
            .merge(Serialized::defaults(flags))
            .extract()?;
        Ok(config)
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<()> {
        self.node_code()?;
        if self.data.trim().is_empty() {
            return Err(Error::Config(
                "no data root: set `data` or pass --data".into(),
            ));
        }
        if self.auth.tokens.is_empty() {
            return Err(Error::Config(
                "no API tokens: add [auth.tokens] to the config file or pass --token".into(),
            ));
        }
        if self.linkage.key.as_ref().is_some_and(|k| k.len() < 32) {
            return Err(Error::Config(
                "the linkage key must be at least 32 characters".into(),
            ));
        }
        if self.privacy.min_group_size < DEFAULT_MIN_GROUP_SIZE {
            return Err(Error::Config(format!(
                "privacy.min_group_size is {}; a node may raise the minimum group size above \
                 {DEFAULT_MIN_GROUP_SIZE} but not lower it",
                self.privacy.min_group_size
            )));
        }
        if self.partitions == Some(0) {
            return Err(Error::Config(
                "partitions is 0; a node runs its queries over at least one".into(),
            ));
        }
        if self.memory_limit_mb == Some(0) {
            return Err(Error::Config(
                "memory_limit_mb is 0; leave it unset for no limit".into(),
            ));
        }
        if self.rescan_seconds == 0 {
            return Err(Error::Config(
                "rescan_seconds is 0; a node lists its files at most once a second".into(),
            ));
        }
        if let Some(user) = self
            .auth
            .city
            .iter()
            .find(|u| !self.auth.tokens.contains_key(*u))
        {
            return Err(Error::Config(format!(
                "auth.city names user {user:?}, who has no token in [auth.tokens]"
            )));
        }
        if let Some((user, _)) = self.auth.tokens.iter().find(|(_, t)| t.len() < 8) {
            return Err(Error::Config(format!(
                "the token of user {user:?} is shorter than 8 characters"
            )));
        }
        Ok(())
    }

    /// The validated node code.
    pub fn node_code(&self) -> Result<NodeCode> {
        self.code
            .parse()
            .map_err(|e: sunlight_domain::Error| Error::Config(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_loads_and_validates() {
        #[derive(Serialize)]
        struct NoFlags {}
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/node.example.toml");
        let config = NodeConfig::load(Some(&example), NoFlags {}).unwrap();
        config.validate().unwrap();
        assert_eq!(config.linkage.epoch, 1);
    }

    #[test]
    fn flags_override_file_and_validate() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "code = \"140215\"\ndata = \"/srv/a\"\n[auth.tokens]\nanalyst = \"secret-token\"\n",
        )
        .unwrap();
        #[derive(Serialize)]
        struct Flags {
            data: &'static str,
        }
        let config = NodeConfig::load(Some(&file), Flags { data: "/srv/b" }).unwrap();
        config.validate().unwrap();
        assert_eq!(config.data, "/srv/b");
        assert_eq!(config.node_code().unwrap().as_str(), "140215");

        std::fs::write(&file, "code = \"999999\"\ndata = \"/srv/a\"\n").unwrap();
        let err = NodeConfig::load(Some(&file), Flags { data: "/x" })
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("999999"), "{err}");

        for (setting, message) in [
            ("partitions = 0", "partitions is 0"),
            ("memory_limit_mb = 0", "memory_limit_mb is 0"),
            ("rescan_seconds = 0", "rescan_seconds is 0"),
        ] {
            let text = format!(
                "code = \"140215\"\n{setting}\n[auth.tokens]\nanalyst = \"secret-token\"\n"
            );
            std::fs::write(&file, text).unwrap();
            let err = NodeConfig::load(Some(&file), Flags { data: "/x" })
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(err.to_string().contains(message), "{err}");
        }
    }
}
