//! [`InSubqueryAsList`]: `x IN (SELECT … GROUP BY …)` as a list the city computes first
//! and sends down, rather than a join at the city with the rows of every node.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ExprSchema};
use datafusion::error::Result;
use datafusion::functions_aggregate::expr_fn::array_agg;
use datafusion::functions_nested::expr_fn::array_has;
use datafusion::logical_expr::expr::InSubquery;
use datafusion::logical_expr::utils::{conjunction, split_conjunction, split_conjunction_owned};
use datafusion::logical_expr::{Expr, Filter, LogicalPlan, LogicalPlanBuilder, Subquery};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use sunlight_domain::{ColumnClass, column_class};

/// The name of the list an IN subquery becomes. It is formed at the city: nodes send
/// no lists of values.
pub const LIST: &str = "__in_subquery_list";

/// Rewrites a filter's `x IN (subquery)`, where the subquery aggregates and refers to
/// nothing outside it, as `x IS NOT NULL AND array_has((SELECT array_agg(v) …), x)`.
///
/// The city answers the subquery on its own, from the partial aggregates of the nodes,
/// and each fragment then carries its values as a list: the nodes filter their rows by
/// it and aggregate them as usual. Planned as a semi-join, the nodes would have to send
/// the rows to be joined, which they never do. Only conjuncts of a filter are rewritten,
/// where an unknown and a false condition alike drop the row.
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
        let LogicalPlan::Filter(filter) = plan else {
            return Ok(Transformed::no(plan));
        };
        let schema = filter.input.schema();
        let listed = |e: &Expr| {
            matches!(e, Expr::InSubquery(InSubquery { expr, subquery, negated: false })
                if aggregates_alone(subquery) && !identifier(expr, schema))
        };
        if !split_conjunction(&filter.predicate).into_iter().any(listed) {
            return Ok(Transformed::no(LogicalPlan::Filter(filter)));
        }
        let conjuncts = split_conjunction_owned(filter.predicate)
            .into_iter()
            .map(|e| match e {
                Expr::InSubquery(InSubquery { expr, subquery, .. }) if listed(&e) => {
                    as_list(*expr, subquery)
                }
                other => Ok(other),
            })
            .collect::<Result<Vec<_>>>()?;
        let predicate = conjunction(conjuncts).expect("a filter has a predicate");
        Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(
            predicate,
            filter.input,
        )?)))
    }
}

/// Whether `expr` is an identifier column: identifiers meet other nodes' rows by linkage,
/// and leave a node only as tokens, which a list of the city's could not match.
fn identifier(expr: &Expr, schema: &DFSchema) -> bool {
    let Expr::Column(column) = expr else {
        return false;
    };
    schema
        .field_from_column(column)
        .is_ok_and(|f| column_class(f) == ColumnClass::Direct)
}

/// Whether `subquery` aggregates and refers to no column outside it.
fn aggregates_alone(subquery: &Subquery) -> bool {
    subquery.outer_ref_columns.is_empty()
        && subquery
            .subquery
            .exists(|p| Ok(matches!(p, LogicalPlan::Aggregate(_))))
            .unwrap_or(false)
}

/// `expr IS NOT NULL AND array_has((SELECT array_agg(v) FROM subquery WHERE v IS NOT
/// NULL), expr)`, where `v` is the subquery's one column.
fn as_list(expr: Expr, subquery: Subquery) -> Result<Expr> {
    let plan = Arc::unwrap_or_clone(subquery.subquery);
    let value = Expr::Column(plan.schema().columns().swap_remove(0));
    let values = LogicalPlanBuilder::from(plan)
        .filter(value.clone().is_not_null())?
        .aggregate(Vec::<Expr>::new(), [array_agg(value).alias(LIST)])?
        .build()?;
    let list = Expr::ScalarSubquery(Subquery {
        subquery: Arc::new(values),
        outer_ref_columns: Vec::new(),
        spans: subquery.spans,
    });
    Ok(expr.clone().is_not_null().and(array_has(list, expr)))
}

#[cfg(test)]
mod tests {
    use datafusion::catalog::MemTable;
    use datafusion::optimizer::OptimizerContext;
    use datafusion::prelude::SessionContext;
    use sunlight_domain::Table;

    use super::*;

    async fn rewritten(sql: &str) -> bool {
        let ctx = SessionContext::new();
        let persons = MemTable::try_new(Table::Persons.schema(), vec![vec![]]).unwrap();
        ctx.register_table("persons", Arc::new(persons)).unwrap();
        let plan = ctx.sql(sql).await.unwrap().logical_plan().clone();
        let config = OptimizerContext::new();
        plan.transform_down(|p| InSubqueryAsList.rewrite(p, &config))
            .unwrap()
            .transformed
    }

    #[tokio::test]
    async fn an_in_over_an_aggregate_of_its_own_in_a_filter_becomes_a_list() {
        let genders = "(SELECT gender FROM persons GROUP BY gender HAVING count(*) > 1)";
        let count = "SELECT count(*) FROM persons";
        assert!(
            rewritten(&format!(
                "{count} WHERE gender IN {genders} AND village <> ''"
            ))
            .await
        );
        for sql in [
            format!("{count} WHERE gender NOT IN {genders}"),
            format!("{count} WHERE gender IN {genders} OR village <> ''"),
            format!("{count} WHERE gender IN (SELECT gender FROM persons)"),
            format!(
                "{count} o WHERE gender IN (SELECT max(gender) FROM persons i \
                 WHERE i.village = o.village)"
            ),
            format!("{count} WHERE person_id IN (SELECT person_id FROM persons GROUP BY 1)"),
        ] {
            assert!(!rewritten(&sql).await, "{sql}");
        }
    }
}
