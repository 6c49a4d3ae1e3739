//! Where each output column of a physical plan comes from. Tracing a plan also enforces
//! how class-D columns may be used on the way: joined on or compared with each other,
//! counted, tested for NULL, grouped by or masked, and nothing else.

use std::sync::Arc;

use arrow::datatypes::{Fields, Schema};
use datafusion::common::JoinSide;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::{JoinType, Operator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::expressions::{
    BinaryExpr, CastExpr, Column, IsNotNullExpr, IsNullExpr, Literal,
};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use sunlight_domain::{ColumnClass, Table, column_class};
use sunlight_fragment::{Join, TableLeafExec};

use crate::{Refusal, Result, Rule};

/// Functions that turn an identifier into a display mask.
const MASKS: &[&str] = &["mask_id", "mask_name"];

/// Where a plan runs: aggregates at a node are counted there; at the city they are
/// counted only when the nodes formed the groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Inside a fragment, at a node.
    Node,
    /// At the city, above the fragments.
    City,
}

/// Whether a column is a per-row value or a per-group one, and where groups were formed.
/// Ordered from least to most safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grouping {
    /// One value per source row.
    Raw,
    /// A group formed at the city from rows of several nodes: its persons are uncounted.
    City,
    /// A group formed at a node, where its persons are counted.
    Node,
}

/// The origin of one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// Derived from rows about persons (every contract table but the reference table).
    pub personal: bool,
    /// The class-D column (`table.column`) this column carries unchanged.
    pub direct: Option<Arc<str>>,
    /// A class-Q column (`table.column`) this column is derived from.
    pub quasi: Option<Arc<str>>,
    /// A distinct aggregate's partial state, a list of its input's raw values, or an
    /// estimate's, a sketch of their hashes.
    pub distinct_state: bool,
    /// Per row or per group.
    pub grouping: Grouping,
}

impl Lineage {
    /// A value that depends on no row: a literal, or a column of the reference table.
    fn constant() -> Self {
        Self {
            personal: false,
            direct: None,
            quasi: None,
            distinct_state: false,
            grouping: Grouping::Node,
        }
    }

    /// Derived from both `self` and `other`.
    fn merge(mut self, other: &Lineage) -> Self {
        self.personal |= other.personal;
        self.direct = self.direct.or_else(|| other.direct.clone());
        self.quasi = self.quasi.or_else(|| other.quasi.clone());
        self.distinct_state |= other.distinct_state;
        self.grouping = self.grouping.min(other.grouping);
        self
    }

    fn merged<'a>(all: impl IntoIterator<Item = &'a Lineage>) -> Self {
        let mut all = all.into_iter();
        match all.next() {
            Some(first) => all.fold(first.clone(), |a, b| a.merge(b)),
            None => Self::constant(),
        }
    }

    fn of_table(table: Table, field: &arrow::datatypes::Field) -> Self {
        let source: Arc<str> = format!("{}.{}", table.name(), field.name()).into();
        let class = column_class(field);
        Self {
            personal: table != Table::SubsidyStandards,
            direct: (class == ColumnClass::Direct).then(|| source.clone()),
            quasi: (class == ColumnClass::Quasi).then_some(source),
            distinct_state: false,
            grouping: Grouping::Raw,
        }
    }
}

/// The plan a city operator runs at the nodes, if it is one: tracing continues there.
pub type Fragments<'a> = &'a dyn Fn(&dyn ExecutionPlan) -> Option<Arc<dyn ExecutionPlan>>;

/// The origin of a plan's output: of each column, and of the rows themselves (a row's
/// existence tells something even when no column does, as in `count(*)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traced {
    /// One lineage per output column.
    pub columns: Vec<Lineage>,
    /// The lineage of the rows.
    pub rows: Lineage,
}

impl Traced {
    fn with_columns(&self, columns: Vec<Lineage>) -> Self {
        Self {
            columns,
            rows: self.rows.clone(),
        }
    }

    /// Rows kept or ordered by `key`: while they are single rows, which of them leave
    /// tells the values of its class-Q source.
    fn chosen_by(mut self, key: &Lineage) -> Self {
        if self.rows.grouping == Grouping::Raw {
            self.rows.quasi = self.rows.quasi.or_else(|| key.quasi.clone());
        }
        self
    }
}

/// The lineage of every output column of `plan`, run at `tier`. Refuses a plan that uses
/// a class-D column in any other way than joining on it, counting it, testing it for
/// NULL, grouping by it or masking it.
pub fn trace(
    plan: &Arc<dyn ExecutionPlan>,
    tier: Tier,
    fragments: Fragments<'_>,
) -> Result<Traced> {
    Tracer { tier, fragments }.plan(plan)
}

struct Tracer<'a> {
    tier: Tier,
    fragments: Fragments<'a>,
}

impl Tracer<'_> {
    fn plan(&self, plan: &Arc<dyn ExecutionPlan>) -> Result<Traced> {
        if let Some(leaf) = plan.downcast_ref::<TableLeafExec>() {
            return Ok(Traced {
                columns: leaf
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| Lineage::of_table(leaf.table(), f))
                    .collect(),
                rows: Lineage {
                    personal: leaf.table() != Table::SubsidyStandards,
                    grouping: Grouping::Raw,
                    ..Lineage::constant()
                },
            });
        }
        if let Some(fragment) = (self.fragments)(plan.as_ref()) {
            let node = Tracer {
                tier: Tier::Node,
                fragments: self.fragments,
            };
            return node.plan(&fragment);
        }
        if let Some(filter) = plan.downcast_ref::<FilterExec>() {
            let input = self.plan(filter.input())?;
            let predicate = self.expr(filter.predicate(), &input.columns)?;
            let columns = project(&input.columns, filter.projection().as_deref());
            return Ok(input.with_columns(columns).chosen_by(&predicate));
        }
        if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
            let input = self.plan(projection.input())?;
            let schema = projection.input().schema();
            let columns = projection
                .expr()
                .iter()
                .map(|p| self.expr(unrelabelled(&p.expr, &schema), &input.columns))
                .collect::<Result<_>>()?;
            return Ok(input.with_columns(columns));
        }
        if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
            return self.aggregate(aggregate);
        }
        if let Some(join) = Join::of(plan) {
            return self.join(join);
        }
        if let Some(sort) = plan.downcast_ref::<SortExec>() {
            let mut input = self.plan(sort.input())?;
            for key in sort.expr().iter() {
                let key = self.order_key(&key.expr, &input.columns)?;
                input = input.chosen_by(&key);
            }
            return Ok(input);
        }
        if let Some(merge) = plan.downcast_ref::<SortPreservingMergeExec>() {
            let mut input = self.plan(merge.input())?;
            for key in merge.expr().iter() {
                let key = self.order_key(&key.expr, &input.columns)?;
                input = input.chosen_by(&key);
            }
            return Ok(input);
        }
        if plan.is::<UnionExec>() {
            let inputs = plan
                .children()
                .into_iter()
                .map(|c| self.plan(c))
                .collect::<Result<Vec<_>>>()?;
            let width = plan.schema().fields().len();
            return Ok(Traced {
                columns: (0..width)
                    .map(|i| Lineage::merged(inputs.iter().filter_map(|c| c.columns.get(i))))
                    .collect(),
                rows: Lineage::merged(inputs.iter().map(|c| &c.rows)),
            });
        }
        self.other(plan)
    }

    /// Any other operator: its children's columns pass through in order, and columns it
    /// adds are derived from all of them.
    fn other(&self, plan: &Arc<dyn ExecutionPlan>) -> Result<Traced> {
        let width = plan.schema().fields().len();
        let children = plan
            .children()
            .into_iter()
            .map(|c| self.plan(c))
            .collect::<Result<Vec<_>>>()?;
        if children.is_empty() {
            return Ok(Traced {
                columns: vec![Lineage::constant(); width],
                rows: Lineage::constant(),
            });
        }
        let mut input: Vec<Lineage> = children.iter().flat_map(|c| c.columns.clone()).collect();
        let rows = Lineage::merged(children.iter().map(|c| &c.rows));
        let mut refusal = None;
        plan.apply_expressions(&mut |e| {
            if let Err(r) = self.expr(e, &input) {
                refusal = Some(r);
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(|e| untraceable(plan, e))?;
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        let derived = Lineage::merged(&input).merge(&rows);
        input.truncate(width);
        input.resize(width, derived);
        Ok(Traced {
            columns: input,
            rows,
        })
    }

    fn aggregate(&self, aggregate: &AggregateExec) -> Result<Traced> {
        let input = self.plan(aggregate.input())?;
        let raw = |l: &Lineage| l.personal && l.grouping == Grouping::Raw;
        // At the city, groups stay counted only when every node formed them and counted
        // their persons; merging rows, or groups formed at the city, leaves them uncounted.
        let grouping = match self.tier {
            Tier::Node => Grouping::Node,
            Tier::City if input.columns.iter().any(raw) => Grouping::City,
            Tier::City if input.rows.personal => input.rows.grouping.max(Grouping::City),
            Tier::City => Grouping::Node,
        };
        let rows = Lineage {
            grouping,
            ..input.rows.clone()
        };
        let mut out = Vec::new();
        for (expr, _) in aggregate.group_expr().expr() {
            let mut key = self.expr(expr, &input.columns)?;
            key.grouping = grouping;
            out.push(key);
        }
        if aggregate.group_expr().has_grouping_set() {
            out.push(Lineage::constant());
        }
        let mode = *aggregate.mode();
        let mut states = out.len();
        for function in aggregate.aggr_expr() {
            let width = function
                .state_fields()
                .map_err(|e| Refusal::new(Rule::Untraceable, e.to_string()))?
                .len();
            let value = match mode {
                AggregateMode::Final | AggregateMode::FinalPartitioned => {
                    let end = (states + width).min(input.columns.len());
                    let value = Lineage::merged(&input.columns[states.min(end)..end]);
                    states += width;
                    Lineage {
                        direct: None,
                        distinct_state: false,
                        ..value
                    }
                }
                _ => {
                    if let Some(order) = picked_by_another_column(aggregate, function) {
                        return Err(Refusal::new(
                            Rule::QuasiIdentifier,
                            format!(
                                "figure {} picks one row's value by {order}, neither that \
                                 value nor a key of its group, which would show the value of \
                                 a row singled out by another column; order by the value \
                                 itself, as min and max do",
                                function.name(),
                            ),
                        ));
                    }
                    let args = function
                        .expressions()
                        .iter()
                        .chain(function.order_bys().iter().map(|o| &o.expr))
                        .map(|e| self.expr(e, &input.columns))
                        .collect::<Result<Vec<_>>>()?;
                    let value = Lineage::merged(&args);
                    if let Some(source) = &value.direct
                        && function.fun().name() != "count"
                    {
                        return Err(direct_use(source, &format!("{}(…)", function.fun().name())));
                    }
                    // A distinct aggregate's state holds its values; an estimate's, a
                    // sketch of their hashes, from which anyone could test for a value.
                    let state = mode == AggregateMode::Partial
                        && (function.is_distinct() || function.fun().name() == "approx_distinct");
                    Lineage {
                        direct: value.direct.clone().filter(|_| state),
                        distinct_state: state,
                        ..value
                    }
                }
            };
            // An aggregate's value depends on which rows there are, as count(*) does.
            let value = Lineage {
                grouping,
                ..value.merge(&input.rows)
            };
            let columns = if mode == AggregateMode::Partial {
                width
            } else {
                1
            };
            out.extend(std::iter::repeat_n(value, columns));
        }
        Ok(Traced { columns: out, rows })
    }

    fn join(&self, join: Join) -> Result<Traced> {
        let left = self.plan(join.left())?;
        let right = self.plan(join.right())?;
        // An identifier is joined only to an identifier: joined to a value, such as a
        // VALUES list's or a literal a subquery selects, it would single out a person.
        for (l, r) in join.on() {
            let (l, r) = (self.expr(l, &left.columns)?, self.expr(r, &right.columns)?);
            if let (Some(source), None) | (None, Some(source)) = (&l.direct, &r.direct) {
                return Err(direct_use(
                    source,
                    "a join with a value that is no identifier",
                ));
            }
        }
        if let Some(filter) = join.filter() {
            let columns: Vec<Lineage> = filter
                .column_indices()
                .iter()
                .map(|c| match c.side {
                    JoinSide::Left => left.columns[c.index].clone(),
                    JoinSide::Right => right.columns[c.index].clone(),
                    JoinSide::None => Lineage::constant(),
                })
                .collect();
            let condition = self.expr(filter.expression(), &columns)?;
            if let Some(source) = &condition.direct {
                return Err(direct_use(source, "a join condition"));
            }
        }
        let rows = left.rows.clone().merge(&right.rows);
        let mark = |side: &[Lineage]| Lineage {
            direct: None,
            distinct_state: false,
            ..Lineage::merged(side)
        };
        let joined = match join.join_type() {
            JoinType::LeftSemi | JoinType::LeftAnti => left.columns,
            JoinType::RightSemi | JoinType::RightAnti => right.columns,
            JoinType::LeftMark => {
                let flag = mark(&right.columns);
                left.columns.into_iter().chain([flag]).collect()
            }
            JoinType::RightMark => {
                let flag = mark(&left.columns);
                right.columns.into_iter().chain([flag]).collect()
            }
            _ => left.columns.into_iter().chain(right.columns).collect(),
        };
        Ok(Traced {
            columns: project(&joined, join.projection()),
            rows,
        })
    }

    fn order_key(&self, key: &Arc<dyn PhysicalExpr>, input: &[Lineage]) -> Result<Lineage> {
        let key = self.expr(key, input)?;
        match &key.direct {
            Some(source) => Err(direct_use(
                source,
                "an ordering (ORDER BY, or a window's PARTITION BY or ORDER BY, which sort)",
            )),
            None => Ok(key),
        }
    }

    /// The lineage of an expression's value; refuses any computation on a class-D column
    /// except masking it or testing it for NULL.
    fn expr(&self, expr: &Arc<dyn PhysicalExpr>, input: &[Lineage]) -> Result<Lineage> {
        if let Some(column) = expr.downcast_ref::<Column>() {
            return input.get(column.index()).cloned().ok_or_else(|| {
                Refusal::new(
                    Rule::Untraceable,
                    format!("column {column} is outside its input"),
                )
            });
        }
        if expr.is::<Literal>() {
            return Ok(Lineage::constant());
        }
        let args = expr
            .children()
            .into_iter()
            .map(|c| self.expr(c, input))
            .collect::<Result<Vec<_>>>()?;
        let value = Lineage::merged(&args);
        let masked = expr
            .downcast_ref::<ScalarFunctionExpr>()
            .is_some_and(|f| MASKS.contains(&f.name()));
        if masked {
            return Ok(Lineage {
                direct: None,
                quasi: None,
                ..value
            });
        }
        if expr.is::<IsNullExpr>()
            || expr.is::<IsNotNullExpr>()
            || compares_identifiers(expr, &args)
        {
            return Ok(Lineage {
                direct: None,
                ..value
            });
        }
        match &value.direct {
            Some(source) => Err(direct_use(source, &format!("`{expr}`"))),
            None => Ok(value),
        }
    }
}

/// Whether `expr` tests two identifiers, each as stored, for equality: as a join on them
/// does, it tells whether they are the same and nothing of either. An identifier compared
/// with anything else, such as a literal, could single out a person.
fn compares_identifiers(expr: &Arc<dyn PhysicalExpr>, args: &[Lineage]) -> bool {
    let equality = expr.downcast_ref::<BinaryExpr>().is_some_and(|b| {
        matches!(
            b.op(),
            Operator::Eq | Operator::NotEq | Operator::IsDistinctFrom | Operator::IsNotDistinctFrom
        )
    });
    equality && args.iter().all(|a| a.direct.is_some())
}

/// `expr` without a cast to the type its input already has. DataFusion so relabels a
/// column whose nullability or metadata differ from those of a union it is a side of;
/// the values are the column's own.
fn unrelabelled<'a>(expr: &'a Arc<dyn PhysicalExpr>, schema: &Schema) -> &'a Arc<dyn PhysicalExpr> {
    match expr.downcast_ref::<CastExpr>() {
        Some(cast) if cast.expr().data_type(schema).ok().as_ref() == Some(cast.cast_type()) => {
            cast.expr()
        }
        _ => expr,
    }
}

fn project(input: &[Lineage], projection: Option<&[usize]>) -> Vec<Lineage> {
    match projection {
        Some(indexes) => indexes.iter().map(|&i| input[i].clone()).collect(),
        None => input.to_vec(),
    }
}

fn direct_use(source: &str, place: &str) -> Refusal {
    Refusal::new(
        Rule::DirectIdentifier,
        format!(
            "{source} is a class-D identifier and is used in {place}; an identifier may only \
             be joined on or compared with another (=, <>), counted (count(DISTINCT …)), \
             tested with IS NULL, grouped by at a node (it leaves as a keyed token) or shown \
             through mask_id/mask_name"
        ),
    )
}

fn untraceable(plan: &Arc<dyn ExecutionPlan>, error: impl std::fmt::Display) -> Refusal {
    Refusal::new(
        Rule::Untraceable,
        format!("cannot trace the columns of {}: {error}", plan.name()),
    )
}

/// What the node does to a column before it leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Sent as computed.
    Keep,
    /// A class-D value: replaced by its keyed token.
    Tokenize,
    /// A distinct aggregate's state of identifying values: each element replaced by its
    /// keyed token, which counts the same.
    TokenizeElements,
}

/// The node's egress rules over a fragment's output columns: class-D values leave only as
/// keyed tokens, class-Q values only as group keys or inside aggregates.
pub fn node_egress(traced: &Traced, fields: &Fields) -> Result<Vec<Treatment>> {
    let rows = &traced.rows;
    if let (true, Grouping::Raw, Some(source)) = (rows.personal, rows.grouping, &rows.quasi) {
        return Err(Refusal::new(
            Rule::QuasiIdentifier,
            format!(
                "single rows would be chosen or ordered by {source}, a class-Q column, which \
                 tells its values row by row; filter or order by it only under an aggregate"
            ),
        ));
    }
    traced
        .columns
        .iter()
        .zip(fields.iter())
        .map(|(l, field)| {
            if l.distinct_state && (l.direct.is_some() || l.quasi.is_some()) {
                return Ok(Treatment::TokenizeElements);
            }
            if l.direct.is_some() {
                return Ok(Treatment::Tokenize);
            }
            match &l.quasi {
                Some(source) if l.grouping == Grouping::Raw => {
                    Err(row_by_row(field.name(), source))
                }
                _ => Ok(Treatment::Keep),
            }
        })
        .collect()
}

/// The city's disclosure rules over an answer: aggregates only, formed where persons
/// are counted, and no identifier, not even as a token.
pub fn city_answer(traced: &Traced, fields: &Fields) -> Result<()> {
    for (l, field) in traced.columns.iter().zip(fields.iter()) {
        let name = field.name();
        if let Some(source) = &l.direct {
            return Err(Refusal::new(
                Rule::DirectIdentifier,
                format!(
                    "column {name} would show {source}, a class-D identifier; count it with \
                     count(DISTINCT …) or show it through mask_id/mask_name"
                ),
            ));
        }
        if let (Some(source), Grouping::Raw) = (&l.quasi, l.grouping) {
            return Err(row_by_row(name, source));
        }
    }
    let rows = &traced.rows;
    if rows.personal && rows.grouping == Grouping::Raw {
        return Err(Refusal::new(
            Rule::AggregatesOnly,
            "the answer would list rows about persons; the city answers aggregates only: \
             add GROUP BY or an aggregate, or open a case for named hits",
        ));
    }
    if rows.personal && rows.grouping == Grouping::City {
        return Err(Refusal::new(
            Rule::MinGroupSize,
            "the answer is aggregated at the city over rows of several nodes, where the \
             persons in each group cannot be counted; group by columns each node can \
             aggregate on its own, or join tables on county_code",
        ));
    }
    Ok(())
}

fn row_by_row(name: &str, source: &str) -> Refusal {
    Refusal::new(
        Rule::QuasiIdentifier,
        format!(
            "column {name} carries {source}, a class-Q column, row by row; it may leave a \
             node only as a group key or inside an aggregate"
        ),
    )
}

/// The ordering by which `function`, a figure that keeps one row's value, picks that row,
/// where it is neither the value itself nor a key of `aggregate`'s groups, and the value
/// is no such key. `first_value` and `last_value` pick as `min` and `max` pick theirs, by
/// the value or by what the whole group shares; ordered by another column, they would
/// pick a row by what the asker knows of it (`ORDER BY payment_id` under `WHERE
/// payment_id >= '…'`) and show its value.
fn picked_by_another_column<'a>(
    aggregate: &AggregateExec,
    function: &'a AggregateFunctionExpr,
) -> Option<&'a Arc<dyn PhysicalExpr>> {
    if !matches!(function.fun().name(), "first_value" | "last_value") {
        return None;
    }
    let same_column = |e: &Arc<dyn PhysicalExpr>, o: &Arc<dyn PhysicalExpr>| {
        matches!(
            (e.downcast_ref::<Column>(), o.downcast_ref::<Column>()),
            (Some(e), Some(o)) if e.index() == o.index()
        )
    };
    let keys = aggregate.group_expr().expr();
    let key = |o: &Arc<dyn PhysicalExpr>| keys.iter().any(|(k, _)| same_column(k, o));
    let values = function.expressions();
    if values.iter().all(key) {
        return None;
    }
    function
        .order_bys()
        .iter()
        .map(|o| &o.expr)
        .find(|o| !key(o) && !values.iter().any(|e| same_column(e, o)))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field};
    use datafusion::functions::unicode::substr;
    use datafusion::functions_aggregate::approx_distinct::approx_distinct_udaf;
    use datafusion::functions_aggregate::first_last::first_value_udaf;
    use datafusion::physical_expr::PhysicalSortExpr;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::projection::ProjectionExpr;
    use datafusion::physical_plan::expressions::{binary, col, lit};
    use datafusion::physical_plan::joins::HashJoinExecBuilder;

    use super::*;
    use crate::test_plans::{count_by, leaf, partial_by};

    fn at_node(plan: &Arc<dyn ExecutionPlan>) -> Result<Vec<Treatment>> {
        node_egress(&trace(plan, Tier::Node, &|_| None)?, plan.schema().fields())
    }

    #[test]
    fn identifiers_leave_a_node_as_tokens_and_quasi_identifiers_only_grouped() {
        let ids = leaf(Table::Persons, &["person_id", "county_code"]);
        assert_eq!(
            at_node(&ids).unwrap(),
            [Treatment::Tokenize, Treatment::Keep]
        );
        let births = leaf(Table::Persons, &["birth_date"]);
        assert_eq!(at_node(&births).unwrap_err().rule, Rule::QuasiIdentifier);
        let by_birth = count_by(births, "birth_date");
        assert!(
            at_node(&by_birth)
                .unwrap()
                .iter()
                .all(|t| *t == Treatment::Keep)
        );
    }

    #[test]
    fn an_estimates_state_is_treated_as_its_values() {
        let persons = leaf(Table::Persons, &["gender", "birth_date", "township"]);
        let estimate = |column: &str| {
            let value = col(column, &persons.schema()).unwrap();
            let function = AggregateExprBuilder::new(approx_distinct_udaf(), vec![value])
                .schema(persons.schema())
                .alias("n")
                .build()
                .unwrap();
            at_node(&partial_by(
                persons.clone(),
                "gender",
                vec![Arc::new(function)],
            ))
            .unwrap()
        };
        // A sketch of birth dates is tokenized as their list would be, which the egress
        // guard refuses for a sketch; one of townships leaves as it is.
        assert_eq!(
            estimate("birth_date"),
            [Treatment::Keep, Treatment::TokenizeElements]
        );
        assert_eq!(estimate("township"), [Treatment::Keep, Treatment::Keep]);
    }

    #[test]
    fn one_rows_value_is_picked_by_itself_or_a_key_of_its_group() {
        let payments = leaf(
            Table::Disbursements,
            &["payment_id", "county_code", "subsidy_type", "amount"],
        );
        let schema = payments.schema();
        let first = |value: &str, order: &[&str]| {
            let order = order
                .iter()
                .map(|c| PhysicalSortExpr::new_default(col(c, &schema).unwrap()))
                .collect();
            let function =
                AggregateExprBuilder::new(first_value_udaf(), vec![col(value, &schema).unwrap()])
                    .schema(schema.clone())
                    .alias("first")
                    .order_by(order)
                    .build()
                    .unwrap();
            at_node(&partial_by(
                payments.clone(),
                "county_code",
                vec![Arc::new(function)],
            ))
        };
        // As `max(amount)` would, or `DISTINCT ON (county_code)` with its value ordered.
        assert!(first("amount", &["amount"]).is_ok());
        assert!(first("amount", &["county_code", "amount"]).is_ok());
        assert!(first("county_code", &["subsidy_type"]).is_ok());
        // The amount of the payment the asker names by its number.
        let picked = first("amount", &["payment_id"]).unwrap_err();
        assert_eq!(picked.rule, Rule::QuasiIdentifier);
        assert!(picked.to_string().contains("by payment_id@0"), "{picked}");
    }

    #[test]
    fn computing_on_an_identifier_is_refused_by_name() {
        let ids = leaf(Table::Persons, &["person_id"]);
        let schema = ids.schema();
        let region = ScalarFunctionExpr::try_new(
            substr(),
            vec![col("person_id", &schema).unwrap(), lit(1i64), lit(6i64)],
            &schema,
            Arc::new(datafusion::config::ConfigOptions::default()),
        )
        .unwrap();
        let projected: Arc<dyn ExecutionPlan> = Arc::new(
            ProjectionExec::try_new(
                vec![ProjectionExpr {
                    expr: Arc::new(region),
                    alias: "region".into(),
                }],
                ids,
            )
            .unwrap(),
        );
        let refusal = at_node(&projected).unwrap_err();
        assert_eq!(refusal.rule, Rule::DirectIdentifier);
        assert!(refusal.message.contains("persons.person_id"), "{refusal}");
    }

    #[test]
    fn a_cast_of_an_identifier_to_its_own_type_is_the_identifier() {
        let ids = leaf(Table::Persons, &["person_id"]);
        let schema = ids.schema();
        let cast = |to: DataType| -> Arc<dyn ExecutionPlan> {
            let target = Arc::new(Field::new("x", to, true));
            let expr =
                CastExpr::new_with_target_field(col("person_id", &schema).unwrap(), target, None);
            let projection = ProjectionExpr {
                expr: Arc::new(expr),
                alias: "x".into(),
            };
            Arc::new(ProjectionExec::try_new(vec![projection], ids.clone()).unwrap())
        };
        // As DataFusion relabels a union's side: the values are the identifier's own.
        assert_eq!(
            at_node(&cast(DataType::Utf8)).unwrap(),
            [Treatment::Tokenize]
        );
        let refusal = at_node(&cast(DataType::LargeUtf8)).unwrap_err();
        assert_eq!(refusal.rule, Rule::DirectIdentifier);
    }

    #[test]
    fn two_identifiers_may_be_compared_for_equality_but_not_one_with_a_value() {
        let ids = leaf(
            Table::Disbursements,
            &["person_id", "account_no", "township"],
        );
        let schema = ids.schema();
        let column = |name| col(name, &schema).unwrap();
        let kept = |predicate| -> Result<Vec<Treatment>> {
            let filter = FilterExec::try_new(predicate, ids.clone()).unwrap();
            at_node(&count_by(Arc::new(filter), "township"))
        };
        for op in [Operator::NotEq, Operator::IsNotDistinctFrom] {
            let both = binary(column("person_id"), op, column("account_no"), &schema).unwrap();
            assert!(kept(both).is_ok());
        }
        let probes = [
            binary(
                column("person_id"),
                Operator::Eq,
                lit("140212199001011234"),
                &schema,
            ),
            binary(
                column("person_id"),
                Operator::Lt,
                column("account_no"),
                &schema,
            ),
            binary(
                column("person_id"),
                Operator::Eq,
                column("township"),
                &schema,
            ),
        ];
        for probe in probes {
            assert_eq!(
                kept(probe.unwrap()).unwrap_err().rule,
                Rule::DirectIdentifier
            );
        }
    }

    #[test]
    fn an_identifier_is_joined_only_to_an_identifier() {
        let payments = leaf(Table::Disbursements, &["person_id", "township"]);
        let persons = leaf(Table::Persons, &["person_id"]);
        let probe: Arc<dyn ExecutionPlan> = Arc::new(
            ProjectionExec::try_new(
                vec![ProjectionExpr {
                    expr: lit("140212200604060009"),
                    alias: "pid".into(),
                }],
                persons.clone(),
            )
            .unwrap(),
        );
        let joined = |right: &Arc<dyn ExecutionPlan>, key: &str| {
            let on = vec![(
                col("person_id", &payments.schema()).unwrap(),
                col(key, &right.schema()).unwrap(),
            )];
            let join =
                HashJoinExecBuilder::new(payments.clone(), right.clone(), on, JoinType::Left)
                    .build()
                    .unwrap();
            at_node(&count_by(Arc::new(join), "township"))
        };
        assert!(joined(&persons, "person_id").is_ok());
        let refusal = joined(&probe, "pid").unwrap_err();
        assert_eq!(refusal.rule, Rule::DirectIdentifier);
        assert!(refusal.message.contains("a join with a value"), "{refusal}");
    }

    #[test]
    fn the_city_answers_groups_only() {
        let rows = leaf(Table::Disbursements, &["township"]);
        let traced = trace(&rows, Tier::City, &|_| None).unwrap();
        assert_eq!(
            city_answer(&traced, rows.schema().fields())
                .unwrap_err()
                .rule,
            Rule::AggregatesOnly
        );
        let grouped = count_by(rows, "township");
        let traced = trace(&grouped, Tier::City, &|_| None).unwrap();
        // Formed at the city over single rows: their persons are uncounted.
        assert_eq!(
            city_answer(&traced, grouped.schema().fields())
                .unwrap_err()
                .rule,
            Rule::MinGroupSize
        );
    }
}
