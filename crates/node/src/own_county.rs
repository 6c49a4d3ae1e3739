//! A fragment for one county carries the city's condition on `county_code`, such as
//! `county_code = '140215'`. On a node whose table statistics prove that every row holds
//! its own code ([`proves_county`](crate::county_guard::proves_county)), such a condition
//! holds for every row. Dropped, it costs nothing per row, and the fragment reads as an
//! aggregate of a whole table, which the node answers from what it counted ahead.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_expr::utils::{conjunction_opt, split_conjunction};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::expressions::{BinaryExpr, Column, InListExpr, Literal};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::ProjectionExec;
use sunlight_domain::NodeCode;
use sunlight_fragment::TableLeafExec;

use crate::Result;
use crate::node::Node;

const COUNTY: &str = "county_code";

/// `fragment` without the conditions on `county_code` that every row of its tables meets
/// on `node`.
pub async fn without_own_county(
    node: &Node,
    fragment: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut filtered = HashSet::new();
    fragment.apply(|p| {
        if let Some(leaf) = p
            .downcast_ref::<FilterExec>()
            .and_then(|f| f.input().downcast_ref::<TableLeafExec>())
        {
            filtered.insert(leaf.table());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let mut proven = HashSet::new();
    for table in filtered {
        if table.schema().index_of(COUNTY).is_ok() && node.county_proven(table).await? {
            proven.insert(table);
        }
    }
    if proven.is_empty() {
        return Ok(fragment);
    }
    let code = node.code();
    Ok(fragment
        .transform_up(|p| {
            let filter = p.downcast_ref::<FilterExec>();
            let leaf = filter.and_then(|f| f.input().downcast_ref::<TableLeafExec>());
            let replaced = match (filter, leaf) {
                (Some(filter), Some(leaf)) if proven.contains(&leaf.table()) => {
                    without_code(filter, code)?
                }
                _ => None,
            };
            Ok(match replaced {
                Some(plan) => Transformed::yes(plan),
                None => Transformed::no(p),
            })
        })?
        .data)
}

/// `filter`, directly over a table leaf, without its conjuncts that `code` meets; `None`
/// when it has none, or when it limits too and no other conjunct is left.
fn without_code(filter: &FilterExec, code: NodeCode) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let input = filter.input();
    let schema = input.schema();
    let met = |e: &Arc<dyn PhysicalExpr>| met_by(e, &schema, code);
    let conjuncts = split_conjunction(filter.predicate());
    if !conjuncts.iter().any(|e| met(e)) {
        return Ok(None);
    }
    let rest = conjunction_opt(conjuncts.into_iter().filter(|e| !met(e)).cloned());
    Ok(match (rest, filter.fetch()) {
        (Some(predicate), _) => Some(Arc::new(
            FilterExecBuilder::from(filter)
                .with_predicate(predicate)
                .build()?,
        )),
        (None, None) => Some(match filter.projection() {
            Some(columns) => Arc::new(ProjectionExec::try_new(
                columns.iter().map(|&i| ProjectionExpr {
                    expr: Arc::new(Column::new(schema.field(i).name(), i)),
                    alias: schema.field(i).name().clone(),
                }),
                input.clone(),
            )?),
            None => input.clone(),
        }),
        (None, Some(_)) => None,
    })
}

/// Whether `expr` holds for every row of `schema` whose `county_code` is `code`: it is that
/// equality, an IN list that holds `code`, or an OR with such a side.
fn met_by(expr: &Arc<dyn PhysicalExpr>, schema: &Schema, code: NodeCode) -> bool {
    let is_county = |e: &Arc<dyn PhysicalExpr>| {
        e.downcast_ref::<Column>()
            .is_some_and(|c| schema.field(c.index()).name() == COUNTY)
    };
    let is_code = |e: &Arc<dyn PhysicalExpr>| {
        e.downcast_ref::<Literal>()
            .is_some_and(|l| l.value().try_as_str().flatten() == Some(code.as_str()))
    };
    if let Some(binary) = expr.downcast_ref::<BinaryExpr>() {
        let (l, r) = (binary.left(), binary.right());
        return match binary.op() {
            Operator::Eq => (is_county(l) && is_code(r)) || (is_code(l) && is_county(r)),
            Operator::Or => met_by(l, schema, code) || met_by(r, schema, code),
            _ => false,
        };
    }
    expr.downcast_ref::<InListExpr>().is_some_and(|in_list| {
        !in_list.negated() && is_county(in_list.expr()) && in_list.list().iter().any(is_code)
    })
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field};
    use datafusion::physical_plan::expressions::{binary, col, in_list, lit};

    use super::*;

    #[test]
    fn a_condition_is_met_by_the_code_when_every_row_of_the_county_meets_it() {
        let schema = Schema::new(vec![
            Field::new("county_code", DataType::Utf8, false),
            Field::new("village", DataType::Utf8, false),
        ]);
        let code: NodeCode = "140215".parse().unwrap();
        let county = col("county_code", &schema).unwrap();
        let village = col("village", &schema).unwrap();
        let compare = |l: &Arc<dyn PhysicalExpr>, op, r: &Arc<dyn PhysicalExpr>| {
            binary(l.clone(), op, r.clone(), &schema).unwrap()
        };
        let (own, other) = (lit("140215"), lit("140212"));
        let list = |negated| {
            in_list(
                county.clone(),
                vec![other.clone(), own.clone()],
                &negated,
                &schema,
            )
            .unwrap()
        };
        let either = compare(
            &compare(&county, Operator::Eq, &other),
            Operator::Or,
            &compare(&own, Operator::Eq, &county),
        );
        for (expr, met) in [
            (compare(&county, Operator::Eq, &own), true),
            (compare(&own, Operator::Eq, &county), true),
            (compare(&county, Operator::Eq, &other), false),
            (compare(&county, Operator::NotEq, &own), false),
            (compare(&village, Operator::Eq, &own), false),
            (list(false), true),
            (list(true), false),
            (either, true),
        ] {
            assert_eq!(met_by(&expr, &schema, code), met, "{expr}");
        }
    }
}
