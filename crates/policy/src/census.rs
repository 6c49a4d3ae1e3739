//! The person census of a fragment: a rewrite that carries each row's person up through
//! the plan, so that the node can count the distinct persons behind every row it would
//! send. Leaves read the node's number of each row's person ([`PERSONS_COLUMN`]); they
//! ride in one extra output column, a list of each group's persons, that the egress guard
//! reads and strips.
//!
//! A group's figure may be made from fewer of its rows than the group holds, or in part
//! from some: those its FILTER passes, those a test in its argument passes and those it
//! fails, as in `sum(CASE WHEN payment_id = '…' THEN amount ELSE 1 END)`, or those on
//! which a value not stored is not NULL or zero. Such a part tells of those rows' persons
//! alone, so the census counts them apart ([`made_from`]); a figure made from fewer than
//! k persons of a group that is not held back is refused. Arithmetic that could test rows
//! without a comparison, which the census could not count, is refused ([`opaque_part`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::{JoinSide, ScalarValue};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::AggregateUDF;
use datafusion::logical_expr::{JoinType, Operator};
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::aggregate::{AggregateExprBuilder, AggregateFunctionExpr};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::{PhysicalExpr, projection::ProjectionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::expressions::{
    BinaryExpr, CaseExpr, CastExpr, Column, IsNotNullExpr, Literal, NegativeExpr, TryCastExpr,
};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use sunlight_fragment::{Join, PERSONS_COLUMN, TableLeafExec};

use crate::distinct::{DistinctPersons, counted_by_value, text_of};
use crate::persons::{Persons, Seen, figure_conditions};

const PERSON: &str = "person_id";
const CENSUS: &str = PERSONS_COLUMN;
/// The column that numbers the side of a union each row comes from, from 1.
const SIDE: &str = "side of the union";

/// What the census column holds.
#[derive(Debug, Clone)]
enum Kind {
    /// The row's person.
    Person,
    /// A partial aggregate's state of the persons of each group: one list, and two more
    /// for each condition its figures are made from (where it holds, where it does not).
    State {
        function: Arc<AggregateFunctionExpr>,
        input: SchemaRef,
        /// The partial aggregate's functions, distinct counts of persons as counts of
        /// person numbers ([`DistinctPersons`]); its merge computes these too.
        functions: Vec<Arc<AggregateFunctionExpr>>,
    },
    /// The distinct persons of each group, a list of keys.
    Count,
}

#[derive(Debug, Clone)]
pub(crate) struct Censused {
    plan: Arc<dyn ExecutionPlan>,
    column: usize,
    kind: Kind,
    /// The column, if any, that holds the `person_id` of the person a [`Kind::Person`]
    /// census column numbers.
    person_id: Option<usize>,
    /// Columns computed by a test of their rows, each with a column that holds the
    /// test's outcome: `(value, test)`. A figure made from a value so computed is made
    /// from the rows that pass, and in part from those that fail ([`made_from`]).
    tests: Vec<(usize, usize)>,
    /// Columns computed in a way that could single out rows uncounted ([`opaque_part`]),
    /// with the part that does: a figure may not be made from them.
    opaque: Vec<(usize, String)>,
    /// Under a union: the column that numbers each row's side, and how many sides there
    /// are. Each side's rows are a part of every figure ([`Carrier::union_census`]).
    sides: Option<(usize, usize)>,
}

impl Censused {
    /// Adds to `tests` the outcome columns of the tests that made the columns `expr` reads.
    fn tests_read(&self, expr: &Arc<dyn PhysicalExpr>, tests: &mut Vec<Arc<dyn PhysicalExpr>>) {
        let schema = self.plan.schema();
        for column in collect_columns(expr) {
            for &(_, test) in self.tests.iter().filter(|(v, _)| *v == column.index()) {
                add(
                    tests,
                    Arc::new(Column::new(schema.field(test).name(), test)),
                );
            }
        }
    }
}

/// A fragment rewritten to carry its persons, and where to find them in its output.
#[derive(Debug)]
pub struct Census {
    /// The rewritten plan; its first columns are the fragment's own.
    pub plan: Arc<dyn ExecutionPlan>,
    /// Index of the census column.
    pub column: usize,
    /// The conditions of the figures made from some rows of their groups, for the state
    /// of a partial aggregate with such figures: the persons of each follow the census
    /// column, for the guard to check as that aggregate would.
    pub conditions: Vec<String>,
    /// Whether each output row is one source row (the column holds its person) or a
    /// group (the column lists up to k of its persons).
    pub grouped: bool,
}

/// Rewrites `plan` to carry its persons; `None` when it reads no table about persons.
/// Fails for a shape whose persons cannot be followed, so that no fragment leaves
/// uncounted. Groups keep up to `cap` persons each: enough to tell whether they reach k.
/// As the plan runs, every person the groups are formed from goes into `seen`, if given.
pub fn census(
    plan: &Arc<dyn ExecutionPlan>,
    cap: usize,
    seen: Option<Seen>,
) -> Result<Option<Census>> {
    let carrier = Carrier {
        persons: Arc::new(AggregateUDF::from(Persons::new(cap, seen))),
        distinct: Arc::new(AggregateUDF::from(DistinctPersons::default())),
    };
    let Some(carried) = carrier.carry(plan)? else {
        return Ok(None);
    };
    let every = (0..carried.plan.schema().fields().len()).collect();
    Ok(Some(Census {
        grouped: !matches!(carried.kind, Kind::Person),
        conditions: conditions(&carried.kind),
        plan: unread_ids(&carried.plan, every)?,
        column: carried.column,
    }))
}

struct Carrier {
    persons: Arc<AggregateUDF>,
    distinct: Arc<AggregateUDF>,
}

impl Carrier {
    fn carry(&self, plan: &Arc<dyn ExecutionPlan>) -> Result<Option<Censused>> {
        if let Some(leaf) = plan.downcast_ref::<TableLeafExec>() {
            return self.leaf_census(leaf);
        }
        let children = plan.children();
        if children.is_empty() {
            return Ok(None);
        }
        if let Some(join) = Join::of(plan) {
            return self.join_census(join);
        }
        if plan.is::<UnionExec>() {
            return self.union_census(plan);
        }
        if children.len() != 1 {
            // Such as a union of the reference table's rows, which are about no one.
            for child in children {
                if self.carry(child)?.is_some() {
                    return unsupported(plan);
                }
            }
            return Ok(None);
        }
        let Some(input) = self.carry(children[0])? else {
            return Ok(None);
        };
        // The sides of a union are counted apart by the aggregate over it, and by it alone.
        if input.sides.is_some() && !(plan.is::<AggregateExec>() || passes_through(plan)) {
            return unsupported(plan);
        }
        let several = !conditions(&input.kind).is_empty();
        if several && (plan.is::<FilterExec>() || plan.is::<ProjectionExec>()) {
            // Operators that would keep one census column of several.
            return unsupported(plan);
        }
        if let Some(filter) = plan.downcast_ref::<FilterExec>() {
            let (projection, column) = keep(filter.projection().as_deref(), input.column);
            let (projection, tests) = keep_tests(projection, &input.tests, 0);
            let opaque = keep_opaque(projection.as_deref(), &input.opaque, 0);
            let person_id = input
                .person_id
                .and_then(|p| kept_at(projection.as_deref(), p));
            let rewritten = FilterExecBuilder::from(filter)
                .with_input(input.plan)
                .apply_projection(None)?
                .apply_projection(projection)?
                .build()?;
            return Ok(Some(Censused {
                plan: Arc::new(rewritten),
                column,
                kind: input.kind,
                person_id,
                tests,
                opaque,
                sides: None,
            }));
        }
        if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
            let mut exprs = projection.expr().to_vec();
            let schema = input.plan.schema();
            let mut opaque = Vec::new();
            for (i, e) in exprs.iter().enumerate() {
                if let Some(part) = opaque_part(&e.expr, &schema, &input.opaque)? {
                    opaque.push((i, part));
                }
            }
            let tests = tested(&mut exprs, &input)?;
            let column = match exprs.iter().position(|p| is_column(&p.expr, input.column)) {
                Some(existing) => existing,
                None => {
                    let field = input.plan.schema().field(input.column).name().clone();
                    exprs.push(ProjectionExpr {
                        expr: Arc::new(Column::new(&field, input.column)),
                        alias: CENSUS.to_string(),
                    });
                    exprs.len() - 1
                }
            };
            // A union casts the columns of its sides to its own fields, types unchanged.
            let person_id = input.person_id.and_then(|p| {
                exprs
                    .iter()
                    .position(|e| is_column(uncast(&e.expr, &schema), p))
            });
            return Ok(Some(Censused {
                plan: Arc::new(ProjectionExec::try_new(exprs, input.plan)?),
                column,
                kind: input.kind,
                person_id,
                tests,
                opaque,
                sides: None,
            }));
        }
        if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
            return self.aggregate_census(aggregate, input).map(Some);
        }
        let sorts = plan.is::<SortExec>() || plan.is::<SortPreservingMergeExec>();
        if !(sorts || passes_through(plan)) {
            return unsupported(plan);
        }
        Ok(Some(Censused {
            plan: replace_children_if_necessary(plan.clone(), vec![input.plan])?,
            ..input
        }))
    }

    /// The leaf, with the number of each row's person after its own columns.
    fn leaf_census(&self, leaf: &TableLeafExec) -> Result<Option<Censused>> {
        if leaf.table().schema().index_of(PERSON).is_err() {
            return Ok(None);
        }
        Ok(Some(Censused {
            plan: Arc::new(leaf.with_persons()),
            column: leaf.schema().fields().len(),
            kind: Kind::Person,
            person_id: leaf.schema().index_of(PERSON).ok(),
            tests: Vec::new(),
            opaque: Vec::new(),
            sides: None,
        }))
    }

    /// A union of rows each about a person, carried alike on every side. A union may
    /// repeat a person's rows, so that one side of a few persons could hide inside a
    /// large group whose persons are the same with or without it: each row carries the
    /// number of its side, and the aggregate over the union counts each side's rows as a
    /// part of every figure ([`made_from`]). Rows about a person and rows about no one,
    /// or persons carried otherwise on each side, cannot be told apart once united.
    fn union_census(&self, union: &Arc<dyn ExecutionPlan>) -> Result<Option<Censused>> {
        let inputs = union
            .children()
            .into_iter()
            .map(|input| self.carry(input))
            .collect::<Result<Vec<_>>>()?;
        if inputs.iter().all(Option::is_none) {
            return Ok(None);
        }
        let Some(inputs) = inputs.into_iter().collect::<Option<Vec<_>>>() else {
            return unsupported(union);
        };
        let first = &inputs[0];
        let width = first.plan.schema().fields().len();
        let alike = |i: &Censused| {
            matches!(i.kind, Kind::Person)
                && i.plan.schema().fields().len() == width
                && i.column == first.column
                && i.tests.is_empty()
                && i.opaque.is_empty()
                && i.sides.is_none()
        };
        if !inputs.iter().all(alike) {
            return unsupported(union);
        }
        let sides = inputs
            .iter()
            .enumerate()
            .map(|(side, input)| {
                let schema = input.plan.schema();
                let mut exprs: Vec<ProjectionExpr> = schema
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(i, f)| ProjectionExpr {
                        expr: Arc::new(Column::new(f.name(), i)),
                        alias: f.name().clone(),
                    })
                    .collect();
                exprs.push(ProjectionExpr {
                    expr: Arc::new(Literal::new(ScalarValue::Int32(Some(side as i32 + 1)))),
                    alias: SIDE.to_string(),
                });
                Ok(
                    Arc::new(ProjectionExec::try_new(exprs, input.plan.clone())?)
                        as Arc<dyn ExecutionPlan>,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        // A column that is `person_id` on one side and another identifier on the next
        // holds no one's `person_id` once united.
        let person_id = first
            .person_id
            .filter(|_| inputs.iter().all(|i| i.person_id == first.person_id));
        Ok(Some(Censused {
            plan: replace_children_if_necessary(union.clone(), sides)?,
            column: first.column,
            kind: Kind::Person,
            person_id,
            tests: Vec::new(),
            opaque: Vec::new(),
            sides: Some((width, inputs.len())),
        }))
    }

    /// A join keeps the persons of the side whose rows it returns. When it returns both,
    /// it keeps those of the side with a person per row, the left one when both have: a
    /// row joined to a group (say, its county's average) is still about its own person.
    fn join_census(&self, join: Join) -> Result<Option<Censused>> {
        let left = self.carry(join.left())?;
        let right = self.carry(join.right())?;
        if [&left, &right].iter().any(|side| united(side)) {
            return unsupported_name(join.name());
        }
        let per_row = |side: &Option<Censused>| {
            side.as_ref()
                .is_some_and(|s| matches!(s.kind, Kind::Person))
        };
        let left_width = join.left().schema().fields().len();
        let new_left = left.as_ref().map(|l| l.plan.clone());
        let new_left_width = new_left
            .as_ref()
            .map_or(left_width, |p| p.schema().fields().len());
        // Indexes into the join's output before its projection.
        let shift = |i: usize| {
            if i < left_width {
                i
            } else {
                i - left_width + new_left_width
            }
        };
        // Which side's persons, and where its columns start in the join's output.
        let (from_left, right_offset) = match join.join_type() {
            JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => (true, 0),
            JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => (false, 0),
            _ => (
                per_row(&left) || (!per_row(&right) && left.is_some()),
                new_left_width,
            ),
        };
        let (person, kind, person_id) = match (from_left, &left, &right) {
            (true, Some(l), _) => (l.column, l.kind.clone(), l.person_id),
            (false, _, Some(r)) => (
                r.column + right_offset,
                r.kind.clone(),
                r.person_id.map(|p| p + right_offset),
            ),
            _ => return Ok(None),
        };
        if matches!(kind, Kind::State { .. }) {
            return unsupported_name(join.name());
        }
        // Where each column of the join's output, before its projection, lands now: a
        // side's columns move up by the census column added to the side before it.
        let right_width = join.right().schema().fields().len();
        let new_right_width = right
            .as_ref()
            .map_or(right_width, |r| r.plan.schema().fields().len());
        let (width, moved): (usize, &dyn Fn(usize) -> usize) = match join.join_type() {
            JoinType::LeftSemi | JoinType::LeftAnti => (left_width, &shift),
            JoinType::LeftMark => (left_width + 1, &shift),
            JoinType::RightSemi | JoinType::RightAnti => (right_width, &|i| i),
            JoinType::RightMark => (right_width + 1, &|i| match i < right_width {
                true => i,
                false => new_right_width,
            }),
            _ => (left_width + right_width, &shift),
        };
        let original: Vec<usize> = match join.projection() {
            Some(p) => p.iter().map(|&i| moved(i)).collect(),
            None => (0..width).map(moved).collect(),
        };
        let (projection, column) = keep(Some(&original), person);
        let person_id = person_id.and_then(|p| kept_at(projection.as_deref(), p));
        // The tests and opaque columns of each side whose columns the join gives.
        let (given_left, given_right) = match join.join_type() {
            JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => (&left, &None),
            JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => (&None, &right),
            _ => (&left, &right),
        };
        let (projection, mut tests) = keep_tests(projection, side_tests(given_left), 0);
        let (projection, more) = keep_tests(projection, side_tests(given_right), right_offset);
        tests.extend(more);
        let mut opaque = keep_opaque(projection.as_deref(), side_opaque(given_left), 0);
        opaque.extend(keep_opaque(
            projection.as_deref(),
            side_opaque(given_right),
            right_offset,
        ));
        // Equal identifiers are equal numbers: the join compares those instead.
        let on = join
            .on()
            .iter()
            .map(|(l, r)| match (number_of(&left, l), number_of(&right, r)) {
                (Some(l), Some(r)) => (l, r),
                _ => (l.clone(), r.clone()),
            })
            .collect();
        let children = vec![
            new_left.unwrap_or_else(|| join.left().clone()),
            right.map_or_else(|| join.right().clone(), |r| r.plan),
        ];
        Ok(Some(Censused {
            plan: join.rebuilt(children, on, projection)?,
            column,
            kind,
            person_id,
            tests,
            opaque,
            sides: None,
        }))
    }

    /// Adds one aggregate to `aggregate`: up to k distinct persons of each group, or the
    /// lists of the groups it merges. Its distinct counts of persons count their numbers.
    fn aggregate_census(&self, aggregate: &AggregateExec, input: Censused) -> Result<Censused> {
        let mode = *aggregate.mode();
        let input_schema = input.plan.schema();
        let (function, state_input, mut functions) = match (&input.kind, mode) {
            (
                Kind::State {
                    function,
                    input,
                    functions,
                },
                AggregateMode::Final | AggregateMode::FinalPartitioned,
            ) => (function.clone(), input.clone(), functions.clone()),
            (Kind::State { .. }, _)
            | (_, AggregateMode::Final | AggregateMode::FinalPartitioned) => {
                return unsupported_name(aggregate.name());
            }
            (kind, _) => {
                let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(
                    input_schema.field(input.column).name(),
                    input.column,
                ));
                let mut arguments = vec![column.clone()];
                let mut pairs = Vec::new();
                for figure in 0..aggregate.aggr_expr().len() {
                    let parts = made_from(aggregate, figure, Some(&input))?;
                    for pair in parts
                        .into_iter()
                        .chain(side_parts(aggregate, figure, &input))
                    {
                        if !pairs.contains(&pair) {
                            pairs.push(pair);
                        }
                    }
                }
                arguments.extend(pairs.into_iter().flat_map(|(scope, c)| [scope, c]));
                let function = AggregateExprBuilder::new(self.persons.clone(), arguments)
                    .schema(input_schema.clone())
                    .alias(CENSUS)
                    .build()
                    .map(Arc::new)?;
                let functions = aggregate
                    .aggr_expr()
                    .iter()
                    .map(|f| match (kind, input.person_id) {
                        (Kind::Person, Some(person_id)) if counts_persons(f, person_id) => {
                            AggregateExprBuilder::new(self.distinct.clone(), vec![column.clone()])
                                .schema(input_schema.clone())
                                .alias(f.name())
                                .build()
                                .map(Arc::new)
                        }
                        _ => Ok(counted_by_value(f, &input_schema)?.unwrap_or_else(|| f.clone())),
                    })
                    .collect::<Result<Vec<_>>>()?;
                (function, input_schema.clone(), functions)
            }
        };
        let kind = match mode {
            AggregateMode::Partial => Kind::State {
                function: function.clone(),
                input: state_input.clone(),
                functions: functions.clone(),
            },
            _ => Kind::Count,
        };
        functions.push(function);
        let mut filters = aggregate.filter_expr().to_vec();
        filters.push(None);
        // Without the aggregate's limit: a limited aggregate keeps only the groups that
        // rank within it, by key or by its one MIN or MAX, or stops at the first groups
        // it meets, before their rows are all counted. The census counts every group's
        // persons in full; the city applies the limit to the groups it merges.
        let rewritten = AggregateExec::try_new(
            mode,
            aggregate.group_expr().clone(),
            functions,
            filters,
            input.plan,
            state_input,
        )?;
        let column = rewritten.schema().fields().len() - 1 - conditions(&kind).len();
        Ok(Censused {
            plan: Arc::new(rewritten),
            column,
            kind,
            person_id: None,
            tests: Vec::new(),
            opaque: Vec::new(),
            sides: None,
        })
    }
}

/// The conditions whose persons follow the census column of `kind`, in its own columns.
fn conditions(kind: &Kind) -> Vec<String> {
    match kind {
        Kind::State { function, .. } => figure_conditions(&function.expressions()),
        Kind::Person | Kind::Count => Vec::new(),
    }
}

/// The conditions on the rows of its group that figure `figure` of `aggregate` is made
/// from, or made from in part, where those may be fewer than the group's, each with its
/// converse: its FILTER; for each argument that reads a value not stored ([`stored`]),
/// that it is not NULL and, but for a count, not zero; and each test the argument makes
/// of its rows (a `CASE WHEN`, a comparison cast to a number), or that made a column it
/// reads, as `carried`, the aggregate's input with its census, knows. All but the FILTER's
/// hold within it. None for a figure made from every row of its group alike, such as
/// `sum(amount)`. Without `carried`, columns computed below are not looked into.
pub(crate) fn made_from(
    aggregate: &AggregateExec,
    figure: usize,
    carried: Option<&Censused>,
) -> Result<Vec<Condition>> {
    let opaque = carried.map_or(&[][..], |c| &c.opaque);
    let function = &aggregate.aggr_expr()[figure];
    let input = aggregate.input();
    let schema = input.schema();
    let counts = function.fun().name() == "count";
    let filter = aggregate.filter_expr()[figure].clone();
    let mut rows: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    let mut tests = Vec::new();
    for argument in function.expressions() {
        if let Some(part) = opaque_part(&argument, &schema, opaque)? {
            return Err(DataFusionError::Plan(format!(
                "figure {} is computed with {part}, which could single out rows in a way \
                 the node cannot count; test rows with CASE WHEN, or group by the value",
                function.name()
            )));
        }
        tests_of(&argument, &schema, &mut tests)?;
        // Of stored values and tests alone, a value is NULL or zero as the rows hold it
        // or as the tests pass, which are counted below.
        if collect_columns(&argument)
            .iter()
            .all(|c| stored(input, c.index()))
        {
            continue;
        }
        // The text of a value with one text each is NULL where the value is, which is
        // cheaper to test than a text made for every row.
        let tested = text_of(&argument, &schema)?.unwrap_or_else(|| argument.clone());
        rows.push(Arc::new(IsNotNullExpr::new(tested)));
        let data_type = argument.data_type(&schema)?;
        if let (false, true, Ok(zero)) = (
            counts,
            data_type.is_numeric(),
            ScalarValue::new_zero(&data_type),
        ) {
            let zero = Arc::new(Literal::new(zero));
            rows.push(Arc::new(BinaryExpr::new(
                argument.clone(),
                Operator::NotEq,
                zero,
            )));
        }
        if let Some(carried) = carried {
            carried.tests_read(&argument, &mut tests);
        }
    }
    let rows = rows
        .into_iter()
        .reduce(|a, b| Arc::new(BinaryExpr::new(a, Operator::And, b)));
    // Each condition splits the rows in two: the figure less the rows it keeps is the
    // figure of the rows it drops, which another answer may show whole.
    let true_: Arc<dyn PhysicalExpr> = Arc::new(Literal::new(ScalarValue::Boolean(Some(true))));
    let scope = filter.clone().unwrap_or_else(|| true_.clone());
    let within = rows.into_iter().chain(tests).map(|c| (scope.clone(), c));
    Ok(filter
        .map(|f| (true_, f))
        .into_iter()
        .chain(within)
        .collect())
}

/// The rows of each side of the union under `aggregate`, if any, within the FILTER of
/// figure `figure`: each side is a part of the figure ([`Carrier::union_census`]).
fn side_parts(aggregate: &AggregateExec, figure: usize, input: &Censused) -> Vec<Condition> {
    let Some((column, sides)) = input.sides else {
        return Vec::new();
    };
    let scope = aggregate.filter_expr()[figure]
        .clone()
        .unwrap_or_else(|| Arc::new(Literal::new(ScalarValue::Boolean(Some(true)))));
    let side: Arc<dyn PhysicalExpr> = Arc::new(Column::new(SIDE, column));
    (1..=sides)
        .map(|number| {
            let number = Arc::new(Literal::new(ScalarValue::Int32(Some(number as i32))));
            let test = Arc::new(BinaryExpr::new(side.clone(), Operator::Eq, number));
            (scope.clone(), test as Arc<dyn PhysicalExpr>)
        })
        .collect()
}

/// A condition on the rows of a group within a scope, such as a figure's FILTER: the
/// rows in scope where it holds, and those where it does not, each make a part of the
/// figure ([`made_from`]).
pub(crate) type Condition = (Arc<dyn PhysicalExpr>, Arc<dyn PhysicalExpr>);

/// Adds to `tests` the outermost tests of rows in `expr`: the expressions that give a
/// boolean, and the `CASE x WHEN v` comparisons.
fn tests_of(
    expr: &Arc<dyn PhysicalExpr>,
    schema: &SchemaRef,
    tests: &mut Vec<Arc<dyn PhysicalExpr>>,
) -> Result<()> {
    if expr.downcast_ref::<Literal>().is_some() {
        return Ok(());
    }
    if expr.data_type(schema)? == DataType::Boolean {
        add(tests, expr.clone());
        return Ok(());
    }
    if let Some(case) = expr.downcast_ref::<CaseExpr>()
        && let Some(base) = case.expr()
    {
        for (when, _) in case.when_then_expr() {
            let test: Arc<dyn PhysicalExpr> =
                Arc::new(BinaryExpr::new(base.clone(), Operator::Eq, when.clone()));
            tests_of(&test, schema, tests)?;
        }
    }
    for child in expr.children() {
        tests_of(child, schema, tests)?;
    }
    Ok(())
}

/// The tests of a join's side, if it has a census.
fn side_tests(side: &Option<Censused>) -> &[(usize, usize)] {
    side.as_ref().map_or(&[], |s| &s.tests)
}

/// The opaque columns of a join's side, if it has a census.
fn side_opaque(side: &Option<Censused>) -> &[(usize, String)] {
    side.as_ref().map_or(&[], |s| &s.opaque)
}

/// `opaque` columns of an input whose columns start at `offset` in an operator's output
/// before its `projection`, where the projection keeps them.
fn keep_opaque(
    projection: Option<&[usize]>,
    opaque: &[(usize, String)],
    offset: usize,
) -> Vec<(usize, String)> {
    opaque
        .iter()
        .filter_map(|(c, part)| kept_at(projection, c + offset).map(|c| (c, part.clone())))
        .collect()
}

/// Whether `expr` is a value of literals and tests of rows alone, such as a literal,
/// `CAST(amount > 300 AS INT)` or `CASE WHEN … THEN 1 ELSE 0 END`: a product by it is a
/// `CASE` on those tests.
fn of_tests(expr: &Arc<dyn PhysicalExpr>, schema: &SchemaRef) -> Result<bool> {
    if expr.downcast_ref::<Literal>().is_some() || expr.data_type(schema)? == DataType::Boolean {
        return Ok(true);
    }
    if let Some(cast) = expr.downcast_ref::<CastExpr>() {
        return of_tests(cast.expr(), schema);
    }
    if let Some(cast) = expr.downcast_ref::<TryCastExpr>() {
        return of_tests(cast.expr(), schema);
    }
    if let Some(case) = expr.downcast_ref::<CaseExpr>() {
        let then = case.when_then_expr().iter().map(|(_, then)| then);
        for value in then.chain(case.else_expr()) {
            if !of_tests(value, schema)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    Ok(false)
}

/// The part of `expr`, over `schema` whose `opaque` columns are computed so, that could
/// single out rows in a way the census cannot count, if any. A figure's argument may hold
/// columns and literals; tests of rows, which the census counts ([`made_from`]), and
/// `CASE` on them; sums and differences; products and quotients by a value of literals and
/// tests alone ([`of_tests`]); casts that keep values apart (not a fraction to a whole
/// number); `date_part` and `date_trunc`.
/// Anything else, such as `sign(abs(x - 7))`, can make a test without a boolean.
fn opaque_part(
    expr: &Arc<dyn PhysicalExpr>,
    schema: &SchemaRef,
    opaque: &[(usize, String)],
) -> Result<Option<String>> {
    if expr.downcast_ref::<Literal>().is_some() || expr.data_type(schema)? == DataType::Boolean {
        return Ok(None);
    }
    let within = |exprs: &mut dyn Iterator<Item = &Arc<dyn PhysicalExpr>>| {
        for e in exprs {
            if let Some(part) = opaque_part(e, schema, opaque)? {
                return Ok(Some(part));
            }
        }
        Ok(None)
    };
    if let Some(column) = expr.downcast_ref::<Column>() {
        let part = opaque.iter().find(|(c, _)| *c == column.index());
        return Ok(part.map(|(_, part)| part.clone()));
    }
    if let Some(case) = expr.downcast_ref::<CaseExpr>() {
        let then = case.when_then_expr().iter().map(|(_, then)| then);
        return within(&mut then.chain(case.else_expr()));
    }
    if let Some(binary) = expr.downcast_ref::<BinaryExpr>() {
        let (left, right) = (
            of_tests(binary.left(), schema)?,
            of_tests(binary.right(), schema)?,
        );
        let plain = match binary.op() {
            Operator::Plus | Operator::Minus | Operator::StringConcat => true,
            Operator::Multiply => left || right,
            Operator::Divide => right,
            _ => false,
        };
        if plain {
            return within(&mut [binary.left(), binary.right()].into_iter());
        }
    }
    if let Some(negative) = expr.downcast_ref::<NegativeExpr>() {
        return within(&mut std::iter::once(negative.arg()));
    }
    let cast = match (
        expr.downcast_ref::<CastExpr>(),
        expr.downcast_ref::<TryCastExpr>(),
    ) {
        (Some(c), _) => Some((c.expr(), c.cast_type())),
        (_, Some(c)) => Some((c.expr(), c.cast_type())),
        _ => None,
    };
    if let Some((input, to)) = cast {
        let from = input.data_type(schema)?;
        let fraction = from.is_floating() || from.is_decimal();
        if !(fraction && to.is_integer()) {
            return within(&mut std::iter::once(input));
        }
    }
    if let Some(function) = expr.downcast_ref::<ScalarFunctionExpr>()
        && matches!(function.name(), "date_part" | "date_trunc")
    {
        return within(&mut function.args().iter());
    }
    Ok(Some(expr.to_string()))
}

fn add(tests: &mut Vec<Arc<dyn PhysicalExpr>>, test: Arc<dyn PhysicalExpr>) {
    if !tests.contains(&test) {
        tests.push(test);
    }
}

/// The tests of `exprs`, a projection of `input`, each made a column of its own (or
/// found among `exprs`): those each expression makes, and those of the tested columns
/// it reads. Returns the projection's `(value, test)` pairs.
fn tested(exprs: &mut Vec<ProjectionExpr>, input: &Censused) -> Result<Vec<(usize, usize)>> {
    let schema = input.plan.schema();
    let mut pairs = Vec::new();
    for value in 0..exprs.len() {
        let expr = exprs[value].expr.clone();
        let mut tests = Vec::new();
        if expr.downcast_ref::<Column>().is_none() {
            tests_of(&expr, &schema, &mut tests)?;
        }
        input.tests_read(&expr, &mut tests);
        for test in tests {
            let at = match exprs.iter().position(|e| e.expr.eq(&test)) {
                Some(at) => at,
                None => {
                    exprs.push(ProjectionExpr {
                        expr: test,
                        alias: format!("{CENSUS}_test_{}", exprs.len()),
                    });
                    exprs.len() - 1
                }
            };
            pairs.push((value, at));
        }
    }
    Ok(pairs)
}

/// `projection` of an operator's output, extended to keep the test of each of `tests`
/// whose value it keeps, and the pairs as they land. `tests` index an input whose
/// columns start at `offset` in the output before the projection.
fn keep_tests(
    mut projection: Option<Vec<usize>>,
    tests: &[(usize, usize)],
    offset: usize,
) -> (Option<Vec<usize>>, Vec<(usize, usize)>) {
    let mut kept = Vec::new();
    for &(value, test) in tests {
        let Some(value) = kept_at(projection.as_deref(), value + offset) else {
            continue;
        };
        let (extended, test) = keep(projection.as_deref(), test + offset);
        projection = extended;
        kept.push((value, test));
    }
    (projection, kept)
}

/// Whether column `index` of `plan` holds a value as stored, wherever a row holds one: not
/// a value computed, nor the NULL an outer join gives a row without a match, nor a key of
/// grouping sets, NULL in the sets without it.
fn stored(plan: &Arc<dyn ExecutionPlan>, index: usize) -> bool {
    if plan.is::<TableLeafExec>() {
        return true;
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        return projection.expr()[index]
            .expr
            .downcast_ref::<Column>()
            .is_some_and(|c| stored(projection.input(), c.index()));
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let index = filter.projection().as_deref().map_or(index, |p| p[index]);
        return stored(filter.input(), index);
    }
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        let group = aggregate.group_expr();
        return group.is_single()
            && group.expr().get(index).is_some_and(|(e, _)| {
                e.downcast_ref::<Column>()
                    .is_some_and(|c| stored(aggregate.input(), c.index()))
            });
    }
    if let Some(join) = Join::of(plan) {
        let index = join.projection().map_or(index, |p| p[index]);
        let left_width = join.left().schema().fields().len();
        let on_left = index < left_width;
        // A mark column, after one side's, is computed.
        return match join.join_type() {
            JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => {
                on_left && stored(join.left(), index)
            }
            JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => {
                index < join.right().schema().fields().len() && stored(join.right(), index)
            }
            JoinType::Inner if on_left => stored(join.left(), index),
            JoinType::Left => on_left && stored(join.left(), index),
            JoinType::Inner | JoinType::Right => {
                !on_left && stored(join.right(), index - left_width)
            }
            JoinType::Full => false,
        };
    }
    if plan.is::<UnionExec>() {
        return plan.children().into_iter().all(|side| stored(side, index));
    }
    let sorts = plan.is::<SortExec>() || plan.is::<SortPreservingMergeExec>();
    (sorts || passes_through(plan)) && stored(plan.children()[0], index)
}

/// `plan`, of whose output the columns `needed` are read, with every census leaf whose
/// `person_id` nothing reads marked so ([`TableLeafExec::with_ids_unread`]): its persons
/// are counted and joined by number. An operator not known here reads all its input.
fn unread_ids(
    plan: &Arc<dyn ExecutionPlan>,
    needed: BTreeSet<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(leaf) = plan.downcast_ref::<TableLeafExec>() {
        let unread = leaf.persons()
            && leaf
                .schema()
                .index_of(PERSON)
                .is_ok_and(|p| !needed.contains(&p));
        return Ok(match unread {
            true => Arc::new(leaf.with_ids_unread()),
            false => plan.clone(),
        });
    }
    let reads = read_by(plan, &needed);
    let children = plan
        .children()
        .into_iter()
        .enumerate()
        .map(|(i, child)| {
            let every = || (0..child.schema().fields().len()).collect();
            unread_ids(child, reads.get(i).cloned().unwrap_or_else(every))
        })
        .collect::<Result<Vec<_>>>()?;
    replace_children_if_necessary(plan.clone(), children)
}

/// The columns of each input of `plan` that it reads to give its columns `needed`; none
/// for an operator not known here.
fn read_by(plan: &Arc<dyn ExecutionPlan>, needed: &BTreeSet<usize>) -> Vec<BTreeSet<usize>> {
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let exprs = projection.expr();
        return vec![columns(needed.iter().map(|&i| &exprs[i].expr))];
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let mut read = columns([filter.predicate()]);
        match filter.projection().as_deref() {
            Some(p) => read.extend(needed.iter().map(|&i| p[i])),
            None => read.extend(needed),
        }
        return vec![read];
    }
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        let over_rows = matches!(
            aggregate.mode(),
            AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned
        );
        if !over_rows {
            return vec![];
        }
        let computed: Vec<Arc<dyn PhysicalExpr>> = aggregate
            .aggr_expr()
            .iter()
            .flat_map(|f| {
                let order = f.order_bys().iter().map(|o| o.expr.clone());
                f.expressions().into_iter().chain(order)
            })
            .collect();
        let grouped = aggregate.group_expr().expr().iter().map(|(e, _)| e);
        let filters = aggregate.filter_expr().iter().flatten();
        return vec![columns(grouped.chain(filters).chain(&computed))];
    }
    if let Some(join) = Join::of(plan) {
        let output: BTreeSet<usize> = match join.projection() {
            Some(p) => needed.iter().map(|&i| p[i]).collect(),
            None => needed.clone(),
        };
        // The join's output is the left side's columns then the right's, or one side's
        // alone, with a mark column after it for a mark join.
        let left_width = join.left().schema().fields().len();
        let right_width = join.right().schema().fields().len();
        let (mut left, mut right): (BTreeSet<usize>, BTreeSet<usize>) = match join.join_type() {
            JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => (
                output.iter().copied().filter(|&i| i < left_width).collect(),
                BTreeSet::new(),
            ),
            JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => (
                BTreeSet::new(),
                output
                    .iter()
                    .copied()
                    .filter(|&i| i < right_width)
                    .collect(),
            ),
            _ => (
                output.iter().copied().filter(|&i| i < left_width).collect(),
                output
                    .iter()
                    .filter(|&&i| i >= left_width)
                    .map(|&i| i - left_width)
                    .collect(),
            ),
        };
        left.extend(columns(join.on().iter().map(|(l, _)| l)));
        right.extend(columns(join.on().iter().map(|(_, r)| r)));
        for c in join.filter().map_or(&[][..], |f| f.column_indices()) {
            match c.side {
                JoinSide::Left => left.insert(c.index),
                JoinSide::Right => right.insert(c.index),
                JoinSide::None => false,
            };
        }
        return vec![left, right];
    }
    let order = match (
        plan.downcast_ref::<SortExec>(),
        plan.downcast_ref::<SortPreservingMergeExec>(),
    ) {
        (Some(sort), _) => Some(sort.expr()),
        (_, Some(merge)) => Some(merge.expr()),
        _ => None,
    };
    if let Some(order) = order {
        let mut read = columns(order.iter().map(|o| &o.expr));
        read.extend(needed);
        return vec![read];
    }
    if plan.is::<UnionExec>() {
        return vec![needed.clone(); plan.children().len()];
    }
    match passes_through(plan) {
        true => vec![needed.clone()],
        false => vec![],
    }
}

/// The indexes of the columns `exprs` read.
fn columns<'a>(exprs: impl IntoIterator<Item = &'a Arc<dyn PhysicalExpr>>) -> BTreeSet<usize> {
    exprs
        .into_iter()
        .flat_map(collect_columns)
        .map(|c| c.index())
        .collect()
}

/// Whether `plan` passes its input's rows on as they are, or fewer of them.
fn passes_through(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.name() == "CoalesceBatchesExec"
        || plan.is::<CoalescePartitionsExec>()
        || plan.is::<LocalLimitExec>()
        || plan.is::<GlobalLimitExec>()
        || plan.is::<CooperativeExec>()
}

/// Whether `side` is rows of a union, whose sides only an aggregate counts apart.
fn united(side: &Option<Censused>) -> bool {
    side.as_ref().is_some_and(|s| s.sides.is_some())
}

/// The census column of `side`, if `key` is the `person_id` of the person it numbers.
fn number_of(
    side: &Option<Censused>,
    key: &Arc<dyn PhysicalExpr>,
) -> Option<Arc<dyn PhysicalExpr>> {
    let side = side.as_ref().filter(|s| matches!(s.kind, Kind::Person))?;
    side.person_id.filter(|&p| is_column(key, p))?;
    let name = side.plan.schema().field(side.column).name().clone();
    Some(Arc::new(Column::new(&name, side.column)))
}

/// Whether `function` is `count(DISTINCT c)` of the column at `person_id`.
fn counts_persons(function: &AggregateFunctionExpr, person_id: usize) -> bool {
    function.is_distinct()
        && function.fun().name() == "count"
        && matches!(function.expressions().as_slice(), [arg] if is_column(arg, person_id))
}

/// Where input column `column` lands under `projection`, if it is kept.
fn kept_at(projection: Option<&[usize]>, column: usize) -> Option<usize> {
    match projection {
        None => Some(column),
        Some(p) => p.iter().position(|&i| i == column),
    }
}

/// `projection` extended to keep input column `column`, and where it lands.
fn keep(projection: Option<&[usize]>, column: usize) -> (Option<Vec<usize>>, usize) {
    match projection {
        None => (None, column),
        Some(p) => match p.iter().position(|&i| i == column) {
            Some(at) => (Some(p.to_vec()), at),
            None => {
                let mut extended = p.to_vec();
                extended.push(column);
                (Some(extended), p.len())
            }
        },
    }
}

/// `expr` without a cast to the type it has already.
fn uncast<'a>(expr: &'a Arc<dyn PhysicalExpr>, schema: &Schema) -> &'a Arc<dyn PhysicalExpr> {
    match expr.downcast_ref::<CastExpr>() {
        Some(cast) if cast.expr().data_type(schema).ok().as_ref() == Some(cast.cast_type()) => {
            cast.expr()
        }
        _ => expr,
    }
}

fn is_column(expr: &Arc<dyn PhysicalExpr>, index: usize) -> bool {
    expr.downcast_ref::<Column>()
        .is_some_and(|c| c.index() == index)
}

fn unsupported<T>(plan: &Arc<dyn ExecutionPlan>) -> Result<T> {
    unsupported_name(plan.name())
}

fn unsupported_name<T>(name: &str) -> Result<T> {
    Err(DataFusionError::Plan(format!(
        "the persons behind {name} cannot be counted, so its rows may not leave the node"
    )))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field};
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_plan::aggregates::PhysicalGroupBy;
    use datafusion::physical_plan::expressions::{CastExpr, binary, col, lit};
    use datafusion::physical_plan::joins::{
        HashJoinExec, HashJoinExecBuilder, NestedLoopJoinExec, NestedLoopJoinExecBuilder,
    };
    use sunlight_domain::Table;

    use super::*;
    use crate::test_plans::{count_by, count_distinct, leaf, partial_by};

    /// A partial aggregate by `subsidy_type` of `count(DISTINCT person_id)` and
    /// `count(DISTINCT township)` over `input`.
    fn distinct_counts(input: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        let distinct = |column: &str| {
            let expr = col(column, &input.schema()).unwrap();
            count_distinct(&input, expr, &format!("distinct {column}"))
        };
        let functions = vec![distinct("person_id"), distinct("township")];
        partial_by(input, "subsidy_type", functions)
    }

    /// The census of `aggregate`, and whether any of its leaves reads `person_id`.
    fn censused(aggregate: &Arc<dyn ExecutionPlan>) -> (Arc<dyn ExecutionPlan>, bool) {
        let plan = census(aggregate, 5, None).unwrap().unwrap().plan;
        let mut ids_read = false;
        plan.apply(|p| {
            if let Some(leaf) = p.downcast_ref::<TableLeafExec>() {
                ids_read |= !leaf.ids_unread();
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        (plan, ids_read)
    }

    #[test]
    fn a_distinct_count_of_the_rows_persons_counts_their_numbers() {
        let input = leaf(
            Table::Disbursements,
            &["person_id", "subsidy_type", "township"],
        );
        let aggregate = distinct_counts(input.clone());
        let (plan, ids_read) = censused(&aggregate);
        let rewritten = plan.downcast_ref::<AggregateExec>().unwrap();
        let functions: Vec<(&str, bool)> = rewritten
            .aggr_expr()
            .iter()
            .map(|f| (f.fun().name(), f.is_distinct()))
            .collect();
        assert_eq!(
            functions,
            [
                ("distinct_persons", false),
                ("count", true),
                ("persons", false)
            ]
        );
        // The state keeps its name and lists person numbers, which leave as tokens.
        let (before, after) = (aggregate.schema(), rewritten.schema());
        assert_eq!(before.field(1).name(), after.field(1).name());
        assert_eq!(
            after.field(1).data_type(),
            &DataType::List(Arc::new(Field::new_list_field(DataType::UInt32, true)))
        );
        assert_eq!(before.field(2), after.field(2));
        // Nothing else reads the identifiers, so the scan need not.
        assert!(!ids_read);

        // A filter on them reads them.
        let schema = input.schema();
        let predicate = binary(
            col("person_id", &schema).unwrap(),
            Operator::NotEq,
            lit("140215-000000001"),
            &schema,
        )
        .unwrap();
        let filtered = Arc::new(FilterExec::try_new(predicate, input.clone()).unwrap());
        let (plan, ids_read) = censused(&distinct_counts(filtered));
        let rewritten = plan.downcast_ref::<AggregateExec>().unwrap();
        assert_eq!(rewritten.aggr_expr()[0].fun().name(), "distinct_persons");
        assert!(ids_read);

        // A cast to the type it has, as a union aligns its sides' fields, keeps them the
        // persons'.
        let exprs = ["person_id", "subsidy_type", "township"].map(|name| {
            let column = col(name, &schema).unwrap();
            let cast = CastExpr::new(column, DataType::Utf8, None);
            ProjectionExpr::new(Arc::new(cast), name.to_string())
        });
        let cast = Arc::new(ProjectionExec::try_new(exprs, input).unwrap());
        let (plan, _) = censused(&distinct_counts(cast));
        let rewritten = plan.downcast_ref::<AggregateExec>().unwrap();
        assert_eq!(rewritten.aggr_expr()[0].fun().name(), "distinct_persons");
    }

    #[test]
    fn a_join_on_person_id_compares_numbers_and_reads_no_identifiers() {
        let d = leaf(
            Table::Disbursements,
            &["person_id", "county_code", "amount"],
        );
        let p = leaf(Table::Persons, &["person_id", "county_code", "gender"]);
        let on = ["person_id", "county_code"]
            .map(|c| (col(c, &d.schema()).unwrap(), col(c, &p.schema()).unwrap()));
        let join = |join_type| -> Arc<dyn ExecutionPlan> {
            Arc::new(
                HashJoinExecBuilder::new(d.clone(), p.clone(), on.to_vec(), join_type)
                    .build()
                    .unwrap(),
            )
        };
        // An EXISTS reads its subquery's identifiers only to join on them.
        let (_, ids_read) = censused(&count_by(join(JoinType::LeftSemi), "amount"));
        assert!(!ids_read);
        let (plan, ids_read) = censused(&count_by(join(JoinType::Inner), "gender"));
        assert!(!ids_read);
        let mut keys = Vec::new();
        plan.apply(|p| {
            if let Some(join) = p.downcast_ref::<HashJoinExec>() {
                keys = join
                    .on()
                    .iter()
                    .map(|(l, r)| (l.to_string(), r.to_string()))
                    .collect();
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        assert_eq!(
            keys,
            [
                ("__persons@3".to_string(), "__persons@3".to_string()),
                ("county_code@1".to_string(), "county_code@1".to_string())
            ]
        );
    }

    #[test]
    fn a_join_without_keys_is_about_the_persons_of_its_node_table() {
        let standards = leaf(Table::SubsidyStandards, &["subsidy_type"]);
        let d = leaf(Table::Disbursements, &["person_id", "amount"]);
        let join = NestedLoopJoinExecBuilder::new(standards, d, JoinType::Inner)
            .build()
            .unwrap();
        let (plan, _) = censused(&count_by(Arc::new(join), "subsidy_type"));
        let mut persons_joined = false;
        plan.apply(|p| {
            if p.is::<NestedLoopJoinExec>() {
                persons_joined = p.schema().index_of(CENSUS).is_ok();
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        assert!(persons_joined, "{plan:?}");
    }

    #[test]
    fn a_union_of_reference_rows_is_about_no_one() {
        let standards = || leaf(Table::SubsidyStandards, &["subsidy_type"]);
        let union = UnionExec::try_new(vec![standards(), standards()]).unwrap();
        assert!(census(&union, 5, None).unwrap().is_none());
        // Joined to payments, the rows are about the payments' persons.
        let d = leaf(Table::Disbursements, &["person_id", "subsidy_type"]);
        let on = vec![(
            col("subsidy_type", &d.schema()).unwrap(),
            col("subsidy_type", &union.schema()).unwrap(),
        )];
        let join = HashJoinExecBuilder::new(d.clone(), union, on, JoinType::Inner)
            .build()
            .unwrap();
        let counted = census(&count_by(Arc::new(join), "subsidy_type"), 5, None).unwrap();
        assert!(counted.unwrap().grouped);
        // Rows about persons united with rows about no one cannot be told apart.
        let types = leaf(Table::Disbursements, &["subsidy_type"]);
        let mixed = UnionExec::try_new(vec![types, standards()]).unwrap();
        let refused = census(&count_by(mixed, "subsidy_type"), 5, None).unwrap_err();
        assert!(refused.to_string().contains("UnionExec"), "{refused}");
        // Rows about persons on every side are counted, each side a part of the figure;
        // anything but an aggregate over the union is refused.
        let payments = UnionExec::try_new(vec![d.clone(), d]).unwrap();
        let counted = census(&count_by(payments.clone(), "subsidy_type"), 5, None)
            .unwrap()
            .unwrap();
        assert_eq!(
            counted.conditions,
            [
                "side of the union@3 = 1",
                "NOT (side of the union@3 = 1)",
                "side of the union@3 = 2",
                "NOT (side of the union@3 = 2)"
            ]
        );
        let predicate = binary(
            col("subsidy_type", &payments.schema()).unwrap(),
            Operator::Eq,
            lit("DIBAO"),
            &payments.schema(),
        )
        .unwrap();
        let filtered = Arc::new(FilterExec::try_new(predicate, payments).unwrap());
        let refused = census(&count_by(filtered, "subsidy_type"), 5, None).unwrap_err();
        assert!(refused.to_string().contains("FilterExec"), "{refused}");
    }

    #[test]
    fn a_union_of_tables_about_persons_counts_each_person_once() {
        // The census's functions for a distinct count of a union's first column by
        // county, whether it reads the identifiers, and its figures' conditions.
        let counted = |sides: Vec<Arc<dyn ExecutionPlan>>| {
            let union = UnionExec::try_new(sides).unwrap();
            let ids = count_distinct(&union, col("person_id", &union.schema()).unwrap(), "n");
            let aggregate = partial_by(union, "county_code", vec![ids]);
            let (plan, ids_read) = censused(&aggregate);
            let rewritten = plan.downcast_ref::<AggregateExec>().unwrap();
            let functions: Vec<String> = rewritten
                .aggr_expr()
                .iter()
                .map(|f| f.fun().name().to_string())
                .collect();
            let conditions = census(&aggregate, 5, None).unwrap().unwrap().conditions;
            (functions, ids_read, conditions)
        };
        let rows = |table| leaf(table, &["person_id", "county_code"]);
        // Both tables number a person alike, so the union counts numbers, and each
        // side's rows are a part of the figure.
        let (functions, ids_read, conditions) =
            counted(vec![rows(Table::Persons), rows(Table::Payroll)]);
        assert_eq!(functions, ["distinct_persons", "persons"]);
        assert!(!ids_read);
        assert_eq!(conditions.len(), 4, "{conditions:?}");
        // A column that is `person_id` on one side only is no one's once united: its
        // values are counted, and read.
        let accounts = leaf(Table::Disbursements, &["account_no", "county_code"]);
        let (functions, ids_read, _) = counted(vec![rows(Table::Disbursements), accounts]);
        assert_eq!(functions, ["count", "persons"]);
        assert!(ids_read);
    }

    #[test]
    fn a_distinct_count_of_texts_of_dates_counts_the_dates() {
        let input = leaf(Table::DisabilityCerts, &["person_id", "level", "issued_on"]);
        let issued_on = col("issued_on", &input.schema()).unwrap();
        let text = Arc::new(CastExpr::new(issued_on, DataType::Utf8, None));
        let dates = count_distinct(&input, text, "dates");
        let aggregate = partial_by(input, "level", vec![dates]);
        let (plan, _) = censused(&aggregate);
        let rewritten = plan.downcast_ref::<AggregateExec>().unwrap();
        let dates = &rewritten.aggr_expr()[0];
        assert!(dates.is_distinct());
        assert_eq!(dates.expressions()[0].to_string(), "issued_on@2");
        assert_eq!(
            rewritten.schema().field(1).data_type(),
            &DataType::List(Arc::new(Field::new_list_field(DataType::Date32, true)))
        );
    }

    #[test]
    fn a_figure_made_from_some_rows_of_its_group_has_their_condition() {
        let d = leaf(Table::Disbursements, &["person_id", "amount", "payment_id"]);
        let p = leaf(Table::Persons, &["person_id", "death_date"]);
        let on = vec![(
            col("person_id", &d.schema()).unwrap(),
            col("person_id", &p.schema()).unwrap(),
        )];
        let join = |join_type| -> Arc<dyn ExecutionPlan> {
            Arc::new(
                HashJoinExecBuilder::new(d.clone(), p.clone(), on.clone(), join_type)
                    .build()
                    .unwrap(),
            )
        };
        // The condition of `sum(argument) FILTER (WHERE filter)` over `input`, as text;
        // of `count(argument)` for an argument that is not a number.
        let condition = |input: Arc<dyn ExecutionPlan>,
                         argument: &dyn Fn(&SchemaRef) -> Arc<dyn PhysicalExpr>,
                         filter: Option<Arc<dyn PhysicalExpr>>| {
            let schema = input.schema();
            let argument = argument(&schema);
            let function = match argument.data_type(&schema).unwrap().is_numeric() {
                true => sum_udaf(),
                false => count_udaf(),
            };
            let sum = AggregateExprBuilder::new(function, vec![argument])
                .schema(schema.clone())
                .alias("s")
                .build()
                .unwrap();
            let aggregate = AggregateExec::try_new(
                AggregateMode::Single,
                PhysicalGroupBy::new_single(vec![]),
                vec![Arc::new(sum)],
                vec![filter],
                input,
                schema,
            )
            .unwrap();
            let pairs = made_from(&aggregate, 0, None).map_err(|e| e.to_string())?;
            let mut arguments = vec![lit(0)];
            arguments.extend(pairs.into_iter().flat_map(|(scope, c)| [scope, c]));
            Ok::<_, String>(figure_conditions(&arguments))
        };
        let amount = |schema: &SchemaRef| col("amount", schema).unwrap();
        assert!(condition(d.clone(), &amount, None).unwrap().is_empty());
        let one = |schema: &SchemaRef| {
            let id = col("payment_id", schema).unwrap();
            binary(id, Operator::Eq, lit("140212-000000001"), schema).unwrap()
        };
        assert_eq!(
            condition(d.clone(), &amount, Some(one(&d.schema()))).unwrap(),
            [
                "payment_id@2 = 140212-000000001",
                "NOT (payment_id@2 = 140212-000000001)"
            ]
        );
        // Arithmetic on stored values is NULL or zero as the values are.
        let doubled = |schema: &SchemaRef| {
            binary(amount(schema), Operator::Plus, amount(schema), schema).unwrap()
        };
        assert!(condition(d.clone(), &doubled, None).unwrap().is_empty());
        // A test of the rows splits them in two, each a figure's part: that the CASE
        // gives 1 to all others does not hide the one.
        let one_or_1 = |schema: &SchemaRef| {
            let when = vec![(one(schema), amount(schema))];
            let otherwise = lit(ScalarValue::Decimal128(Some(100), 10, 2));
            Arc::new(CaseExpr::try_new(None, when, Some(otherwise)).unwrap()) as _
        };
        assert_eq!(
            condition(d.clone(), &one_or_1, None).unwrap(),
            [
                "payment_id@2 = 140212-000000001",
                "NOT (payment_id@2 = 140212-000000001)"
            ]
        );
        // A value computed by other means may test rows unseen, and is refused.
        let modulo =
            |schema: &SchemaRef| binary(amount(schema), Operator::Modulo, lit(7), schema).unwrap();
        let err = condition(d.clone(), &modulo, None).unwrap_err();
        assert!(err.contains("computed with amount@1 % 7"), "{err}");
        let whole = |schema: &SchemaRef| {
            let cast = CastExpr::new(amount(schema), DataType::Int64, None);
            binary(Arc::new(cast), Operator::Multiply, lit(2i64), schema).unwrap()
        };
        assert!(condition(d.clone(), &whole, None).is_err());
        // A stored value on every row of an inner join; on a LEFT join's other side, NULL
        // where no row matched.
        let died = |schema: &SchemaRef| col("death_date", schema).unwrap();
        assert!(
            condition(join(JoinType::Inner), &died, None)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            condition(join(JoinType::Left), &died, None).unwrap(),
            ["death_date@4 IS NOT NULL", "NOT (death_date@4 IS NOT NULL)"]
        );
        // A date's text is NULL where the date is, which is tested instead.
        let text =
            |schema: &SchemaRef| Arc::new(CastExpr::new(died(schema), DataType::Utf8, None)) as _;
        assert_eq!(
            condition(join(JoinType::Left), &text, None).unwrap(),
            ["death_date@4 IS NOT NULL", "NOT (death_date@4 IS NOT NULL)"]
        );
        assert_eq!(
            condition(join(JoinType::Right), &amount, None).unwrap(),
            [
                "amount@1 IS NOT NULL AND amount@1 != 0.00",
                "NOT (amount@1 IS NOT NULL AND amount@1 != 0.00)"
            ]
        );
    }
}
