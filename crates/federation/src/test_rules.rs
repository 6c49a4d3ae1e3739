//! What the tests of the city's logical rules share.

use std::sync::Arc;

use datafusion::catalog::MemTable;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::{OptimizerContext, OptimizerRule};
use datafusion::prelude::SessionContext;
use sunlight_domain::Table;

/// Whether `rule` rewrites the plan of `sql` over the contract's tables, empty.
pub async fn rewritten_by(rule: &dyn OptimizerRule, sql: &str) -> bool {
    rewritten(rule, sql).await.transformed
}

/// The plan of `sql` over the contract's tables, empty, as `rule` rewrites it.
pub async fn rewritten(rule: &dyn OptimizerRule, sql: &str) -> Transformed<LogicalPlan> {
    let ctx = SessionContext::new();
    for table in Table::ALL {
        let empty = MemTable::try_new(table.schema(), vec![vec![]]).unwrap();
        ctx.register_table(table.name(), Arc::new(empty)).unwrap();
    }
    let plan = ctx.sql(sql).await.unwrap().logical_plan().clone();
    let config = OptimizerContext::new();
    plan.transform_up(|p| rule.rewrite(p, &config)).unwrap()
}
