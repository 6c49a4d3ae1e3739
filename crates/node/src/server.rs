//! Starting and stopping a node's gRPC server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use sha2::{Digest, Sha256};
use sunlight_flightsql::{
    Credentials, FlightSqlEndpoint, FlightSqlServer, RunningServer, TokenTable,
};
use sunlight_policy::{NodePolicy, PersonDirectory};
use sunlight_proto::v1::node_service_server::NodeServiceServer;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;

use crate::audit::NodeAudit;
use crate::catalog::{DataRoot, NodeCatalog};
use crate::config::NodeConfig;
use crate::describe::NodeControl;
use crate::node::{Node, Privacy};
use crate::persons::number_persons;
use crate::served::{Served, watch};
use crate::{Error, Result};

/// Largest model step message, either way: a county's linkage tokens, 16 bytes a row.
const MAX_MODEL_MESSAGE: usize = 1 << 30;

/// A node serving on a bound address.
pub struct RunningNode {
    /// The address the server listens on.
    pub addr: SocketAddr,
    served: Arc<Served>,
    server: RunningServer,
}

impl RunningNode {
    /// The node's data and tables, as it serves them now.
    pub fn node(&self) -> Arc<Node> {
        self.served.node()
    }

    /// Waits until the node has numbered the persons of its tables, which it starts
    /// doing in the background as it starts serving.
    pub async fn persons_numbered(&self) {
        number_persons(self.node()).await;
    }

    /// Stops accepting calls, lets calls in flight finish and waits for the server.
    pub async fn stop(self) -> Result<()> {
        let addr = self.addr.to_string();
        self.server
            .stop()
            .await
            .map_err(|source| Error::Serve { addr, source })
    }
}

/// The node's users: those of its config, then the county analysts the city registered
/// for it. Every refused call goes to the access log.
struct NodeUsers {
    tokens: BTreeMap<String, String>,
    served: Arc<Served>,
}

impl Credentials for NodeUsers {
    fn user(&self, token: &str) -> Result<String, tonic::Status> {
        self.tokens.user(token).or_else(|unknown| {
            let now_ms = chrono::Utc::now().timestamp_millis();
            self.served
                .node()
                .analysts()
                .user(token, now_ms)
                .unwrap_or(Err(unknown))
        })
    }

    fn refused(&self, token: Option<&str>, reason: &str) {
        let detail = token
            .map(|t| format!("token sha256 {}", &hex::encode(Sha256::digest(t))[..12]))
            .unwrap_or_default();
        self.served.node().audit().record(
            "unknown",
            "access",
            &detail,
            &format!("refused: {reason}"),
        );
    }
}

/// Loads the node's tables, binds `config.listen` and starts serving Flight SQL,
/// fragments, the node service and gRPC health.
pub async fn start_node(config: NodeConfig) -> Result<RunningNode> {
    config.validate()?;
    let code = config.node_code()?;
    let root = DataRoot::open(&config.data, &config.s3)?;
    let catalog = NodeCatalog::load(&root, config.partitions, config.memory_limit_mb).await?;
    let privacy = Privacy {
        policy: NodePolicy {
            min_group_size: config.privacy.min_group_size,
            persons: Arc::new(PersonDirectory::new(config.linkage.tokenizer())),
        },
        city_users: config.auth.city.clone(),
        local_analysts_only: config.auth.local_analysts_only,
    };
    let audit = NodeAudit::open(config.audit_log.as_deref())?;
    let served = Arc::new(Served::new(Node::new(code, catalog, privacy, audit)?, root));

    let tokens = TokenTable::with(NodeUsers {
        tokens: config.auth.tokens.clone(),
        served: served.clone(),
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<FlightServiceServer<FlightSqlEndpoint<Served>>>()
        .await;
    let flight = InterceptedService::new(
        FlightSqlServer::new(served.clone()).into_service(),
        tokens.clone(),
    );
    // Token sets of a county run to tens of megabytes.
    let control = InterceptedService::new(
        NodeServiceServer::new(NodeControl::new(served.clone(), config.linkage.clone()))
            .max_decoding_message_size(MAX_MODEL_MESSAGE)
            .max_encoding_message_size(MAX_MODEL_MESSAGE),
        tokens,
    );
    let routes = Routes::new(health_service)
        .add_service(flight)
        .add_service(control);
    let tls = config
        .tls
        .as_ref()
        .map(sunlight_flightsql::TlsFiles::server)
        .transpose()
        .map_err(|e| Error::Config(e.to_string()))?;
    let server = RunningServer::start_tls(config.listen, routes, tls)
        .await
        .map_err(|source| Error::Serve {
            addr: config.listen.to_string(),
            source,
        })?;
    let addr = server.addr();
    tracing::info!(node = %code, %addr, "serving Flight SQL");
    tokio::spawn(number_persons(served.node()));
    let every = Duration::from_secs(config.rescan_seconds);
    tokio::spawn(watch(Arc::downgrade(&served), every));
    Ok(RunningNode {
        addr,
        served,
        server,
    })
}
