//! [`WindowAsJoinedGroups`]: an aggregate over a window that spans each whole partition
//! by `county_code` (`avg(amount) OVER (PARTITION BY county_code, subsidy_type)`), as the
//! rows joined with the groups of those keys, which each node runs on its own rows.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, NullEquality, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::expr::{AggregateFunction, WindowFunction, WindowFunctionParams};
use datafusion::logical_expr::{
    Expr, ExprSchemable, JoinType, LogicalPlan, LogicalPlanBuilder, Projection, Window,
    WindowFrameBound, WindowFunctionDefinition,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::prelude::{coalesce, lit};

use crate::by_county::{by_county, is_county_code};
use crate::in_subquery::reads_nodes;

/// The name of the groups joined with the rows.
const GROUPS: &str = "__window_groups";

/// The prefix of the keys computed for the rows.
const KEY: &str = "__window_key_";

/// The prefix of those keys in the groups.
const GROUP_KEY: &str = "__window_group_key_";

/// The prefix of the groups' figures.
const FIGURE: &str = "__window_";

/// Rewrites a window of aggregate functions over the nodes' rows, partitioned by keys
/// among which is a node table's `county_code`, each over its whole partition (no `ORDER
/// BY`, no frame narrower than the partition), as those rows joined, on the keys (a NULL
/// key with NULL, [`with_keys`]), with their groups by the keys, each group's figures the
/// functions' over its rows. Each row then has its partition's figures, as the window gives them.
///
/// Left as planned, the window would run at the city over every node's single rows,
/// which the city refuses. The join on `county_code` runs inside each node, over its own
/// rows and groups, as a join the query wrote so would.
#[derive(Debug, Default)]
pub struct WindowAsJoinedGroups;

impl OptimizerRule for WindowAsJoinedGroups {
    fn name(&self) -> &str {
        "window_as_joined_groups"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Window(window) = &plan else {
            return Ok(Transformed::no(plan));
        };
        // A window whose rewrite fails to plan, as one over columns of the same name from
        // rows of no table, stays as it is, at the city.
        match joined_groups(window) {
            Ok(Some(joined)) => Ok(Transformed::yes(joined)),
            _ => Ok(Transformed::no(plan)),
        }
    }
}

/// `window` as its input joined with the groups of its partitions, if it can be.
fn joined_groups(window: &Window) -> Result<Option<LogicalPlan>> {
    if !single_rows(&window.input)? || !reads_nodes(&window.input) {
        return Ok(None);
    }
    let functions: Option<Vec<&WindowFunction>> = window
        .window_expr
        .iter()
        .map(|e| {
            let unaliased = match e {
                Expr::Alias(alias) => alias.expr.as_ref(),
                e => e,
            };
            match unaliased {
                Expr::WindowFunction(f) => Some(f.as_ref()),
                _ => None,
            }
        })
        .collect();
    let Some(functions) = functions else {
        return Ok(None);
    };
    let Some(partition) = functions.first().map(|f| &f.params.partition_by) else {
        return Ok(None);
    };
    let figures: Option<Vec<Expr>> = functions
        .iter()
        .enumerate()
        .map(|(i, f)| Some(whole_partition(f, partition)?.alias(format!("{FIGURE}{i}"))))
        .collect();
    let Some(figures) = figures else {
        return Ok(None);
    };
    // The rows, with the keys that are not columns computed as columns of their own.
    let (rows, keys) = with_keys(&window.input, partition)?;
    let names: BTreeSet<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    if names.len() < keys.len() {
        return Ok(None);
    }
    // Keys computed for the rows are named apart in the groups: the rows' own are named
    // by no table.
    let group_key = |k: &Column| match k.name.strip_prefix(KEY) {
        Some(i) => format!("{GROUP_KEY}{i}"),
        None => k.name.clone(),
    };
    let grouped = LogicalPlanBuilder::from(Arc::clone(&rows))
        .aggregate(
            keys.iter()
                .map(|k| Expr::Column(k.clone()).alias(group_key(k))),
            figures,
        )?
        .build()?;
    let LogicalPlan::Aggregate(aggregate) = &grouped else {
        return Ok(None);
    };
    if !by_county(aggregate) {
        return Ok(None);
    }
    // The groups' keys keep their names, so that a key `county_code` keeps the join
    // within each county.
    let grouped_keys: Vec<Column> = keys
        .iter()
        .map(|k| Column::new(Some(GROUPS), group_key(k)))
        .collect();
    let joined = LogicalPlanBuilder::from(rows)
        .join_detailed(
            LogicalPlanBuilder::from(grouped).alias(GROUPS)?.build()?,
            JoinType::Inner,
            (keys, grouped_keys),
            None,
            NullEquality::NullEqualsNothing,
        )?
        .build()?;
    let width = window.input.schema().fields().len();
    let columns = window
        .schema
        .iter()
        .enumerate()
        .map(|(i, (qualifier, field))| match i.checked_sub(width) {
            None => Expr::Column(Column::new(qualifier.cloned(), field.name())),
            Some(figure) => Expr::Column(Column::new(Some(GROUPS), format!("{FIGURE}{figure}")))
                .alias_qualified(qualifier.cloned(), field.name()),
        });
    let projection = Projection::try_new_with_schema(
        columns.collect(),
        Arc::new(joined),
        Arc::clone(&window.schema),
    )?;
    Ok(Some(LogicalPlan::Projection(projection)))
}

/// `input`, with each of `keys` that is not a column that is never NULL computed as
/// columns of its own, and the columns to join on. A key that may be NULL is two: whether
/// it is NULL, and its value or, where NULL, its type's default. The window puts a NULL
/// key's rows in one partition, and a join on the two keeps them with it, though a join
/// matches no NULL: DataFusion adds the equalities of a filter above to a join's keys, and
/// one made to match NULL would match them under those too.
fn with_keys(input: &Arc<LogicalPlan>, keys: &[Expr]) -> Result<(Arc<LogicalPlan>, Vec<Column>)> {
    let schema = input.schema();
    let mut computed = Vec::new();
    let mut columns = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let name = format!("{KEY}{i}");
        // At a node, every row holds its own county_code.
        let never_null = is_county_code(input, key) || !key.nullable(schema)?;
        match (key, never_null) {
            (Expr::Column(c), true) => columns.push(c.clone()),
            (_, true) => {
                computed.push(key.clone().alias(&name));
                columns.push(Column::from_name(name));
            }
            (_, false) => {
                let default = ScalarValue::new_default(&key.get_type(schema)?)?;
                let null = format!("{name}_null");
                computed.push(key.clone().is_null().alias(&null));
                computed.push(coalesce(vec![key.clone(), lit(default)]).alias(&name));
                columns.extend([Column::from_name(null), Column::from_name(name)]);
            }
        }
    }
    if computed.is_empty() {
        return Ok((Arc::clone(input), columns));
    }
    let all = schema.columns().into_iter().map(Expr::Column);
    let rows = LogicalPlanBuilder::from(Arc::clone(input))
        .project(all.chain(computed))?
        .build()?;
    Ok((Arc::new(rows), columns))
}

/// Whether `plan` gives single rows, not groups: it aggregates nothing, but for the
/// groups a window below was joined with.
fn single_rows(plan: &LogicalPlan) -> Result<bool> {
    let mut groups = false;
    plan.apply(|p| {
        Ok(match p {
            LogicalPlan::SubqueryAlias(alias) if alias.alias.table() == GROUPS => {
                TreeNodeRecursion::Jump
            }
            LogicalPlan::Aggregate(_) => {
                groups = true;
                TreeNodeRecursion::Stop
            }
            _ => TreeNodeRecursion::Continue,
        })
    })?;
    Ok(!groups)
}

/// The aggregate `function` computes over each whole partition by `partition`, if it is
/// an aggregate over its whole partition, by those keys, with no filter.
fn whole_partition(function: &WindowFunction, partition: &[Expr]) -> Option<Expr> {
    let WindowFunctionDefinition::AggregateUDF(udaf) = &function.fun else {
        return None;
    };
    let WindowFunctionParams {
        args,
        partition_by,
        order_by,
        window_frame,
        filter,
        null_treatment,
        distinct,
    } = &function.params;
    let whole = matches!(&window_frame.start_bound, WindowFrameBound::Preceding(v) if v.is_null())
        && matches!(&window_frame.end_bound, WindowFrameBound::Following(v) if v.is_null());
    let plain = whole && order_by.is_empty() && filter.is_none() && partition_by == partition;
    plain.then(|| {
        Expr::AggregateFunction(AggregateFunction::new_udf(
            Arc::clone(udaf),
            args.clone(),
            *distinct,
            None,
            Vec::new(),
            *null_treatment,
        ))
    })
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;
    use sunlight_domain::Table;

    use super::*;
    use crate::joined_groups::GROUPS_AS_ROWS;
    use crate::test_rules::{answer, node_rows, optimized, rewriting_context};

    #[tokio::test]
    async fn windows_over_whole_partitions_by_county_are_the_rows_joined_with_their_groups() {
        let rewriting = rewriting_context();
        let plain = SessionContext::new();
        let definition = "(county_code TEXT, g TEXT, v INT) AS VALUES ('1', 'x', 1), \
             ('1', 'x', 5), ('1', NULL, 2), ('1', NULL, 9), ('2', 'x', 4), ('2', 'y', 7), \
             ('2', 'y', NULL), ('3', NULL, 3)";
        node_rows(&[&rewriting, &plain], Table::Payroll, "t", definition).await;
        let joined = [
            "SELECT county_code, count(*) FROM (SELECT county_code, v, avg(v) OVER \
             (PARTITION BY county_code, g) AS a FROM t) s WHERE v > a GROUP BY 1 ORDER BY 1",
            "SELECT g, v, count(*) OVER (PARTITION BY county_code), sum(v) OVER \
             (PARTITION BY county_code), max(v) OVER (PARTITION BY county_code) FROM t \
             ORDER BY 1, 2",
            "SELECT county_code, g, v, count(DISTINCT v) OVER (PARTITION BY g, county_code) \
             AS n FROM t ORDER BY 1, 2, 3",
            "SELECT county_code, v, min(v) OVER (PARTITION BY county_code ROWS BETWEEN \
             UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) FROM t ORDER BY 1, 2",
            // Keys computed from the rows.
            "SELECT county_code, count(*) FROM (SELECT county_code, v, max(v) OVER \
             (PARTITION BY upper(g), county_code, v > 3) AS m FROM t) s WHERE v = m \
             GROUP BY 1 ORDER BY 1",
            // Two windows, by the same keys in two orders.
            "SELECT county_code, count(*) FROM (SELECT county_code, v, avg(v) OVER \
             (PARTITION BY county_code, g) AS a, count(*) OVER (PARTITION BY g, county_code) \
             AS n FROM t) s WHERE v >= a AND n > 1 GROUP BY 1 ORDER BY 1",
        ];
        let kept = [
            // Not by county, running, ranked, or over groups.
            "SELECT g, v, avg(v) OVER (PARTITION BY g) FROM t ORDER BY 1, 2",
            "SELECT county_code, v, sum(v) OVER (PARTITION BY county_code ORDER BY v) FROM t \
             ORDER BY 1, 2",
            "SELECT county_code, v, row_number() OVER (PARTITION BY county_code ORDER BY v) \
             FROM t ORDER BY 1, 2",
            "SELECT county_code, g, sum(sum(v)) OVER (PARTITION BY county_code) FROM t \
             GROUP BY 1, 2 ORDER BY 1, 2",
        ];
        for (sql, rewritten) in joined
            .iter()
            .map(|s| (s, true))
            .chain(kept.iter().map(|s| (s, false)))
        {
            let plan = optimized(&rewriting, sql).await;
            assert_eq!(plan.contains(GROUPS), rewritten, "{sql}\n{plan}");
            // The join stays within each county, rather than taking the groups as rows.
            assert!(!plan.contains(GROUPS_AS_ROWS), "{sql}\n{plan}");
            assert_eq!(
                answer(&rewriting, sql).await,
                answer(&plain, sql).await,
                "{sql}\n{plan}"
            );
        }
    }
}
