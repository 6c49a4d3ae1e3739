//! Mutual TLS between the coordinator and the nodes, from PEM files (see
//! `deploy/certs.sh` for a development CA).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The name node certificates carry, which the coordinator checks whatever the address.
pub const NODE_TLS_NAME: &str = "sunlight-node";

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
    fn read(path: &PathBuf, what: &str) -> std::io::Result<Vec<u8>> {
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

    /// A client presenting this certificate to nodes whose certificate chains to `ca`.
    pub fn client(&self) -> std::io::Result<ClientTlsConfig> {
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(Self::read(&self.ca, "CA")?))
            .identity(self.identity()?)
            .domain_name(NODE_TLS_NAME))
    }
}

/// An endpoint for `addr` (`host:port`), over mutual TLS when `tls` is given.
pub fn endpoint(
    addr: &str,
    tls: Option<&ClientTlsConfig>,
) -> Result<Endpoint, tonic::transport::Error> {
    match tls {
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.clone()),
        None => Endpoint::from_shared(format!("http://{addr}")),
    }
}
