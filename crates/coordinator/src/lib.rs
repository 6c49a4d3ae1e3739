//! The city coordinator: one replica of the replicated metadata (node registry, users,
//! models, audit), answering city analysts' SQL over Flight SQL by federating it to the
//! nodes. It never holds raw records.
#![warn(missing_docs)]

mod analysts;
mod audit;
mod config;
mod models;
mod nodes;
mod registry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use sunlight_federation::{CityEngine, FederationConfig, Renewal, StandardsCheck};
use sunlight_flightsql::{FlightSqlEndpoint, FlightSqlServer, RunningServer, TokenTable};
use sunlight_meta::{
    AdminClient, Command, Faults, NodeRecord, Outcome, Replica, Role, admin_service, raft_service,
    token_sha256,
};
use sunlight_proto::v1::models_server::ModelsServer;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;

pub use config::{CoordinatorConfig, NodeEntry};
use registry::{ReplicatedRegistry, ReplicatedUsers};

/// A failure to start or run the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is incomplete or contradictory.
    #[error("invalid coordinator configuration: {0}")]
    Config(String),
    /// The configuration sources could not be read or merged.
    #[error("cannot load coordinator configuration: {0}")]
    ConfigLoad(#[from] Box<figment::Error>),
    /// The replicated metadata failed.
    #[error(transparent)]
    Meta(#[from] sunlight_meta::Error),
    /// The server could not bind or serve.
    #[error("cannot serve on {addr}: {source}")]
    Serve {
        /// The listen address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Result of the coordinator.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a replica joins its group when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Start from the replica's own disk (a restart, or a replica added by an admin).
    Restart,
    /// Create a new group of this one replica and write the bootstrap nodes and
    /// administrators from the config; a no-op for a group that already exists.
    Init,
    /// Ask the group at this address to add this replica.
    Join(String),
}

/// A coordinator serving on a bound address.
pub struct RunningCoordinator {
    /// The address the server listens on.
    pub addr: SocketAddr,
    /// This replica of the metadata.
    pub replica: Arc<Replica>,
    /// The federated engine.
    pub engine: Arc<CityEngine>,
    /// How the nodes' `subsidy_standards` compared at start.
    pub standards: Result<StandardsCheck, String>,
    server: RunningServer,
    schedule: Option<tokio::task::JoinHandle<()>>,
    standards_check: Option<tokio::task::JoinHandle<()>>,
    analyst_sync: tokio::task::JoinHandle<()>,
    /// Finding the persons nodes share, which starts with the coordinator.
    sharing: Option<tokio::task::JoinHandle<Renewal>>,
}

impl RunningCoordinator {
    /// Waits until the coordinator has found the persons nodes share, which it starts
    /// doing as it starts: what it found, the first time it is asked.
    pub async fn persons_shared(&mut self) -> Option<Renewal> {
        self.sharing.take()?.await.ok()
    }

    /// Stops accepting calls and waits for the server.
    pub async fn stop(self) -> Result<()> {
        let addr = self.addr.to_string();
        for task in [self.schedule, self.standards_check].into_iter().flatten() {
            task.abort();
        }
        self.analyst_sync.abort();
        if let Some(sharing) = self.sharing {
            sharing.abort();
        }
        let stopped = self.server.stop().await;
        self.replica.shutdown().await;
        stopped.map_err(|source| Error::Serve { addr, source })
    }
}

/// Starts a coordinator replica: opens its metadata, serves Flight SQL, admin, raft and
/// health on one address, joins or creates its group, and checks the nodes' reference
/// tables.
pub async fn start_coordinator(
    config: CoordinatorConfig,
    bootstrap: Bootstrap,
) -> Result<RunningCoordinator> {
    config.validate()?;
    if bootstrap == Bootstrap::Init && config.auth.tokens.is_empty() {
        return Err(Error::Config(
            "--init needs a bootstrap administrator token: pass --token or set [auth.tokens]"
                .into(),
        ));
    }
    let replica = Replica::open(&config.replica, Faults::default()).await?;
    let node_tls = config
        .node_tls
        .as_ref()
        .map(sunlight_flightsql::TlsFiles::client)
        .transpose()
        .map_err(|e| Error::Config(e.to_string()))?;
    let federation = FederationConfig {
        timeout: Duration::from_millis(config.fragment_timeout_ms),
        attempts: config.fragment_attempts,
        tls: node_tls.clone(),
        memory_limit_mb: config.memory_limit_mb,
    };
    let engine = CityEngine::new(Arc::new(ReplicatedRegistry(replica.clone())), federation);
    engine.set_audit(Arc::new(audit::ReplicatedAudit::new(replica.clone())));

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<FlightServiceServer<FlightSqlEndpoint<CityEngine>>>()
        .await;
    let flight = InterceptedService::new(
        FlightSqlServer::new(engine.clone()).into_service(),
        TokenTable::with(ReplicatedUsers(replica.clone())),
    );
    let analyst_sync = analysts::spawn_analyst_sync(replica.clone(), node_tls.clone());
    let runs = models::model_runs(replica.clone(), engine.clone(), node_tls);
    let routes = Routes::new(health_service)
        .add_service(flight)
        .add_service(admin_service(replica.clone()))
        .add_service(ModelsServer::from_arc(runs.clone()))
        .add_service(raft_service(replica.clone()));
    let tls = config
        .replica
        .tls
        .as_ref()
        .map(sunlight_flightsql::TlsFiles::open_server)
        .transpose()
        .map_err(|e| Error::Config(e.to_string()))?;
    let server = RunningServer::start_tls(config.listen, routes, tls)
        .await
        .map_err(|source| Error::Serve {
            addr: config.listen.to_string(),
            source,
        })?;
    let addr = server.addr();
    let advertise = config.advertise.clone().unwrap_or_else(|| addr.to_string());
    match &bootstrap {
        Bootstrap::Restart => {}
        Bootstrap::Init => {
            if replica.initialize(&advertise).await? {
                seed(&replica, &config).await?;
            }
        }
        Bootstrap::Join(peer) => {
            if !replica
                .status()
                .replicas
                .iter()
                .any(|r| r.id == replica.id())
            {
                AdminClient::new(std::slice::from_ref(peer), &config.replica.secret)?
                    .with_tls(replica.peer_tls())
                    .add_replica(replica.id(), &advertise)
                    .await?;
            }
        }
    }
    let standards = engine.check_standards().await.map_err(|e| e.to_string());
    // Nodes may still be numbering their persons; the set follows when they are done.
    let sharing = tokio::spawn({
        let engine = engine.clone();
        async move { engine.share_persons().await }
    });
    let schedule = (config.model_schedule_secs > 0)
        .then(|| models::spawn_schedule(runs, Duration::from_secs(config.model_schedule_secs)));
    let standards_check = (config.standards_check_secs > 0).then(|| {
        spawn_standards_check(
            engine.clone(),
            Duration::from_secs(config.standards_check_secs),
        )
    });
    tracing::info!(%addr, replica = replica.id(), "city coordinator serving");
    Ok(RunningCoordinator {
        addr,
        replica,
        engine,
        standards,
        server,
        schedule,
        standards_check,
        analyst_sync,
        sharing: Some(sharing),
    })
}

/// Reads the nodes' `subsidy_standards` again every `every`, so that the city follows a
/// copy most nodes changed.
fn spawn_standards_check(engine: Arc<CityEngine>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            if let Err(e) = engine.check_standards().await {
                tracing::warn!("subsidy_standards not read again: {e}");
            }
        }
    })
}

/// Writes the config's bootstrap nodes and administrators into a new group.
async fn seed(replica: &Replica, config: &CoordinatorConfig) -> Result<()> {
    let actor = replica.actor();
    let nodes = config.nodes.iter().map(|n| {
        Command::AddNode(NodeRecord {
            code: n.code.clone(),
            addr: n.addr.clone(),
            token: n.token.clone(),
        })
    });
    let users = config
        .auth
        .tokens
        .iter()
        .map(|(name, token)| Command::AddUser {
            name: name.clone(),
            role: Role::Administrator,
            node: None,
            token_sha256: token_sha256(token),
            expires_ms: None,
        });
    for command in nodes.chain(users) {
        if let Outcome::Refused(reason) = replica.propose(actor.clone(), command).await? {
            return Err(Error::Config(format!("bootstrap entry refused: {reason}")));
        }
    }
    Ok(())
}
