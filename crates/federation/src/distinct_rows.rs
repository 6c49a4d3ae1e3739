//! [`CountDistinctRows`]: counting the rows of a `SELECT DISTINCT` (or a `GROUP BY`
//! without aggregates) as one `count(DISTINCT …)`, which nodes answer with the state of
//! the count rather than with one group per value.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::error::Result;
use datafusion::functions::expr_fn::coalesce;
use datafusion::functions_aggregate::expr_fn::{bool_or, count, count_distinct, sum};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    Aggregate, Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder, lit, when,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use sunlight_domain::ColumnClass;

use crate::by_county::{by_county, column_index};
use crate::class::class_of;

/// Rewrites `SELECT g…, count(*) FROM (SELECT DISTINCT g…, x FROM …) GROUP BY g…` as
/// `SELECT g…, count(DISTINCT x) + (1 if some x is NULL, else 0) FROM … GROUP BY g…`,
/// and a `count(x)` or `count(DISTINCT x)` of those rows as `count(DISTINCT x)`. Where
/// the distinct rows have more columns `y…` besides `g…` and one direct identifier `x`,
/// those counts are taken per `g…, y…` and summed per `g…`. A count of distinct tuples,
/// `count(DISTINCT (x, y…))`, is first read as the count of the distinct rows of its
/// columns.
///
/// The inner query forms one group per value of `x`. At a node such a group counts one
/// person when `x` is an identifier, so disclosure control holds every one of them back;
/// yet the count over them is as safe as `count(DISTINCT x)`, which nodes answer with
/// tokens or sketches. Only plain columns are matched: the inner grouping has no
/// aggregates, and between the two aggregates stand only aliases and projections of
/// columns, so the rows counted are exactly the distinct values.
#[derive(Debug, Default)]
pub struct CountDistinctRows;

impl OptimizerRule for CountDistinctRows {
    fn name(&self) -> &str {
        "count_distinct_rows"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        rewrite_aggregate(plan, |outer| match tuples_as_rows(outer)? {
            Some(rows) => Ok(Some(rows)),
            None => as_count_distinct(outer),
        })
    }
}

/// `plan` as `rewrite` makes it anew, where it is an aggregate that `rewrite` rewrites.
pub(crate) fn rewrite_aggregate(
    plan: LogicalPlan,
    rewrite: impl FnOnce(&Aggregate) -> Result<Option<LogicalPlan>>,
) -> Result<Transformed<LogicalPlan>> {
    let LogicalPlan::Aggregate(aggregate) = &plan else {
        return Ok(Transformed::no(plan));
    };
    Ok(match rewrite(aggregate)? {
        Some(rewritten) => Transformed::yes(rewritten),
        None => Transformed::no(plan),
    })
}

/// `plan` with each of its aggregate expressions that `rewrite` rewrites, given the
/// aggregate and the expression without its alias, rewritten so under the name it had,
/// where it is an aggregate and `rewrite` rewrites any.
pub(crate) fn rewrite_aggregate_exprs(
    plan: LogicalPlan,
    rewrite: impl Fn(&Aggregate, &Expr) -> Option<Expr>,
) -> Result<Transformed<LogicalPlan>> {
    rewrite_aggregate(plan, |aggregate| {
        let rewritten: Vec<Option<Expr>> = aggregate
            .aggr_expr
            .iter()
            .map(|e| {
                let unaliased = match e {
                    Expr::Alias(alias) => alias.expr.as_ref(),
                    e => e,
                };
                let rewritten = rewrite(aggregate, unaliased)?;
                Some(rewritten.alias(e.schema_name().to_string()))
            })
            .collect();
        if rewritten.iter().all(Option::is_none) {
            return Ok(None);
        }
        let aggr_expr = rewritten
            .into_iter()
            .zip(&aggregate.aggr_expr)
            .map(|(rewritten, e)| rewritten.unwrap_or_else(|| e.clone()))
            .collect();
        let rewritten = Aggregate::try_new(
            Arc::clone(&aggregate.input),
            aggregate.group_expr.clone(),
            aggr_expr,
        )?;
        Ok(Some(LogicalPlan::Aggregate(rewritten)))
    })
}

/// `outer` as a count of distinct rows, if all it computes is a count of distinct tuples
/// of columns, `count(DISTINCT (a, b, …))`: a tuple is never NULL, so each distinct row of
/// those columns counts once. The count of rows becomes a `count(DISTINCT …)` in turn,
/// where [`as_count_distinct`] can make it one.
fn tuples_as_rows(outer: &Aggregate) -> Result<Option<LogicalPlan>> {
    let [expr] = outer.aggr_expr.as_slice() else {
        return Ok(None);
    };
    let Expr::AggregateFunction(AggregateFunction { func, params }) = expr.clone().unalias() else {
        return Ok(None);
    };
    let [Expr::ScalarFunction(tuple)] = params.args.as_slice() else {
        return Ok(None);
    };
    let columns = |exprs: &[Expr]| exprs.iter().all(|e| matches!(e, Expr::Column(_)));
    if func.name() != "count"
        || !params.distinct
        || params.filter.is_some()
        || !params.order_by.is_empty()
        || tuple.name() != "struct"
        || !columns(&tuple.args)
        || !columns(&outer.group_expr)
    {
        return Ok(None);
    }
    let mut keys = outer.group_expr.clone();
    keys.extend(
        tuple
            .args
            .iter()
            .filter(|a| !outer.group_expr.contains(a))
            .cloned(),
    );
    let rows = LogicalPlanBuilder::from(Arc::clone(&outer.input))
        .aggregate(keys, Vec::<Expr>::new())?
        .build()?;
    let counting = LogicalPlanBuilder::from(rows)
        .aggregate(outer.group_expr.clone(), [count(lit(1i64))])?
        .build()?;
    let LogicalPlan::Aggregate(counts) = &counting else {
        unreachable!("built as an aggregate");
    };
    let plan = match as_count_distinct(counts)? {
        Some(plan) => plan,
        None => counting,
    };
    let values = plan.schema().columns().into_iter().map(Expr::Column);
    Ok(Some(project_as(plan, values, outer)?))
}

/// What the outer aggregate counts of each distinct row.
enum Counted {
    /// `count(*)`: every row, the NULL of `x` included.
    Rows,
    /// `count(x)`: the rows whose `x` is not NULL.
    Values,
    /// `count(DISTINCT x)`: the distinct values of `x`. Beside the counts above, which
    /// are summed over the groups of the rows' other columns, only where there are none:
    /// a sum would count a value once in each group.
    Distinct,
}

/// `outer` as a count of distinct values, if it counts the rows of a grouping without
/// aggregates that has exactly one column besides its own groups.
fn as_count_distinct(outer: &Aggregate) -> Result<Option<LogicalPlan>> {
    // By county, both groupings run whole in each node.
    if outer.aggr_expr.is_empty() || by_county(outer) {
        return Ok(None);
    }
    let Some((inner, sources)) = distinct_rows(&outer.input) else {
        return Ok(None);
    };
    let source = |expr: &Expr| column_index(&outer.input, expr).and_then(|i| sources[i]);
    let Some(groups) = outer
        .group_expr
        .iter()
        .map(source)
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    let kept: BTreeSet<usize> = groups.iter().copied().collect();
    if kept.len() != groups.len() {
        return Ok(None);
    }
    let rest: Vec<usize> = (0..inner.group_expr.len())
        .filter(|i| !kept.contains(i))
        .collect();
    let Some(value) = counted_column(inner, &rest) else {
        return Ok(None);
    };
    let counted = outer
        .aggr_expr
        .iter()
        .map(|e| counted(e, |arg| source(arg) == Some(value)))
        .collect::<Option<Vec<_>>>();
    let Some(counted) = counted else {
        return Ok(None);
    };

    let x = inner.group_expr[value].clone();
    // A count of rows counts the NULL of `x` as one more row, which count(DISTINCT) skips.
    let null_counts =
        x.nullable(inner.input.schema())? && counted.iter().any(|c| matches!(c, Counted::Rows));
    // Unnamed, the counts keep the names the user would see writing them, also in the
    // nodes' refusals.
    let mut aggregates = vec![count_distinct(x.clone())];
    if null_counts {
        aggregates.push(bool_or(x.is_null()));
    }
    // Distinct counts alone count `x` over the rows whatever their other columns are.
    let distinct = |c: &Counted| matches!(c, Counted::Distinct);
    let others: Vec<usize> = match counted.iter().all(distinct) {
        true => Vec::new(),
        false => rest.iter().copied().filter(|&i| i != value).collect(),
    };
    if !others.is_empty() && counted.iter().any(distinct) {
        return Ok(None);
    }
    let group_expr = groups
        .iter()
        .chain(&others)
        .map(|&i| inner.group_expr[i].clone());
    let counts = LogicalPlanBuilder::from(Arc::clone(&inner.input))
        .aggregate(group_expr, aggregates)?
        .build()?;
    let mut columns = counts.schema().columns().into_iter().map(Expr::Column);
    let keys: Vec<Expr> = columns.by_ref().take(groups.len()).collect();
    let mut columns = columns.skip(others.len());
    let distinct = columns.next().expect("the distinct count");
    let with_null = match columns.next() {
        Some(any_null) => distinct.clone() + when(any_null, lit(1i64)).otherwise(lit(0i64))?,
        None => distinct.clone(),
    };
    let counts_of = counted.into_iter().map(|c| match c {
        Counted::Rows => with_null.clone(),
        Counted::Values | Counted::Distinct => distinct.clone(),
    });
    let (plan, values): (_, Vec<Expr>) = if others.is_empty() {
        (counts, keys.into_iter().chain(counts_of).collect())
    } else {
        // Named as the outer counts, so that two counts alike stay two columns.
        let names = outer.schema.fields().iter().skip(groups.len());
        let sums = counts_of
            .zip(names)
            .map(|(c, field)| sum(c).alias(field.name()));
        let sums = LogicalPlanBuilder::from(counts)
            .aggregate(keys, sums)?
            .build()?;
        let mut columns = sums.schema().columns().into_iter().map(Expr::Column);
        let mut values: Vec<Expr> = columns.by_ref().take(groups.len()).collect();
        // Without groups, no rows at all count 0, where a sum of nothing is NULL.
        values.extend(columns.map(|total| coalesce(vec![total, lit(0i64)])));
        (sums, values)
    };
    Ok(Some(project_as(plan, values, outer)?))
}

/// `values` over `plan`, named as `outer`'s columns, which they stand for.
pub(crate) fn project_as(
    plan: LogicalPlan,
    values: impl IntoIterator<Item = Expr>,
    outer: &Aggregate,
) -> Result<LogicalPlan> {
    let projection = values
        .into_iter()
        .zip(outer.schema.iter())
        .map(|(value, (qualifier, field))| value.alias_qualified(qualifier.cloned(), field.name()));
    LogicalPlanBuilder::from(plan).project(projection)?.build()
}

/// Which of `inner`'s group columns `rest` is counted distinct: the only one, or among
/// several the one direct identifier, whose count nodes answer as tokens.
fn counted_column(inner: &Aggregate, rest: &[usize]) -> Option<usize> {
    if let [value] = rest {
        return Some(*value);
    }
    let schema = inner.input.schema();
    let mut identifiers = rest
        .iter()
        .copied()
        .filter(|&i| class_of(&inner.group_expr[i], schema) == Some(ColumnClass::Direct));
    match (identifiers.next(), identifiers.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

/// What `expr` counts, if it is `count(literal)`, `count(x)` or `count(DISTINCT x)`
/// without filter or ordering; `is_value` tells whether an argument is `x`.
fn counted(expr: &Expr, is_value: impl Fn(&Expr) -> bool) -> Option<Counted> {
    let Expr::AggregateFunction(AggregateFunction { func, params }) = expr.clone().unalias() else {
        return None;
    };
    if func.name() != "count" || params.filter.is_some() || !params.order_by.is_empty() {
        return None;
    }
    match params.args.as_slice() {
        [Expr::Literal(v, _)] if !v.is_null() && !params.distinct => Some(Counted::Rows),
        [arg] if is_value(arg) && params.distinct => Some(Counted::Distinct),
        [arg] if is_value(arg) => Some(Counted::Values),
        _ => None,
    }
}

/// The grouping without aggregates under `plan`, and for each of `plan`'s columns the
/// index of the group column it passes on, if `plan` is such a grouping seen through
/// aliases and projections of columns.
fn distinct_rows(plan: &LogicalPlan) -> Option<(&Aggregate, Vec<Option<usize>>)> {
    match plan {
        LogicalPlan::Aggregate(a)
            if a.aggr_expr.is_empty()
                && a.group_expr.iter().all(|e| matches!(e, Expr::Column(_))) =>
        {
            Some((a, (0..a.group_expr.len()).map(Some).collect()))
        }
        LogicalPlan::SubqueryAlias(alias) => distinct_rows(&alias.input),
        LogicalPlan::Projection(projection) => {
            let (inner, sources) = distinct_rows(&projection.input)?;
            let passed = projection
                .expr
                .iter()
                .map(|e| column_index(&projection.input, e).map(|i| sources[i]))
                .collect::<Option<Vec<_>>>()?;
            Some((inner, passed))
        }
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use arrow::array::{RecordBatch, StringArray};
    use arrow::compute::cast;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::common::tree_node::TreeNode;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::optimizer::Optimizer;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::city::logical_rules;
    use sunlight_domain::CLASS_METADATA_KEY;

    /// Two contexts over the tables `t`, `c` (see [`payments`]) and `u` (see [`persons`]):
    /// one that plans with DataFusion's rules, the oracle, and one with the city's.
    pub(crate) async fn contexts() -> (SessionContext, SessionContext) {
        let t = "CREATE TABLE t(g VARCHAR, x INT, y INT NOT NULL) AS VALUES \
            ('a', 1, 1), ('a', 1, 2), ('a', NULL, 3), ('a', 2, 3), ('b', NULL, 4), \
            ('b', NULL, 4), (NULL, 5, 5), (NULL, 5, 5), (NULL, 6, 6)";
        let context = |rules| {
            let state = SessionStateBuilder::new()
                .with_config(sunlight_flightsql::session_config())
                .with_default_features()
                .with_optimizer_rules(rules)
                .build();
            SessionContext::new_with_state(state)
        };
        let (plain, ruled) = (context(Optimizer::new().rules), context(logical_rules()));
        for ctx in [&plain, &ruled] {
            ctx.sql(t).await.unwrap();
            ctx.register_batch("c", payments()).unwrap();
            ctx.register_batch("u", persons()).unwrap();
        }
        (plain, ruled)
    }

    /// Whether an aggregate of `plan` computes a function that `found` finds.
    pub(crate) fn aggregates(
        plan: &LogicalPlan,
        found: impl Fn(&AggregateFunction) -> bool,
    ) -> bool {
        plan.exists(|p| {
            Ok(
                matches!(p, LogicalPlan::Aggregate(a) if a.aggr_expr.iter().any(|e| {
                    matches!(e.clone().unalias(), Expr::AggregateFunction(f) if found(&f))
                })),
            )
        })
        .unwrap()
    }

    /// The city's optimized plan of `sql`, once its answer is found to be the oracle's,
    /// column names included.
    pub(crate) async fn answered_alike(
        (plain, ruled): &(SessionContext, SessionContext),
        sql: &str,
    ) -> LogicalPlan {
        let frame = ruled.sql(sql).await.unwrap();
        let plan = frame.clone().into_optimized_plan().unwrap();
        let answer = frame.collect().await.unwrap();
        let oracle = plain.sql(sql).await.unwrap().collect().await.unwrap();
        assert_eq!(
            pretty_format_batches(&answer).unwrap().to_string(),
            pretty_format_batches(&oracle).unwrap().to_string(),
            "{sql}\n{}",
            plan.display_indent()
        );
        plan
    }

    #[tokio::test]
    async fn counting_distinct_rows_answers_as_the_rows_would() {
        let contexts = contexts().await;
        let rewritten = [
            "SELECT count(*) FROM (SELECT DISTINCT x FROM t) s",
            "SELECT count(*) AS n, count(x) AS m FROM (SELECT DISTINCT x FROM t)",
            "SELECT g, count(*) FROM (SELECT DISTINCT g, x FROM t) s GROUP BY g",
            "SELECT s.g, count(1) FROM (SELECT x, g FROM t GROUP BY x, g) s GROUP BY s.g",
            "SELECT g, count(y) FROM (SELECT g, y FROM t WHERE x > 1 GROUP BY 1, 2) GROUP BY g",
            "SELECT count(*) FROM (SELECT DISTINCT y FROM t WHERE g IS NOT NULL)",
            "SELECT g AS k, count(*) FROM (SELECT DISTINCT g, y AS v FROM t) GROUP BY g",
            // The inner count is unused: DataFusion drops it, leaving distinct rows.
            "SELECT count(*) FROM (SELECT x, count(*) FROM t GROUP BY x)",
            "SELECT count(*) FROM (SELECT DISTINCT x + 1 FROM t)",
            "SELECT x, count(g) FROM (SELECT DISTINCT g, x FROM t) GROUP BY x",
            // Besides the outer groups, one identifier and other columns.
            "SELECT count(*) FROM (SELECT DISTINCT kind, person FROM u)",
            "SELECT count(*), count(person) FROM (SELECT kind, area, person FROM u GROUP BY 1, 2, 3)",
            "SELECT count(*), count(card) FROM (SELECT DISTINCT card, area, kind FROM u)",
            "SELECT area, count(*) FROM (SELECT DISTINCT area, kind, person FROM u) GROUP BY area",
            "SELECT count(*) FROM (SELECT DISTINCT kind, person FROM u WHERE area = 'none')",
            // Over distinct rows, a distinct count of the value is its count, and alone
            // it counts the value whatever the other columns.
            "SELECT count(DISTINCT x), count(*) FROM (SELECT DISTINCT x FROM t)",
            "SELECT count(DISTINCT person) FROM (SELECT DISTINCT person, kind FROM u)",
            "SELECT area, count(DISTINCT person) FROM (SELECT DISTINCT area, kind, person \
             FROM u) GROUP BY area",
            "SELECT count(*), count(DISTINCT person) FROM (SELECT person FROM u \
             UNION SELECT card FROM u)",
            // Distinct tuples are distinct rows.
            "SELECT count(DISTINCT (person, kind)) AS n FROM u",
            "SELECT kind, count(DISTINCT (kind, area, person)) FROM u GROUP BY kind",
        ];
        let left_alone = [
            "SELECT count(*) FROM (SELECT DISTINCT g, x FROM t)",
            "SELECT count(*) FROM (SELECT x FROM t GROUP BY x HAVING count(*) > 1)",
            "SELECT count(*) FROM (SELECT DISTINCT x FROM t LIMIT 2)",
            "SELECT count(*), max(c) FROM (SELECT x, count(*) AS c FROM t GROUP BY x)",
            "SELECT sum(x) FROM (SELECT DISTINCT x FROM t)",
            "SELECT x, count(x) FROM (SELECT DISTINCT g, x FROM t) GROUP BY x",
            "SELECT DISTINCT g FROM (SELECT DISTINCT g, x FROM t)",
            "SELECT count(*) FROM (SELECT DISTINCT kind, area FROM u)",
            "SELECT count(*) FROM (SELECT DISTINCT person, name, kind FROM u)",
            "SELECT count(kind) FROM (SELECT DISTINCT kind, area, person FROM u)",
            "SELECT count(*), count(area) FROM (SELECT DISTINCT person, area, kind FROM u)",
            "SELECT count(DISTINCT (person, name)) FROM u",
            "SELECT count(DISTINCT (kind, person)), count(*) FROM u",
            "SELECT count(DISTINCT 1), count(*) FROM (SELECT DISTINCT x FROM t)",
            // A person of two kinds is two rows, and one person.
            "SELECT count(DISTINCT person), count(*) FROM (SELECT DISTINCT person, kind FROM u)",
            // Counted as distinct rows, without an identifier to count distinct.
            "SELECT count(DISTINCT (x, g)) FROM t",
        ];
        for (sql, expected) in rewritten
            .iter()
            .map(|s| (s, true))
            .chain(left_alone.iter().map(|s| (s, false)))
        {
            let sql = format!("{sql} ORDER BY 1 NULLS FIRST");
            let plan = answered_alike(&contexts, &sql).await;
            let text = plan.display_indent();
            // Rewritten, the distinct rows are no longer formed.
            let rows = plan
                .exists(|p| Ok(matches!(p, LogicalPlan::Aggregate(a) if a.aggr_expr.is_empty())))
                .unwrap();
            let rewritten = counts_distinct_values(&plan) && !rows;
            assert_eq!(rewritten, expected, "{sql}\n{text}");
        }
    }

    /// Whether `plan` counts the distinct values of a column.
    pub(crate) fn counts_distinct_values(plan: &LogicalPlan) -> bool {
        let of_a_column = |e: &Expr| match e.clone().unalias() {
            Expr::AggregateFunction(f) => {
                f.params.distinct && matches!(f.params.args.as_slice(), [Expr::Column(_)])
            }
            _ => false,
        };
        plan.exists(|p| {
            Ok(matches!(p, LogicalPlan::Aggregate(a) if a.aggr_expr.iter().any(of_a_column)))
        })
        .unwrap()
    }

    /// Persons of some kinds and areas, with the class of each column: `person`, `name`
    /// and `card` are direct identifiers, `level` and `born` quasi-identifiers, and `seen`
    /// public. One person is of no known kind, and one not known at all.
    fn persons() -> RecordBatch {
        let born = "1940-01-02 1940-01-02 1950-03-04 - 1960-05-06 1950-03-04 1970-01-01";
        let seen = "2020-01-01 2020-01-01 2021-01-01 2021-01-01 - 2022-01-01 2020-01-01";
        classed(&[
            ("person", "D", DataType::Utf8, "p1 p1 p2 p2 p3 - -"),
            ("name", "D", DataType::Utf8, "a a b c d - -"),
            ("card", "D", DataType::Utf8, "1 1 2 3 3 4 5"),
            ("kind", "P", DataType::Utf8, "k l k k - k k"),
            ("area", "P", DataType::Utf8, "n s n s n n s"),
            ("level", "Q", DataType::Int32, "1 1 2 - 4 2 1"),
            ("born", "Q", DataType::Date32, born),
            ("seen", "P", DataType::Date32, seen),
        ])
    }

    /// Payments of some kinds to persons by county, `person` a direct identifier.
    fn payments() -> RecordBatch {
        classed(&[
            ("county_code", "P", DataType::Utf8, "1 1 1 1 2 2 2 2"),
            ("person", "D", DataType::Utf8, "p p q q p r r -"),
            ("kind", "P", DataType::Utf8, "k l k - k k l m"),
        ])
    }

    /// A batch of `columns`, each a name, a class, a type and its values as text, split
    /// by spaces, `-` for NULL.
    fn classed(columns: &[(&str, &str, DataType, &str)]) -> RecordBatch {
        let (fields, arrays): (Vec<_>, Vec<_>) = columns
            .iter()
            .map(|(name, class, data_type, values)| {
                let text: StringArray =
                    values.split(' ').map(|v| (v != "-").then_some(v)).collect();
                let array = cast(&text, data_type).unwrap();
                let field = Field::new(*name, data_type.clone(), array.null_count() > 0)
                    .with_metadata([(CLASS_METADATA_KEY.to_string(), class.to_string())].into());
                (field, array)
            })
            .unzip();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
    }
}
