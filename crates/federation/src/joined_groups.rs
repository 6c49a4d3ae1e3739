//! [`JoinedGroupsAsRows`]: a join of the nodes' rows with groups aggregated across
//! counties (`disbursements d JOIN (SELECT subsidy_type, avg(amount) AS a FROM
//! disbursements GROUP BY 1) x ON x.subsidy_type = d.subsidy_type AND d.amount > 2 * x.a`),
//! with the groups formed first, at the city, and sent to every node as rows written in
//! its fragment. Each node then joins its own rows with them, as with the reference table.
//! Left as planned, the join would need the rows of every node at the city.
//!
//! [`TestedSideAsGroups`]: the side a semi-join, anti-join or mark join only tests for
//! matches (`INTERSECT`, `EXCEPT`, `EXISTS`), grouped by the columns the join reads, so
//! that it too is groups rather than the rows of every node.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Spans};
use datafusion::error::Result;
use datafusion::functions::core::expr_fn::{get_field, named_struct};
use datafusion::functions_aggregate::expr_fn::array_agg;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Join, JoinType, LogicalPlan, LogicalPlanBuilder, Operator, Subquery, col, lit,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use sunlight_domain::ColumnClass;

use crate::class::reads;
use crate::in_subquery::reads_nodes;
use crate::pushdown::reference_rows_once;

/// The name of the list of the groups' rows, each a struct of their columns.
pub(crate) const GROUPS_AS_ROWS: &str = "__joined_groups";

/// Rewrites a join's input that aggregates the nodes' tables, where the other input
/// reads their rows and drives the join (its rows are the ones kept), as the rows of
/// `(SELECT array_agg(named_struct(…)) FROM groups)`, unnested. The city answers that
/// subquery on its own, from the nodes' partial aggregates, under the same disclosure
/// control as any answer: a group one node held back refuses the query, rather than
/// joining part of the groups. Each fragment then carries the list as a value.
///
/// A join on `county_code` already runs within each county, and groups by an identifier
/// are left alone: identifiers reach the city only as tokens, which a node's rows would
/// not match.
#[derive(Debug, Default)]
pub struct JoinedGroupsAsRows;

impl OptimizerRule for JoinedGroupsAsRows {
    fn name(&self) -> &str {
        "joined_groups_as_rows"
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
        let by_county = by_county(&join);
        // The side of the groups keeps no unmatched row of theirs.
        let rows_left = reference_rows_once(join.join_type.swap());
        let rows_right = reference_rows_once(join.join_type);
        let (left, right) = match (groups(&join.left), groups(&join.right)) {
            (false, true) if !by_county && rows_left && reads_nodes(&join.left) => {
                (join.left.clone(), as_rows(&join.right)?)
            }
            (true, false) if !by_county && rows_right && reads_nodes(&join.right) => {
                (as_rows(&join.left)?, join.right.clone())
            }
            _ => return Ok(Transformed::no(LogicalPlan::Join(join))),
        };
        let joined = with_inputs(join, left, right)?;
        Ok(Transformed::yes(LogicalPlan::Join(joined)))
    }
}

/// Rewrites the side of a semi-join, anti-join or mark join whose rows are only tested
/// for a match, where it reads the nodes' tables, as its groups by the columns the join
/// reads: `t INTERSECT u` as `t` semi-joined with `SELECT … FROM u GROUP BY …`. The
/// join keeps, drops or marks the same rows, since a match depends on those columns
/// alone; the groups then reach the city as any aggregate does, under the same
/// disclosure control, and [`JoinedGroupsAsRows`] sends them to the nodes where the
/// other side is their rows.
///
/// Left alone: a join on `county_code`, which runs within each county (but see
/// [`ListedTestedSideAsGroups`]), a side grouped already, a join on an identifier
/// (identifiers reach the city only as tokens), and a join that reads no column of the
/// tested side, whose groups would be one even where it has no rows.
#[derive(Debug, Default)]
pub struct TestedSideAsGroups;

impl OptimizerRule for TestedSideAsGroups {
    fn name(&self) -> &str {
        "tested_side_as_groups"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        match plan {
            LogicalPlan::Join(join) if !by_county(&join) => tested_as_groups(join),
            plan => Ok(Transformed::no(plan)),
        }
    }
}

/// [`TestedSideAsGroups`] for a join on `county_code` whose kept side is groups, where
/// the answer lists the groups it keeps: `SELECT county_code, subsidy_type FROM
/// disbursements EXCEPT SELECT county_code, subsidy_type FROM disbursements WHERE …`.
/// Inside each node, the join would test the groups against rows, and whether a group
/// matches may be one person's row, which no node releases as a list. As groups, the
/// tested side reaches the city under the same control as any aggregate, and the city
/// joins them. Where the answer aggregates what the join keeps (`SELECT count(*) FROM (…
/// EXCEPT …)`), each node still joins within its county, as it releases such a figure.
#[derive(Debug, Default)]
pub struct ListedTestedSideAsGroups;

impl OptimizerRule for ListedTestedSideAsGroups {
    fn name(&self) -> &str {
        "listed_tested_side_as_groups"
    }

    /// The rule starts from the answer and walks down to the join it lists.
    fn apply_order(&self) -> Option<ApplyOrder> {
        None
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        listed(plan)
    }
}

/// `plan`, with the join on `county_code` whose kept groups it lists, under projections,
/// filters, sorts, limits and aliases, testing groups.
fn listed(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    match plan {
        LogicalPlan::Join(join)
            if by_county(&join)
                && tests_right(&join)
                    .is_some_and(|right| groups(if right { &join.left } else { &join.right })) =>
        {
            tested_as_groups(join)
        }
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Analyze(_) => plan.map_children(listed),
        plan => Ok(Transformed::no(plan)),
    }
}

/// Whether `join` only tests its right side for a match (a left semi-join, anti-join or
/// mark join), or its left (a right one); `None` for any other join.
fn tests_right(join: &Join) -> Option<bool> {
    match join.join_type {
        JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => Some(true),
        JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => Some(false),
        _ => None,
    }
}

/// `join` with the side it tests grouped by the columns the join reads there, unless it
/// is a join [`TestedSideAsGroups`] leaves alone for more than matching on `county_code`.
fn tested_as_groups(join: Join) -> Result<Transformed<LogicalPlan>> {
    let Some(tests_right) = tests_right(&join) else {
        return Ok(Transformed::no(LogicalPlan::Join(join)));
    };
    let tested = if tests_right { &join.right } else { &join.left };
    let read: Vec<Expr> = read_by(&join)
        .filter(|c| tested.schema().has_column(c))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|c| Expr::Column(c.clone()))
        .collect();
    let keys: Vec<&Expr> = read.iter().collect();
    if read.is_empty()
        || groups(tested)
        || !reads_nodes(tested)
        || reads(&keys, tested.schema(), &[ColumnClass::Direct])
    {
        return Ok(Transformed::no(LogicalPlan::Join(join)));
    }
    let grouped = Arc::new(
        LogicalPlanBuilder::from(Arc::clone(tested))
            .aggregate(read, Vec::<Expr>::new())?
            .build()?,
    );
    let (left, right) = match tests_right {
        true => (Arc::clone(&join.left), grouped),
        false => (grouped, Arc::clone(&join.right)),
    };
    let joined = with_inputs(join, left, right)?;
    Ok(Transformed::yes(LogicalPlan::Join(joined)))
}

/// The columns `join`'s conditions read.
pub(crate) fn read_by(join: &Join) -> impl Iterator<Item = &Column> {
    join.on
        .iter()
        .flat_map(|(l, r)| [l, r])
        .chain(&join.filter)
        .flat_map(Expr::column_refs)
}

/// `join` over `left` and `right` in place of its inputs.
pub(crate) fn with_inputs(
    join: Join,
    left: Arc<LogicalPlan>,
    right: Arc<LogicalPlan>,
) -> Result<Join> {
    Join::try_new(
        left,
        right,
        join.on,
        join.filter,
        join.join_type,
        join.join_constraint,
        join.null_equality,
        join.null_aware,
    )
}

/// Whether `join` matches rows on `county_code`, so that it runs within each county.
pub(crate) fn by_county(join: &Join) -> bool {
    join.on
        .iter()
        .map(|(l, r)| (l, r))
        .chain(join.filter.iter().flat_map(equalities))
        .any(|(l, r)| county_code(l) && county_code(r))
}

/// The pairs of expressions `condition` tests equal, where it is a conjunction.
fn equalities(condition: &Expr) -> Vec<(&Expr, &Expr)> {
    split_conjunction(condition)
        .into_iter()
        .filter_map(|c| match c {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) => Some((left.as_ref(), right.as_ref())),
            _ => None,
        })
        .collect()
}

/// Whether `expr` is a column named `county_code`.
fn county_code(expr: &Expr) -> bool {
    matches!(expr, Expr::Column(c) if c.name == "county_code")
}

/// Whether `plan` gives the groups of an aggregate of the nodes' tables, by no
/// identifier: an aggregate under projections, filters (HAVING), sorts and limits.
pub(crate) fn groups(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_) => groups(plan.inputs()[0]),
        LogicalPlan::Aggregate(aggregate) => {
            let keys: Vec<&Expr> = aggregate.group_expr.iter().collect();
            reads_nodes(plan) && !reads(&keys, aggregate.input.schema(), &[ColumnClass::Direct])
        }
        _ => false,
    }
}

/// `groups` as the rows of the list of their structs, with the same columns. Groups of
/// which the join reads no column are structs of one constant field: their rows still
/// count. The filter, true of every row, reads the unnested structs, so that no rule drops
/// the unnesting where nothing above reads them.
pub(crate) fn as_rows(groups: &Arc<LogicalPlan>) -> Result<Arc<LogicalPlan>> {
    let schema = groups.schema().clone();
    let name = |i: usize| format!("c{i}");
    let mut fields: Vec<Expr> = schema
        .columns()
        .into_iter()
        .enumerate()
        .flat_map(|(i, c)| [lit(name(i)), Expr::Column(c)])
        .collect();
    if fields.is_empty() {
        fields = vec![lit(name(0)), lit(true)];
    }
    let list = LogicalPlanBuilder::from(groups.clone())
        .aggregate(
            Vec::<Expr>::new(),
            [array_agg(named_struct(fields)).alias(GROUPS_AS_ROWS)],
        )?
        .build()?;
    let list = Expr::ScalarSubquery(Subquery {
        subquery: Arc::new(list),
        outer_ref_columns: Vec::new(),
        spans: Spans::new(),
    });
    let columns = schema.iter().enumerate().map(|(i, (qualifier, field))| {
        get_field(col(GROUPS_AS_ROWS), name(i)).alias_qualified(qualifier.cloned(), field.name())
    });
    let rows = LogicalPlanBuilder::empty(true)
        .project([list.alias(GROUPS_AS_ROWS)])?
        .unnest_column(Column::from_name(GROUPS_AS_ROWS))?
        .filter(col(GROUPS_AS_ROWS).is_not_null())?
        .project(columns)?
        .build()?;
    Ok(Arc::new(rows))
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;
    use sunlight_domain::Table;

    use super::*;
    use crate::test_rules::{answer, node_rows, optimized, rewriting_context, rewritten_by};

    #[tokio::test]
    async fn groups_joined_to_rows_that_drive_the_join_become_rows() {
        let d = "SELECT count(*) FROM disbursements d";
        let by_type = "(SELECT subsidy_type, avg(amount) AS a FROM disbursements GROUP BY 1) x";
        for sql in [
            format!("{d} JOIN {by_type} ON x.subsidy_type = d.subsidy_type AND d.amount > x.a"),
            format!("{d} LEFT JOIN {by_type} ON x.subsidy_type = d.subsidy_type"),
            format!("SELECT count(*) FROM {by_type} RIGHT JOIN disbursements d ON d.amount > x.a"),
            format!(
                "{d} JOIN (SELECT avg(amount) AS a FROM disbursements \
                 WHERE county_code = '140212') x ON d.amount > x.a"
            ),
        ] {
            assert!(rewritten_by(&JoinedGroupsAsRows, &sql).await, "{sql}");
        }
        for sql in [
            // Within each county already.
            format!(
                "{d} JOIN (SELECT county_code, avg(amount) AS a FROM disbursements GROUP BY 1) x \
                 ON x.county_code = d.county_code AND d.amount > x.a"
            ),
            // Groups by an identifier, which reaches the city as a token.
            format!(
                "{d} JOIN (SELECT person_id, count(*) AS n FROM disbursements GROUP BY 1) x \
                 ON x.person_id = d.person_id"
            ),
            // Groups whose rows the join keeps, and a side with no rows of the nodes.
            format!("SELECT count(*) FROM {by_type} LEFT JOIN disbursements d ON d.amount > x.a"),
            format!(
                "SELECT count(*) FROM subsidy_standards s JOIN {by_type} \
                 ON x.subsidy_type = s.subsidy_type"
            ),
            // Rows on both sides.
            format!("{d} JOIN disbursements e ON e.payment_id = d.payment_id"),
        ] {
            assert!(!rewritten_by(&JoinedGroupsAsRows, &sql).await, "{sql}");
        }
    }

    #[tokio::test]
    async fn a_side_only_tested_for_matches_becomes_groups() {
        for sql in [
            "SELECT township FROM disbursements INTERSECT SELECT township FROM persons",
            "SELECT township, village FROM persons EXCEPT SELECT township, village FROM payroll \
             JOIN persons USING (person_id, county_code)",
            "SELECT department FROM subsidy_standards EXCEPT SELECT department FROM disbursements",
        ] {
            assert!(rewritten_by(&TestedSideAsGroups, sql).await, "{sql}");
        }
        for sql in [
            // Within each county already.
            "SELECT county_code FROM persons INTERSECT SELECT county_code FROM payroll",
            // An identifier, which reaches the city only as a token.
            "SELECT person_id FROM disbursements EXCEPT SELECT person_id FROM payroll",
            // Grouped already, and the reference table, which nodes join.
            "SELECT township FROM disbursements INTERSECT SELECT township FROM persons GROUP BY 1",
            "SELECT department FROM disbursements INTERSECT SELECT department FROM subsidy_standards",
        ] {
            assert!(!rewritten_by(&TestedSideAsGroups, sql).await, "{sql}");
        }
    }

    /// How many aggregates a shown plan has.
    fn aggregates(shown: String) -> usize {
        shown.matches("Aggregate:").count()
    }

    #[tokio::test]
    async fn a_tested_side_as_groups_keeps_the_rows_the_join_keeps() {
        let rewriting = rewriting_context();
        let plain = SessionContext::new();
        let definition = "(k TEXT, g TEXT, v INT) AS VALUES ('a', 'x', 1), \
                     ('a', NULL, 5), ('b', 'a', 2), ('b', 'y', 9), (NULL, 'b', 4), ('c', NULL, 7), \
                     ('x', 'a', 3)";
        node_rows(&[&rewriting, &plain], Table::Payroll, "t", definition).await;
        for sql in [
            "SELECT k FROM t INTERSECT SELECT g FROM t ORDER BY 1",
            "SELECT k FROM t EXCEPT SELECT g FROM t ORDER BY 1",
            "SELECT k, g FROM t EXCEPT SELECT g, k FROM t ORDER BY 1, 2",
            "SELECT k, v FROM t WHERE EXISTS (SELECT 1 FROM t u WHERE u.g = t.k AND u.v > t.v) \
             ORDER BY 1, 2",
            "SELECT k, v FROM t WHERE NOT EXISTS (SELECT 1 FROM t u WHERE u.g = t.k) \
             ORDER BY 1, 2",
            "SELECT k, v FROM t WHERE v = 5 OR EXISTS (SELECT 1 FROM t u WHERE u.g = t.k) \
             ORDER BY 1, 2",
            "SELECT k, v FROM t WHERE k IN (SELECT g FROM t u WHERE u.v < t.v) ORDER BY 1, 2",
            "SELECT k, v FROM t WHERE k NOT IN (SELECT g FROM t u WHERE u.v < t.v) ORDER BY 1, 2",
        ] {
            assert!(
                aggregates(optimized(&rewriting, sql).await)
                    > aggregates(optimized(&plain, sql).await),
                "{sql}"
            );
            assert_eq!(
                answer(&rewriting, sql).await,
                answer(&plain, sql).await,
                "{sql}"
            );
        }
    }

    #[tokio::test]
    async fn a_listed_join_on_county_code_tests_groups_and_keeps_its_rows() {
        let rewriting = rewriting_context();
        let plain = SessionContext::new();
        let definition = "(county_code TEXT, k TEXT, v INT) AS VALUES ('140212', 'a', 1), \
                     ('140212', 'b', 5), ('140212', NULL, 2), ('140213', 'a', 9), \
                     ('140213', 'c', 4), (NULL, 'c', 7)";
        node_rows(&[&rewriting, &plain], Table::Payroll, "t", definition).await;
        // Each query, and whether the side it tests becomes groups.
        for (sql, grouped) in [
            (
                "SELECT county_code, k FROM t EXCEPT SELECT county_code, k FROM t WHERE v > 4 \
                 ORDER BY 1, 2",
                true,
            ),
            (
                "SELECT DISTINCT * FROM (SELECT county_code, k FROM t INTERSECT SELECT \
                 county_code, k FROM t WHERE v < 5) x ORDER BY 1, 2 LIMIT 3",
                true,
            ),
            // The answer aggregates what the join keeps, and the rows it keeps.
            (
                "SELECT count(*) FROM (SELECT county_code, k FROM t EXCEPT SELECT \
                 county_code, k FROM t WHERE v > 4) x",
                false,
            ),
            (
                "SELECT county_code, k FROM t WHERE NOT EXISTS (SELECT 1 FROM t u \
                 WHERE u.county_code = t.county_code AND u.v > t.v) ORDER BY 1, 2",
                false,
            ),
        ] {
            let more = aggregates(optimized(&rewriting, sql).await)
                > aggregates(optimized(&plain, sql).await);
            assert_eq!(more, grouped, "{sql}");
            assert_eq!(
                answer(&rewriting, sql).await,
                answer(&plain, sql).await,
                "{sql}"
            );
        }
    }

    #[tokio::test]
    async fn joined_groups_give_the_rows_the_join_gives() {
        let rewriting = rewriting_context();
        let plain = SessionContext::new();
        let definition = "(k TEXT, g TEXT, v INT) AS VALUES ('a', 'x', 1), \
                     ('a', NULL, 5), ('b', 'x', 2), ('b', 'y', 9), (NULL, 'y', 4), ('c', NULL, 7)";
        node_rows(&[&rewriting, &plain], Table::Payroll, "t", definition).await;
        // Each query, and whether its groups become rows.
        for (sql, as_rows) in [
            (
                "SELECT t.k, t.v, x.a FROM t JOIN (SELECT k, avg(v) AS a FROM t GROUP BY k) x \
                 ON x.k = t.k AND t.v >= x.a ORDER BY 1, 2",
                true,
            ),
            (
                "SELECT t.k, t.v, x.n FROM t LEFT JOIN (SELECT g, count(*) AS n FROM t \
                 GROUP BY g) x ON x.g = t.g ORDER BY 1, 2",
                true,
            ),
            (
                "SELECT t.k, t.v, x.m FROM t LEFT JOIN (SELECT g, max(v) AS m FROM t \
                 WHERE v > 99 GROUP BY g) x ON x.g = t.g ORDER BY 1, 2",
                true,
            ),
            (
                "SELECT x.a, t.v FROM (SELECT avg(v) AS a FROM t) x JOIN t ON t.v > x.a \
                 ORDER BY 2",
                true,
            ),
            (
                "SELECT k, v FROM t WHERE v > (SELECT avg(u.v) FROM t u WHERE u.g = t.g) \
                 ORDER BY 2",
                true,
            ),
            (
                "SELECT k, v FROM t WHERE NOT EXISTS (SELECT 1 FROM (SELECT k, max(v) AS m \
                 FROM t GROUP BY k) x WHERE x.k = t.k AND t.v < x.m) ORDER BY 2",
                true,
            ),
            // Groups of which the join reads no column, only whether there are any.
            (
                "SELECT t.k, t.v FROM (SELECT count(*) AS n FROM t) x JOIN t ON x.n > 3 \
                 ORDER BY 2",
                true,
            ),
            (
                "SELECT t.k, t.v FROM (SELECT count(*) AS n FROM t) x JOIN t ON x.n > 9 \
                 ORDER BY 2",
                true,
            ),
        ] {
            let shown = optimized(&rewriting, sql).await;
            assert_eq!(shown.contains(GROUPS_AS_ROWS), as_rows, "{sql}\n{shown}");
            assert_eq!(
                answer(&rewriting, sql).await,
                answer(&plain, sql).await,
                "{sql}"
            );
        }
    }
}
