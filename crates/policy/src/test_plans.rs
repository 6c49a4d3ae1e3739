//! Small physical plans for the policy's unit tests.

use std::sync::Arc;

use datafusion::functions_aggregate::count::count_udaf;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::{AggregateExprBuilder, AggregateFunctionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::expressions::{col, lit};
use sunlight_domain::Table;
use sunlight_fragment::TableLeafExec;

/// A leaf reading `columns` of `table`.
pub fn leaf(table: Table, columns: &[&str]) -> Arc<dyn ExecutionPlan> {
    let schema = table.schema();
    let projection = columns
        .iter()
        .map(|c| schema.index_of(c).unwrap())
        .collect();
    Arc::new(TableLeafExec::try_new(table, Some(projection), 1, None).unwrap())
}

/// A partial `count(1)` of `input` by its column `key`.
pub fn count_by(input: Arc<dyn ExecutionPlan>, key: &str) -> Arc<dyn ExecutionPlan> {
    let count = AggregateExprBuilder::new(count_udaf(), vec![lit(1)])
        .schema(input.schema())
        .alias("n")
        .build()
        .unwrap();
    partial_by(input, key, vec![Arc::new(count)])
}

/// `count(DISTINCT expr)` over `input`'s rows, named `name`.
pub fn count_distinct(
    input: &Arc<dyn ExecutionPlan>,
    expr: Arc<dyn PhysicalExpr>,
    name: &str,
) -> Arc<AggregateFunctionExpr> {
    let count = AggregateExprBuilder::new(count_udaf(), vec![expr])
        .schema(input.schema())
        .alias(name)
        .distinct()
        .build()
        .unwrap();
    Arc::new(count)
}

/// The partial phase of `functions` over `input`, by its column `key`.
pub fn partial_by(
    input: Arc<dyn ExecutionPlan>,
    key: &str,
    functions: Vec<Arc<AggregateFunctionExpr>>,
) -> Arc<dyn ExecutionPlan> {
    let schema = input.schema();
    let group = PhysicalGroupBy::new_single(vec![(col(key, &schema).unwrap(), key.into())]);
    let filters = vec![None; functions.len()];
    Arc::new(
        AggregateExec::try_new(
            AggregateMode::Partial,
            group,
            functions,
            filters,
            input,
            schema,
        )
        .unwrap(),
    )
}
