//! Aggregates by a node table's `county_code`, which run whole inside each node, where
//! the nodes' rows are already split by it.

use datafusion::common::tree_node::Transformed;
use datafusion::error::Result;
use datafusion::logical_expr::{Aggregate, Expr, JoinType, LogicalPlan};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::single_distinct_to_groupby::SingleDistinctToGroupBy;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use sunlight_domain::ColumnClass;

use crate::class::class_of;

/// DataFusion's rewrite of an aggregate over one DISTINCT argument, `count(DISTINCT x)`,
/// as a count over the groups of `x`, for aggregates by `county_code` and a person that
/// compute nothing else.
///
/// Those run whole in each node, one group per person, where grouping by `x` as well is
/// far cheaper than a small set of distinct values in every group. Over few groups the
/// sets are the cheaper. Across counties the count stays one aggregate, whose state
/// nodes send as tokens.
#[derive(Debug, Default)]
pub struct SingleDistinctByCounty;

impl OptimizerRule for SingleDistinctByCounty {
    fn name(&self) -> &str {
        "single_distinct_by_county"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        match &plan {
            LogicalPlan::Aggregate(aggregate)
                if only_distinct(aggregate) && by_person(aggregate) && by_county(aggregate) =>
            {
                SingleDistinctToGroupBy::new().rewrite(plan, config)
            }
            _ => Ok(Transformed::no(plan)),
        }
    }
}

/// Whether `aggregate` groups by a node table's `county_code`, among other keys.
pub(crate) fn by_county(aggregate: &Aggregate) -> bool {
    aggregate
        .group_expr
        .iter()
        .any(|e| is_county_code(&aggregate.input, e))
}

/// Whether `expr`, over `plan`, is a node table's `county_code` ([`county_code`]).
pub(crate) fn is_county_code(plan: &LogicalPlan, expr: &Expr) -> bool {
    column_index(plan, expr).is_some_and(|i| county_code(plan, i))
}

/// Whether all `aggregate` computes is over distinct values. DataFusion's rewrite turns
/// other aggregates into two, which for a sum of decimals changes its type under the
/// operators above it.
fn only_distinct(aggregate: &Aggregate) -> bool {
    aggregate
        .aggr_expr
        .iter()
        .all(|e| matches!(e, Expr::AggregateFunction(f) if f.params.distinct))
}

/// Whether `aggregate` groups by an identifier, among other keys.
fn by_person(aggregate: &Aggregate) -> bool {
    let schema = aggregate.input.schema();
    aggregate
        .group_expr
        .iter()
        .any(|e| class_of(e, schema) == Some(ColumnClass::Direct))
}

/// Whether column `index` of `plan` is a node table's `county_code`, passed on unchanged
/// and never NULL for want of a match. A column only named so, as in `'140215' AS
/// county_code`, is not one.
fn county_code(plan: &LogicalPlan, index: usize) -> bool {
    let from = |input: &LogicalPlan, expr: Option<&Expr>| {
        expr.and_then(|e| column_index(input, e))
            .is_some_and(|i| county_code(input, i))
    };
    match plan {
        LogicalPlan::TableScan(scan) => scan
            .projected_schema
            .fields()
            .get(index)
            .is_some_and(|f| f.name() == "county_code"),
        LogicalPlan::Projection(p) => from(&p.input, p.expr.get(index)),
        LogicalPlan::Aggregate(a) => from(&a.input, a.group_expr.get(index)),
        LogicalPlan::Join(join) => {
            let left = join.left.schema().fields().len();
            match join.join_type {
                JoinType::Inner | JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti
                    if index < left =>
                {
                    county_code(&join.left, index)
                }
                JoinType::Inner | JoinType::Right => {
                    index >= left && county_code(&join.right, index - left)
                }
                JoinType::RightSemi | JoinType::RightAnti => county_code(&join.right, index),
                _ => false,
            }
        }
        LogicalPlan::Union(union) => union.inputs.iter().all(|i| county_code(i, index)),
        LogicalPlan::Filter(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Window(_) => county_code(plan.inputs()[0], index),
        _ => false,
    }
}

/// The index in `plan`'s output of the column `expr` is, through an alias.
pub(crate) fn column_index(plan: &LogicalPlan, expr: &Expr) -> Option<usize> {
    match expr.clone().unalias() {
        Expr::Column(c) => plan.schema().index_of_column(&c).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::distinct_rows::tests::{answered_alike, contexts, counts_distinct_values};

    #[tokio::test]
    async fn distinct_values_by_county_and_person_are_counted_over_their_groups() {
        let contexts = contexts().await;
        let by_county = [
            "SELECT county_code, person, count(DISTINCT kind) FROM c GROUP BY 1, 2",
            "SELECT count(*) FROM (SELECT k.county_code, person FROM c k GROUP BY 1, 2 \
             HAVING count(DISTINCT kind) > 1)",
            "SELECT county_code, count(DISTINCT (person, kind)) FROM c GROUP BY 1",
            // Distinct rows by county are counted as rows.
            "SELECT county_code, count(*) FROM (SELECT DISTINCT county_code, person FROM c) \
             GROUP BY 1",
        ];
        // Across counties, by county over few groups, or beside other aggregates, distinct
        // values are counted.
        let across_counties = [
            "SELECT kind, count(DISTINCT person) FROM c GROUP BY 1",
            "SELECT county_code, count(DISTINCT kind) FROM c GROUP BY 1",
            "SELECT county_code, kind, count(DISTINCT person) AS n FROM c GROUP BY 1, 2",
            "SELECT county_code, person, count(DISTINCT kind), count(*) FROM c GROUP BY 1, 2",
            "SELECT county_code, count(DISTINCT kind) FROM (SELECT 'x' AS county_code, kind \
             FROM c) GROUP BY 1",
            "SELECT count(*) FROM (SELECT DISTINCT person FROM c)",
        ];
        for (sql, whole) in by_county
            .iter()
            .map(|s| (s, true))
            .chain(across_counties.iter().map(|s| (s, false)))
        {
            let sql = format!("{sql} ORDER BY 1 NULLS FIRST");
            let plan = answered_alike(&contexts, &sql).await;
            let text = plan.display_indent();
            assert_eq!(counts_distinct_values(&plan), !whole, "{sql}\n{text}");
        }
    }
}
