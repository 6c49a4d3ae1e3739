//! [`SubqueryConditionsInFilters`]: `x IN (SELECT …)`, `EXISTS (SELECT …)` and `x op
//! ANY/ALL (SELECT …)` outside WHERE and HAVING, refused by name.

use datafusion::common::plan_err;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::AnalyzerRule;

/// Refuses a condition on a subquery's rows — `IN`, `EXISTS`, `ANY` or `ALL` — anywhere
/// but in a WHERE or HAVING condition. DataFusion turns such a condition into a join only
/// there; in the select list, an aggregate's argument or FILTER, or a join's ON, it fails
/// as it plans ("Physical plan does not support logical expression InSubquery(…)", or an
/// optimizer rule's failure for `ANY` and `ALL`). A subquery that gives one value
/// (`(SELECT max(…) …)`) is answered anywhere, and is left alone.
#[derive(Debug, Default)]
pub struct SubqueryConditionsInFilters;

impl AnalyzerRule for SubqueryConditionsInFilters {
    fn name(&self) -> &str {
        "subquery_conditions_in_filters"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let mut misplaced = None;
        plan.apply_with_subqueries(|p| {
            if matches!(p, LogicalPlan::Filter(_)) {
                return Ok(TreeNodeRecursion::Continue);
            }
            p.apply_expressions(|e| {
                e.apply(|sub| {
                    misplaced = condition(sub).map(|c| (c, place(p)));
                    Ok(match misplaced {
                        Some(_) => TreeNodeRecursion::Stop,
                        None => TreeNodeRecursion::Continue,
                    })
                })
            })
        })?;
        match misplaced {
            Some((condition, place)) => plan_err!(
                "{condition} is answered only as a condition of WHERE or HAVING, not in \
                 {place}; move the condition to WHERE, or join the subquery's rows (LEFT \
                 JOIN … ON …) and test the joined column instead"
            ),
            None => Ok(plan),
        }
    }
}

/// How SQL writes `e`, where it is a condition on a subquery's rows.
fn condition(e: &Expr) -> Option<String> {
    match e {
        Expr::InSubquery(i) if i.negated => Some("NOT IN (SELECT …)".to_string()),
        Expr::InSubquery(_) => Some("IN (SELECT …)".to_string()),
        Expr::Exists(x) if x.negated => Some("NOT EXISTS (SELECT …)".to_string()),
        Expr::Exists(_) => Some("EXISTS (SELECT …)".to_string()),
        Expr::SetComparison(c) => Some(format!("{} {} (SELECT …)", c.op, c.quantifier)),
        _ => None,
    }
}

/// Where in the statement `plan`'s expressions were written.
fn place(plan: &LogicalPlan) -> String {
    match plan {
        LogicalPlan::Projection(_) => "the select list".to_string(),
        LogicalPlan::Aggregate(_) => "GROUP BY or an aggregate's argument or FILTER".to_string(),
        LogicalPlan::Join(_) => "a join's ON".to_string(),
        LogicalPlan::Window(_) => "a window function".to_string(),
        LogicalPlan::Sort(_) => "ORDER BY".to_string(),
        other => format!("a {} of the plan", other.display()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::prelude::SessionContext;

    use super::*;

    /// The number of rows `sql` answers in `context`.
    async fn rows(context: &SessionContext, sql: &str) -> Result<usize> {
        let batches = context.sql(sql).await?.collect().await?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }

    #[tokio::test]
    async fn a_subquery_condition_is_answered_in_where_and_having_and_refused_elsewhere() {
        let context = SessionContext::new();
        context.add_analyzer_rule(Arc::new(SubqueryConditionsInFilters));
        context
            .sql("CREATE TABLE t (a INT, b TEXT) AS VALUES (1, 'x'), (2, 'y'), (3, 'x')")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let xs = "(SELECT a FROM t u WHERE b = 'x')";
        for (sql, answer) in [
            (format!("SELECT * FROM t WHERE a IN {xs}"), 2),
            (format!("SELECT * FROM t WHERE a IN {xs} OR a = 2"), 3),
            (format!("SELECT * FROM t WHERE a > ALL {xs}"), 0),
            (
                "SELECT b FROM t GROUP BY b HAVING max(a) IN (SELECT a FROM t)".to_string(),
                2,
            ),
            (
                "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM t u WHERE u.a > t.a)".to_string(),
                2,
            ),
            (
                "SELECT (SELECT max(a) FROM t u WHERE u.b = t.b) FROM t".to_string(),
                3,
            ),
        ] {
            assert_eq!(rows(&context, &sql).await.unwrap(), answer, "{sql}");
        }
        for (sql, named) in [
            (
                format!("SELECT a IN {xs} FROM t"),
                "IN (SELECT …) is answered only as a condition of WHERE or HAVING, not in \
                 the select list; move the condition to WHERE",
            ),
            (
                format!("SELECT count(*) FILTER (WHERE a NOT IN {xs}) FROM t"),
                "NOT IN (SELECT …) is answered only as a condition of WHERE or HAVING, not \
                 in GROUP BY or an aggregate's argument or FILTER",
            ),
            (
                format!("SELECT sum(CASE WHEN a > ALL {xs} THEN 1 END) FROM t"),
                "> ALL (SELECT …) is answered only",
            ),
            (
                "SELECT * FROM t JOIN t u ON EXISTS (SELECT 1 FROM t v WHERE v.a = u.a)"
                    .to_string(),
                "EXISTS (SELECT …) is answered only as a condition of WHERE or HAVING, not \
                 in a join's ON",
            ),
            (
                format!("SELECT * FROM t WHERE (SELECT max(a) IN {xs} FROM t)"),
                "not in the select list",
            ),
        ] {
            let error = rows(&context, &sql).await.unwrap_err().to_string();
            assert!(error.contains(named), "{sql}\n{error}");
        }
    }
}
