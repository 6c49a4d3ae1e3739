//! An aggregate split in two phases: partial aggregates over parts of its rows, and one
//! aggregate that merges their states. The city splits an aggregate over the sides of a
//! union so that each side runs in the nodes; a node splits one over its cores. Where
//! each part holds whole groups, the two phases join again into one.

use std::sync::Arc;

use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};

/// `aggregate`'s partial phase over `input`, a part of its rows.
pub fn partial_of(
    aggregate: &AggregateExec,
    input: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(Arc::new(AggregateExec::try_new(
        AggregateMode::Partial,
        aggregate.group_expr().clone(),
        aggregate.aggr_expr().to_vec(),
        aggregate.filter_expr().to_vec(),
        input,
        aggregate.input_schema(),
    )?))
}

/// The aggregate whose partial phase is `partial`, whole, in `mode`: over the same rows,
/// it gives final figures.
pub fn whole_of(partial: &AggregateExec, mode: AggregateMode) -> Result<AggregateExec> {
    AggregateExec::try_new(
        mode,
        partial.group_expr().clone(),
        partial.aggr_expr().to_vec(),
        partial.filter_expr().to_vec(),
        partial.input().clone(),
        partial.input_schema(),
    )
}

/// The aggregate that merges, in `mode`, the states of `aggregate`'s partial phases
/// that `input` brings.
pub fn merge_of(
    aggregate: &AggregateExec,
    mode: AggregateMode,
    input: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(Arc::new(AggregateExec::try_new(
        mode,
        aggregate.group_expr().as_final(),
        aggregate.aggr_expr().to_vec(),
        vec![None; aggregate.aggr_expr().len()],
        input,
        aggregate.input_schema(),
    )?))
}
