//! A fragment for one county carries the city's condition on `county_code`, such as
//! `county_code = '140215'`. On a node whose table statistics prove that every row holds
//! its own code ([`proves_county`](crate::county_guard::proves_county)), such a condition
//! holds for every row. Dropped, it costs nothing per row, and the fragment reads as an
//! aggregate of a whole table, which the node answers from what it counted ahead.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_expr::simplifier::PhysicalExprSimplifier;
use datafusion::physical_expr::utils::{conjunction_opt, split_conjunction};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::expressions::{BinaryExpr, Column, Literal};
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

/// Whether `expr` holds for every row of `schema` whose `county_code` is `code`: with the
/// code in place of the column it folds to true, as `county_code = '140215'`, an `IN`,
/// `BETWEEN` or `LIKE` that admits the code do; or it is an `OR` with such a side.
fn met_by(expr: &Arc<dyn PhysicalExpr>, schema: &Schema, code: NodeCode) -> bool {
    if let Some(binary) = expr.downcast_ref::<BinaryExpr>()
        && *binary.op() == Operator::Or
    {
        return met_by(binary.left(), schema, code) || met_by(binary.right(), schema, code);
    }
    let with_code = Arc::clone(expr).transform(|e| {
        Ok(match e.downcast_ref::<Column>() {
            Some(c) if schema.field(c.index()).name() == COUNTY => {
                let code = ScalarValue::from(code.as_str())
                    .cast_to(schema.field(c.index()).data_type())?;
                Transformed::yes(Arc::new(Literal::new(code)) as _)
            }
            _ => Transformed::no(e),
        })
    });
    let folded = with_code.and_then(|e| PhysicalExprSimplifier::new(schema).simplify(e.data));
    folded.is_ok_and(|e| {
        e.downcast_ref::<Literal>()
            .is_some_and(|l| l.value() == &ScalarValue::Boolean(Some(true)))
    })
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field};
    use datafusion::physical_plan::expressions::{binary, col, in_list, like, lit};

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
        let or_village = compare(
            &compare(&county, Operator::Eq, &own),
            Operator::Or,
            &compare(&village, Operator::Eq, &other),
        );
        let between = |low: &str, high: &str| {
            compare(
                &compare(&county, Operator::GtEq, &lit(low.to_string())),
                Operator::And,
                &compare(&county, Operator::LtEq, &lit(high.to_string())),
            )
        };
        let prefix = |pattern: &str| {
            like(
                false,
                false,
                county.clone(),
                lit(pattern.to_string()),
                &schema,
            )
            .unwrap()
        };
        for (expr, met) in [
            (compare(&county, Operator::Eq, &own), true),
            (compare(&own, Operator::Eq, &county), true),
            (compare(&county, Operator::Eq, &other), false),
            (compare(&county, Operator::NotEq, &own), false),
            (compare(&village, Operator::Eq, &own), false),
            (list(false), true),
            (list(true), false),
            (either, true),
            (or_village, true),
            (between("140213", "140221"), true),
            (between("140221", "140226"), false),
            (prefix("14021%"), true),
            (prefix("14022%"), false),
        ] {
            assert_eq!(met_by(&expr, &schema, code), met, "{expr}");
        }

        // Parquet's strings may be read as views; the code takes the column's type.
        let views = Schema::new(vec![Field::new("county_code", DataType::Utf8View, false)]);
        let county = col("county_code", &views).unwrap();
        let own = lit(ScalarValue::Utf8View(Some("140215".into())));
        let expr = binary(county, Operator::Eq, own, &views).unwrap();
        assert!(met_by(&expr, &views, code), "{expr}");
    }
}
