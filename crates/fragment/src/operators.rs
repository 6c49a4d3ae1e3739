//! The operators a fragment may contain. A node refuses a fragment with any other, and
//! the city keeps any other above the fragments it cuts.

use datafusion::physical_plan::ExecutionPlan;

/// Operators a fragment may contain; none of them writes.
const OPERATORS: &[&str] = &[
    "TableLeafExec",
    "FilterExec",
    "ProjectionExec",
    "AggregateExec",
    "SortExec",
    "LocalLimitExec",
    "GlobalLimitExec",
    "CoalesceBatchesExec",
    "CoalescePartitionsExec",
    "SortPreservingMergeExec",
    "HashJoinExec",
    "UnionExec",
    "CooperativeExec",
];

/// The name of `plan`'s operator, where a fragment may not contain it. Variants such as
/// `SortExec(TopK)` count as their operator.
pub fn refused_operator(plan: &dyn ExecutionPlan) -> Option<&str> {
    let name = plan.name().split('(').next().unwrap_or_default();
    (!OPERATORS.contains(&name)).then_some(name)
}
