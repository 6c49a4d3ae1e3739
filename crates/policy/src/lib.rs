//! Privacy policy on the move: what each output column of a plan is made of, the egress
//! rules a node applies to every fragment before a byte leaves, the city's disclosure
//! rules on its answers, the person census behind minimum group sizes, and the keyed
//! tokens identifiers travel as.
//!
//! The rules, by column class (`DOMAIN.md`):
//! - class D leaves a node only as a keyed token; the city never shows one;
//! - class Q leaves only as a group key or inside an aggregate;
//! - every group that leaves counts at least k distinct persons (k = 5 unless a node
//!   raises it), smaller groups are suppressed, and an answer whose filter isolates
//!   fewer than k persons is refused.
#![warn(missing_docs)]

mod census;
mod differencing;
mod directory;
mod distinct;
mod egress;
mod lineage;
mod persons;
mod sketch;
#[cfg(test)]
mod test_plans;
mod tokens;

use std::fmt;

pub use differencing::{AnswerHistory, AnswerSketches};
pub use directory::{NO_PERSON, PersonDirectory};
pub use egress::{
    Ahead, Counted, DEFAULT_MIN_GROUP_SIZE, Egress, MAX_NAMED_GROUPS, NodePolicy, Released,
    WholeTable, too_few, treatments, whole_table,
};
pub use lineage::{Fragments, Grouping, Lineage, Tier, Traced, Treatment, city_answer, trace};
pub use sketch::{PersonKeys, PersonSketch};
pub use tokens::{TOKEN_BYTES, TOKEN_CHARS, Token, Tokenizer, as_planned, one_text_each};

/// The rule a refusal is made under; audit records name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Class-D identifiers never leave in clear.
    DirectIdentifier,
    /// Class-Q columns leave only as group keys or inside aggregates.
    QuasiIdentifier,
    /// The city answers aggregates only.
    AggregatesOnly,
    /// Every group counts at least k distinct persons.
    MinGroupSize,
    /// Two answers may not differ by fewer than k persons.
    Differencing,
    /// A plan whose columns or persons cannot be followed does not run.
    Untraceable,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::DirectIdentifier => "direct-identifier",
            Rule::QuasiIdentifier => "quasi-identifier",
            Rule::AggregatesOnly => "aggregates-only",
            Rule::MinGroupSize => "min-group-size",
            Rule::Differencing => "differencing",
            Rule::Untraceable => "untraceable",
        })
    }
}

/// A refused plan or answer, with the rule and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by rule {rule}: {message}")]
pub struct Refusal {
    /// The rule that refused.
    pub rule: Rule,
    /// What was refused, where, and what to do instead.
    pub message: String,
}

impl Refusal {
    /// A refusal under `rule`.
    pub fn new(rule: Rule, message: impl Into<String>) -> Self {
        Self {
            rule,
            message: message.into(),
        }
    }
}

/// Result of a policy check.
pub type Result<T, E = Refusal> = std::result::Result<T, E>;

/// Why a fragment's output was not released.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rule refused it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The fragment failed while running.
    #[error(transparent)]
    Failed(datafusion::error::DataFusionError),
}

impl From<datafusion::error::DataFusionError> for Error {
    /// A refusal the census made as the fragment ran is a refusal still.
    fn from(error: datafusion::error::DataFusionError) -> Self {
        match error.find_root() {
            datafusion::error::DataFusionError::External(e) => match e.downcast_ref::<Refusal>() {
                Some(refusal) => Self::Refused(refusal.clone()),
                None => Self::Failed(error),
            },
            _ => Self::Failed(error),
        }
    }
}
