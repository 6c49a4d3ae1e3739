//! The city coordinator: holds the node registry, answers city analysts' SQL over Flight
//! SQL by federating it to the nodes, and never holds raw records.
#![warn(missing_docs)]

mod config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use sunlight_federation::{
    CityEngine, FederationConfig, NodeEndpoint, StandardsCheck, StaticRegistry,
};
use sunlight_flightsql::{FlightSqlServer, RunningServer, TokenTable};
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;

pub use config::{CoordinatorConfig, NodeEntry};

/// A failure to start or run the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is incomplete or contradictory.
    #[error("invalid coordinator configuration: {0}")]
    Config(String),
    /// The configuration sources could not be read or merged.
    #[error("cannot load coordinator configuration: {0}")]
    ConfigLoad(#[from] Box<figment::Error>),
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

/// A coordinator serving on a bound address.
pub struct RunningCoordinator {
    /// The address the server listens on.
    pub addr: SocketAddr,
    /// The federated engine.
    pub engine: Arc<CityEngine>,
    /// How the nodes' `subsidy_standards` compared at start.
    pub standards: Result<StandardsCheck, String>,
    server: RunningServer,
}

impl RunningCoordinator {
    /// Stops accepting calls and waits for the server.
    pub async fn stop(self) -> Result<()> {
        let addr = self.addr.to_string();
        self.server
            .stop()
            .await
            .map_err(|source| Error::Serve { addr, source })
    }
}

/// Starts the coordinator: builds the registry, checks the nodes' reference tables and
/// serves Flight SQL and gRPC health.
pub async fn start_coordinator(config: CoordinatorConfig) -> Result<RunningCoordinator> {
    config.validate()?;
    let nodes = config
        .nodes
        .iter()
        .map(|n| {
            let code = n
                .code
                .parse()
                .map_err(|e: sunlight_domain::Error| Error::Config(e.to_string()))?;
            Ok(NodeEndpoint {
                code,
                addr: n.addr.clone(),
                token: n.token.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let federation = FederationConfig {
        timeout: Duration::from_millis(config.fragment_timeout_ms),
        attempts: config.fragment_attempts,
    };
    let engine = CityEngine::new(StaticRegistry::new(nodes), federation);
    let standards = engine.check_standards().await.map_err(|e| e.to_string());

    let tokens = TokenTable::new(&config.auth.tokens);
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<FlightServiceServer<FlightSqlServer<CityEngine>>>()
        .await;
    let flight = InterceptedService::new(
        FlightServiceServer::new(FlightSqlServer::new(engine.clone())),
        tokens,
    );
    let routes = Routes::new(health_service).add_service(flight);
    let server = RunningServer::start(config.listen, routes)
        .await
        .map_err(|source| Error::Serve {
            addr: config.listen.to_string(),
            source,
        })?;
    let addr = server.addr();
    tracing::info!(%addr, "city coordinator serving Flight SQL");
    Ok(RunningCoordinator {
        addr,
        engine,
        standards,
        server,
    })
}
