//! [`SetComparisonAliased`]: `x > ALL (SELECT …)` and the like, whose subquery reads the
//! table that `x` comes from, answered right.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::expr::SetComparison;
use datafusion::logical_expr::{Expr, LogicalPlan, SubqueryAlias};
use datafusion::optimizer::AnalyzerRule;

use crate::analyzer::rewrite_exprs;

/// The names this rule gives subqueries, each followed by its number in the plan.
const ALIAS: &str = "__set_comparison_";

/// Names the subquery of every set comparison (`x op ANY (…)`, `x op ALL (…)`) anew.
/// DataFusion rewrites such a comparison as `EXISTS` over the subquery, filtered by `x op`
/// its column; where the subquery reads the same table as `x`, unaliased, both sides of
/// that filter bear one name, and DataFusion answers `amount > ALL (SELECT amount FROM
/// disbursements WHERE …)` with no rows and `township = ALL (SELECT township FROM
/// disbursements)` with every row (apache/datafusion#25258). Under a name of its own,
/// the subquery's column is told apart from `x`, and the comparison is what SQL says.
#[derive(Debug, Default)]
pub struct SetComparisonAliased;

impl AnalyzerRule for SetComparisonAliased {
    fn name(&self) -> &str {
        "set_comparison_aliased"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let mut named = 0;
        rewrite_exprs(plan, |e| match e {
            Expr::SetComparison(comparison) if !aliased(&comparison) => {
                named += 1;
                aliased_as(comparison, &format!("{ALIAS}{named}")).map(Transformed::yes)
            }
            other => Ok(Transformed::no(other)),
        })
    }
}

/// Whether this rule named `comparison`'s subquery already.
fn aliased(comparison: &SetComparison) -> bool {
    matches!(
        comparison.subquery.subquery.as_ref(),
        LogicalPlan::SubqueryAlias(alias) if alias.alias.table().starts_with(ALIAS)
    )
}

/// `comparison` with its subquery named `name`.
fn aliased_as(mut comparison: SetComparison, name: &str) -> Result<Expr> {
    let subquery = Arc::clone(&comparison.subquery.subquery);
    comparison.subquery.subquery = Arc::new(LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(
        subquery, name,
    )?));
    Ok(Expr::SetComparison(comparison))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// The rows of `sql` in `context`, as a table.
    async fn answer(context: &SessionContext, sql: &str) -> String {
        let batches = context.sql(sql).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn a_set_comparison_over_its_own_table_is_answered_as_with_an_alias() {
        let context = SessionContext::new();
        context.add_analyzer_rule(Arc::new(SetComparisonAliased));
        let values = Int64Array::from(vec![1, 2, 3, 4, 5, 6]);
        let batch = RecordBatch::try_from_iter([("v", Arc::new(values) as _)]).unwrap();
        context.register_batch("t", batch).unwrap();
        for (unaliased, aliased, count) in [
            (
                "SELECT count(*) FROM t WHERE v > ALL (SELECT v FROM t WHERE v <= 2)",
                "SELECT count(*) FROM t WHERE v > ALL (SELECT s.v FROM t s WHERE s.v <= 2)",
                4,
            ),
            (
                "SELECT count(*) FROM t WHERE v > ANY (SELECT v FROM t WHERE v <= 3)",
                "SELECT count(*) FROM t WHERE v > ANY (SELECT s.v FROM t s WHERE s.v <= 3)",
                5,
            ),
            (
                "SELECT count(*) FROM t WHERE v = ALL (SELECT v FROM t)",
                "SELECT count(*) FROM t WHERE v = ALL (SELECT s.v FROM t s)",
                0,
            ),
            // Correlated with the outer row, as only an aliased subquery can be.
            (
                "SELECT count(*) FROM t WHERE v > ANY (SELECT s.v FROM t s WHERE s.v + 2 > t.v)",
                "SELECT count(*) FROM t WHERE v > ANY (SELECT s.v FROM t s WHERE s.v + 2 > t.v)",
                5,
            ),
            // Nested, each subquery reading the table again.
            (
                "SELECT count(*) FROM t WHERE v < ALL (SELECT v FROM t \
                 WHERE v > ANY (SELECT v FROM t WHERE v >= 5))",
                "SELECT count(*) FROM t WHERE v < ALL (SELECT s.v FROM t s \
                 WHERE s.v > ANY (SELECT r.v FROM t r WHERE r.v >= 5))",
                5,
            ),
        ] {
            let expected =
                format!("+----------+\n| count(*) |\n+----------+\n| {count:<8} |\n+----------+");
            assert_eq!(answer(&context, aliased).await, expected, "{aliased}");
            assert_eq!(answer(&context, unaliased).await, expected, "{unaliased}");
        }
    }
}
