//! [`KeptReferenceRows`]: a join that keeps or tests the rows of the reference table
//! (`subsidy_standards s LEFT JOIN disbursements d ON …`, or `EXISTS` and `NOT EXISTS`
//! from the standards), rewritten so that each node joins its own rows with its own copy,
//! and no node sends single rows; [`SuppliedSideFirst`] first joins the node tables that
//! such a join supplies.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, NullEquality, ScalarValue};
use datafusion::error::Result;
use datafusion::functions_aggregate::count::count_all;
use datafusion::logical_expr::{
    Expr, Join, JoinConstraint, JoinType, LogicalPlan, LogicalPlanBuilder, Projection, Union, col,
    lit,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use crate::in_subquery::reads_nodes;
use crate::joined_groups::{as_rows, by_county, groups, read_by, with_inputs};

/// The prefix of the columns of the reference rows that matched.
const MATCHED: &str = "__matched_";

/// The prefix of the columns of an outer join's matched and unmatched rows, united.
const UNITED: &str = "__united_";

/// Rewrites a join of rows every node can hold alike (the reference table, read at the
/// city from its one copy, or groups across counties, which the city answers first and
/// sends as rows) with the rows of the nodes, where the join keeps the reference rows
/// that match nothing, or only tests the reference rows for a match. Left as planned,
/// either would need the nodes' rows at the city, since no node knows whether another
/// matched a reference row.
///
/// - The reference rows that match anywhere are the groups, by every column of theirs, of
///   the inner join, which each node runs with its own copy. They reach the city as any
///   aggregate does, and become rows there ([`as_rows`]): a group one node held back
///   refuses the query, since leaving it out would count a matched row as unmatched.
/// - A semi-join, anti-join or mark join then tests the reference rows against those,
///   equal in every column, NULL equal to NULL.
/// - An outer join that keeps the reference rows is the inner join, which the nodes run,
///   united with the reference rows that matched nowhere, their other columns NULL. An
///   aggregate above it merges the nodes' partial states with its own over those.
///
/// Left alone: a join whose other side is groups already (the city joins them as they
/// are), a join with groups on `county_code` (it runs within each county), a semi-join
/// that keeps groups on equal keys alone, `NOT IN` (its NULLs mean no match anywhere),
/// and a full join.
#[derive(Debug, Default)]
pub struct KeptReferenceRows;

impl OptimizerRule for KeptReferenceRows {
    fn name(&self) -> &str {
        "kept_reference_rows"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(join) = plan else {
            return Ok(Transformed::no(plan));
        };
        let Some(reference_left) = kept_reference(&join) else {
            return Ok(Transformed::no(LogicalPlan::Join(join)));
        };
        let join = with_groups_as_rows(join, reference_left)?;
        let (reference, _) = sides(&join, reference_left);
        let matched = as_rows(&Arc::new(matched(&join, reference)?))?;
        let outer = matches!(join.join_type, JoinType::Left | JoinType::Right);
        let tested = match outer {
            true => JoinType::LeftAnti,
            false if reference_left => join.join_type,
            false => join.join_type.swap(),
        };
        let on = reference
            .schema()
            .columns()
            .into_iter()
            .enumerate()
            .map(|(i, c)| (Expr::Column(c), col(matched_column(i))))
            .collect();
        let tested = LogicalPlan::Join(Join::try_new(
            Arc::clone(reference),
            matched,
            on,
            None,
            tested,
            JoinConstraint::On,
            NullEquality::NullEqualsNull,
            false,
        )?);
        let rewritten = match outer {
            true => with_unmatched(&join, reference_left, tested)?,
            // The reference side's columns, and the mark, named as the join named them.
            false => tested,
        };
        named_as(rewritten, &join.schema).map(Transformed::yes)
    }
}

/// Joins with the rows an outer join supplies made first: `(a ⟕ b) ⟕ c` as `a ⟕ (b ⟕ c)`,
/// and `(a ⟕ b) ⋈ c` as `a ⋈ (b ⋈ c)`, and alike for `b ⟖ a`, where the second join reads
/// no column of `a` and matches no NULL in a column of `b`, so that a row of `a` that
/// matched no row of `b` matches none of `c` either. In `subsidy_standards s LEFT JOIN
/// disbursements d ON … LEFT JOIN persons p ON p.person_id = d.person_id AND p.county_code
/// = d.county_code`, the nodes then join their own tables, and [`KeptReferenceRows`] keeps
/// the standards over what they joined. The columns keep the order of the second join.
#[derive(Debug, Default)]
pub struct SuppliedSideFirst;

impl OptimizerRule for SuppliedSideFirst {
    fn name(&self) -> &str {
        "supplied_side_first"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(second) = &plan else {
            return Ok(Transformed::no(plan));
        };
        // The first join, under a projection that leaves some of its columns out, if any.
        let first = match second.left.as_ref() {
            LogicalPlan::Join(first) => first,
            LogicalPlan::Projection(projection)
                if projection.expr.iter().all(|e| matches!(e, Expr::Column(_))) =>
            {
                match projection.input.as_ref() {
                    LogicalPlan::Join(first) => first,
                    _ => return Ok(Transformed::no(plan)),
                }
            }
            _ => return Ok(Transformed::no(plan)),
        };
        // The side whose rows the first join keeps, and the side it supplies.
        let (kept, supplied) = match first.join_type {
            JoinType::Left => (&first.left, &first.right),
            JoinType::Right => (&first.right, &first.left),
            _ => return Ok(Transformed::no(plan)),
        };
        // A plain column of the supplied side compared equal matches no NULL.
        let rejects_nulls = second
            .on
            .iter()
            .any(|(l, _)| matches!(l, Expr::Column(c) if supplied.schema().has_column(c)));
        let reassociates = matches!(second.join_type, JoinType::Left | JoinType::Inner)
            && !first.null_aware
            && !second.null_aware
            && second.null_equality == NullEquality::NullEqualsNothing
            && rejects_nulls
            && !read_by(second).any(|c| kept.schema().has_column(c));
        if !reassociates {
            return Ok(Transformed::no(plan));
        }
        let supplied = Arc::new(LogicalPlan::Join(Join::try_new(
            Arc::clone(supplied),
            Arc::clone(&second.right),
            second.on.clone(),
            second.filter.clone(),
            second.join_type,
            second.join_constraint,
            second.null_equality,
            false,
        )?));
        // Each side where the first join had it; an inner second join keeps no row of the
        // first that matched nothing.
        let (left, right) = match first.join_type {
            JoinType::Left => (Arc::clone(kept), supplied),
            _ => (supplied, Arc::clone(kept)),
        };
        let join_type = match second.join_type {
            JoinType::Inner => JoinType::Inner,
            _ => first.join_type,
        };
        let joined = LogicalPlan::Join(Join::try_new(
            left,
            right,
            first.on.clone(),
            first.filter.clone(),
            join_type,
            first.join_constraint,
            first.null_equality,
            false,
        )?);
        // The second join's columns, in its order.
        let columns = second.schema.columns().into_iter().map(Expr::Column);
        let projection = Projection::try_new(columns.collect(), Arc::new(joined))?;
        Ok(Transformed::yes(LogicalPlan::Projection(projection)))
    }
}

/// Whether `join` keeps or tests the rows of a side that every node can hold alike (one
/// that reads no node table, or groups across counties, which the city forms first),
/// while the other reads the nodes' rows: `Some(true)` where that side is the left.
fn kept_reference(join: &Join) -> Option<bool> {
    let reference_left = match join.join_type {
        JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => true,
        JoinType::Right | JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => false,
        JoinType::Inner | JoinType::Full => return None,
    };
    let (reference, other) = sides(join, reference_left);
    // A semi-join on equal keys alone keeps groups by testing the other side's, grouped
    // by those keys, which the city can join as they come: a group a node held back there
    // leaves rows out, and the answer says so. Where it compares other values too, the
    // other side's groups would be by those values, mostly too small to leave a node.
    let semi_on_keys =
        matches!(join.join_type, JoinType::LeftSemi | JoinType::RightSemi) && join.filter.is_none();
    let alike = !reads_nodes(reference) || (groups(reference) && !by_county(join) && !semi_on_keys);
    let rewritable = !join.null_aware && alike && reads_nodes(other) && !groups(other);
    rewritable.then_some(reference_left)
}

/// `join` with its kept side, where that is groups of the nodes' tables, as their rows
/// ([`as_rows`]): the city answers them first, and the nodes join them as they join the
/// reference table.
fn with_groups_as_rows(join: Join, reference_left: bool) -> Result<Join> {
    let (reference, _) = sides(&join, reference_left);
    if !groups(reference) {
        return Ok(join);
    }
    let rows = as_rows(reference)?;
    let (left, right) = match reference_left {
        true => (rows, Arc::clone(&join.right)),
        false => (Arc::clone(&join.left), rows),
    };
    with_inputs(join, left, right)
}

/// The reference side of `join` and its other side.
fn sides(join: &Join, reference_left: bool) -> (&Arc<LogicalPlan>, &Arc<LogicalPlan>) {
    match reference_left {
        true => (&join.left, &join.right),
        false => (&join.right, &join.left),
    }
}

/// The inner join of `join`'s sides, on its own conditions.
fn inner(join: &Join) -> Result<LogicalPlan> {
    Ok(LogicalPlan::Join(Join::try_new(
        Arc::clone(&join.left),
        Arc::clone(&join.right),
        join.on.clone(),
        join.filter.clone(),
        JoinType::Inner,
        join.join_constraint,
        join.null_equality,
        false,
    )?))
}

/// The `reference` rows that match in `join`: the groups of the inner join by every
/// column of theirs, named apart from them; for a side of no columns, one group if any
/// row matched. Each group counts its pairs, which keeps DataFusion from reading the
/// groups as a semi-join again.
fn matched(join: &Join, reference: &LogicalPlan) -> Result<LogicalPlan> {
    let mut keys: Vec<Expr> = reference
        .schema()
        .columns()
        .into_iter()
        .enumerate()
        .map(|(i, c)| Expr::Column(c).alias(matched_column(i)))
        .collect();
    if keys.is_empty() {
        keys.push(lit(true).alias(format!("{MATCHED}any")));
    }
    LogicalPlanBuilder::from(inner(join)?)
        .aggregate(keys, [count_all().alias(format!("{MATCHED}pairs"))])?
        .build()
}

/// The name of the `i`th column of the reference rows that matched.
fn matched_column(i: usize) -> String {
    format!("{MATCHED}{i}")
}

/// The outer `join` as its inner join united with the reference rows that matched
/// nowhere (`unmatched`), with the other side's columns NULL. The columns of both are
/// named by their place: the sides of a join may share names, which a union would tell
/// apart only by where they stand, and DataFusion renames them as it leaves columns out.
fn with_unmatched(
    join: &Join,
    reference_left: bool,
    unmatched: LogicalPlan,
) -> Result<LogicalPlan> {
    let left_columns = join.left.schema().fields().len();
    let (mut matched, mut padded) = (Vec::new(), Vec::new());
    for (i, (qualifier, field)) in join.schema.iter().enumerate() {
        let place = format!("{UNITED}{i}");
        let column = Expr::Column((qualifier, field).into());
        matched.push(column.clone().alias(&place));
        let value = match (i < left_columns) == reference_left {
            true => column,
            false => Expr::Literal(ScalarValue::try_from(field.data_type())?, None),
        };
        padded.push(value.alias(place));
    }
    let matched = Projection::try_new(matched, Arc::new(inner(join)?))?;
    let padded = Projection::try_new(padded, Arc::new(unmatched))?;
    let union = Union::try_new(vec![
        Arc::new(LogicalPlan::Projection(matched)),
        Arc::new(LogicalPlan::Projection(padded)),
    ])?;
    Ok(LogicalPlan::Union(union))
}

/// `plan`'s columns, in order, named as those of `schema`.
fn named_as(plan: LogicalPlan, schema: &DFSchema) -> Result<LogicalPlan> {
    let named = plan
        .schema()
        .iter()
        .zip(schema.iter())
        .map(|(column, (qualifier, field))| {
            Expr::Column(column.into()).alias_qualified(qualifier.cloned(), field.name())
        })
        .collect();
    Ok(LogicalPlan::Projection(Projection::try_new(
        named,
        Arc::new(plan),
    )?))
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;
    use sunlight_domain::Table;

    use super::*;
    use crate::test_rules::{answer, node_rows, optimized, rewriting_context, rewritten_by};

    #[tokio::test]
    async fn joins_that_keep_or_test_the_reference_rows_are_rewritten() {
        let s = "subsidy_standards s";
        let d = "disbursements d";
        let by_type = "(SELECT subsidy_type, avg(amount) AS a FROM disbursements GROUP BY 1) x";
        for sql in [
            format!(
                "SELECT s.cap, count(d.amount) FROM {s} LEFT JOIN {d} ON d.amount > s.cap GROUP BY 1"
            ),
            format!(
                "SELECT s.cap, count(d.amount) FROM {d} RIGHT JOIN {s} ON d.amount > s.cap GROUP BY 1"
            ),
            "SELECT department FROM subsidy_standards EXCEPT SELECT department FROM disbursements"
                .into(),
            // Groups across counties, which every node can hold alike once the city has
            // formed them.
            format!(
                "SELECT x.subsidy_type, count(d.amount) FROM {by_type} LEFT JOIN {d} \
                 ON d.subsidy_type = x.subsidy_type AND d.amount > 3 * x.a GROUP BY 1"
            ),
            // Groups tested on more than equal keys.
            format!(
                "SELECT x.subsidy_type FROM {by_type} LEFT SEMI JOIN {d} \
                 ON d.subsidy_type = x.subsidy_type AND d.amount > 3 * x.a"
            ),
        ] {
            assert!(rewritten_by(&KeptReferenceRows, &sql).await, "{sql}");
        }
        for sql in [
            // Driven by the nodes' rows, which each node joins as it is.
            format!("SELECT count(*) FROM {d} LEFT JOIN {s} ON d.amount > s.cap"),
            format!("SELECT count(*) FROM {s} JOIN {d} ON d.amount > s.cap"),
            // Groups, which the city joins; NOT IN, whose NULLs count at every node; a
            // full join.
            format!(
                "SELECT count(*) FROM {s} LEFT JOIN {by_type} ON x.subsidy_type = s.subsidy_type"
            ),
            format!("SELECT cap FROM {s} WHERE s.department NOT IN (SELECT township FROM persons)"),
            format!("SELECT count(*) FROM {s} FULL JOIN {d} ON d.amount > s.cap"),
            // Groups tested for a match, as INTERSECT does.
            "SELECT township FROM disbursements GROUP BY 1 INTERSECT SELECT township FROM \
             persons"
                .into(),
            // Groups by county, joined within each county.
            format!(
                "SELECT count(d.amount) FROM (SELECT county_code, avg(amount) AS a FROM \
                 disbursements GROUP BY 1) x LEFT JOIN {d} \
                 ON d.county_code = x.county_code AND d.amount > x.a"
            ),
        ] {
            assert!(!rewritten_by(&KeptReferenceRows, &sql).await, "{sql}");
        }
    }

    #[tokio::test]
    async fn kept_reference_rows_give_the_rows_the_join_gives() {
        let rewriting = rewriting_context();
        let plain = SessionContext::new();
        // Reference rows alike in every column, and NULLs on both sides.
        let standards = "CREATE TABLE subsidy_standards(k TEXT, cap INT) AS VALUES ('a', 2), \
                         ('b', NULL), (NULL, 3), ('a', 2), ('c', 9), ('d', 0)";
        for ctx in [&rewriting, &plain] {
            ctx.sql(standards).await.unwrap();
        }
        let definition = "(k TEXT, v INT) AS VALUES ('a', 1), ('a', 5), ('b', 2), (NULL, 4), \
                          ('x', 3), ('c', NULL)";
        node_rows(&[&rewriting, &plain], Table::Disbursements, "t", definition).await;
        let definition = "(k TEXT, w INT) AS VALUES ('a', 3), ('a', 0), ('b', 7), (NULL, 1), \
                          ('c', 2)";
        node_rows(&[&rewriting, &plain], Table::Persons, "u", definition).await;
        let s = "subsidy_standards s";
        for sql in [
            // The rows the outer join supplies, joined with a table of their own.
            format!(
                "SELECT s.k, count(u.w), count(t.v), count(*) FROM {s} LEFT JOIN t ON t.k = s.k \
                 LEFT JOIN u ON u.k = t.k AND u.w > t.v GROUP BY 1 ORDER BY 1"
            ),
            format!(
                "SELECT s.k, count(u.w), count(t.v) FROM t RIGHT JOIN {s} ON t.k = s.k \
                 LEFT JOIN u ON u.k = t.k GROUP BY 1 ORDER BY 1"
            ),
            format!(
                "SELECT * FROM t RIGHT JOIN {s} ON t.k = s.k LEFT JOIN u ON u.k = t.k \
                 ORDER BY 1, 2, 3, 4, 5, 6"
            ),
            // Left in their order: the second join matches the NULLs the first supplies, or
            // reads the standards.
            format!(
                "SELECT s.k, t.v, u.w FROM {s} LEFT JOIN t ON t.k = s.k LEFT JOIN u \
                 ON coalesce(u.k, 'a') = coalesce(t.k, 'a') ORDER BY 1, 2, 3"
            ),
            format!(
                "SELECT s.k, t.v, u.w FROM {s} LEFT JOIN t ON t.k = s.k LEFT JOIN u \
                 ON u.k = t.k AND u.w < s.cap ORDER BY 1, 2, 3"
            ),
            format!(
                "SELECT s.k, s.cap, count(t.v), sum(t.v), count(*) FROM {s} \
                 LEFT JOIN t ON t.k = s.k AND t.v > s.cap GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            format!("SELECT s.k, t.v FROM {s} LEFT JOIN t ON t.k = s.k ORDER BY 1, 2"),
            format!("SELECT t.v, s.cap FROM t RIGHT JOIN {s} ON t.v < s.cap ORDER BY 1, 2"),
            // Both sides' k, of which the figures read one.
            format!(
                "SELECT s.k, count(*) FROM t RIGHT JOIN {s} ON t.k = s.k GROUP BY 1 \
                 HAVING count(t.v) > 0 ORDER BY 1"
            ),
            format!("SELECT s.k FROM {s} LEFT JOIN t ON t.k = s.k WHERE t.k IS NULL ORDER BY 1"),
            format!(
                "SELECT k, cap FROM {s} WHERE EXISTS (SELECT 1 FROM t WHERE t.k = s.k) ORDER BY 1, 2"
            ),
            format!(
                "SELECT k, cap FROM {s} WHERE NOT EXISTS (SELECT 1 FROM t WHERE t.v > s.cap) \
                 ORDER BY 1, 2"
            ),
            format!(
                "SELECT k, cap FROM {s} WHERE cap = 9 OR EXISTS (SELECT 1 FROM t WHERE t.k = s.k) \
                 ORDER BY 1, 2"
            ),
            "SELECT k FROM subsidy_standards EXCEPT SELECT k FROM t ORDER BY 1".into(),
            format!("SELECT DISTINCT s.k FROM {s} JOIN t ON t.k = s.k ORDER BY 1"),
            // A side of no columns: every row of it matches, or none.
            format!("SELECT count(*) FROM {s} LEFT JOIN t ON t.v > 4"),
            format!("SELECT count(*) FROM {s} LEFT JOIN t ON t.v > 9"),
            format!("SELECT count(*) FROM {s} WHERE EXISTS (SELECT 1 FROM t WHERE t.v > 4)"),
            "SELECT x.k, x.m, count(t.v) FROM (SELECT k, max(v) AS m FROM t GROUP BY k) x \
             LEFT JOIN t ON t.k = x.k AND t.v * 2 > x.m GROUP BY 1, 2 ORDER BY 1, 2"
                .into(),
            "SELECT x.k, x.m FROM (SELECT k, max(v) AS m FROM t GROUP BY k) x WHERE EXISTS \
             (SELECT 1 FROM t WHERE t.k = x.k AND t.v * 2 < x.m) ORDER BY 1, 2"
                .into(),
        ] {
            let shown = optimized(&rewriting, &sql).await;
            assert!(shown.contains(MATCHED), "{sql}\n{shown}");
            assert_eq!(
                answer(&rewriting, &sql).await,
                answer(&plain, &sql).await,
                "{sql}"
            );
        }
    }
}
