//! [`InSubqueryAsList`]: `x IN (SELECT … GROUP BY …)` as a list the city computes first
//! and sends down, rather than a join at the city with the rows of every node; and
//! [`AnyAsIn`], which reads `= ANY` and `<> ALL` as the IN they are.

use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::functions_aggregate::expr_fn::array_agg;
use datafusion::functions_nested::expr_fn::{array_compact, array_has, cardinality};
use datafusion::logical_expr::expr::{InSubquery, SetComparison, SetQuantifier};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Filter, LogicalPlan, LogicalPlanBuilder, Operator, Subquery,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use sunlight_domain::{ColumnClass, Table};

use crate::class::class_of;

/// The name of the list an IN subquery becomes. It is formed at the city: nodes send
/// no lists of values.
pub const LIST: &str = "__in_subquery_list";

/// Rewrites a filter's `x [NOT] IN (subquery)`, where the subquery aggregates and refers
/// to nothing outside it, as a condition on the list of its values `L`, `(SELECT
/// array_agg(v) …)`:
///
/// - `x IN (…)` as `x IS NOT NULL AND array_has(L, x)`;
/// - `x NOT IN (…)` as `L IS NULL OR (x IS NOT NULL AND NOT array_has(L, x) AND
///   cardinality(array_compact(L)) = cardinality(L))`: true for every row when the
///   subquery has no rows, and for none when a value is NULL.
///
/// The city answers the subquery on its own, from the partial aggregates of the nodes,
/// and each fragment then carries its values as a list: the nodes filter their rows by
/// it and aggregate them as usual. Planned as a semi-join, the nodes would have to send
/// the rows to be joined, which they never do.
///
/// Only conditions the filter reaches through AND and OR alone are rewritten. There a
/// row is kept the same whether a condition is unknown or false, so the list may answer
/// false where the subquery answers unknown; under NOT, or as a value, it may not.
#[derive(Debug, Default)]
pub struct InSubqueryAsList;

impl OptimizerRule for InSubqueryAsList {
    fn name(&self) -> &str {
        "in_subquery_as_list"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        with_predicate(plan, as_lists)
    }
}

/// Rewrites a filter's `x = ANY (subquery)` as `x IN (subquery)`, and `x <> ALL
/// (subquery)` as `x NOT IN (subquery)`, which SQL defines them to be. They then reach
/// the nodes as IN does, as a list ([`InSubqueryAsList`]) or as a join with the reference
/// table inside each node, rather than as joins at the city over single rows.
#[derive(Debug, Default)]
pub struct AnyAsIn;

impl OptimizerRule for AnyAsIn {
    fn name(&self) -> &str {
        "any_as_in"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        with_predicate(plan, |predicate, _| predicate.transform_up(as_in))
    }
}

/// `e` as `IN` or `NOT IN`, where it is `= ANY` or `<> ALL`.
fn as_in(e: Expr) -> Result<Transformed<Expr>> {
    Ok(match e {
        Expr::SetComparison(c) => match negated_in(&c) {
            Some(negated) => Transformed::yes(Expr::InSubquery(InSubquery::new(
                c.expr, c.subquery, negated,
            ))),
            None => Transformed::no(Expr::SetComparison(c)),
        },
        other => Transformed::no(other),
    })
}

/// Whether `comparison` is `NOT IN` (`<> ALL`) or `IN` (`= ANY`); `None` for another.
fn negated_in(comparison: &SetComparison) -> Option<bool> {
    match (comparison.op, &comparison.quantifier) {
        (Operator::Eq, SetQuantifier::Any) => Some(false),
        (Operator::NotEq, SetQuantifier::All) => Some(true),
        _ => None,
    }
}

/// `plan` with its predicate rewritten by `rewrite`, where it is a filter.
fn with_predicate(
    plan: LogicalPlan,
    rewrite: impl FnOnce(Expr, &DFSchema) -> Result<Transformed<Expr>>,
) -> Result<Transformed<LogicalPlan>> {
    let LogicalPlan::Filter(filter) = plan else {
        return Ok(Transformed::no(plan));
    };
    let predicate = rewrite(filter.predicate.clone(), filter.input.schema())?;
    if !predicate.transformed {
        return Ok(Transformed::no(LogicalPlan::Filter(filter)));
    }
    Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(
        predicate.data,
        filter.input,
    )?)))
}

fn is_junction(op: Operator) -> bool {
    matches!(op, Operator::And | Operator::Or)
}

/// Whether `expr [NOT] IN subquery` can become a list: the subquery refers to no column
/// outside it; it aggregates or reads the nodes' tables, whose rows would otherwise meet
/// at the city, or it is a `NOT IN` over the reference table, whose join, where the values
/// may be NULL, keeps a row by what the whole subquery holds and runs at the city, built
/// from the nodes' rows; and `expr` is not an identifier.
fn rewritable(expr: &Expr, subquery: &Subquery, negated: bool, schema: &DFSchema) -> bool {
    let plan = &subquery.subquery;
    subquery.outer_ref_columns.is_empty()
        && (aggregates(plan) || reads_nodes(plan) || negated)
        && !identifier(expr, schema)
}

/// `condition` with the IN subqueries it reaches through AND and OR as lists, and
/// whether it had any.
fn as_lists(condition: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    match condition {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if is_junction(op) => {
            let (left, right) = (as_lists(*left, schema)?, as_lists(*right, schema)?);
            let joined = Expr::BinaryExpr(BinaryExpr::new(
                Box::new(left.data),
                op,
                Box::new(right.data),
            ));
            Ok(Transformed::new_transformed(
                joined,
                left.transformed || right.transformed,
            ))
        }
        Expr::InSubquery(InSubquery {
            expr,
            subquery,
            negated,
        }) if rewritable(&expr, &subquery, negated, schema) => {
            as_list(*expr, subquery, negated).map(Transformed::yes)
        }
        other => Ok(Transformed::no(other)),
    }
}

/// Whether `expr` is an identifier column: identifiers meet other nodes' rows by linkage,
/// and leave a node only as tokens, which a list of the city's could not match.
fn identifier(expr: &Expr, schema: &DFSchema) -> bool {
    class_of(expr, schema) == Some(ColumnClass::Direct)
}

/// Whether `plan` aggregates anywhere.
fn aggregates(plan: &LogicalPlan) -> bool {
    plan.exists(|p| Ok(matches!(p, LogicalPlan::Aggregate(_))))
        .unwrap_or(false)
}

/// Whether `plan` reads a node table: one of the contract's other than the reference
/// table, which nodes join with their own rows, as they join a series the query generates.
pub(crate) fn reads_nodes(plan: &LogicalPlan) -> bool {
    plan.exists(|p| {
        Ok(matches!(p, LogicalPlan::TableScan(scan)
            if scan.table_name.table().parse::<Table>()
                .is_ok_and(|table| table != Table::SubsidyStandards)))
    })
    .unwrap_or(false)
}

/// The condition on the list of the subquery's values that stands for `expr [NOT] IN
/// (subquery)`; see [`InSubqueryAsList`]. A subquery that does not aggregate is first
/// grouped by its value, which keeps the same values.
fn as_list(expr: Expr, subquery: Subquery, negated: bool) -> Result<Expr> {
    let plan = Arc::unwrap_or_clone(subquery.subquery);
    let value = Expr::Column(plan.schema().columns().swap_remove(0));
    let grouped = aggregates(&plan);
    let mut values = LogicalPlanBuilder::from(plan);
    if !grouped {
        values = values.aggregate([value.clone()], Vec::<Expr>::new())?;
    }
    let values = values
        .aggregate(Vec::<Expr>::new(), [array_agg(value).alias(LIST)])?
        .build()?;
    let list = Expr::ScalarSubquery(Subquery {
        subquery: Arc::new(values),
        outer_ref_columns: Vec::new(),
        spans: subquery.spans,
    });
    let found = array_has(list.clone(), expr.clone());
    if !negated {
        return Ok(expr.is_not_null().and(found));
    }
    let no_nulls = cardinality(array_compact(list.clone())).eq(cardinality(list.clone()));
    Ok(list
        .is_null()
        .or(expr.is_not_null().and(!found).and(no_nulls)))
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::datatypes::Int32Type;

    use super::*;
    use crate::test_rules::{node_rows, rewriting_context, rewritten_by};

    #[tokio::test]
    async fn an_in_over_an_aggregate_or_node_rows_of_its_own_under_and_or_becomes_a_list() {
        let genders = "(SELECT gender FROM persons GROUP BY gender HAVING count(*) > 1)";
        let count = "SELECT count(*) FROM persons";
        for sql in [
            format!("{count} WHERE gender IN {genders} AND village <> ''"),
            format!("{count} WHERE gender NOT IN {genders}"),
            format!("{count} WHERE village = '' OR (gender IN {genders} AND village <> 'x')"),
            // Rows of the nodes, which would meet at the city: the same as their groups.
            format!("{count} WHERE township IN (SELECT township FROM persons WHERE gender = 'F')"),
            format!("{count} WHERE township IN (SELECT DISTINCT township FROM persons)"),
            format!("{count} WHERE township NOT IN (SELECT name_zh FROM subsidy_standards)"),
        ] {
            assert!(rewritten_by(&InSubqueryAsList, &sql).await, "{sql}");
        }
        for sql in [
            format!("{count} WHERE NOT (gender IN {genders} OR village <> '')"),
            format!("{count} WHERE (gender IN {genders}) IS NOT TRUE"),
            // The reference table, which nodes join, unless under NOT IN.
            format!("{count} WHERE township IN (SELECT name_zh FROM subsidy_standards)"),
            format!(
                "{count} o WHERE gender IN (SELECT max(gender) FROM persons i \
                 WHERE i.village = o.village)"
            ),
            format!("{count} WHERE person_id IN (SELECT person_id FROM persons GROUP BY 1)"),
        ] {
            assert!(!rewritten_by(&InSubqueryAsList, &sql).await, "{sql}");
        }
    }

    #[tokio::test]
    async fn a_list_keeps_the_rows_the_subquery_keeps() {
        let ctx = rewriting_context();
        let definition = "(x INT) AS VALUES (1), (2), (3), (NULL)";
        node_rows(&[&ctx], Table::Payroll, "t", definition).await;
        let definition = "(v INT) AS VALUES (1), (1), (3), (NULL), (NULL)";
        node_rows(&[&ctx], Table::DisabilityCerts, "s", definition).await;
        // Each subquery's values, then the rows of t each condition keeps, by SQL's rules.
        let cases: [(&str, [&[Option<i32>]; 4]); 6] = [
            (
                "SELECT v FROM s GROUP BY v", // 1, 3, NULL
                [&[Some(1), Some(3)], &[], &[Some(2)], &[Some(3)]],
            ),
            (
                "SELECT v FROM s", // 1, 1, 3, NULL, NULL
                [&[Some(1), Some(3)], &[], &[Some(2)], &[Some(3)]],
            ),
            (
                "SELECT v FROM s WHERE v IS NOT NULL GROUP BY v", // 1, 3
                [&[Some(1), Some(3)], &[Some(2)], &[Some(2)], &[Some(3)]],
            ),
            (
                "SELECT v FROM s GROUP BY v HAVING count(*) > 5", // no rows
                [
                    &[],
                    &[None, Some(1), Some(2), Some(3)],
                    &[None, Some(1), Some(2), Some(3)],
                    &[],
                ],
            ),
            (
                "SELECT max(v) FROM s", // 3
                [
                    &[Some(3)],
                    &[Some(1), Some(2)],
                    &[Some(1), Some(2)],
                    &[Some(3)],
                ],
            ),
            (
                "SELECT max(v) FROM s WHERE v > 9", // NULL
                [&[], &[], &[Some(2)], &[]],
            ),
        ];
        for (sub, expected) in cases {
            let conditions = [
                format!("x IN ({sub})"),
                format!("x NOT IN ({sub})"),
                format!("x = 2 OR x NOT IN ({sub})"),
                format!("x > 1 AND (x IN ({sub}) OR x IS NULL)"),
                format!("x = ANY ({sub})"),
                format!("x <> ALL ({sub})"),
            ];
            // `= ANY` keeps the rows IN keeps, and `<> ALL` those NOT IN keeps.
            let expected = expected.iter().chain(&expected[..2]);
            for (condition, &expected) in conditions.iter().zip(expected) {
                let sql = format!("SELECT x FROM t WHERE {condition} ORDER BY x NULLS FIRST");
                let frame = ctx.sql(&sql).await.unwrap();
                let plan = frame.clone().into_optimized_plan().unwrap();
                let shown = plan.display_indent().to_string();
                assert!(shown.contains(LIST), "{sql}");
                // The list stays one value, never a column with a copy in every row.
                assert!(!shown.contains("__common_expr"), "{sql}\n{shown}");
                let rows: Vec<Option<i32>> = frame
                    .collect()
                    .await
                    .unwrap()
                    .iter()
                    .flat_map(|b| {
                        b.column(0)
                            .as_primitive::<Int32Type>()
                            .iter()
                            .collect::<Vec<_>>()
                    })
                    .collect();
                assert_eq!(rows, expected, "{sql}");
            }
        }
    }
}
