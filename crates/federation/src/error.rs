//! Errors of federated queries.

use datafusion::error::DataFusionError;
use sunlight_client::STALE_SHARED;
use sunlight_domain::NodeCode;

/// A failure of a federated query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A node failed to answer a fragment, which fails the query.
    #[error("{0}{advice}", advice = advice(.0))]
    Node(#[from] NodeError),
    /// A fragment the nodes would refuse, found before any node is asked.
    #[error("a node would refuse this query's fragment: {0}")]
    NotAtNodes(String),
    /// The reference table could not be loaded from any node.
    #[error("subsidy_standards is unavailable at the city: {0}")]
    Standards(String),
    /// The city's disclosure rules refused the answer.
    #[error("city disclosure control: {0}")]
    Refused(#[from] sunlight_policy::Refusal),
    /// Planning or merging failed.
    #[error("{0}")]
    Query(#[from] DataFusionError),
}

/// A node's failure to answer a fragment. It holds only what the node said, so that each
/// copy of a fragment that shares the node's answer reads its failure as well.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// A node could not be reached or its stream broke.
    #[error("node {node} ({addr}) is unavailable: {reason}")]
    Unavailable {
        /// The node.
        node: NodeCode,
        /// Its Flight address.
        addr: String,
        /// What happened.
        reason: String,
    },
    /// A node answered with an error: it refused the fragment, or running it failed.
    #[error("node {node} ({addr}) {} the fragment ({code:?}): {message}", outcome(.code))]
    Failed {
        /// The node.
        node: NodeCode,
        /// Its Flight address.
        addr: String,
        /// The node's status code.
        code: tonic::Code,
        /// The node's message.
        message: String,
    },
    /// A node did not finish within the deadline.
    #[error("node {node} ({addr}) did not answer within {seconds:.1}s")]
    Deadline {
        /// The node.
        node: NodeCode,
        /// Its Flight address.
        addr: String,
        /// The deadline.
        seconds: f64,
    },
}

/// What a query that a node down or slow failed advises; a partial answer, which lists
/// the node as missing with its [`NodeError`], has no need of it.
fn advice(e: &NodeError) -> &'static str {
    match e {
        NodeError::Unavailable { .. } | NodeError::Deadline { .. } => {
            "; retry later, or ask for partial results"
        }
        NodeError::Failed { .. } => "",
    }
}

impl NodeError {
    /// Whether the node refused a fragment for naming a shared-person epoch it does not
    /// hold.
    pub fn is_stale_shared(&self) -> bool {
        matches!(self, NodeError::Failed { message, .. } if message.starts_with(STALE_SHARED))
    }
}

/// What a node's error `code` says it did with a fragment.
fn outcome(code: &tonic::Code) -> &'static str {
    match code {
        tonic::Code::PermissionDenied
        | tonic::Code::Unauthenticated
        | tonic::Code::FailedPrecondition => "refused",
        _ => "failed running",
    }
}

/// Result of federated queries.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether a node refused a fragment for naming a shared-person epoch it does not
    /// hold, directly or as the cause of a failed query.
    pub fn is_stale_shared(&self) -> bool {
        match self {
            Error::Node(e) => e.is_stale_shared(),
            Error::Query(e) => match e.find_root() {
                DataFusionError::External(e) => e
                    .downcast_ref::<Error>()
                    .is_some_and(Error::is_stale_shared),
                _ => false,
            },
            _ => false,
        }
    }

    /// Wraps the error for DataFusion's streams.
    pub fn into_datafusion(self) -> DataFusionError {
        match self {
            Error::Query(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

/// Finds a federation error inside a DataFusion error.
fn federation_error(e: &DataFusionError) -> Option<&Error> {
    match e {
        DataFusionError::External(inner) => inner.downcast_ref::<Error>(),
        DataFusionError::Context(_, inner) => federation_error(inner),
        DataFusionError::Shared(inner) => federation_error(inner),
        DataFusionError::ArrowError(inner, _) => match inner.as_ref() {
            arrow::error::ArrowError::ExternalError(e) => e
                .downcast_ref::<DataFusionError>()
                .and_then(federation_error)
                .or_else(|| e.downcast_ref::<Error>()),
            _ => None,
        },
        _ => None,
    }
}

/// The gRPC status of a failed city query.
pub fn status_of(e: &DataFusionError) -> tonic::Status {
    if let Some(f) = federation_error(e) {
        let message = f.to_string();
        return match f {
            Error::Node(NodeError::Unavailable { .. }) | Error::Standards(_) => {
                tonic::Status::unavailable(message)
            }
            Error::Node(NodeError::Deadline { .. }) => tonic::Status::deadline_exceeded(message),
            Error::Node(NodeError::Failed { code, .. }) => tonic::Status::new(*code, message),
            Error::Refused(_) | Error::NotAtNodes(_) => tonic::Status::permission_denied(message),
            Error::Query(_) => tonic::Status::internal(message),
        };
    }
    sunlight_flightsql::query_status(e)
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        status_of(&e.into_datafusion())
    }
}
