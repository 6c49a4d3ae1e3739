//! The one place where a node decides whether a fragment from the city may run: known
//! tables only, read-only operators only, and allow-listed functions only. The lists are
//! the fragment crate's, which the city checks its fragments by too.

use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;

use crate::{Error, Result};

/// Refuses a fragment with an operator, function or aggregate outside the allow-lists,
/// or one that sends the partial state of an aggregate computed only whole.
pub fn check_fragment(plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    match sunlight_fragment::refusal(plan)? {
        Some(reason) => Err(Error::FragmentRefused(reason)),
        None => Ok(()),
    }
}
