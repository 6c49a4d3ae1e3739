//! A whole city in one process on loopback: a node server per folder of a generated city
//! and a group of coordinator replicas over them. The demo and the benchmarks run on it.

use std::path::Path;

use sunlight_coordinator::{
    Bootstrap, CoordinatorConfig, NodeEntry, RunningCoordinator, start_coordinator,
};
use sunlight_datagen::node_root;
use sunlight_domain::NodeCode;
use sunlight_meta::{AdminClient, Command, Proposed, ReplicaConfig, RunModelsRequest};
use sunlight_models::ModelPackage;
use sunlight_node::{NodeConfig, RunningNode, start_node};

use crate::{Error, Result, model};

/// Token of the nodes and of the first administrator; the city serves loopback only.
pub const LOCAL_TOKEN: &str = "local-city-token-not-secret";
/// Token of the second administrator, who approves models.
pub const APPROVER_TOKEN: &str = "local-approver-token-not-secret";
const SECRET: &str = "local-cluster-secret-not-secret";
const LINKAGE_KEY: &str = "local-linkage-key-not-secret-0123456789";

/// Nodes and coordinator replicas serving on loopback.
pub struct LocalCity {
    /// One node per node code.
    pub nodes: Vec<RunningNode>,
    /// The coordinator replicas; the first created the group.
    pub replicas: Vec<RunningCoordinator>,
    /// The replicas' metadata, fresh each time: the nodes get new ports every start.
    _meta: tempfile::TempDir,
}

impl LocalCity {
    /// Serves every node folder of `city` and starts `replicas` coordinator replicas.
    pub async fn start(city: &Path, replicas: u64) -> Result<Self> {
        // The nodes share this process's cores, so each plans its queries over its share.
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let partitions = (cores / NodeCode::all().count()).max(1);
        let mut nodes = Vec::new();
        for code in NodeCode::all() {
            let mut config = NodeConfig {
                code: code.to_string(),
                data: node_root(city, code).display().to_string(),
                listen: ([127, 0, 0, 1], 0).into(),
                partitions: Some(partitions),
                ..NodeConfig::default()
            };
            config.auth.tokens.insert("city".into(), LOCAL_TOKEN.into());
            config.auth.city.insert("city".into());
            config.linkage.key = Some(LINKAGE_KEY.into());
            nodes.push(start_node(config).await?);
        }
        let entries: Vec<NodeEntry> = nodes
            .iter()
            .map(|n| NodeEntry {
                code: n.node().code().to_string(),
                addr: n.addr.to_string(),
                token: LOCAL_TOKEN.into(),
            })
            .collect();
        let meta = tempfile::tempdir().map_err(|source| Error::Write {
            path: std::env::temp_dir(),
            source,
        })?;
        let mut running: Vec<RunningCoordinator> = Vec::new();
        for id in 1..=replicas {
            let mut config = CoordinatorConfig {
                listen: ([127, 0, 0, 1], 0).into(),
                nodes: entries.clone(),
                fragment_timeout_ms: 600_000,
                // The replicas share this process's threads with eleven busy nodes, and
                // openraft times an append out after one heartbeat: a slower heartbeat
                // keeps a node's long batch from failing appends. Appends still go out
                // as soon as an entry is written, so answers wait no longer.
                replica: ReplicaConfig {
                    id,
                    data: meta.path().join(format!("replica-{id}")),
                    secret: SECRET.into(),
                    heartbeat_ms: 500,
                    election_timeout_ms: 2_000,
                    ..ReplicaConfig::default()
                },
                ..Default::default()
            };
            config
                .auth
                .tokens
                .insert("admin".into(), LOCAL_TOKEN.into());
            config
                .auth
                .tokens
                .insert("approver".into(), APPROVER_TOKEN.into());
            let bootstrap = match running.first() {
                None => Bootstrap::Init,
                Some(first) => Bootstrap::Join(first.addr.to_string()),
            };
            running.push(start_coordinator(config, bootstrap).await?);
        }
        Ok(Self {
            nodes,
            replicas: running,
            _meta: meta,
        })
    }

    /// The replicas' addresses.
    pub fn addrs(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.addr.to_string()).collect()
    }

    /// An admin client acting as the first administrator.
    pub fn admin(&self) -> Result<AdminClient> {
        Ok(AdminClient::new(&self.addrs(), LOCAL_TOKEN)?)
    }

    /// Adds the built-in models as the first administrator, approves them as the second,
    /// and rolls them out to the canary 140215, then to every node.
    pub async fn deploy_builtin_models(&self) -> Result<()> {
        let packages = ModelPackage::builtins();
        model::add(&mut self.admin()?, &packages).await?;
        let mut approver = AdminClient::new(&self.addrs(), APPROVER_TOKEN)?;
        let all: Vec<String> = NodeCode::all().map(|c| c.to_string()).collect();
        for package in &packages {
            let (id, version) = (package.id.clone(), package.version);
            for command in [
                Command::ApproveModel {
                    id: id.clone(),
                    version,
                },
                Command::AssignModel {
                    id: id.clone(),
                    version,
                    nodes: vec!["140215".into()],
                },
                Command::AssignModel {
                    id: id.clone(),
                    version,
                    nodes: all.clone(),
                },
            ] {
                if let Proposed::Refused(reason) = approver.propose(&command).await? {
                    return Err(Error::Refused(reason));
                }
            }
        }
        let installed = approver.install(RunModelsRequest::default()).await?;
        if let Some(failed) = installed.runs.iter().find(|r| !r.error.is_empty()) {
            return Err(Error::Refused(format!(
                "{} not installed on {}: {}",
                failed.model_id, failed.node, failed.error
            )));
        }
        Ok(())
    }

    /// Stops the replicas, then the nodes.
    pub async fn stop(self) -> Result<()> {
        for replica in self.replicas {
            replica.stop().await?;
        }
        for node in self.nodes {
            node.stop().await?;
        }
        Ok(())
    }
}
