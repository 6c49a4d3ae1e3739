//! [`CountDistinctAsText`]: counting distinct numbers or dates that nodes protect as the
//! distinct texts of them, which nodes can send as tokens.

use arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Expr, ExprSchemable, LogicalPlan, cast};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use sunlight_domain::ColumnClass;
use sunlight_policy::one_text_each;

use crate::class::reads;
use crate::distinct_rows::rewrite_aggregate_exprs;

/// Rewrites `count(DISTINCT x)` of numbers or dates as `count(DISTINCT CAST(x AS
/// VARCHAR))`, under the name the count had, where `x` reads an identifier or a
/// quasi-identifier column (`level`, `date_part('year', birth_date)`), or where the rows
/// counted are kept or ordered by a quasi-identifier (a filter on `amount` tells which
/// dates have large payments).
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
        rewrite_aggregate_exprs(plan, as_text)
    }
}

/// `expr` counting the distinct texts of its argument, if it counts distinct numbers or
/// dates that nodes protect ([`protected`]), over `aggregate`'s rows.
fn as_text(aggregate: &Aggregate, expr: &Expr) -> Option<Expr> {
    let Expr::AggregateFunction(AggregateFunction { func, params }) = expr else {
        return None;
    };
    let [value] = params.args.as_slice() else {
        return None;
    };
    if func.name() != "count" || !params.distinct {
        return None;
    }
    if !one_text_each(&value.get_type(aggregate.input.schema()).ok()?)
        || !protected(aggregate, value, params.filter.as_deref())
    {
        return None;
    }
    let mut text = expr.clone();
    if let Expr::AggregateFunction(f) = &mut text {
        f.params.args = vec![cast(value.clone(), DataType::Utf8)];
    }
    Some(text)
}

/// Whether nodes protect the distinct values of `value` over `aggregate`'s rows: computed
/// from an identifier or a quasi-identifier, or from any column of rows that `filter`,
/// the aggregate function's own, keeps by a quasi-identifier, or that a filter or an
/// ordering under the aggregate chooses by one ([`chosen_by_quasi`]).
pub(crate) fn protected(aggregate: &Aggregate, value: &Expr, filter: Option<&Expr>) -> bool {
    let schema = aggregate.input.schema();
    reads(&[value], schema, &[ColumnClass::Direct, ColumnClass::Quasi])
        || filter.is_some_and(|f| reads(&[f], schema, &[ColumnClass::Quasi]))
        || chosen_by_quasi(&aggregate.input)
}

/// Whether a filter or an ordering under `plan`, which keeps or orders rows before they
/// are grouped, reads a quasi-identifier: nodes then hold every value computed from those
/// rows as telling something of that column. (They refuse any other use of an identifier
/// there than testing it for NULL, which tells nothing.)
fn chosen_by_quasi(plan: &LogicalPlan) -> bool {
    plan.exists(|p| {
        Ok(match p {
            LogicalPlan::Filter(filter) => reads(
                &[&filter.predicate],
                filter.input.schema(),
                &[ColumnClass::Quasi],
            ),
            LogicalPlan::Sort(sort) => {
                let keys: Vec<&Expr> = sort.expr.iter().map(|s| &s.expr).collect();
                reads(&keys, sort.input.schema(), &[ColumnClass::Quasi])
            }
            LogicalPlan::TableScan(scan) if !scan.filters.is_empty() => {
                let schema = DFSchema::try_from_qualified_schema(
                    scan.table_name.clone(),
                    &scan.source.schema(),
                )?;
                let filters: Vec<&Expr> = scan.filters.iter().collect();
                reads(&filters, &schema, &[ColumnClass::Quasi])
            }
            _ => false,
        })
    })
    // A plan that cannot be walked is counted as text: the count is the same.
    .unwrap_or(true)
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
            // Named anew where the planner cast the values compared (`level > 1.5`).
            "SELECT count(DISTINCT born) FILTER (WHERE level > 1.5) FROM u",
            "SELECT count(DISTINCT level + 1), count(DISTINCT date_part('year', born)) FROM u",
            // A public column, of rows kept or ordered by a quasi-identifier.
            "SELECT count(DISTINCT seen) FROM u WHERE level > 1",
            "SELECT count(DISTINCT seen) FILTER (WHERE born > DATE '1945-01-01') FROM u",
            "SELECT area, count(DISTINCT seen) FROM u WHERE born IS NOT NULL GROUP BY area",
            "SELECT count(DISTINCT seen) FROM (SELECT seen FROM u ORDER BY born LIMIT 4)",
            // A union's column is of the most protected class of its sides, in any order.
            "SELECT count(DISTINCT d) FROM (SELECT seen AS d FROM u UNION ALL SELECT born FROM u)",
            "SELECT count(DISTINCT d) FROM (SELECT born AS d FROM u UNION ALL SELECT seen FROM u)",
            "SELECT count(DISTINCT d) FROM (SELECT seen AS d FROM u \
             UNION ALL SELECT seen FROM u WHERE seen > (SELECT min(born) FROM u) \
             UNION ALL SELECT born FROM u)",
            "SELECT kind, count(DISTINCT d) FROM (SELECT kind, level AS d FROM u \
             UNION SELECT kind, 1 FROM u) GROUP BY kind",
        ];
        // Text, a plain column of no class, and a public column are counted as they are.
        let as_they_are = [
            "SELECT count(DISTINCT person) FROM u",
            "SELECT count(DISTINCT x), count(DISTINCT y) FROM t",
            "SELECT sum(DISTINCT level) FROM u",
            "SELECT count(DISTINCT seen) FROM u WHERE kind = 'k'",
            // Nodes take no meaning from an identifier tested for NULL.
            "SELECT count(DISTINCT seen) FROM u WHERE card IS NOT NULL",
            "SELECT count(DISTINCT d) FROM (SELECT seen AS d FROM u UNION ALL SELECT seen FROM u)",
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
