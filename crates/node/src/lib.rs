//! A county node: keeps its own Parquet tables in an object store, checks them against
//! the data contract, answers SQL from the county's analysts over Arrow Flight SQL and
//! runs the plan fragments the city sends.
#![warn(missing_docs)]

mod analysts;
mod audit;
mod catalog;
mod check;
mod compute;
mod computed_once;
mod config;
mod county_guard;
mod date_difference;
mod describe;
mod engine;
mod error;
mod fragment;
mod hits;
mod models;
mod node;
mod once;
mod optimize;
mod parallel;
mod persons;
mod proven;
mod quality;
mod served;
mod server;
mod shared;

pub use audit::{AccessRecord, NodeAudit, verify_access_log};
pub use catalog::{DataRoot, NodeCatalog, PARQUET_MAGIC, TableProblem, TableState};
pub use check::check_fragment;
pub use config::{AuthConfig, LinkageConfig, NodeConfig, PrivacyConfig, S3Config};
pub use describe::NodeControl;
pub use error::{Error, Result};
pub use hits::{
    HitTables, MODEL_HITS, MODEL_OUTCOMES, MODEL_VERSIONS, hits_schema, outcomes_schema,
    versions_schema,
};
pub use models::ModelRunner;
pub use node::Node;
pub use quality::data_quality;
pub use served::Served;
pub use server::{RunningNode, start_node};
