//! [`CountOfCaseAsFilter`]: a count of an identifier some rows give, written as a `CASE`
//! (`count(DISTINCT CASE WHEN amount > 500 THEN person_id END)`), as the count of the
//! identifier over those rows (`count(DISTINCT person_id) FILTER (WHERE amount > 500)`).

use datafusion::common::DFSchema;
use datafusion::common::tree_node::Transformed;
use datafusion::error::Result;
use datafusion::logical_expr::expr::{AggregateFunction, Case};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use sunlight_domain::ColumnClass;

use crate::class::reads;
use crate::distinct_rows::rewrite_aggregate_exprs;

/// Rewrites `count([DISTINCT] CASE WHEN c THEN x [ELSE NULL] END)`, or the same with
/// `CASE v WHEN w THEN x END` (`c` being `v = w`), as `count([DISTINCT] x) FILTER (WHERE
/// c)`, under the name the count had, where `x` reads an identifier. The `CASE` gives `x`
/// where `c` holds and NULL elsewhere, which no count counts, so the counts are the same;
/// but nodes use an identifier in no expression other than a comparison, and count it only
/// as it is stored, so that the `CASE` would be refused.
#[derive(Debug, Default)]
pub struct CountOfCaseAsFilter;

impl OptimizerRule for CountOfCaseAsFilter {
    fn name(&self) -> &str {
        "count_of_case_as_filter"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        rewrite_aggregate_exprs(plan, |aggregate, e| as_filter(e, aggregate.input.schema()))
    }
}

/// `expr` as a count of `x` filtered by `c`, if it counts `CASE WHEN c THEN x END` and
/// `x` reads an identifier.
fn as_filter(expr: &Expr, schema: &DFSchema) -> Option<Expr> {
    let Expr::AggregateFunction(AggregateFunction { func, params }) = expr else {
        return None;
    };
    let [Expr::Case(case)] = params.args.as_slice() else {
        return None;
    };
    if func.name() != "count" {
        return None;
    }
    let (condition, value) = given_when(case)?;
    if !reads(&[&value], schema, &[ColumnClass::Direct]) {
        return None;
    }
    let mut filtered = expr.clone();
    if let Expr::AggregateFunction(f) = &mut filtered {
        f.params.args = vec![value];
        f.params.filter = Some(Box::new(match f.params.filter.take() {
            Some(filter) => filter.and(condition),
            None => condition,
        }));
    }
    Some(filtered)
}

/// The condition under which `case` gives its one value, and that value, where it gives
/// NULL otherwise.
fn given_when(case: &Case) -> Option<(Expr, Expr)> {
    let [(when, then)] = case.when_then_expr.as_slice() else {
        return None;
    };
    if !case.else_expr.as_deref().is_none_or(null) || null(then) {
        return None;
    }
    let condition = match &case.expr {
        Some(base) => base.as_ref().clone().eq(when.as_ref().clone()),
        None => when.as_ref().clone(),
    };
    Some((condition, then.as_ref().clone()))
}

/// Whether `expr` is NULL written in the query, perhaps cast to a type, as the planner
/// casts an `ELSE NULL` to the type of the `THEN`.
fn null(expr: &Expr) -> bool {
    match expr {
        Expr::Literal(value, _) => value.is_null(),
        Expr::Cast(cast) => null(&cast.expr),
        Expr::TryCast(cast) => null(&cast.expr),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{Expr, LogicalPlan};

    use crate::distinct_rows::tests::{aggregates, answered_alike, contexts};

    /// Whether an aggregate of `plan` counts a `CASE`.
    fn counts_case(plan: &LogicalPlan) -> bool {
        aggregates(plan, |f| {
            matches!(f.params.args.as_slice(), [Expr::Case(_)])
        })
    }

    #[tokio::test]
    async fn a_count_of_an_identifier_some_rows_give_counts_it_over_those_rows() {
        let contexts = contexts().await;
        let filtered = [
            "SELECT count(DISTINCT CASE WHEN kind = 'k' THEN person END) FROM c",
            "SELECT county_code, count(CASE WHEN kind <> 'k' THEN person ELSE NULL END) AS n \
             FROM c GROUP BY 1 ORDER BY 1",
            "SELECT count(DISTINCT CASE kind WHEN 'k' THEN person END) FILTER \
             (WHERE county_code = '1'), count(*) FROM c",
            "SELECT area, count(DISTINCT CASE WHEN level > 1 THEN person END) FROM u \
             GROUP BY 1 ORDER BY 1",
            // Named anew where the planner cast the values compared (`level > 1.5`).
            "SELECT count(CASE WHEN level > 1.5 THEN card END) FILTER (WHERE level < 3.5) \
             FROM u",
        ];
        for sql in filtered {
            let plan = answered_alike(&contexts, sql).await;
            assert!(!counts_case(&plan), "{sql}\n{}", plan.display_indent());
        }
        let left = [
            // Not an identifier, or another value where the condition fails.
            "SELECT count(CASE WHEN kind = 'k' THEN 1 END) FROM c",
            "SELECT count(DISTINCT CASE WHEN kind = 'k' THEN person ELSE 'x' END) FROM c",
            "SELECT count(CASE WHEN kind = 'k' THEN person WHEN kind = 'l' THEN kind END) FROM c",
        ];
        for sql in left {
            let plan = answered_alike(&contexts, sql).await;
            assert!(counts_case(&plan), "{sql}\n{}", plan.display_indent());
        }
    }
}
