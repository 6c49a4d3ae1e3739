//! Errors of the command line.

use std::path::PathBuf;

/// A failed command, said so that the user knows what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags that do not fit together.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A result could not be encoded.
    #[error("cannot encode {path}: {reason}")]
    Encode {
        /// The output.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// A file to import breaks the contract.
    #[error("{} was not imported:\n  {}", path.display(), errors.join("\n  "))]
    NotImported {
        /// The CSV or Parquet file.
        path: PathBuf,
        /// Each problem, with its line (or row) and column where there is one.
        errors: Vec<String>,
    },
    /// Writing to the data root failed.
    #[error("cannot write {location}: {reason}")]
    Store {
        /// The object's URL.
        location: String,
        /// The cause.
        reason: String,
    },
    /// The rows of a file were imported into the data root before.
    #[error("the same rows were imported before, as {location}: nothing was written")]
    AlreadyImported {
        /// The URL of the earlier import.
        location: String,
    },
    /// Payments of a file are held already in a file of the data root.
    #[error(
        "{count} payment_id(s) of these rows, {first:?} first, are held already in {location}: \
         a payment_id is unique, so nothing was written"
    )]
    PaymentsHeld {
        /// The URL of the file that holds them.
        location: String,
        /// How many.
        count: usize,
        /// The first of them.
        first: String,
    },
    /// The replicated metadata refused a change.
    #[error("refused: {0}")]
    Refused(String),
    /// A call to the coordinator's metadata failed.
    #[error(transparent)]
    Meta(#[from] sunlight_meta::Error),
    /// A model package is malformed or unsafe.
    #[error(transparent)]
    Model(#[from] sunlight_models::Error),
    /// The domain rejected an input.
    #[error(transparent)]
    Domain(#[from] sunlight_domain::Error),
    /// Generating the synthetic city failed.
    #[error(transparent)]
    Datagen(#[from] sunlight_datagen::Error),
    /// A node failed to start or serve.
    #[error(transparent)]
    Node(#[from] sunlight_node::Error),
    /// The coordinator failed to start or serve.
    #[error(transparent)]
    Coordinator(#[from] sunlight_coordinator::Error),
    /// A call to a service failed.
    #[error(transparent)]
    Client(#[from] sunlight_client::Error),
    /// The user interrupted the command (Ctrl-C or SIGTERM); says what was left.
    #[error("interrupted: {0}")]
    Interrupted(String),
}

impl Error {
    /// The process's exit status for this error: 130 for an interrupt, as shells give a
    /// command Ctrl-C ended, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Interrupted(_) => 130,
            _ => 1,
        }
    }
}

/// Result of the command line.
pub type Result<T, E = Error> = std::result::Result<T, E>;
