//! [`AlikeFragmentsOnce`]: the physical optimizer rule that has a plan ask each node once
//! for fragments it holds more than once.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;

use crate::fragment_exec::{Answers, NodeFragmentExec};

/// Where the plan holds alike fragments, has them share their nodes' answers, so that each
/// node runs the fragment once. A join that keeps or tests groups across counties reads
/// them twice, as rows and inside the groups matched with them (`SELECT subsidy_type FROM
/// disbursements EXCEPT …`), each time in a subquery of its own.
#[derive(Debug, Default)]
pub struct AlikeFragmentsOnce;

impl PhysicalOptimizerRule for AlikeFragmentsOnce {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut copies: HashMap<u64, usize> = HashMap::new();
        plan.apply(|p| {
            if let Some(fragment) = p.downcast_ref::<NodeFragmentExec>() {
                *copies.entry(fragment.identity()).or_default() += 1;
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if copies.values().all(|&n| n < 2) {
            return Ok(plan);
        }
        // One store for them all: answers are kept by the ticket each node is sent, which
        // only alike fragments share.
        let answers = Arc::new(Answers::default());
        plan.transform_up(|p| match p.downcast_ref::<NodeFragmentExec>() {
            Some(fragment) if copies[&fragment.identity()] > 1 => Ok(Transformed::yes(Arc::new(
                fragment.sharing(answers.clone()),
            )
                as Arc<dyn ExecutionPlan>)),
            _ => Ok(Transformed::no(p)),
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "alike_fragments_once"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
