//! What the tests of the city's logical rules share.

use std::sync::Arc;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::catalog::MemTable;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::{OptimizerContext, OptimizerRule};
use datafusion::prelude::SessionContext;
use sunlight_domain::Table;

use crate::city::logical_rules;

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

/// A context that optimizes with the city's logical rules, to compare its answers with a
/// plain context's.
pub fn rewriting_context() -> SessionContext {
    SessionContext::new_with_state(
        SessionStateBuilder::new()
            .with_default_features()
            .with_optimizer_rules(logical_rules())
            .build(),
    )
}

/// Creates, in each of `contexts`, the node table `table` as `definition` (columns and
/// rows) and `view`, a view of it under the short name the tests' queries read: the rules
/// take only the contract's tables for the nodes'.
pub async fn node_rows(contexts: &[&SessionContext], table: Table, view: &str, definition: &str) {
    for ctx in contexts {
        for sql in [
            format!("CREATE TABLE {table}{definition}"),
            format!("CREATE VIEW {view} AS SELECT * FROM {table}"),
        ] {
            ctx.sql(&sql).await.unwrap();
        }
    }
}

/// `sql`'s answer in `ctx`, printed.
pub async fn answer(ctx: &SessionContext, sql: &str) -> String {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

/// `sql`'s plan as `ctx` optimizes it, shown.
pub async fn optimized(ctx: &SessionContext, sql: &str) -> String {
    let plan = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
    plan.display_indent().to_string()
}
