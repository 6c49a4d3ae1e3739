//! Conditions that the node's files prove for every row of a table. A fragment for one
//! county carries the city's condition on `county_code`, such as `county_code = '140215'`;
//! on a node whose table statistics prove that every row holds its own code
//! ([`proves_county`](crate::county_guard::proves_county)), such a condition holds for
//! every row. So does `amount IS NOT NULL` where no file holds a NULL amount, `end_date IS
//! NULL` where no file holds an end date, or `period >= DATE '2018-01-01'` where no period
//! is earlier. Dropped, such a condition costs nothing per row, and a fragment left without
//! conditions reads as an aggregate of a whole table, which the node answers from what it
//! counted ahead.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::pruning::PrunableStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{ScalarValue, Statistics};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_expr::simplifier::PhysicalExprSimplifier;
use datafusion::physical_expr::utils::{collect_columns, conjunction_opt, split_conjunction};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::expressions::{
    BinaryExpr, Column, IsNotNullExpr, IsNullExpr, Literal, NotExpr,
};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::ProjectionExec;
use sunlight_domain::{NodeCode, Table};
use sunlight_fragment::TableLeafExec;

use crate::Result;
use crate::node::Node;

const COUNTY: &str = "county_code";

/// `fragment` without the conditions that every row of their tables meets on `node`.
pub async fn without_proven(
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
    let mut files = HashMap::new();
    for table in filtered {
        files.insert(table, Files::of(node, table).await?);
    }
    if files.is_empty() {
        return Ok(fragment);
    }
    Ok(fragment
        .transform_up(|p| {
            let filter = p.downcast_ref::<FilterExec>();
            let leaf = filter.and_then(|f| f.input().downcast_ref::<TableLeafExec>());
            let replaced = match (filter, leaf) {
                (Some(filter), Some(leaf)) => without_met(filter, &files[&leaf.table()])?,
                _ => None,
            };
            Ok(match replaced {
                Some(plan) => Transformed::yes(plan),
                None => Transformed::no(p),
            })
        })?
        .data)
}

/// What a node's files of one table prove of their rows.
struct Files {
    table: Table,
    statistics: Arc<Statistics>,
    /// The node's code, where every row holds it.
    county: Option<NodeCode>,
}

impl Files {
    async fn of(node: &Node, table: Table) -> Result<Self> {
        let proven = table.schema().index_of(COUNTY).is_ok() && node.county_proven(table).await?;
        Ok(Self {
            table,
            statistics: node.statistics(table).await?,
            county: proven.then(|| node.code()),
        })
    }

    /// Whether `expr`, over `schema`, holds for every row.
    fn meet(&self, expr: &Arc<dyn PhysicalExpr>, schema: &SchemaRef) -> bool {
        self.county.is_some_and(|code| met_by(expr, schema, code))
            || self.statistics_prove(expr, schema)
    }

    /// Whether the files' statistics prove `expr` for every row: a test for NULL of a
    /// column that holds nothing else, or else no column it reads holds a NULL, and no row
    /// could meet its negation. A computed value that could be NULL where its columns are
    /// not, as `nullif(amount, 0) IS NOT NULL`, is not proven; nor is a comparison whose
    /// column is read, or its bounds kept, in a type other than the contract's, as the
    /// bounds of files written with narrower decimals or dates as timestamps are.
    fn statistics_prove(&self, expr: &Arc<dyn PhysicalExpr>, schema: &SchemaRef) -> bool {
        let columns = self.table.schema();
        let read = collect_columns(expr);
        let statistics = |c: &Column| {
            let i = columns.index_of(c.name()).ok()?;
            Some((columns.field(i), &self.statistics.column_statistics[i]))
        };
        if let Some(test) = expr.downcast_ref::<IsNullExpr>() {
            let rows = self.statistics.num_rows;
            return test.arg().downcast_ref::<Column>().is_some_and(|c| {
                statistics(c)
                    .is_some_and(|(_, s)| rows.is_exact() == Some(true) && s.null_count == rows)
            });
        }
        let never_null =
            |c: &Column| statistics(c).is_some_and(|(_, s)| s.null_count == Precision::Exact(0));
        if !read.iter().all(never_null) {
            return false;
        }
        if let Some(test) = expr.downcast_ref::<IsNotNullExpr>() {
            return test.arg().is::<Column>();
        }
        let contract_typed = |c: &Column| {
            statistics(c).is_some_and(|(field, s)| {
                let typed = |bound: &Precision<ScalarValue>| {
                    bound
                        .get_value()
                        .is_none_or(|v| v.data_type() == *field.data_type())
                };
                schema.field(c.index()).data_type() == field.data_type()
                    && typed(&s.min_value)
                    && typed(&s.max_value)
            })
        };
        if !read.iter().all(contract_typed) {
            return false;
        }
        let negation = Arc::new(NotExpr::new(Arc::clone(expr)));
        let Ok(negation) = PhysicalExprSimplifier::new(schema).simplify(negation) else {
            return false;
        };
        let Some(predicate) = PruningPredicateBuilder::new()
            .with_file_schema(Arc::clone(schema))
            .build(negation)
        else {
            return false;
        };
        let whole = PrunableStatistics::new(vec![Arc::clone(&self.statistics)], columns);
        predicate.prune(&whole).is_ok_and(|kept| kept == [false])
    }
}

/// `filter`, directly over a table leaf, without its conjuncts that every row of `files`
/// meets; `None` when it has none, or when it limits too and no other conjunct is left.
fn without_met(filter: &FilterExec, files: &Files) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let input = filter.input();
    let schema = input.schema();
    let (met, rest): (Vec<_>, Vec<_>) = split_conjunction(filter.predicate())
        .into_iter()
        .partition(|e| files.meet(e, &schema));
    if met.is_empty() {
        return Ok(None);
    }
    let rest = conjunction_opt(rest.into_iter().cloned());
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

    #[test]
    fn statistics_prove_a_condition_that_no_row_could_fail() {
        let table = Table::Disbursements;
        let mut statistics = Statistics::new_unknown(&table.schema());
        let mut exact = |name: &str, nulls: usize, min: ScalarValue, max: ScalarValue| {
            let column = &mut statistics.column_statistics[table.schema().index_of(name).unwrap()];
            column.null_count = Precision::Exact(nulls);
            column.min_value = Precision::Exact(min);
            column.max_value = Precision::Exact(max);
        };
        let yuan = |fen: i128| ScalarValue::Decimal128(Some(fen), 12, 2);
        let day = |days: i32| ScalarValue::Date32(Some(days));
        exact("amount", 0, yuan(5_000), yuan(300_000));
        exact("period", 0, day(17_897), day(20_058));
        exact("paid_on", 2, day(17_897), day(20_100));
        exact("account_no", 0, "0".into(), "9".into());
        let mut nulls = |name: &str, count: usize| {
            let column = &mut statistics.column_statistics[table.schema().index_of(name).unwrap()];
            column.null_count = Precision::Exact(count);
        };
        nulls("township", 0);
        nulls("department", 1_000);
        statistics.num_rows = Precision::Exact(1_000);
        let files = Files {
            table,
            statistics: Arc::new(statistics),
            county: None,
        };
        // A fragment's leaf reads some columns, in its own order.
        let schema = Arc::new(Schema::new(vec![
            Field::new("township", DataType::Utf8, false),
            Field::new("paid_on", DataType::Date32, true),
            Field::new("period", DataType::Date32, false),
            Field::new("amount", DataType::Decimal128(12, 2), false),
            Field::new("department", DataType::Utf8, true),
        ]));
        let column = |name: &str| col(name, &schema).unwrap();
        let compare = |name: &str, op, value: ScalarValue| {
            binary(column(name), op, lit(value), &schema).unwrap()
        };
        let both = |l: Arc<dyn PhysicalExpr>, op, r: Arc<dyn PhysicalExpr>| {
            binary(l, op, r, &schema).unwrap()
        };
        let not_null = |name: &str| Arc::new(IsNotNullExpr::new(column(name))) as _;
        let is_null = |name: &str| Arc::new(IsNullExpr::new(column(name))) as _;
        let within = both(
            compare("period", Operator::GtEq, day(17_897)),
            Operator::And,
            compare("period", Operator::LtEq, day(20_058)),
        );
        let paid = |days| compare("paid_on", Operator::Gt, day(days));
        for (expr, proven) in [
            (not_null("amount"), true),
            (not_null("paid_on"), false),
            // A column that holds nothing but NULL, and one that holds two.
            (is_null("department"), true),
            (is_null("paid_on"), false),
            (compare("amount", Operator::Gt, yuan(0)), true),
            (compare("amount", Operator::GtEq, yuan(5_000)), true),
            (compare("amount", Operator::Gt, yuan(5_000)), false),
            (compare("amount", Operator::Lt, yuan(100_000)), false),
            (compare("period", Operator::GtEq, day(17_532)), true),
            (compare("period", Operator::Lt, day(19_723)), false),
            (within, true),
            (
                both(
                    compare("amount", Operator::Gt, yuan(100_000)),
                    Operator::Or,
                    compare("period", Operator::GtEq, day(17_532)),
                ),
                true,
            ),
            (
                in_list(column("period"), vec![lit(day(17_897))], &false, &schema).unwrap(),
                false,
            ),
            // Every paid_on that is there is later, but two are NULL.
            (paid(17_532), false),
            (both(paid(17_532), Operator::Or, not_null("paid_on")), false),
            // No bounds to prove a text condition with.
            (compare("township", Operator::NotEq, "x".into()), false),
        ] {
            assert_eq!(files.meet(&expr, &schema), proven, "{expr}");
        }

        // Text read as views is not compared with bounds kept as text, nor dates with
        // the bounds of a file that keeps them as timestamps; NULL counts still hold.
        let account = |text: DataType, value: ScalarValue| {
            let schema = Arc::new(Schema::new(vec![Field::new("account_no", text, false)]));
            let column = col("account_no", &schema).unwrap();
            let expr = binary(column, Operator::GtEq, lit(value), &schema).unwrap();
            files.meet(&expr, &schema)
        };
        assert!(account(DataType::Utf8, "0".into()));
        assert!(!account(
            DataType::Utf8View,
            ScalarValue::Utf8View(Some("0".into()))
        ));
        let mut stamped = Statistics::clone(&files.statistics);
        let period = &mut stamped.column_statistics[table.schema().index_of("period").unwrap()];
        let micros = |days: i64| {
            Precision::Exact(ScalarValue::TimestampMicrosecond(
                Some(days * 86_400_000_000),
                None,
            ))
        };
        period.min_value = micros(17_897);
        period.max_value = micros(20_058);
        let stamped = Files {
            table,
            statistics: Arc::new(stamped),
            county: None,
        };
        let earliest = compare("period", Operator::GtEq, day(17_532));
        assert!(files.meet(&earliest, &schema));
        assert!(!stamped.meet(&earliest, &schema));
        assert!(stamped.meet(&not_null("period"), &schema));
    }
}
