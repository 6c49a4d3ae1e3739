//! [`DistinctValuesAsGroups`]: an aggregate over the distinct values of one argument that
//! nodes do not compute, such as `array_agg(DISTINCT x)` or `string_agg(DISTINCT x, ',')`,
//! as the same aggregate over the groups of `x`.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, NullEquality};
use datafusion::error::Result;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::{AggregateFunction, Sort};
use datafusion::logical_expr::{
    Aggregate, Expr, ExprSchemable, JoinType, LogicalPlan, LogicalPlanBuilder,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::prelude::{coalesce, lit};
use sunlight_fragment::runs_at_nodes;

use crate::distinct_rows::{project_as, rewrite_aggregate};

/// The name of the grouped value.
const VALUE: &str = "__distinct_value";

/// The name of the grouped outcome of the functions' filter.
const PASSES: &str = "__distinct_filter";

/// The prefix of the names of the other aggregates' figures per group.
const PART: &str = "__distinct_part_";

/// Aggregates beside the distinct ones that merge over the groups: each group's figure,
/// then the same function of them, or the sum of them for `count`.
const MERGED: [&str; 6] = ["count", "sum", "min", "max", "bool_and", "bool_or"];

/// Rewrites `SELECT g…, f(DISTINCT x, c…) [ORDER BY x] … GROUP BY g…`, where every
/// aggregate takes the distinct values of the same `x`, with constants `c…` for its other
/// arguments, and some function is one nodes do not compute (it keeps the values
/// themselves, as `array_agg` and `string_agg` do), as `SELECT g…, f(x, c…) [ORDER BY x]
/// FROM (SELECT g…, x … GROUP BY g…, x) GROUP BY g…`. A `FILTER (WHERE p)` all the
/// functions share is grouped as well, `GROUP BY g…, x, p`, and filters the groups: a
/// group's `g…` stay in the answer where no row passes. Beside them the query may have
/// counts, sums, minima and maxima of anything ([`MERGED`]): each group computes its own,
/// under its own filter, and the answer merges them.
///
/// The inner grouping reaches the nodes as any other, under their disclosure control,
/// and the city computes the functions over its groups. Each group is one value of `x`
/// (where the filter passes), so the functions see each value once, as DISTINCT has them
/// do.
#[derive(Debug, Default)]
pub struct DistinctValuesAsGroups;

impl OptimizerRule for DistinctValuesAsGroups {
    fn name(&self) -> &str {
        "distinct_values_as_groups"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        rewrite_aggregate(plan, as_groups)
    }
}

/// `aggregate` over the groups of the value its functions take distinct, where it can be.
fn as_groups(aggregate: &Aggregate) -> Result<Option<LogicalPlan>> {
    let functions: Option<Vec<AggregateFunction>> = aggregate
        .aggr_expr
        .iter()
        .map(|e| match e.clone().unalias() {
            Expr::AggregateFunction(f) => Some(f),
            _ => None,
        })
        .collect();
    let Some(functions) = functions else {
        return Ok(None);
    };
    if !functions.iter().any(is_list)
        || matches!(aggregate.group_expr.first(), Some(Expr::GroupingSet(_)))
    {
        return Ok(None);
    }
    let Some((value, filter)) = distinct_value(&functions) else {
        return apart(aggregate, &functions);
    };
    let mut keys = aggregate.group_expr.clone();
    let filtered = filter.is_some();
    keys.push(value.alias(VALUE));
    keys.extend(filter.map(|p| p.alias(PASSES)));
    let parts = functions
        .iter()
        .filter(|f| !f.params.distinct)
        .enumerate()
        .map(|(i, f)| Expr::AggregateFunction(f.clone()).alias(format!("{PART}{i}")));
    let groups = LogicalPlanBuilder::from(Arc::clone(&aggregate.input))
        .aggregate(keys, parts)?
        .build()?;
    let mut columns: Vec<Expr> = groups
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let mut parts = columns
        .split_off(aggregate.group_expr.len() + 1 + usize::from(filtered))
        .into_iter();
    let passes = filtered.then(|| Box::new(columns.pop().expect("the filter is grouped last")));
    let value = columns.pop().expect("the value is grouped after the keys");
    let over_groups = functions.iter().map(|f| {
        if f.params.distinct {
            over_values(f, &value, passes.clone())
        } else {
            merged(f, parts.next().expect("a part per other aggregate"))
        }
    });
    let plan = LogicalPlanBuilder::from(groups)
        .aggregate(columns, over_groups)?
        .build()?;
    let keys = aggregate.group_expr.len();
    let columns = plan.schema().columns().into_iter().map(Expr::Column);
    let figures = columns
        .clone()
        .skip(keys)
        .zip(&functions)
        .map(|(column, f)| {
            // The sum of no groups' counts is NULL, where a count of no rows is 0.
            if is_count(f) {
                coalesce(vec![column, lit(0i64)])
            } else {
                column
            }
        });
    let outputs = columns
        .take(keys)
        .chain(figures)
        .zip(aggregate.schema.fields())
        .map(|(output, field)| {
            if output.get_type(plan.schema())? == *field.data_type() {
                Ok(output)
            } else {
                output.cast_to(field.data_type(), plan.schema())
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(project_as(plan, outputs, aggregate)?))
}

/// Whether `f` forms a list of the distinct values of its argument, which nodes do not.
fn is_list(f: &AggregateFunction) -> bool {
    f.params.distinct && !runs_at_nodes(f.func.name())
}

/// `aggregate`, whose functions form lists of more than one value or beside figures that
/// do not merge over groups (`avg`, a distinct count of another column), as one aggregate
/// for each list with the figures that merge over its groups, and one for the rest, joined
/// at the city on the group keys (NULL keys too). Each aggregate then runs at the nodes on
/// its own, or is refused on its own; each has the same groups, those of the input.
fn apart(aggregate: &Aggregate, functions: &[AggregateFunction]) -> Result<Option<LogicalPlan>> {
    let fits = |part: &[usize], f: usize| {
        let functions: Vec<_> = part
            .iter()
            .chain([&f])
            .map(|&i| functions[i].clone())
            .collect();
        distinct_value(&functions).is_some()
    };
    let (lists, others): (Vec<usize>, Vec<usize>) =
        (0..functions.len()).partition(|&i| is_list(&functions[i]));
    let mut parts: Vec<Vec<usize>> = Vec::new();
    for f in lists {
        match parts.iter_mut().find(|p| fits(p, f)) {
            Some(part) => part.push(f),
            None if fits(&[], f) => parts.push(vec![f]),
            None => return Ok(None),
        }
    }
    let mut rest = Vec::new();
    for f in others {
        match parts.iter_mut().find(|p| fits(p, f)) {
            Some(part) => part.push(f),
            None => rest.push(f),
        }
    }
    parts.extend((!rest.is_empty()).then_some(rest));
    if parts.len() < 2 {
        return Ok(None);
    }
    let keys = aggregate.group_expr.len();
    let sides = parts
        .iter()
        .enumerate()
        .map(|(n, part)| {
            let figures = part.iter().map(|&i| aggregate.aggr_expr[i].clone());
            LogicalPlanBuilder::from(Arc::clone(&aggregate.input))
                .aggregate(aggregate.group_expr.clone(), figures)?
                .alias(format!("__part_{n}"))?
                .build()
        })
        .collect::<Result<Vec<_>>>()?;
    let column = |side: &LogicalPlan, at: usize| Column::from(side.schema().qualified_field(at));
    let on = |side: &LogicalPlan| (0..keys).map(|k| column(side, k)).collect::<Vec<_>>();
    let (first, others) = sides.split_first().expect("a list makes a part");
    let mut joined = LogicalPlanBuilder::from(first.clone());
    for side in others {
        joined = match keys {
            0 => joined.cross_join(side.clone())?,
            _ => joined.join_detailed(
                side.clone(),
                JoinType::Inner,
                (on(first), on(side)),
                None,
                NullEquality::NullEqualsNull,
            )?,
        };
    }
    let mut figures = vec![None; functions.len()];
    for (side, part) in sides.iter().zip(&parts) {
        for (at, &i) in part.iter().enumerate() {
            figures[i] = Some(Expr::Column(column(side, keys + at)));
        }
    }
    let outputs = (0..keys)
        .map(|k| Expr::Column(column(first, k)))
        .chain(figures.into_iter().flatten());
    Ok(Some(project_as(joined.build()?, outputs, aggregate)?))
}

/// `f`, which takes the distinct values, over the grouped `value`, filtered by the
/// grouped outcome of its filter, if any.
fn over_values(f: &AggregateFunction, value: &Expr, passes: Option<Box<Expr>>) -> Expr {
    let mut args = f.params.args.clone();
    args[0] = value.clone();
    let order_by = f
        .params
        .order_by
        .iter()
        .map(|s| Sort {
            expr: value.clone(),
            ..s.clone()
        })
        .collect();
    Expr::AggregateFunction(AggregateFunction::new_udf(
        Arc::clone(&f.func),
        args,
        false,
        passes,
        order_by,
        f.params.null_treatment,
    ))
}

/// `f`, one of [`MERGED`], over its figures per group, `part`.
fn merged(f: &AggregateFunction, part: Expr) -> Expr {
    let func = if is_count(f) {
        sum_udaf()
    } else {
        Arc::clone(&f.func)
    };
    Expr::AggregateFunction(AggregateFunction::new_udf(
        func,
        vec![part],
        false,
        None,
        vec![],
        None,
    ))
}

/// Whether `f` counts rows, rather than distinct values.
fn is_count(f: &AggregateFunction) -> bool {
    !f.params.distinct && f.func.name() == "count"
}

/// The one argument the distinct ones of `functions` all take the distinct values of,
/// and the one filter they share, if any: each is ordered by that argument alone if at
/// all, with constants for any other argument; the others merge over groups ([`MERGED`]).
fn distinct_value(functions: &[AggregateFunction]) -> Option<(Expr, Option<Expr>)> {
    let (distinct, others): (Vec<_>, Vec<_>) = functions.iter().partition(|f| f.params.distinct);
    let first = &distinct.first()?.params;
    let value = first.args.first()?;
    let alike = distinct.iter().all(|f| {
        let params = &f.params;
        params.args.first() == Some(value)
            && params.args[1..]
                .iter()
                .all(|a| matches!(a, Expr::Literal(..)))
            && params.order_by.iter().all(|s| s.expr == *value)
            && params.filter == first.filter
    });
    let merged = others
        .iter()
        .all(|f| f.params.order_by.is_empty() && MERGED.contains(&f.func.name()));
    (alike && merged).then(|| (value.clone(), first.filter.as_deref().cloned()))
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::test_rules::{answer, optimized, rewriting_context, rewritten, rewritten_by};

    #[tokio::test]
    async fn lists_of_distinct_values_are_formed_from_groups_of_them() {
        let plan = rewritten(
            &DistinctValuesAsGroups,
            "SELECT county_code, array_agg(DISTINCT subsidy_type ORDER BY subsidy_type DESC), \
             string_agg(DISTINCT subsidy_type, ',') FROM disbursements GROUP BY 1",
        )
        .await
        .data;
        let shown = plan.display_indent().to_string();
        assert!(
            shown.contains(
                "Aggregate: groupBy=[[disbursements.county_code, disbursements.subsidy_type \
                 AS __distinct_value]], aggr=[[]]"
            ),
            "{shown}"
        );
        assert!(
            shown.contains(
                "Aggregate: groupBy=[[disbursements.county_code]], \
                 aggr=[[array_agg(__distinct_value) ORDER BY [__distinct_value DESC NULLS \
                 FIRST], string_agg(__distinct_value, Utf8(\",\"))]]"
            ),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn a_shared_filter_is_grouped_and_filters_the_groups() {
        let plan = rewritten(
            &DistinctValuesAsGroups,
            "SELECT array_agg(DISTINCT township) FILTER (WHERE amount > 100) \
             FROM disbursements",
        )
        .await
        .data;
        let shown = plan.display_indent().to_string();
        assert!(
            shown.contains("AS __distinct_filter]], aggr=[[]]"),
            "{shown}"
        );
        assert!(
            shown.contains("aggr=[[array_agg(__distinct_value) FILTER (WHERE __distinct_filter)]]"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn aggregates_nodes_compute_and_lists_of_every_value_are_left_as_they_are() {
        for sql in [
            "SELECT count(DISTINCT subsidy_type) FROM disbursements",
            "SELECT count(DISTINCT subsidy_type), avg(amount) FROM disbursements",
            "SELECT array_agg(subsidy_type) FROM disbursements",
            "SELECT array_agg(DISTINCT subsidy_type ORDER BY township) FROM disbursements",
        ] {
            assert!(!rewritten_by(&DistinctValuesAsGroups, sql).await, "{sql}");
        }
    }

    /// Asserts that each of `queries` over a small table with NULLs is rewritten, its plan
    /// showing each of `shows`, and answers as a plain context does.
    async fn answers_as_plain(queries: &[&str], shows: &[&str]) {
        let rewriting = rewriting_context();
        let plain = SessionContext::new();
        let table = "CREATE TABLE t(k TEXT, x TEXT, v DECIMAL(12, 2), b BOOLEAN) AS VALUES \
                     ('a', 'p', 1.5, true), ('a', 'p', NULL, false), ('a', 'q', 2.25, true), \
                     ('b', NULL, 4.0, NULL), ('b', 'q', 9.75, true), (NULL, 'r', 7.0, false)";
        for ctx in [&rewriting, &plain] {
            ctx.sql(table).await.unwrap();
        }
        for sql in queries {
            let shown = optimized(&rewriting, sql).await;
            assert!(shows.iter().all(|s| shown.contains(s)), "{sql}\n{shown}");
            assert_eq!(
                answer(&rewriting, sql).await,
                answer(&plain, sql).await,
                "{sql}"
            );
        }
    }

    #[tokio::test]
    async fn lists_beside_figures_that_do_not_merge_over_their_groups_join_on_the_keys() {
        let queries = [
            "SELECT k, string_agg(DISTINCT x, ',' ORDER BY x), avg(v), count(DISTINCT b), \
             count(*) FROM t GROUP BY k ORDER BY k",
            "SELECT k, array_agg(DISTINCT x ORDER BY x), array_agg(DISTINCT v ORDER BY v), \
             count(DISTINCT x) FROM t GROUP BY k ORDER BY k",
            "SELECT k, array_agg(DISTINCT x ORDER BY x) FILTER (WHERE v > 2), \
             array_agg(DISTINCT x ORDER BY x), stddev(v) FROM t GROUP BY k ORDER BY k",
            // No group keys: the parts' single rows side by side.
            "SELECT array_agg(DISTINCT x ORDER BY x), avg(v) FROM t",
            "SELECT array_agg(DISTINCT x), avg(v), count(*) FROM t WHERE v > 99",
        ];
        answers_as_plain(&queries, &[VALUE, "__part_1"]).await;
    }

    #[tokio::test]
    async fn other_aggregates_beside_the_lists_merge_over_their_groups() {
        let queries = [
            "SELECT k, string_agg(DISTINCT x, ',' ORDER BY x), count(*), count(v), sum(v), \
             min(v), max(x), bool_and(b), bool_or(b) FROM t GROUP BY k ORDER BY k",
            "SELECT array_agg(DISTINCT x ORDER BY x), count(*) FILTER (WHERE v > 2), sum(v) \
             FILTER (WHERE b) FROM t",
            "SELECT k, array_agg(DISTINCT x ORDER BY x) FILTER (WHERE v > 2), count(*), \
             sum(v) FROM t GROUP BY k ORDER BY k",
            // No rows: a count of none is 0, not the sum of no groups' counts.
            "SELECT array_agg(DISTINCT x), count(*), count(v), sum(v) FROM t WHERE v > 99",
        ];
        answers_as_plain(&queries, &[VALUE]).await;
    }
}
