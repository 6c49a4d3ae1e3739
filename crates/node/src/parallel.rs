//! Runs a fragment on all of the node's cores. The city plans each fragment as one
//! partition, the node's share of the query; an aggregate is the usual top, partial or,
//! where the groups cannot span nodes, whole. Here the rows below such an aggregate are
//! dealt round-robin into partitions, each with its own partial aggregate, and one more
//! aggregate merges them back into a single partition of what the fragment's aggregate
//! answers, so the city and the egress guard see the fragment's answer as planned.
//!
//! A hash join that builds its table once probes it in every partition.

use std::sync::Arc;

use datafusion::error::Result;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, InputOrderMode, Partitioning,
};

use sunlight_fragment::{merge_of, partial_of};

use crate::county_guard::CountyGuardExec;
use crate::persons::PersonsExec;

/// `plan`, with one output partition, whose partial aggregates run over `partitions`.
pub fn parallelize(
    plan: Arc<dyn ExecutionPlan>,
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>()
        && let Some(merge) = merge_mode(aggregate)
        && partitions > 1
    {
        let input = spread(aggregate.input().clone(), partitions)?;
        if input.output_partitioning().partition_count() > 1 {
            let partial = partial_of(aggregate, input)?;
            return merge_of(
                aggregate,
                merge,
                Arc::new(CoalescePartitionsExec::new(partial)),
            );
        }
    }
    let children = plan
        .children()
        .into_iter()
        .map(|c| parallelize(c.clone(), partitions))
        .collect::<Result<Vec<_>>>()?;
    let plan = replace_children_if_necessary(plan, children)?;
    Ok(match plan.output_partitioning().partition_count() {
        1 => plan,
        _ => Arc::new(CoalescePartitionsExec::new(plan)),
    })
}

/// How partial aggregates in many partitions merge into what `aggregate` answers: its
/// partial states for a partial aggregate, its final values for a whole one. `None`
/// where it must see its rows in one partition or in order.
fn merge_mode(aggregate: &AggregateExec) -> Option<AggregateMode> {
    let merge = match aggregate.mode() {
        AggregateMode::Partial => AggregateMode::PartialReduce,
        AggregateMode::Single | AggregateMode::SinglePartitioned => AggregateMode::Final,
        _ => return None,
    };
    let any_order = aggregate.limit_options().is_none()
        && *aggregate.input_order_mode() == InputOrderMode::Linear
        && aggregate
            .required_input_ordering()
            .iter()
            .all(Option::is_none);
    any_order.then_some(merge)
}

/// `plan` over `partitions`: operators that work row by row stay above the point where
/// rows are dealt out, so that they run in every partition too. So does a join that
/// builds its table once: it probes in every partition.
fn spread(plan: Arc<dyn ExecutionPlan>, partitions: usize) -> Result<Arc<dyn ExecutionPlan>> {
    if row_by_row(&plan) {
        let input = spread(plan.children()[0].clone(), partitions)?;
        return replace_children_if_necessary(plan, vec![input]);
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && *join.partition_mode() == PartitionMode::CollectLeft
        && join.fetch().is_none()
    {
        let build = parallelize(join.left().clone(), partitions)?;
        let probe = spread(join.right().clone(), partitions)?;
        return replace_children_if_necessary(plan, vec![build, probe]);
    }
    if plan.children().is_empty() && plan.output_partitioning().partition_count() >= partitions {
        return Ok(plan);
    }
    Ok(Arc::new(RepartitionExec::try_new(
        parallelize(plan, partitions)?,
        Partitioning::RoundRobinBatch(partitions),
    )?))
}

/// Operators whose output for a batch depends on that batch alone.
fn row_by_row(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.fetch().is_none()
        && (plan.is::<FilterExec>()
            || plan.is::<ProjectionExec>()
            || plan.is::<CooperativeExec>()
            || plan.is::<CountyGuardExec>()
            || plan.is::<PersonsExec>())
}
