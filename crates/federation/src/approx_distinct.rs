//! [`ApproxDistinctAsCount`]: an estimate of distinct values that nodes protect
//! (`approx_distinct(person_id)`, `approx_distinct(birth_date)`), answered exactly, as
//! `count(DISTINCT …)`.

use std::sync::Arc;

use datafusion::common::Column;
use datafusion::common::tree_node::Transformed;
use datafusion::error::Result;
use datafusion::functions_aggregate::expr_fn::count_distinct;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, LogicalPlanBuilder, cast};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use crate::distinct_rows::rewrite_aggregate_exprs;
use crate::distinct_text::protected;

/// Rewrites `approx_distinct(x)`, where nodes protect the distinct values of `x` (of an
/// identifier or a quasi-identifier, or of rows a quasi-identifier keeps), as
/// `count(DISTINCT x)` (with the same `FILTER`), under the name and type the estimate had.
///
/// The estimate's state is a sketch of the values' hashes, which anyone may compute for a
/// known identifier, or for every birth date or amount there could be, and so read the
/// values back; nodes never send one of such values, nor compute one of identifiers.
/// The state of a distinct count leaves as keyed tokens, and the exact count is an
/// estimate with no error. An estimate of other values stays one: its sketch merges
/// exactly, as the central answer's does.
#[derive(Debug, Default)]
pub struct ApproxDistinctAsCount;

impl OptimizerRule for ApproxDistinctAsCount {
    fn name(&self) -> &str {
        "approx_distinct_as_count"
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
        let estimated = Arc::clone(&aggregate.schema);
        let counted = rewrite_aggregate_exprs(plan, as_count)?;
        if !counted.transformed {
            return Ok(counted);
        }
        // Each count as the estimate's type, under its name.
        let columns: Vec<Expr> = estimated
            .iter()
            .zip(counted.data.schema().fields())
            .map(|((qualifier, field), now)| {
                let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
                match now.data_type() == field.data_type() {
                    true => column,
                    false => cast(column, field.data_type().clone()).alias(field.name()),
                }
            })
            .collect();
        counted.map_data(|plan| LogicalPlanBuilder::from(plan).project(columns)?.build())
    }
}

/// `count(DISTINCT x)`, with the estimate's `FILTER`, if `expr` is `approx_distinct(x)`
/// and nodes protect the distinct values of `x` ([`protected`]).
fn as_count(aggregate: &Aggregate, expr: &Expr) -> Option<Expr> {
    let Expr::AggregateFunction(AggregateFunction { func, params }) = expr else {
        return None;
    };
    let [value] = params.args.as_slice() else {
        return None;
    };
    if func.name() != "approx_distinct" || !protected(aggregate, value, params.filter.as_deref()) {
        return None;
    }
    let mut count = count_distinct(value.clone());
    if let Expr::AggregateFunction(f) = &mut count {
        f.params.filter.clone_from(&params.filter);
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::LogicalPlan;

    use crate::distinct_rows::tests::{aggregates, answered_alike, contexts};

    /// Whether an aggregate of `plan` estimates distinct values.
    fn estimates(plan: &LogicalPlan) -> bool {
        aggregates(plan, |f| f.func.name() == "approx_distinct")
    }

    #[tokio::test]
    async fn an_estimate_of_protected_distinct_values_is_their_count() {
        let contexts = contexts().await;
        let counted = [
            "SELECT approx_distinct(person) FROM u",
            "SELECT kind, approx_distinct(person) AS n, count(*) FROM u GROUP BY 1 ORDER BY 1",
            "SELECT area, approx_distinct(person) FILTER (WHERE kind = 'k') FROM u \
             GROUP BY 1 ORDER BY 1",
            "SELECT kind, area, approx_distinct(card) FROM u \
             GROUP BY GROUPING SETS ((kind), (kind, area), ()) ORDER BY 1, 2",
            "SELECT approx_distinct(CASE WHEN kind = 'k' THEN person END) FROM u",
            "SELECT area FROM u GROUP BY 1 HAVING approx_distinct(card) > 2 \
             ORDER BY approx_distinct(person) DESC, 1",
            "SELECT count(*) FROM (SELECT kind, approx_distinct(person) AS n FROM u GROUP BY 1) \
             WHERE n > 1",
            // Class-Q values, and a value computed from them.
            "SELECT kind, approx_distinct(level), approx_distinct(born) FROM u GROUP BY 1 \
             ORDER BY 1",
            "SELECT approx_distinct(date_part('year', born)) FROM u",
            // A public column, of rows a quasi-identifier keeps, or united with one.
            "SELECT approx_distinct(seen) FROM u WHERE level > 1",
            "SELECT approx_distinct(seen) FILTER (WHERE born > DATE '1945-01-01') FROM u",
            "SELECT approx_distinct(d) FROM (SELECT seen AS d FROM u UNION ALL SELECT born FROM u)",
        ];
        for sql in counted {
            let plan = answered_alike(&contexts, sql).await;
            assert!(!estimates(&plan), "{sql}\n{}", plan.display_indent());
        }
        // A public column: the estimate stays, as the nodes may send its sketch.
        for sql in [
            "SELECT approx_distinct(kind) FROM u",
            "SELECT approx_distinct(seen) FROM u",
            "SELECT area, approx_distinct(person), approx_distinct(kind) FROM u GROUP BY 1 \
             ORDER BY 1",
        ] {
            let plan = answered_alike(&contexts, sql).await;
            assert!(estimates(&plan), "{sql}\n{}", plan.display_indent());
        }
    }
}
