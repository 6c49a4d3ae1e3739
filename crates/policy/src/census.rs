//! The person census of a fragment: a rewrite that carries each row's person up through
//! the plan, so that the node can count the distinct persons behind every row it would
//! send. Leaves read the node's number of each row's person ([`PERSONS_COLUMN`]); they
//! ride in one extra output column, a list of each group's persons (lists of lists, for
//! an aggregate of aggregates), that the egress guard reads and strips.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::{DataFusionError, Result};
use datafusion::functions_aggregate::array_agg::array_agg_udaf;
use datafusion::logical_expr::AggregateUDF;
use datafusion::logical_expr::JoinType;
use datafusion::physical_expr::aggregate::{AggregateExprBuilder, AggregateFunctionExpr};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::{PhysicalExpr, projection::ProjectionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use sunlight_fragment::{PERSONS_COLUMN, TableLeafExec};

use crate::distinct::{DISTINCT_PERSONS, DistinctPersons};
use crate::persons::{Persons, Seen};

const PERSON: &str = "person_id";
const CENSUS: &str = PERSONS_COLUMN;

/// What the census column holds.
#[derive(Debug, Clone)]
enum Kind {
    /// The row's person.
    Person,
    /// A partial aggregate's state of the persons of each group.
    State {
        function: Arc<AggregateFunctionExpr>,
        input: SchemaRef,
        /// The partial aggregate's functions, distinct counts of persons as counts of
        /// person numbers ([`DistinctPersons`]); its merge computes these too.
        functions: Vec<Arc<AggregateFunctionExpr>>,
    },
    /// The distinct persons of each group: a list of keys, or for an aggregate of
    /// aggregates, a list of its groups' lists.
    Count,
}

#[derive(Debug, Clone)]
struct Censused {
    plan: Arc<dyn ExecutionPlan>,
    column: usize,
    kind: Kind,
    /// The column, if any, that holds the `person_id` of the person a [`Kind::Person`]
    /// census column numbers.
    person_id: Option<usize>,
    /// Whether anything between the leaf and here reads that column's values, rather
    /// than passing it on.
    ids_read: bool,
}

/// A fragment rewritten to carry its persons, and where to find them in its output.
#[derive(Debug)]
pub struct Census {
    /// The rewritten plan; its first columns are the fragment's own.
    pub plan: Arc<dyn ExecutionPlan>,
    /// Index of the census column.
    pub column: usize,
    /// Whether each output row is one source row (the column holds its person) or a
    /// group (the column lists up to k of its persons, or its groups' lists).
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
    Ok(carrier.carry(plan)?.map(|c| Census {
        grouped: !matches!(c.kind, Kind::Person),
        plan: c.plan,
        column: c.column,
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
        if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
            return self.join_census(join);
        }
        if children.len() != 1 {
            return unsupported(plan);
        }
        let Some(input) = self.carry(children[0])? else {
            return Ok(None);
        };
        if let Some(filter) = plan.downcast_ref::<FilterExec>() {
            let (projection, column) = keep(filter.projection().as_deref(), input.column);
            let person_id = input
                .person_id
                .and_then(|p| kept_at(projection.as_deref(), p));
            let ids_read = input.ids_read || reads(filter.predicate(), input.person_id);
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
                ids_read,
            }));
        }
        if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
            let mut exprs = projection.expr().to_vec();
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
            let person_id = input
                .person_id
                .and_then(|p| exprs.iter().position(|e| is_column(&e.expr, p)));
            // Passed on once, as itself, or read.
            let passed = exprs
                .iter()
                .filter(|e| reads(&e.expr, input.person_id))
                .count()
                == usize::from(person_id.is_some());
            return Ok(Some(Censused {
                plan: Arc::new(ProjectionExec::try_new(exprs, input.plan)?),
                column,
                kind: input.kind,
                person_id,
                ids_read: input.ids_read || !passed,
            }));
        }
        if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
            return self.aggregate_census(aggregate, input).map(Some);
        }
        let passes_through = plan.name() == "CoalesceBatchesExec"
            || plan.is::<CoalescePartitionsExec>()
            || plan.is::<LocalLimitExec>()
            || plan.is::<GlobalLimitExec>()
            || plan.is::<SortExec>()
            || plan.is::<SortPreservingMergeExec>()
            || plan.is::<CooperativeExec>();
        if !passes_through {
            return unsupported(plan);
        }
        let sorts = plan.is::<SortExec>() || plan.is::<SortPreservingMergeExec>();
        Ok(Some(Censused {
            plan: replace_children_if_necessary(plan.clone(), vec![input.plan])?,
            ids_read: input.ids_read || sorts,
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
            ids_read: false,
        }))
    }

    /// A join keeps the persons of the side whose rows it returns. When it returns both,
    /// it keeps those of the side with a person per row, the left one when both have: a
    /// row joined to a group (say, its county's average) is still about its own person.
    fn join_census(&self, join: &HashJoinExec) -> Result<Option<Censused>> {
        let left = self.carry(join.left())?;
        let right = self.carry(join.right())?;
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
        let original: Option<Vec<usize>> = join
            .projection
            .as_deref()
            .map(|p| p.iter().map(|&i| shift(i)).collect());
        let (projection, column) = keep(original.as_deref(), person);
        let person_id = person_id.and_then(|p| kept_at(projection.as_deref(), p));
        let children = vec![
            new_left.unwrap_or_else(|| join.left().clone()),
            right.map_or_else(|| join.right().clone(), |r| r.plan),
        ];
        let rewritten = join
            .builder()
            .with_new_children(children)?
            .with_projection(projection)
            .build()?;
        Ok(Some(Censused {
            plan: Arc::new(rewritten),
            column,
            kind,
            person_id,
            ids_read: true,
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
                let builder = match kind {
                    Kind::Person => {
                        AggregateExprBuilder::new(self.persons.clone(), vec![column.clone()])
                    }
                    _ => AggregateExprBuilder::new(array_agg_udaf(), vec![column.clone()]),
                };
                let function = builder
                    .schema(input_schema.clone())
                    .alias(CENSUS)
                    .build()
                    .map(Arc::new)?;
                let functions = aggregate
                    .aggr_expr()
                    .iter()
                    .map(|f| match (kind, input.person_id) {
                        (Kind::Person, Some(person_id)) if counts_distinct(f, person_id) => {
                            AggregateExprBuilder::new(self.distinct.clone(), vec![column.clone()])
                                .schema(input_schema.clone())
                                .alias(f.name())
                                .build()
                                .map(Arc::new)
                        }
                        _ => Ok(f.clone()),
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
        let input_plan = match ids_unread(aggregate, &functions, &input) {
            true => {
                input
                    .plan
                    .transform_up(|p| {
                        Ok(match p.downcast_ref::<TableLeafExec>() {
                            Some(leaf) => Transformed::yes(Arc::new(leaf.with_ids_unread()) as _),
                            None => Transformed::no(p),
                        })
                    })?
                    .data
            }
            false => input.plan,
        };
        functions.push(function);
        let mut filters = aggregate.filter_expr().to_vec();
        filters.push(None);
        let rewritten = AggregateExec::try_new(
            mode,
            aggregate.group_expr().clone(),
            functions,
            filters,
            input_plan,
            state_input,
        )?
        .with_limit_options(aggregate.limit_options());
        let column = rewritten.schema().fields().len() - 1;
        Ok(Censused {
            plan: Arc::new(rewritten),
            column,
            kind,
            person_id: None,
            ids_read: true,
        })
    }
}

/// Whether `aggregate`, which computes `functions` over `input`, is all that would read
/// the identifiers of `input`'s single leaf, and counts them only by the persons'
/// numbers: then the leaf need not read them.
fn ids_unread(
    aggregate: &AggregateExec,
    functions: &[Arc<AggregateFunctionExpr>],
    input: &Censused,
) -> bool {
    let Some(person_id) = input.person_id.filter(|_| !input.ids_read) else {
        return false;
    };
    let counted = functions.iter().any(|f| f.fun().name() == DISTINCT_PERSONS);
    let grouped = aggregate.group_expr().expr().iter().map(|(e, _)| e);
    let computed = functions.iter().flat_map(|f| {
        f.expressions()
            .into_iter()
            .chain(f.order_bys().iter().map(|o| o.expr.clone()))
    });
    let filtered = aggregate.filter_expr().iter().flatten();
    counted
        && !grouped
            .chain(filtered)
            .cloned()
            .chain(computed)
            .any(|e| reads(&e, Some(person_id)))
}

/// Whether `expr` reads the column at `column`.
fn reads(expr: &Arc<dyn PhysicalExpr>, column: Option<usize>) -> bool {
    column.is_some_and(|c| collect_columns(expr).iter().any(|used| used.index() == c))
}

/// Whether `function` is `count(DISTINCT c)` of the column at `person_id`.
fn counts_distinct(function: &AggregateFunctionExpr, person_id: usize) -> bool {
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
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_plan::aggregates::PhysicalGroupBy;
    use datafusion::physical_plan::expressions::{binary, col, lit};
    use sunlight_domain::Table;

    use super::*;
    use crate::test_plans::leaf;

    /// A partial aggregate by `subsidy_type` of `count(DISTINCT person_id)` and
    /// `count(DISTINCT township)` over `input`.
    fn distinct_counts(input: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        let schema = input.schema();
        let distinct = |column: &str| {
            AggregateExprBuilder::new(count_udaf(), vec![col(column, &schema).unwrap()])
                .schema(schema.clone())
                .alias(format!("distinct {column}"))
                .distinct()
                .build()
                .map(Arc::new)
                .unwrap()
        };
        let group = PhysicalGroupBy::new_single(vec![(
            col("subsidy_type", &schema).unwrap(),
            "subsidy_type".into(),
        )]);
        Arc::new(
            AggregateExec::try_new(
                AggregateMode::Partial,
                group,
                vec![distinct("person_id"), distinct("township")],
                vec![None, None],
                input,
                schema.clone(),
            )
            .unwrap(),
        )
    }

    /// The census of `aggregate`, and whether its leaf reads `person_id`.
    fn censused(aggregate: &Arc<dyn ExecutionPlan>) -> (Arc<dyn ExecutionPlan>, bool) {
        let plan = census(aggregate, 5, None).unwrap().unwrap().plan;
        let mut ids_read = true;
        plan.apply(|p| {
            if let Some(leaf) = p.downcast_ref::<TableLeafExec>() {
                ids_read = !leaf.ids_unread();
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
        let filtered = Arc::new(FilterExec::try_new(predicate, input).unwrap());
        let (plan, ids_read) = censused(&distinct_counts(filtered));
        let rewritten = plan.downcast_ref::<AggregateExec>().unwrap();
        assert_eq!(rewritten.aggr_expr()[0].fun().name(), "distinct_persons");
        assert!(ids_read);
    }
}
