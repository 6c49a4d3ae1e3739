//! The node's own planning of a fragment. The city plans it without the node's files:
//! it knows neither the sizes of the node's tables nor their statistics, and it plans
//! the node's share as one partition. With the scans in place, the node
//! - builds each hash join once, on the side its statistics show is smaller;
//! - gives the Parquet scans the fragment's filters, to skip row groups and pages by
//!   their statistics (the filters still run above the scans);
//! - spreads the fragment over its cores ([`parallelize`]).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::filter_pushdown::FilterPushdown;
use datafusion::physical_optimizer::join_selection::JoinSelection;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};

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
    let plan = JoinSelection::new().optimize(plan, config)?;
    let plan = FilterPushdown::new().optimize(plan, config)?;
    parallelize(plan, config.execution.target_partitions)
}
