//! Tests an aggregate evaluates more than once, computed once below it. The egress guard's
//! census counts apart the persons of the rows a figure's test passes and fails, with the
//! figure's own test: `bool_or(amount > 1000)` and `count(*) FILTER (WHERE amount > 400)`
//! both test `amount` twice a row, once for the figure and once for its persons. Here a
//! projection under the aggregate computes each such expression once, and both read it.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::datatypes::{FieldRef, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::{AggregateExprBuilder, AggregateFunctionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::expressions::{Column, Literal};
use datafusion::physical_plan::projection::ProjectionExec;

/// `plan`, each of whose aggregates that reads its input evaluates an expression of its
/// arguments and FILTERs, repeated among them, once a row.
pub fn computed_once(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|p| {
        let Some(aggregate) = p.downcast_ref::<AggregateExec>() else {
            return Ok(Transformed::no(p));
        };
        Ok(match once(aggregate)? {
            Some(rewritten) => Transformed::yes(rewritten),
            None => Transformed::no(p),
        })
    })
    .map(|t| t.data)
}

/// `aggregate` over a projection of its input and each expression it repeats, if it
/// repeats one and reads its input rows.
fn once(aggregate: &AggregateExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if matches!(
        aggregate.mode(),
        AggregateMode::Final | AggregateMode::FinalPartitioned | AggregateMode::PartialReduce
    ) || aggregate.aggr_expr().iter().any(|f| f.is_reversed())
    {
        return Ok(None);
    }
    let read = aggregate
        .aggr_expr()
        .iter()
        .flat_map(|f| f.expressions())
        .chain(aggregate.filter_expr().iter().flatten().cloned());
    let mut seen: Vec<(Arc<dyn PhysicalExpr>, usize)> = Vec::new();
    for expr in read.filter(computed) {
        match seen.iter_mut().find(|(e, _)| e.eq(&expr)) {
            Some((_, times)) => *times += 1,
            None => seen.push((expr, 1)),
        }
    }
    let repeated: Vec<Arc<dyn PhysicalExpr>> = seen
        .into_iter()
        .filter_map(|(expr, times)| (times > 1).then_some(expr))
        .collect();
    if repeated.is_empty() {
        return Ok(None);
    }
    let input = aggregate.input();
    let input_schema = input.schema();
    let width = input_schema.fields().len();
    let kept = input_schema.fields().iter().enumerate().map(|(i, f)| {
        let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(f.name(), i));
        (column, f.name().clone())
    });
    let added = repeated.iter().map(|e| (e.clone(), e.to_string()));
    let projection: Arc<dyn ExecutionPlan> =
        Arc::new(ProjectionExec::try_new(kept.chain(added), input.clone())?);
    let schema = projection.schema();
    let read_once = |expr: &Arc<dyn PhysicalExpr>| match repeated.iter().position(|r| r == expr) {
        Some(at) => Arc::new(Computed {
            index: width + at,
            shown: expr.clone(),
        }) as Arc<dyn PhysicalExpr>,
        None => expr.clone(),
    };
    let functions = aggregate
        .aggr_expr()
        .iter()
        .map(|f| {
            let arguments = f.expressions().iter().map(read_once).collect();
            rebuilt(f, arguments, schema.clone())
        })
        .collect::<Result<Vec<_>>>()?;
    let filters = aggregate
        .filter_expr()
        .iter()
        .map(|f| f.as_ref().map(read_once))
        .collect();
    let rewritten = AggregateExec::try_new(
        *aggregate.mode(),
        aggregate.group_expr().clone(),
        functions,
        filters,
        projection,
        schema,
    )?
    .with_limit_options(aggregate.limit_options());
    // The answer's columns are the aggregate's as the city planned them, or it stays.
    Ok((rewritten.schema() == aggregate.schema()).then(|| Arc::new(rewritten) as _))
}

/// Whether `expr` is computed from its row, more than reading a column or a literal,
/// and alike each time.
fn computed(expr: &Arc<dyn PhysicalExpr>) -> bool {
    let volatile = expr.exists(|e| Ok(e.is_volatile_node())).unwrap_or(true);
    !volatile && !expr.is::<Column>() && !expr.is::<Literal>()
}

/// `function` with `arguments`, over an input of `schema`.
fn rebuilt(
    function: &AggregateFunctionExpr,
    arguments: Vec<Arc<dyn PhysicalExpr>>,
    schema: Arc<Schema>,
) -> Result<Arc<AggregateFunctionExpr>> {
    let mut builder = AggregateExprBuilder::new(Arc::new(function.fun().clone()), arguments)
        .schema(schema)
        .alias(function.name())
        .order_by(function.order_bys().to_vec())
        .with_distinct(function.is_distinct())
        .with_ignore_nulls(function.ignore_nulls());
    if let Some(shown) = function.human_display() {
        builder = builder.human_display(shown);
    }
    builder.build().map(Arc::new)
}

/// The value of an expression that a projection below computed, in column `index`; it
/// reads, and is shown, as that expression, so that the census names the rows a figure
/// is made from as the query does.
#[derive(Debug)]
struct Computed {
    index: usize,
    shown: Arc<dyn PhysicalExpr>,
}

impl PartialEq for Computed {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index && self.shown.eq(&other.shown)
    }
}

impl Eq for Computed {}

impl Hash for Computed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.index.hash(state);
        self.shown.hash(state);
    }
}

impl fmt::Display for Computed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.shown, f)
    }
}

impl PhysicalExpr for Computed {
    fn return_field(&self, input_schema: &Schema) -> Result<FieldRef> {
        self.shown.return_field(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Array(batch.column(self.index).clone()))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        Vec::new()
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(self)
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shown.fmt_sql(f)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{BooleanArray, Int64Array};
    use arrow::datatypes::{DataType, Field};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::functions_aggregate::bool_and_or::bool_or_udaf;
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_plan::aggregates::PhysicalGroupBy;
    use datafusion::physical_plan::collect;
    use datafusion::physical_plan::displayable;
    use datafusion::physical_plan::expressions::{binary, col, lit};
    use datafusion::prelude::SessionContext;

    use super::*;

    /// Rows of one nullable `amount`.
    fn amount_schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![Field::new(
            "amount",
            DataType::Int64,
            true,
        )]))
    }

    #[tokio::test]
    async fn a_test_read_twice_is_computed_once_and_answers_alike() -> Result<()> {
        let schema = amount_schema();
        let amounts = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![
                Some(100),
                Some(1200),
                None,
                Some(1500),
            ]))],
        )?;
        let rows = MemorySourceConfig::try_new_exec(&[vec![amounts]], schema.clone(), None)?;
        let large = binary(
            col("amount", &schema)?,
            Operator::Gt,
            lit(1000_i64),
            &schema,
        )?;
        let function = |udaf, argument: Arc<dyn PhysicalExpr>, name: &str| {
            AggregateExprBuilder::new(udaf, vec![argument])
                .schema(schema.clone())
                .alias(name)
                .build()
                .map(Arc::new)
        };
        // As the census reads a figure's test: the figure's argument and the FILTER of
        // a count are the same expression.
        let aggregate: Arc<dyn ExecutionPlan> = Arc::new(AggregateExec::try_new(
            AggregateMode::Single,
            PhysicalGroupBy::new_single(vec![]),
            vec![
                function(bool_or_udaf(), large.clone(), "any large")?,
                function(count_udaf(), lit(1_i64), "large")?,
                function(count_udaf(), col("amount", &schema)?, "amounts")?,
            ],
            vec![None, Some(large), None],
            rows,
            schema,
        )?);
        let once = computed_once(aggregate.clone())?;
        let shown = displayable(once.as_ref()).indent(false).to_string();
        assert!(shown.contains("ProjectionExec"), "{shown}");
        assert_eq!(
            shown.matches("amount@0 > 1000").count(),
            1,
            "computed in the projection alone: {shown}"
        );

        let task = SessionContext::new().task_ctx();
        let answer = collect(once.clone(), task.clone()).await?;
        assert_eq!(answer, collect(aggregate, task).await?);
        assert_eq!(once.schema().field(0).name(), "any large");
        let any = answer[0].column(0).as_any().downcast_ref::<BooleanArray>();
        assert_eq!(any.map(|a| a.value(0)), Some(true));
        let large = answer[0].column(1).as_any().downcast_ref::<Int64Array>();
        assert_eq!(large.map(|a| a.value(0)), Some(2));
        Ok(())
    }

    #[test]
    fn an_aggregate_that_repeats_nothing_stays() -> Result<()> {
        let schema = amount_schema();
        let rows = MemorySourceConfig::try_new_exec(&[vec![]], schema.clone(), None)?;
        let count = AggregateExprBuilder::new(count_udaf(), vec![col("amount", &schema)?])
            .schema(schema.clone())
            .alias("n")
            .build()?;
        let aggregate: Arc<dyn ExecutionPlan> = Arc::new(AggregateExec::try_new(
            AggregateMode::Partial,
            PhysicalGroupBy::new_single(vec![]),
            vec![Arc::new(count)],
            vec![None],
            rows,
            schema,
        )?);
        let once = computed_once(aggregate.clone())?;
        assert!(Arc::ptr_eq(&once, &aggregate));
        Ok(())
    }
}
