//! Federated SQL at the city tier. Each contract table is the union of that table on
//! every node; DataFusion plans the query at the city, [`PushToNodes`] cuts the plan into
//! per-node fragments that travel as datafusion-proto plans over Arrow Flight, and the
//! city merges the partial results that come back.
#![warn(missing_docs)]

mod alike;
mod approx_distinct;
mod by_county;
mod city;
mod class;
mod control;
mod count_filter;
mod distinct_rows;
mod distinct_text;
mod distinct_values;
mod error;
mod fragment_exec;
mod in_subquery;
mod joined_groups;
mod kept_reference;
mod prepared;
mod pushdown;
mod reference;
mod registry;
mod shared;
mod table;
#[cfg(test)]
mod test_rules;
mod window_groups;

pub use city::{CityEngine, FederationConfig, QueryAudit, QueryEvent, StandardsCheck};
pub use control::{MISSING_HEADER, PARTIAL_HEADER, QueryControl, Transfer};
pub use error::{Error, NodeError, Result, status_of};
pub use fragment_exec::NodeFragmentExec;
pub use pushdown::PushToNodes;
pub use registry::{NodeEndpoint, NodeRegistry, StaticRegistry};
pub use shared::Renewal;
