//! [`CountDistinctAsText`]: counting the distinct numbers or dates of a protected column
//! as the distinct texts of them, which nodes can send as tokens.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::Transformed;
use datafusion::error::Result;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Expr, ExprSchemable, LogicalPlan, cast};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use sunlight_domain::ColumnClass;
use sunlight_policy::one_text_each;

use crate::class::class_of;

/// Rewrites `count(DISTINCT x)`, where `x` is an identifier or a quasi-identifier
/// column of numbers or dates, as `count(DISTINCT CAST(x AS VARCHAR))`, under the name
/// the count had.
///
/// Across counties, nodes send the state of such a count, the distinct values, as keyed
/// tokens, and they make tokens of text only. Each integer, decimal, date or timestamp
/// has one text, so the count is the same.
#[derive(Debug, Default)]
pub struct CountDistinctAsText;

impl OptimizerRule for CountDistinctAsText {
    fn name(&self) -> &str {
        "count_distinct_as_text"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let schema = aggregate.input.schema();
        let texts: Vec<Option<Expr>> = aggregate
            .aggr_expr
            .iter()
            .map(|e| as_text(e, schema))
            .collect();
        if texts.iter().all(Option::is_none) {
            return Ok(Transformed::no(plan));
        }
        let aggr_expr = texts
            .into_iter()
            .zip(&aggregate.aggr_expr)
            .map(|(text, e)| text.unwrap_or_else(|| e.clone()))
            .collect();
        let rewritten = Aggregate::try_new(
            Arc::clone(&aggregate.input),
            aggregate.group_expr.clone(),
            aggr_expr,
        )?;
        Ok(Transformed::yes(LogicalPlan::Aggregate(rewritten)))
    }
}

/// `expr` counting the distinct texts of its column, if it counts the distinct values of
/// a protected column of numbers or dates.
fn as_text(expr: &Expr, schema: &DFSchema) -> Option<Expr> {
    let Expr::AggregateFunction(AggregateFunction { func, params }) = expr else {
        return None;
    };
    let [column] = params.args.as_slice() else {
        return None;
    };
    if func.name() != "count" || !params.distinct {
        return None;
    }
    let protected = matches!(
        class_of(column, schema),
        Some(ColumnClass::Direct | ColumnClass::Quasi)
    );
    if !protected || !one_text_each(&column.get_type(schema).ok()?) {
        return None;
    }
    let mut text = expr.clone();
    if let Expr::AggregateFunction(f) = &mut text {
        f.params.args = vec![cast(column.clone(), DataType::Utf8)];
    }
    Some(text.alias(expr.schema_name().to_string()))
}

#[cfg(test)]
mod tests {
    use datafusion::common::tree_node::TreeNode;

    use crate::distinct_rows::tests::{answered_alike, contexts};

    #[tokio::test]
    async fn distinct_numbers_and_dates_of_protected_columns_are_counted_as_text() {
        let contexts = contexts().await;
        let as_text = [
            "SELECT count(DISTINCT level) FROM u",
            "SELECT kind, count(DISTINCT born), count(DISTINCT level) AS n FROM u GROUP BY kind",
            "SELECT count(DISTINCT level) FILTER (WHERE area = 'n'), count(*) FROM u",
        ];
        // Text, a plain column of no class, and a public column are counted as they are.
        let as_they_are = [
            "SELECT count(DISTINCT person) FROM u",
            "SELECT count(DISTINCT x), count(DISTINCT y) FROM t",
            "SELECT count(DISTINCT level + 1) FROM u",
            "SELECT sum(DISTINCT level) FROM u",
        ];
        for (sql, expected) in as_text
            .iter()
            .map(|s| (s, true))
            .chain(as_they_are.iter().map(|s| (s, false)))
        {
            let sql = format!("{sql} ORDER BY 1 NULLS FIRST");
            let plan = answered_alike(&contexts, &sql).await;
            let casts = plan
                .exists(|p| {
                    Ok(p.expressions()
                        .iter()
                        .any(|e| e.to_string().contains(" AS Utf8)")))
                })
                .unwrap();
            assert_eq!(casts, expected, "{sql}\n{}", plan.display_indent());
        }
    }
}
