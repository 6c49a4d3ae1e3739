//! The data contract of Sunlight: the tables of `DOMAIN.md` as Arrow schemas with their
//! column classes, the node codes, the default subsidy standards and the rules of
//! GB 11643 resident identity numbers.
#![warn(missing_docs)]

mod error;
mod models;
mod node;
mod resident_id;
mod schema;
mod standards;

pub use error::{Error, Result};
pub use models::ProblemModel;
pub use node::{NODES, NodeCode, NodeInfo};
pub use resident_id::{FormProblem, ResidentId, birth_date_part, form_problem, full_years_between};
pub use schema::{CLASS_METADATA_KEY, ColumnClass, NAMED_VALUES, Table, column_class};
pub use standards::{SubsidyStandard, default_standards, standards_batch, standards_sha256};

/// Days from 1970-01-01 to `date`, the representation of Arrow's `Date32`.
pub fn date32(date: chrono::NaiveDate) -> i32 {
    (date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid epoch")).num_days() as i32
}

/// The date an Arrow `Date32` value stands for.
pub fn from_date32(days: i32) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid epoch")
        + chrono::Duration::days(i64::from(days))
}
