//! Small physical plans for the policy's unit tests.

use std::sync::Arc;

use datafusion::functions_aggregate::count::count_udaf;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
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
    let schema = input.schema();
    let group = PhysicalGroupBy::new_single(vec![(col(key, &schema).unwrap(), key.into())]);
    let count = AggregateExprBuilder::new(count_udaf(), vec![lit(1)])
        .schema(schema.clone())
        .alias("n")
        .build()
        .unwrap();
    Arc::new(
        AggregateExec::try_new(
            AggregateMode::Partial,
            group,
            vec![Arc::new(count)],
            vec![None],
            input,
            schema,
        )
        .unwrap(),
    )
}
