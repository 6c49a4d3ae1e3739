//! [`DistinctValuesAsGroups`]: an aggregate over the distinct values of one argument that
//! nodes do not compute, such as `array_agg(DISTINCT x)` or `string_agg(DISTINCT x, ',')`,
//! as the same aggregate over the groups of `x`.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::error::Result;
use datafusion::logical_expr::expr::{AggregateFunction, Sort};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use sunlight_fragment::runs_at_nodes;

use crate::distinct_rows::project_as;

/// The name of the grouped value.
const VALUE: &str = "__distinct_value";

/// The name of the grouped outcome of the functions' filter.
const PASSES: &str = "__distinct_filter";

/// Rewrites `SELECT g…, f(DISTINCT x, c…) [ORDER BY x] … GROUP BY g…`, where every
/// aggregate takes the distinct values of the same `x`, with constants `c…` for its other
/// arguments, and some function is one nodes do not compute (it keeps the values
/// themselves, as `array_agg` and `string_agg` do), as `SELECT g…, f(x, c…) [ORDER BY x]
/// FROM (SELECT g…, x … GROUP BY g…, x) GROUP BY g…`. A `FILTER (WHERE p)` all the
/// functions share is grouped as well, `GROUP BY g…, x, p`, and filters the groups: a
/// group's `g…` stay in the answer where no row passes.
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
        let LogicalPlan::Aggregate(aggregate) = &plan else {
            return Ok(Transformed::no(plan));
        };
        match as_groups(aggregate)? {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(plan)),
        }
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
    let Some((value, filter)) = distinct_value(&functions) else {
        return Ok(None);
    };
    if functions.iter().all(|f| runs_at_nodes(f.func.name()))
        || matches!(aggregate.group_expr.first(), Some(Expr::GroupingSet(_)))
    {
        return Ok(None);
    }
    let mut keys = aggregate.group_expr.clone();
    let filtered = filter.is_some();
    keys.push(value.alias(VALUE));
    keys.extend(filter.map(|p| p.alias(PASSES)));
    let groups = LogicalPlanBuilder::from(Arc::clone(&aggregate.input))
        .aggregate(keys, Vec::<Expr>::new())?
        .build()?;
    let mut columns: Vec<Expr> = groups
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let passes = filtered.then(|| Box::new(columns.pop().expect("the filter is grouped last")));
    let value = columns.pop().expect("the value is grouped after the keys");
    let over_groups = functions.into_iter().map(|f| {
        let mut args = f.params.args;
        args[0] = value.clone();
        let order_by = f
            .params
            .order_by
            .into_iter()
            .map(|s| Sort {
                expr: value.clone(),
                ..s
            })
            .collect();
        Expr::AggregateFunction(AggregateFunction::new_udf(
            f.func,
            args,
            false,
            passes.clone(),
            order_by,
            f.params.null_treatment,
        ))
    });
    let plan = LogicalPlanBuilder::from(groups)
        .aggregate(columns, over_groups)?
        .build()?;
    let outputs = plan.schema().columns().into_iter().map(Expr::Column);
    Ok(Some(project_as(plan, outputs, aggregate)?))
}

/// The one argument `functions` all take the distinct values of, and the one filter they
/// share, if any: each is ordered by that argument alone if at all, with constants for
/// any other argument.
fn distinct_value(functions: &[AggregateFunction]) -> Option<(Expr, Option<Expr>)> {
    let first = &functions.first()?.params;
    let value = first.args.first()?;
    let alike = functions.iter().all(|f| {
        let params = &f.params;
        params.distinct
            && params.args.first() == Some(value)
            && params.args[1..]
                .iter()
                .all(|a| matches!(a, Expr::Literal(..)))
            && params.order_by.iter().all(|s| s.expr == *value)
            && params.filter == first.filter
    });
    alike.then(|| (value.clone(), first.filter.as_deref().cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rules::{rewritten, rewritten_by};

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
    async fn aggregates_nodes_compute_or_of_several_values_are_left_as_they_are() {
        for sql in [
            "SELECT count(DISTINCT subsidy_type) FROM disbursements",
            "SELECT array_agg(DISTINCT subsidy_type), count(*) FROM disbursements",
            "SELECT array_agg(DISTINCT subsidy_type), array_agg(DISTINCT township) \
             FROM disbursements",
            "SELECT array_agg(subsidy_type) FROM disbursements",
            "SELECT array_agg(DISTINCT subsidy_type) FILTER (WHERE amount > 100), \
             array_agg(DISTINCT subsidy_type) FROM disbursements",
        ] {
            assert!(!rewritten_by(&DistinctValuesAsGroups, sql).await, "{sql}");
        }
    }
}
