//! The node's own planning of a fragment. The city plans it without the node's files:
//! it knows neither the sizes of the node's tables nor their statistics, and it plans
//! the node's share as one partition. With the scans in place, the node
//! - drops a limit that an aggregate could not take ([`runnable_limits`]);
//! - builds each hash join once, on the side its statistics show is smaller;
//! - gives the Parquet scans the fragment's filters, to skip row groups and pages by
//!   their statistics (the filters still run above the scans);
//! - computes once the tests an aggregate repeats ([`computed_once`]);
//! - spreads the fragment over its cores ([`parallelize`]);
//! - yields to the scheduler as its joins emit rows ([`cooperative`]).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::ensure_coop::EnsureCooperative;
use datafusion::physical_optimizer::filter_pushdown::FilterPushdown;
use datafusion::physical_optimizer::join_selection::JoinSelection;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, PartitionMode,
};

use crate::computed_once::computed_once;
use crate::parallel::parallelize;

/// `fragment`, whose leaves are the node's scans, planned for the node.
pub fn optimize(
    fragment: Arc<dyn ExecutionPlan>,
    config: &ConfigOptions,
) -> Result<Arc<dyn ExecutionPlan>> {
    // Each side of a fragment's join is one partition, so a partitioned join is one that
    // builds once. The city's dynamic filters go: the join's sides may swap.
    let plan = fragment
        .transform_up(|p| match p.downcast_ref::<HashJoinExec>() {
            Some(join) => {
                let join = join
                    .builder()
                    .reset_state()
                    .with_partition_mode(PartitionMode::CollectLeft)
                    .build_exec()?;
                Ok(Transformed::yes(join))
            }
            None => Ok(Transformed::no(p)),
        })?
        .data;
    let plan = runnable_limits(plan)?;
    let plan = JoinSelection::new().optimize(plan, config)?;
    let plan = FilterPushdown::new().optimize(plan, config)?;
    let plan = computed_once(plan)?;
    let plan = parallelize(plan, config.execution.target_partitions)?;
    cooperative(plan, config)
}

/// `plan` without the limits of aggregates that would run as a top-K without a direction.
/// The city gives an aggregate of keys alone the limit above it where its input has no
/// order, to stop at the first groups it meets. At the node, a scan that writes in the
/// node's code as a constant gives that input an order, and DataFusion then runs the
/// limit as a top-K, which needs a direction. The limit above the aggregate stays.
fn runnable_limits(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|p| {
        let undirected = p.downcast_ref::<AggregateExec>().filter(|a| {
            a.limit_options().is_some_and(|l| l.descending.is_none())
                && !a.is_unordered_unfiltered_group_by_distinct()
        });
        Ok(match undirected {
            Some(a) => Transformed::yes(Arc::new(AggregateExec::with_new_limit_options(a, None))),
            None => Transformed::no(p),
        })
    })
    .map(|t| t.data)
}

/// `plan`, yielding to the scheduler at least once in every budget of batches. A node
/// runs a fragment within the call that asked for it, and notices that the city gave up
/// on it (a deadline passed, a client went away) only when the fragment yields. Scans
/// and exchanges yield as they read ([`EnsureCooperative`]), but a join may emit many
/// batches for each batch it reads: each join's output is counted too.
fn cooperative(
    plan: Arc<dyn ExecutionPlan>,
    config: &ConfigOptions,
) -> Result<Arc<dyn ExecutionPlan>> {
    let plan = plan
        .transform_up(|p| {
            let join =
                p.is::<HashJoinExec>() || p.is::<NestedLoopJoinExec>() || p.is::<CrossJoinExec>();
            Ok(match join {
                true => Transformed::yes(Arc::new(CooperativeExec::new(p)) as _),
                false => Transformed::no(p),
            })
        })?
        .data;
    EnsureCooperative::new().optimize(plan, config)
}
