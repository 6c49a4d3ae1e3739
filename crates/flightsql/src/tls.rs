//! TLS from PEM files (see `deploy/certs.sh` for a development CA): mutual TLS between
//! the coordinator and the nodes, and server TLS from the coordinator to its clients and
//! between its replicas.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The name node certificates carry, which the coordinator checks whatever the address.
pub const NODE_TLS_NAME: &str = "sunlight-node";
/// The name coordinator certificates carry, which clients and replicas check.
pub const COORDINATOR_TLS_NAME: &str = "sunlight-coordinator";

/// A certificate, its key and the CA that signs the other side's certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFiles {
    /// This side's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA the other side's certificate must chain to (PEM).
    pub ca: PathBuf,
}

impl TlsFiles {
    fn read(path: &Path, what: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot read TLS {what} {}: {e}", path.display()),
            )
        })
    }

    fn identity(&self) -> std::io::Result<Identity> {
        Ok(Identity::from_pem(
            Self::read(&self.cert, "certificate")?,
            Self::read(&self.key, "key")?,
        ))
    }

    /// A server that admits only clients with a certificate from `ca`.
    pub fn server(&self) -> std::io::Result<ServerTlsConfig> {
        Ok(ServerTlsConfig::new()
            .identity(self.identity()?)
            .client_ca_root(Certificate::from_pem(Self::read(&self.ca, "CA")?)))
    }

    /// A server for clients that authenticate with tokens rather than certificates.
    pub fn open_server(&self) -> std::io::Result<ServerTlsConfig> {
        Ok(ServerTlsConfig::new().identity(self.identity()?))
    }

    /// A client presenting this certificate to nodes whose certificate chains to `ca`.
    pub fn client(&self) -> std::io::Result<ClientTlsConfig> {
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(Self::read(&self.ca, "CA")?))
            .identity(self.identity()?)
            .domain_name(NODE_TLS_NAME))
    }
}

/// A client that checks the server's certificate chains to `ca` and names `name`.
pub fn trust(ca: &Path, name: &str) -> std::io::Result<ClientTlsConfig> {
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(TlsFiles::read(ca, "CA")?))
        .domain_name(name))
}

/// An endpoint for `addr` (`host:port`), over TLS when `tls` is given.
pub fn endpoint(
    addr: &str,
    tls: Option<&ClientTlsConfig>,
) -> Result<Endpoint, tonic::transport::Error> {
    match tls {
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.clone()),
        None => Endpoint::from_shared(format!("http://{addr}")),
    }
}
