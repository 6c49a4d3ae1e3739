//! Errors of the metadata replicas and their mapping to gRPC status codes.

use std::path::PathBuf;

use tonic::metadata::MetadataValue;

use crate::types::ReplicaId;

/// Metadata header carrying the leader's address when a replica redirects a write.
pub const LEADER_HEADER: &str = "sunlight-leader";

/// A failure of a metadata replica or of a call to one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data directory cannot be created or read.
    #[error("cannot use replica data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The replica's file is damaged or belongs to another replica.
    #[error(
        "replica data {} is unusable: {reason}; move it aside and start the replica with --join to rebuild it from its peers",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another running replica holds the file.
    #[error("replica data {} is in use by another running replica", path.display())]
    InUse {
        /// The file.
        path: PathBuf,
    },
    /// This replica is not the leader.
    #[error("replica {replica} is not the leader; {}", match leader { Some((id, addr)) => format!("the leader is replica {id} at {addr}"), None => "no leader is elected yet".to_string() })]
    NotLeader {
        /// The replica asked.
        replica: ReplicaId,
        /// The leader, if known.
        leader: Option<(ReplicaId, String)>,
    },
    /// A raft call came from a replica outside the membership.
    #[error("raft call from unknown peer {peer}; add it with `sunlight admin cluster add-replica`")]
    UnknownPeer {
        /// The caller's replica id.
        peer: ReplicaId,
    },
    /// The caller is not allowed to do this.
    #[error("{0}")]
    Denied(String),
    /// The caller presented no valid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// The request is malformed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Raft refused or failed the operation.
    #[error("raft: {0}")]
    Raft(String),
    /// A peer replica could not be reached.
    #[error("cannot reach replica at {addr}: {message}")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// What happened.
        message: String,
    },
    /// A replica answered with an error.
    #[error("replica at {addr} answered {code:?}: {message}")]
    Remote {
        /// The replica's address.
        addr: String,
        /// gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The server could not bind or serve.
    #[error("cannot serve: {0}")]
    Serve(#[from] std::io::Error),
}

/// Result of the metadata crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            // The header is always there, empty while no leader is known: clients retry
            // exactly these answers.
            Error::NotLeader { leader, .. } => {
                let mut status = tonic::Status::failed_precondition(message);
                let addr = leader.map(|(_, addr)| addr).unwrap_or_default();
                let value = MetadataValue::try_from(addr)
                    .unwrap_or_else(|_| MetadataValue::from_static(""));
                status.metadata_mut().insert(LEADER_HEADER, value);
                status
            }
            Error::UnknownPeer { .. } | Error::Denied(_) => {
                tonic::Status::permission_denied(message)
            }
            Error::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            Error::Invalid(_) => tonic::Status::invalid_argument(message),
            Error::Unreachable { .. } => tonic::Status::unavailable(message),
            Error::Remote { code, .. } => tonic::Status::new(code, message),
            Error::DataDir { .. }
            | Error::Corrupt { .. }
            | Error::InUse { .. }
            | Error::Raft(_)
            | Error::Serve(_) => tonic::Status::internal(message),
        }
    }
}
