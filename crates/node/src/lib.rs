//! A county node: keeps its own Parquet tables in an object store, checks them against
//! the data contract, and answers SQL from the county's analysts over Arrow Flight SQL.
#![warn(missing_docs)]

mod auth;
mod catalog;
mod config;
mod describe;
mod error;
mod flight_sql;
mod node;
mod server;

pub use auth::{Caller, TokenTable};
pub use catalog::{
    CATALOG, DataRoot, NodeCatalog, SCHEMA, TableProblem, TableState, compare_schema,
};
pub use config::{AuthConfig, NodeConfig, S3Config};
pub use describe::NodeDescriber;
pub use error::{Error, Result};
pub use node::Node;
pub use server::{RunningNode, start_node};
