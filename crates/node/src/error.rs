//! Errors of the node and their gRPC status codes.

use datafusion::error::DataFusionError;
use sunlight_client::STALE_SHARED;
use sunlight_domain::Table;

use crate::catalog::TableProblem;

/// A failure of the node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is incomplete or contradictory.
    #[error("invalid node configuration: {0}")]
    Config(String),
    /// The configuration sources could not be read or merged.
    #[error("cannot load node configuration: {0}")]
    ConfigLoad(#[from] Box<figment::Error>),
    /// The data root is not a usable object store URL.
    #[error("data root {url:?} is not usable: {reason}")]
    DataRoot {
        /// The configured URL or path.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Listing, reading or writing the object store failed.
    #[error("the data root's store failed at {location}: {source}")]
    Store {
        /// The URL of the object or folder.
        location: String,
        /// The cause.
        source: object_store::Error,
    },
    /// A query touched a table whose files the node refused when it checked them.
    #[error("table {table} is not served by this node: {}", describe(.problems))]
    TableRefused {
        /// The refused table.
        table: Table,
        /// What was wrong with its files.
        problems: Vec<TableProblem>,
    },
    /// The threads that compute queries could not be started.
    #[error("cannot start the node's query threads: {0}")]
    Threads(std::io::Error),
    /// The node failed while running a fragment: a fault of its own, not the query's.
    #[error("the node failed while running the fragment: {0}")]
    Failed(String),
    /// A fragment's answer would not fit the node's arrays.
    #[error("the node {0}")]
    TooLarge(String),
    /// The node's files no longer hold what a running query relies on.
    #[error("{0}")]
    Data(String),
    /// A query reads files that are gone or changed since the node checked them.
    #[error(
        "{}; the node serves its files as they are now once it has checked them again, \
         at its next listing of them (every rescan_seconds)",
        describe(.0)
    )]
    FilesChanged(Vec<TableProblem>),
    /// The query failed to parse, plan or run.
    #[error("{0}")]
    Query(#[from] DataFusionError),
    /// The server could not bind or serve.
    #[error("cannot serve on {addr}: {source}")]
    Serve {
        /// The listen address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A fragment addressed to another node.
    #[error("this is node {expected}; the fragment is for node {found}")]
    WrongNode {
        /// This node's code.
        expected: String,
        /// The code in the ticket.
        found: String,
    },
    /// A fragment reads the reference table, and this node's copy is not the city's.
    #[error(
        "this node's subsidy_standards (sha256 {found:.12}…) is not the copy the city reads \
         (sha256 {expected:.12}…), so its joins with it would not give the city's answer; give \
         this node the copy the other nodes hold, or, where most nodes' copies changed, wait \
         for the city's coordinator to read them again (each minute by default)"
    )]
    OtherStandards {
        /// The digest of the city's copy.
        expected: String,
        /// The digest of this node's copy.
        found: String,
    },
    /// A call that only the city's coordinator may make.
    #[error("{0}")]
    NotCity(String),
    /// A fragment counts with a shared-person set this node process does not hold.
    #[error(
        "{STALE_SHARED} {epoch:016x}: this process of the node does not hold it, as it \
         started after the city found the persons that nodes share; the city counts again \
         without it"
    )]
    StaleShared {
        /// The epoch the fragment names.
        epoch: u64,
    },
    /// A fragment failed the node's check.
    #[error("fragment refused: {0}")]
    FragmentRefused(String),
    /// The egress guard refused what a fragment would send.
    #[error("node egress guard: {0}")]
    Egress(#[from] sunlight_policy::Refusal),
    /// An Arrow encoding step failed.
    #[error("cannot encode the result: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A model step cannot run here.
    #[error("model {model}: {reason}")]
    Model {
        /// Model id.
        model: String,
        /// Why.
        reason: String,
    },
}

fn describe(problems: &[TableProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Result of the node.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<figment::Error> for Error {
    fn from(e: figment::Error) -> Self {
        Error::ConfigLoad(Box::new(e))
    }
}

impl Error {
    /// This error, raised while a query runs, as DataFusion carries it.
    pub(crate) fn into_datafusion(self) -> DataFusionError {
        DataFusionError::External(Box::new(self))
    }

    fn status(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            Error::Query(df) => {
                let raised = match df.find_root() {
                    DataFusionError::External(e) => e.downcast_ref::<Error>(),
                    _ => None,
                };
                raised.map_or_else(|| sunlight_flightsql::query_status(df), Error::status)
            }
            Error::TableRefused { .. }
            | Error::Data(_)
            | Error::FilesChanged(_)
            | Error::Model { .. }
            | Error::OtherStandards { .. }
            | Error::StaleShared { .. }
            | Error::Config(_)
            | Error::ConfigLoad(_)
            | Error::DataRoot { .. } => tonic::Status::failed_precondition(message),
            Error::WrongNode { .. }
            | Error::NotCity(_)
            | Error::FragmentRefused(_)
            | Error::Egress(_) => tonic::Status::permission_denied(message),
            Error::Store { .. } => tonic::Status::unavailable(message),
            Error::TooLarge(_) => tonic::Status::resource_exhausted(message),
            Error::Serve { .. } | Error::Threads(_) | Error::Arrow(_) | Error::Failed(_) => {
                tonic::Status::internal(message)
            }
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        e.status()
    }
}

impl From<sunlight_policy::Error> for Error {
    fn from(error: sunlight_policy::Error) -> Self {
        match error {
            sunlight_policy::Error::Refused(refusal) => Error::Egress(refusal),
            sunlight_policy::Error::Failed(e) => Error::Query(e),
        }
    }
}
