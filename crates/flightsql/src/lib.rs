//! The Arrow Flight SQL service of Sunlight's nodes and of the city, over any
//! [`SqlEngine`], with bearer-token authentication of every call.
#![warn(missing_docs)]

mod alternatives;
mod analyzer;
mod auth;
mod bound;
mod catalog;
mod endpoint;
mod memory;
mod panics;
mod server;
mod service;
mod session;
mod session_sql;
mod set_comparison;
mod similar_to;
mod statement;
mod status;
mod subquery_conditions;
mod tls;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::Any;
use futures::stream::BoxStream;
use tonic::Status;
use tonic::metadata::MetadataMap;

pub use analyzer::analyzer_rules;
pub use auth::{Caller, Credentials, TokenTable, same_secret};
pub use endpoint::{FlightSqlEndpoint, MAX_REQUEST};
pub use memory::memory_pool;
pub use panics::{panic_message, too_large};
pub use server::RunningServer;
pub use service::{CATALOG, FlightSqlServer, SCHEMA};
pub use session::{AnswerNote, NoteKind, SESSION_COOKIE, SessionOption};
pub use statement::{
    MAX_NESTING, MAX_RELATIONS, Statement, StatementSchemas, parse, plan_parsed, require_values,
    session_config,
};
pub use status::query_status;
pub use tls::{COORDINATOR_TLS_NAME, NODE_TLS_NAME, TlsFiles, endpoint, trust};

/// Record batches of a result, with errors already mapped to gRPC statuses.
pub type BatchStream = BoxStream<'static, Result<RecordBatch, Status>>;

/// A query's answer: its schema, its batches and response headers (e.g. the nodes that
/// did not answer, in partial mode).
pub struct Answer {
    /// Schema of every batch.
    pub schema: SchemaRef,
    /// The batches.
    pub batches: BatchStream,
    /// Headers sent before the first batch.
    pub headers: MetadataMap,
}

/// A table as the catalog calls describe it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Its name.
    pub name: String,
    /// Its columns.
    pub schema: SchemaRef,
    /// The columns of its declared primary key, in key order; empty when it has none.
    pub primary_key: Vec<String>,
}

impl TableInfo {
    /// Table `name` with columns `schema`, keyed by `primary_key`.
    pub fn new(name: &str, schema: SchemaRef, primary_key: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            schema,
            primary_key: primary_key.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Who asks, and the request headers they sent.
#[derive(Debug, Clone)]
pub struct QueryRequest {
    /// The authenticated caller.
    pub caller: Caller,
    /// Request metadata, for options such as partial results.
    pub headers: MetadataMap,
}

/// An engine that answers SQL: a node's local context or the city's federation.
#[tonic::async_trait]
pub trait SqlEngine: Send + Sync + 'static {
    /// Name reported in `GetSqlInfo`, e.g. `sunlight node 140215`.
    fn server_name(&self) -> String;

    /// The schemas of what `statement` would return and of the values it takes.
    async fn schema(
        &self,
        statement: &Statement,
        request: &QueryRequest,
    ) -> Result<StatementSchemas, Status>;

    /// Runs `statement`.
    async fn execute(
        &self,
        statement: &Statement,
        request: &QueryRequest,
    ) -> Result<Answer, Status>;

    /// Each table a client may query.
    async fn tables(&self) -> Result<Vec<TableInfo>, Status>;

    /// The options a client may set for its session (Flight SQL's `SetSessionOptions`).
    fn session_options(&self) -> &'static [SessionOption] {
        &[]
    }

    /// What the response headers of an answer tell of it, which a session keeps for its
    /// last answer (Flight SQL's `GetSessionOptions`).
    fn answer_notes(&self) -> &'static [AnswerNote] {
        &[]
    }

    /// Serves a ticket that is not a Flight SQL command (the node's plan fragments).
    async fn do_get_other(&self, ticket: Any, request: &QueryRequest) -> Result<Answer, Status> {
        let _ = request;
        Err(Status::unimplemented(format!(
            "unsupported ticket type {}",
            ticket.type_url
        )))
    }
}
