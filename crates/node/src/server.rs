//! Starting and stopping a node's gRPC server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use sunlight_proto::v1::node_service_server::NodeServiceServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::auth::TokenTable;
use crate::catalog::{DataRoot, NodeCatalog};
use crate::config::NodeConfig;
use crate::describe::NodeDescriber;
use crate::flight_sql::NodeFlightSql;
use crate::node::Node;
use crate::{Error, Result};

/// A node serving on a bound address.
pub struct RunningNode {
    /// The address the server listens on.
    pub addr: SocketAddr,
    /// The node's data and tables.
    pub node: Arc<Node>,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<Result<()>>,
}

impl RunningNode {
    /// Stops accepting calls, lets calls in flight finish and waits for the server.
    pub async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(());
        self.server.await.unwrap_or(Ok(()))
    }

    /// Serves until `signal` resolves, then shuts down gracefully.
    pub async fn serve_until(self, signal: impl Future<Output = ()>) -> Result<()> {
        signal.await;
        tracing::info!(node = %self.node.code(), "shutting down");
        self.stop().await
    }
}

/// Loads the node's tables, binds `config.listen` and starts serving Flight SQL and
/// gRPC health.
pub async fn start_node(config: NodeConfig) -> Result<RunningNode> {
    config.validate()?;
    let code = config.node_code()?;
    let root = DataRoot::open(&config.data, &config.s3)?;
    let catalog = NodeCatalog::load(&root).await?;
    let node = Arc::new(Node::new(code, catalog));

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Serve {
            addr: config.listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Serve {
        addr: config.listen.to_string(),
        source,
    })?;

    let (health, health_service) = tonic_health::server::health_reporter();
    let flight = FlightServiceServer::new(NodeFlightSql::new(node.clone()));
    health
        .set_serving::<FlightServiceServer<NodeFlightSql>>()
        .await;
    let tokens = TokenTable::new(&config.auth.tokens);
    let flight = tonic::service::interceptor::InterceptedService::new(flight, tokens.clone());
    let describe = NodeServiceServer::with_interceptor(NodeDescriber::new(node.clone()), tokens);

    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(flight)
            .add_service(describe)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .map_err(|e| Error::Serve {
                addr: addr.to_string(),
                source: std::io::Error::other(e),
            })
    });
    tracing::info!(node = %code, %addr, "serving Flight SQL");
    Ok(RunningNode {
        addr,
        node,
        shutdown,
        server,
    })
}
