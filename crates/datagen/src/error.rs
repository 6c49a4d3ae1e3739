//! Errors of the generator.

use std::path::PathBuf;

/// A failure to write the synthetic city.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A folder or file could not be created or written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path being written.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Parquet encoding failed.
    #[error("cannot encode {path} as Parquet: {source}")]
    Parquet {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        source: parquet::errors::ParquetError,
    },
    /// A ground-truth file that does not parse.
    #[error("cannot read ground truth {path}: {source}")]
    Truth {
        /// The file read.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

/// Result of the generator.
pub type Result<T, E = Error> = std::result::Result<T, E>;
