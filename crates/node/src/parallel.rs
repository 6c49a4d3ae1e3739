//! Runs a fragment on all of the node's cores. The city plans each fragment as one
//! partition, the node's share of the query; an aggregate is the usual top, partial or,
//! where the groups cannot span nodes, whole. Here the rows below such an aggregate are
//! dealt round-robin into partitions, each with its own partial aggregate, and one more
//! aggregate merges them back into a single partition of what the fragment's aggregate
//! answers, so the city and the egress guard see the fragment's answer as planned.
//!
//! A join that builds its table once probes it in every partition.
//!
//! A fragment that ends in a partial aggregate gets the merge even on one partition. A
//! partial aggregate may send a group in parts: it passes rows through unmerged where
//! they form nearly as many groups as rows, and emits its groups early when memory runs
//! short. The egress guard counts each row's persons as a whole group's, so a group in
//! parts would be held back for counting too few.

use std::sync::Arc;

use datafusion::error::Result;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::PartitionMode;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, InputOrderMode, Partitioning,
};

use sunlight_fragment::{Join, merge_of, partial_of};

use crate::county_guard::CountyGuardExec;
use crate::persons::PersonsExec;

/// `plan`, with one output partition, whose partial aggregates run over `partitions`.
pub fn parallelize(
    plan: Arc<dyn ExecutionPlan>,
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>()
        && let Some(merge) = merge_mode(aggregate)
        && (partitions > 1 || merge == AggregateMode::PartialReduce)
    {
        let input = match partitions {
            1 => parallelize(aggregate.input().clone(), 1)?,
            _ => spread(aggregate.input().clone(), partitions)?,
        };
        let partial = partial_of(aggregate, input)?;
        return merge_of(
            aggregate,
            merge,
            Arc::new(CoalescePartitionsExec::new(partial)),
        );
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
    let builds_once = |join: &Join| match join {
        Join::Hash(hash) => *hash.partition_mode() == PartitionMode::CollectLeft,
        Join::Loops(_) => true,
    };
    if let Some(join) = Join::of(&plan).filter(builds_once)
        && plan.fetch().is_none()
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

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_plan::aggregates::PhysicalGroupBy;
    use datafusion::physical_plan::collect;
    use datafusion::physical_plan::expressions::col;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    #[tokio::test]
    async fn a_partial_aggregate_on_one_partition_sends_each_group_once() -> Result<()> {
        // Two batches with the same ten keys: the first forms a group a row, so the
        // partial aggregate, probing after five rows, passes the second through unmerged.
        let schema = Arc::new(Schema::new(vec![Field::new("key", DataType::Int64, false)]));
        let keys = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..10))],
        )?;
        let rows =
            MemorySourceConfig::try_new_exec(&[vec![keys.clone(), keys]], schema.clone(), None)?;
        let key = col("key", &schema)?;
        let count = AggregateExprBuilder::new(count_udaf(), vec![key.clone()])
            .schema(schema.clone())
            .alias("n")
            .build()?;
        let partial: Arc<dyn ExecutionPlan> = Arc::new(AggregateExec::try_new(
            AggregateMode::Partial,
            PhysicalGroupBy::new_single(vec![(key, "key".into())]),
            vec![Arc::new(count)],
            vec![None],
            rows,
            schema,
        )?);
        let config = SessionConfig::new()
            .set_usize(
                "datafusion.execution.skip_partial_aggregation_probe_rows_threshold",
                5,
            )
            .with_target_partitions(1);
        let task = SessionContext::new_with_config(config).task_ctx();
        let sent = |plan: Arc<dyn ExecutionPlan>| {
            let task = task.clone();
            async move {
                let batches: Vec<RecordBatch> = collect(plan, task).await?;
                Result::<usize>::Ok(batches.iter().map(RecordBatch::num_rows).sum())
            }
        };
        assert_eq!(sent(partial.clone()).await?, 20, "the groups in parts");
        assert_eq!(sent(parallelize(partial, 1)?).await?, 10);
        Ok(())
    }
}
