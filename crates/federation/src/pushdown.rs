//! [`PushToNodes`]: the physical optimizer rule that cuts the city's plan into node
//! fragments. Working bottom-up, it moves into a [`NodeFragmentExec`] every operator
//! that can run inside each node on its own: filters, projections, the partial phase of
//! aggregates (the whole aggregate where it groups by `county_code`), per-node sorts and
//! limits (top-K), joins of two tables co-partitioned on `county_code`, joins with the
//! reference table, and, when only one node is involved, everything that yields a single
//! partition. What is left runs at the city and merges.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinSide, JoinType};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::Aggregate;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::analyze::AnalyzeExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::expressions::{CastExpr, Column, Literal};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::utils::build_join_schema;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::{InterleaveExec, UnionExec};
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};
use sunlight_domain::NodeCode;
use sunlight_fragment::{
    Join, TableLeafExec, merge_of, partial_of, refused_function, refused_operator, whole_of,
};

use crate::fragment_exec::NodeFragmentExec;
use crate::in_subquery::LIST;
use crate::reference::{ReferenceExec, constant_rows};
use crate::registry::NodeEndpoint;

/// Cuts the plan into node fragments; runs after DataFusion's own rules.
#[derive(Debug, Default)]
pub struct PushToNodes;

impl PhysicalOptimizerRule for PushToNodes {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        push(plan, config.execution.target_partitions)
    }

    fn name(&self) -> &str {
        "push_to_nodes"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with its inputs cut first, bottom-up, and then itself absorbed where it can be.
fn push(plan: Arc<dyn ExecutionPlan>, partitions: usize) -> Result<Arc<dyn ExecutionPlan>> {
    let planned: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    let inputs = planned
        .iter()
        .map(|input| push(Arc::clone(input), partitions))
        .collect::<Result<Vec<_>>>()?;
    let plan = match replace_children_if_necessary(Arc::clone(&plan), inputs.clone()) {
        Ok(plan) => plan,
        // An operator that needs its inputs split as planned, such as the one that
        // interleaves the sides of a UNION, refuses a fragment that now sends them
        // otherwise: it takes them split again as planned.
        Err(_) => replace_children_if_necessary(plan, split_as_planned(inputs, &planned)?)?,
    };
    Ok(absorb(plan, partitions)?.data)
}

/// `inputs`, each repartitioned as its `planned` counterpart was where they differ.
fn split_as_planned(
    inputs: Vec<Arc<dyn ExecutionPlan>>,
    planned: &[Arc<dyn ExecutionPlan>],
) -> Result<Vec<Arc<dyn ExecutionPlan>>> {
    inputs
        .into_iter()
        .zip(planned)
        .map(|(input, planned)| {
            let split = planned.output_partitioning();
            if input.output_partitioning() == split {
                return Ok(input);
            }
            Ok(Arc::new(RepartitionExec::try_new(input, split.clone())?) as Arc<dyn ExecutionPlan>)
        })
        .collect()
}

fn absorb(
    plan: Arc<dyn ExecutionPlan>,
    partitions: usize,
) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    if plan.is::<NodeFragmentExec>()
        || plan.is::<AnalyzeExec>()
        || plan.children().is_empty()
        || forms_in_list(&plan)
    {
        return Ok(Transformed::no(plan));
    }
    if let Some(whole) = whole_at_nodes(&plan)? {
        return Ok(Transformed::yes(whole));
    }
    if let Some(split) = split_over_union(&plan, partitions)? {
        return Ok(Transformed::yes(split));
    }
    let plan = repartition_join_inputs(plan, partitions)?;
    // An operator a node would refuse, such as a window, stays at the city. So does one
    // calling a function a node would refuse, over figures the nodes aggregated; over
    // single rows it joins the fragment, which the city then refuses, saying why.
    if refused_operator(plan.data.as_ref()).is_some()
        || (refused_function(plan.data.as_ref())?.is_some() && over_aggregates(&plan.data))
    {
        return Ok(plan);
    }
    let Some((base, inputs)) = fragment_inputs(&plan.data)? else {
        return Ok(plan);
    };
    // An operator that refuses the fragment's inputs, as split at the nodes, stays here.
    let Ok(fragment) = replace_children_if_necessary(plan.data.clone(), inputs) else {
        return Ok(plan);
    };
    // A fragment keeps one output partition per node, and must travel as datafusion-proto.
    if fragment.output_partitioning().partition_count() != base.nodes().len() {
        return Ok(plan);
    }
    match base.with_fragment(fragment) {
        Ok(extended) => Ok(Transformed::yes(Arc::new(extended))),
        Err(_) => Ok(plan),
    }
}

/// An aggregate by `county_code` that merges the partial states node fragments send, run
/// whole inside the nodes instead: each node holds its groups whole, and sends their
/// final figures. Aggregates whose partial state is the values themselves, such as
/// `median`, run at the nodes only so.
fn whole_at_nodes(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(aggregate) = plan.downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    let merges = matches!(
        aggregate.mode(),
        AggregateMode::Final | AggregateMode::FinalPartitioned
    );
    if !merges {
        return Ok(None);
    }
    let input = aggregate.input();
    let gathered = match input.downcast_ref::<RepartitionExec>() {
        Some(r) => r.input(),
        None => input
            .downcast_ref::<CoalescePartitionsExec>()
            .map_or(input, CoalescePartitionsExec::input),
    };
    let Some(fragment) = gathered.downcast_ref::<NodeFragmentExec>() else {
        return Ok(None);
    };
    let Some(partial) = fragment.fragment().downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    // Every grouping set of the partial phase keeps `county_code`.
    if *partial.mode() != AggregateMode::Partial || by_county(fragment.fragment()) != Some(true) {
        return Ok(None);
    }
    let whole = whole_of(partial, AggregateMode::SinglePartitioned)?
        .with_limit_options(aggregate.limit_options());
    Ok(fragment
        .with_fragment(Arc::new(whole))
        .ok()
        .map(|f| Arc::new(f) as Arc<dyn ExecutionPlan>))
}

/// An aggregate over the `UNION ALL` of node fragments, leaving out the sides that have
/// no rows ([`no_rows`]), and beside them sides that read no node, which the city
/// aggregates itself. A distinct count runs over each node's own rows of the union
/// ([`union_at_nodes`]): the states of a distinct count merge only where every side sends
/// its values alike, or where the sides the city aggregates have none ([`null_on`]). Other
/// aggregates, and those distinct counts, become partial aggregates under the union, one over
/// each side, which the nodes run, each from what it counted ahead where it can; the city
/// merges their states. The sides of a union split by `county_code` (interleaved) form
/// whole groups at each node, merged by node; other unions' partial states merge as the
/// aggregate above planned. Each side's fragment then counts the persons behind its own
/// groups: a group too small on one side is held back there, however large the union's.
fn split_over_union(
    plan: &Arc<dyn ExecutionPlan>,
    partitions: usize,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(aggregate) = plan.downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    let (union, mut sides) = union_sides(aggregate.input(), partitions)?;
    let interleaved = union.is::<InterleaveExec>();
    sides.retain(|side| !no_rows(side));
    let merge = match aggregate.mode() {
        AggregateMode::Partial if union.is::<UnionExec>() || interleaved => None,
        AggregateMode::SinglePartitioned if interleaved => Some(AggregateMode::FinalPartitioned),
        _ => return Ok(None),
    };
    // The parts take no limit and find their own input order; an aggregate whose
    // figures depend on the order of its rows stays whole.
    let ordered = aggregate
        .aggr_expr()
        .iter()
        .any(|e| !e.order_bys().is_empty());
    let fragments: Vec<&NodeFragmentExec> = sides.iter().filter_map(|s| s.downcast_ref()).collect();
    // A side that reads no node, as the standards an outer join keeps unmatched, is
    // aggregated once, at the city. The states of a distinct count merge with the nodes',
    // which send the values as tokens, only where that side has none to count.
    let city_sides: Vec<_> = sides.iter().filter(|s| !from_nodes(s)).collect();
    let split = fragments.len() + city_sides.len() == sides.len() && !fragments.is_empty();
    let distinct = aggregate.aggr_expr().iter().any(|f| f.is_distinct());
    let counted_at_city = city_sides.iter().all(|side| {
        aggregate
            .aggr_expr()
            .iter()
            .filter(|f| f.is_distinct())
            .flat_map(|f| f.expressions())
            .all(|e| null_on(&e, side))
    });
    if ordered || !split || (!city_sides.is_empty() && (merge.is_some() || !counted_at_city)) {
        return Ok(None);
    }
    if distinct && city_sides.is_empty() {
        return union_at_nodes(aggregate, &fragments, merge.is_some()).map(Some);
    }
    let partials = sides
        .into_iter()
        .map(|side| Ok(absorb(partial_of(aggregate, side)?, partitions)?.data))
        .collect::<Result<Vec<_>>>()?;
    let Some(mode) = merge else {
        // The partial states, however the rows were split, for the merge above.
        return UnionExec::try_new(partials).map(Some);
    };
    let Ok(merged) = replace_children_if_necessary(union.clone(), partials) else {
        return Ok(None);
    };
    merge_of(aggregate, mode, merged).map(Some)
}

/// Whether `expr` is NULL in every row of `side`: a NULL, cast or not, or a column that
/// `side`'s projections fill with one, as those that pad an outer join's unmatched rows.
fn null_on(expr: &Arc<dyn PhysicalExpr>, side: &Arc<dyn ExecutionPlan>) -> bool {
    if let Some(cast) = expr.downcast_ref::<CastExpr>() {
        return null_on(cast.expr(), side);
    }
    if let Some(literal) = expr.downcast_ref::<Literal>() {
        return literal.value().is_null();
    }
    match (
        expr.downcast_ref::<Column>(),
        side.downcast_ref::<ProjectionExec>(),
    ) {
        (Some(column), Some(projection)) => projection
            .expr()
            .get(column.index())
            .is_some_and(|p| null_on(&p.expr, projection.input())),
        _ => false,
    }
}

/// A union and its sides, as the aggregate above it reads them.
type UnionSides<'a> = (&'a Arc<dyn ExecutionPlan>, Vec<Arc<dyn ExecutionPlan>>);

/// The union under `input`, and its sides. A projection between them, as the one that
/// names the columns of an outer join kept at the city ([`crate::kept_reference`]),
/// runs on each side, inside the nodes where the side is a fragment.
fn union_sides(input: &Arc<dyn ExecutionPlan>, partitions: usize) -> Result<UnionSides<'_>> {
    let sides = |union: &Arc<dyn ExecutionPlan>| union.children().into_iter().cloned().collect();
    let Some(projection) = input
        .downcast_ref::<ProjectionExec>()
        .filter(|p| p.input().is::<UnionExec>())
    else {
        return Ok((input, sides(input)));
    };
    let projected = sides(projection.input())
        .into_iter()
        .map(|side| {
            let projected = ProjectionExec::try_new(projection.expr().to_vec(), side)?;
            Ok(absorb(Arc::new(projected), partitions)?.data)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((projection.input(), projected))
}

/// Whether `plan` reads rows the nodes sent.
fn from_nodes(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.exists(|p| Ok(p.is::<NodeFragmentExec>()))
        .unwrap_or(true)
}

/// Whether `plan` has no rows: the scan of a table for no node, whose filter on
/// `county_code` ruled every node out, under projections and filters.
fn no_rows(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        return no_rows(projection.input());
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        return no_rows(filter.input());
    }
    plan.is::<EmptyExec>()
}

/// The aggregate over a `UNION ALL` whose sides are node fragments, as one fragment for
/// the nodes of every side: each node unites its own rows of every side and aggregates
/// them once, so that a person on several sides is one of the group's persons, once, and
/// the node reads all sides' values alike. Its partial phase, or the `whole` aggregate
/// where the sides split by `county_code`, whose groups each node holds whole. The node
/// counts each side's rows as a part of every figure.
fn union_at_nodes(
    aggregate: &AggregateExec,
    sides: &[&NodeFragmentExec],
    whole: bool,
) -> Result<Arc<dyn ExecutionPlan>> {
    // A side for fewer nodes runs at the others too, where the filter on `county_code`
    // that ruled them out finds none of their rows.
    let mut nodes: Vec<NodeEndpoint> = sides.iter().flat_map(|s| s.nodes()).cloned().collect();
    nodes.sort_by_key(|n| n.code);
    nodes.dedup_by_key(|n| n.code);
    let rows = UnionExec::try_new(sides.iter().map(|side| side.fragment().clone()).collect())?;
    let partial = partial_of(aggregate, Arc::new(CoalescePartitionsExec::new(rows)))?;
    let fragment = match (whole, partial.downcast_ref::<AggregateExec>()) {
        (true, Some(partial)) => Arc::new(whole_of(partial, AggregateMode::SinglePartitioned)?),
        _ => partial,
    };
    Ok(Arc::new(sides[0].uniting(nodes, fragment)?))
}

/// Whether `plan` forms the list of values an IN subquery became, which stays at the city.
fn forms_in_list(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<AggregateExec>()
        .is_some_and(|a| a.aggr_expr().iter().any(|e| e.name() == LIST))
}

/// A fragment that grew past the city's repartitioning of a single node's output no
/// longer splits its rows by the keys of the join above it, nor does an operator the city
/// keeps above such a fragment, such as the projection over an aggregate that ran whole
/// inside the nodes. The join's inputs are repartitioned again, as the city planned
/// them, so that both sides split alike; when the join runs inside the nodes after all,
/// its fragment sees through them.
fn repartition_join_inputs(
    plan: Arc<dyn ExecutionPlan>,
    partitions: usize,
) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    let Some(join) = plan.downcast_ref::<HashJoinExec>() else {
        return Ok(Transformed::no(plan));
    };
    if *join.partition_mode() != PartitionMode::Partitioned
        || !(from_nodes(join.left()) || from_nodes(join.right()))
    {
        return Ok(Transformed::no(plan));
    }
    let (left_keys, right_keys): (Vec<_>, Vec<_>) = join.on().iter().cloned().unzip();
    let inputs = [(join.left(), left_keys), (join.right(), right_keys)]
        .into_iter()
        .map(|(input, keys)| {
            let split = Partitioning::Hash(keys, partitions);
            if !input.is::<NodeFragmentExec>() && *input.output_partitioning() == split {
                return Ok(input.clone());
            }
            Ok(Arc::new(RepartitionExec::try_new(input.clone(), split)?) as Arc<dyn ExecutionPlan>)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Transformed::yes(replace_children_if_necessary(
        plan.clone(),
        inputs,
    )?))
}

/// The fragment exec an operator extends, and the inputs of its copy in the fragment.
type FragmentInputs<'a> = (&'a NodeFragmentExec, Vec<Arc<dyn ExecutionPlan>>);

/// When `plan` can run inside the nodes: the fragment exec it extends and the inputs its
/// copy inside the fragment reads.
fn fragment_inputs(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<FragmentInputs<'_>>> {
    // The sides of a join on `county_code` (among other keys) are already split by node,
    // and matching rows live on the same node; and when every input comes from the same
    // single node, that node holds every group. Either way the city's repartitioning is
    // not needed.
    let county_join = plan
        .downcast_ref::<HashJoinExec>()
        .is_some_and(|j| *j.partition_mode() == PartitionMode::Partitioned && on_county_code(j));
    let under: Vec<Option<&NodeFragmentExec>> =
        plan.children().into_iter().map(fragment_under).collect();
    let one_node = under.iter().all(|f| {
        f.zip(under[0])
            .is_some_and(|(f, first)| f.nodes().len() == 1 && f.nodes() == first.nodes())
    });
    let see_through = county_join || one_node;
    let children: Vec<&Arc<dyn ExecutionPlan>> = plan
        .children()
        .into_iter()
        .map(|c| match c.downcast_ref::<RepartitionExec>() {
            Some(r) if see_through && r.input().is::<NodeFragmentExec>() => r.input(),
            _ => c,
        })
        .collect();
    let fragments: Vec<Option<&NodeFragmentExec>> = children
        .iter()
        .map(|c| c.downcast_ref::<NodeFragmentExec>())
        .collect();
    // A side of a join on `county_code` for fewer nodes runs at the other side's too,
    // where the filter on `county_code` that ruled them out finds none of its rows.
    let base = match county_join {
        true => fragments.iter().flatten().max_by_key(|f| f.nodes().len()),
        false => fragments.iter().flatten().next(),
    };
    let Some(base) = base.copied() else {
        return Ok(None);
    };
    let fewer_nodes =
        |f: &NodeFragmentExec| county_join && f.nodes().iter().all(|n| base.nodes().contains(n));
    let mut inputs = Vec::new();
    for (child, fragment) in children.iter().zip(&fragments) {
        match fragment {
            Some(f) if f.nodes() == base.nodes() => inputs.push(f.fragment().clone()),
            Some(f) if fewer_nodes(f) => inputs.push(over_nodes(f.fragment(), base.nodes().len())?),
            Some(_) => return Ok(None),
            None => match as_reference(child)? {
                Some(local) => inputs.push(local),
                None => return Ok(None),
            },
        }
    }
    let single_node = base.nodes().len() == 1;
    let local = match children.len() {
        1 => single_node || partition_local(plan),
        _ => single_node || local_join(plan, &fragments),
    };
    Ok(local.then_some((base, inputs)))
}

/// `fragment` planned over `nodes` nodes: its leaves stand for that many.
fn over_nodes(fragment: &Arc<dyn ExecutionPlan>, nodes: usize) -> Result<Arc<dyn ExecutionPlan>> {
    let widened = fragment.clone().transform_up(|p| {
        Ok(match p.downcast_ref::<TableLeafExec>() {
            Some(leaf) => Transformed::yes(Arc::new(leaf.over(nodes)) as Arc<dyn ExecutionPlan>),
            None => Transformed::no(p),
        })
    })?;
    Ok(widened.data)
}

/// The fragment exec that is `plan`, or that `plan` repartitions.
fn fragment_under(plan: &Arc<dyn ExecutionPlan>) -> Option<&NodeFragmentExec> {
    match plan.downcast_ref::<RepartitionExec>() {
        Some(r) => r.input().downcast_ref(),
        None => plan.downcast_ref(),
    }
}

/// Whether every input of `plan` is a fragment whose rows are the groups of an aggregate
/// the nodes ran, rather than single rows.
fn over_aggregates(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.children().into_iter().all(|input| {
        fragment_under(input).is_some_and(|f| {
            let mut top = f.fragment();
            while !top.is::<AggregateExec>() && top.children().len() == 1 {
                top = top.children()[0];
            }
            top.downcast_ref::<AggregateExec>()
                .is_some_and(|a| *a.mode() != AggregateMode::Partial)
        })
    })
}

/// Operators whose output partition *i* depends only on input partition *i*.
fn partition_local(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.is::<FilterExec>()
        || plan.is::<ProjectionExec>()
        || plan.is::<LocalLimitExec>()
        || plan.is::<CooperativeExec>()
        || plan.downcast_ref::<AggregateExec>().is_some_and(|a| {
            // SinglePartitioned: the input is hash-partitioned on the group keys, here
            // `county_code`, so each node holds whole groups.
            matches!(
                a.mode(),
                AggregateMode::Partial | AggregateMode::SinglePartitioned
            )
        })
        || plan
            .downcast_ref::<SortExec>()
            .is_some_and(SortExec::preserve_partitioning)
}

/// A join that runs inside each node: partitioned on `county_code` on both sides, or with
/// the reference table as its collected build side. A join whose every input from the
/// nodes gives groups rather than single rows ([`sends_rows`]) stays at the city: its
/// inputs are small there, and a node counts the persons behind rows, not behind pairs of
/// groups.
fn local_join(plan: &Arc<dyn ExecutionPlan>, fragments: &[Option<&NodeFragmentExec>]) -> bool {
    let Some(join) = Join::of(plan) else {
        return false;
    };
    if !fragments.iter().flatten().any(|f| sends_rows(f.fragment())) {
        return false;
    }
    let from_reference =
        fragments[0].is_none() && fragments[1].is_some() && reference_rows_once(join.join_type());
    match join {
        Join::Hash(hash) => match hash.partition_mode() {
            PartitionMode::Partitioned => {
                fragments.iter().all(Option::is_some) && on_county_code(hash)
            }
            PartitionMode::CollectLeft => from_reference,
            PartitionMode::Auto => false,
        },
        Join::Loops(_) => from_reference,
    }
}

/// Whether a join with the reference table (or other rows every node holds alike, as the
/// groups the city sends) on its left gives only rows driven by the right side's: then
/// each node gives its own rows' share. A join that keeps, marks or filters the left
/// side's rows would give each of them once at every node.
pub(crate) fn reference_rows_once(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Inner
            | JoinType::Right
            | JoinType::RightSemi
            | JoinType::RightAnti
            | JoinType::RightMark
    )
}

fn aggregates(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.exists(|p| Ok(p.is::<AggregateExec>())).unwrap_or(true)
}

/// Whether `plan` gives single rows rather than groups: it aggregates nothing, or its rows
/// are those of a join with a side that gives single rows, as a join of rows with their
/// groups by county does.
fn sends_rows(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if !aggregates(plan) {
        return true;
    }
    let mut top = plan;
    while top.children().len() == 1 && !top.is::<AggregateExec>() {
        top = top.children()[0];
    }
    let Some(join) = Join::of(top) else {
        return false;
    };
    match join.join_type() {
        JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => sends_rows(join.left()),
        JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => sends_rows(join.right()),
        _ => sends_rows(join.left()) || sends_rows(join.right()),
    }
}

/// The operators by which the city merges what several nodes sent into one figure, over
/// a fragment that had a group held back: the aggregates and windows at the city over
/// more than one node's rows, not kept apart by `county_code`, and those over more than
/// one fragment of a node (the sides of a union), above such a fragment; and, by county
/// or not, any window over them and any aggregate that merges a node's groups into fewer,
/// as the groups of a list of distinct values ([`crate::distinct_values`]). A group one
/// node held back would leave its rows out of such a figure.
pub fn merges_of_held_groups(plan: &Arc<dyn ExecutionPlan>) -> Result<Vec<Arc<dyn ExecutionPlan>>> {
    let mut merges = Vec::new();
    plan.apply(|p| {
        if let Some(by_county) = by_county(p)
            && held_back_under(p)?
        {
            let parts = node_parts_under(p)?;
            let nodes: BTreeSet<&NodeCode> = parts.iter().collect();
            if nodes.len() < parts.len()
                || (!by_county && nodes.len() > 1)
                || merged_fragments(p).is_none()
            {
                merges.push(p.clone());
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(merges)
}

/// Whether a fragment that held a group back reaches the answer of `plan` through the
/// side of a join that keeps rows for matching none of its rows: the side an anti-join
/// or a mark join tests, or the one an outer join pads with NULLs for the other's
/// unmatched rows. A group left out there, by its node or at every node, would let rows
/// through, or mark or pad them, as though it were not there.
pub fn held_back_where_tested(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    let tested = Join::of(plan).map_or((false, false), |j| match j.join_type() {
        JoinType::LeftAnti | JoinType::LeftMark | JoinType::Left => (false, true),
        JoinType::RightAnti | JoinType::RightMark | JoinType::Right => (true, false),
        JoinType::Full => (true, true),
        _ => (false, false),
    });
    for (i, input) in plan.children().into_iter().enumerate() {
        let side_tested = if i == 0 { tested.0 } else { tested.1 };
        if (side_tested && held_back_under(input)?) || held_back_where_tested(input)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether a fragment in `plan`, once run, had a group held back at one of its nodes.
fn held_back_under(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    plan.exists(|p| {
        Ok(p.downcast_ref::<NodeFragmentExec>()
            .is_some_and(|f| f.held_back() > 0))
    })
}

/// Where `merge`, one of [`merges_of_held_groups`], is the final phase of an aggregate by
/// keys over the partial groups the nodes sent, as they arrive, the fragments that sent
/// them: a group every node leaves out of them is then absent from it as a whole, and
/// each figure shown counts all of its rows.
pub fn merged_fragments(merge: &Arc<dyn ExecutionPlan>) -> Option<Vec<&NodeFragmentExec>> {
    let aggregate = merge.downcast_ref::<AggregateExec>()?;
    let group = aggregate.group_expr();
    let finishes = matches!(
        aggregate.mode(),
        AggregateMode::Final | AggregateMode::FinalPartitioned
    );
    match finishes && group.is_single() && !group.is_empty() {
        true => partial_groups(aggregate.input()),
        false => None,
    }
}

/// The fragments whose partial groups `plan` passes on as they arrive: moved between
/// partitions, or the sides of a union, but not merged.
fn partial_groups(plan: &Arc<dyn ExecutionPlan>) -> Option<Vec<&NodeFragmentExec>> {
    if let Some(fragment) = plan.downcast_ref::<NodeFragmentExec>() {
        return Some(vec![fragment]);
    }
    let passes = plan.is::<RepartitionExec>()
        || plan.is::<CoalescePartitionsExec>()
        || plan.is::<CooperativeExec>()
        || plan.is::<UnionExec>()
        || plan.is::<InterleaveExec>()
        || plan.name() == "CoalesceBatchesExec";
    let sides = plan.children();
    if !passes || sides.is_empty() {
        return None;
    }
    let fragments = sides.into_iter().map(partial_groups);
    fragments.collect::<Option<Vec<_>>>().map(|f| f.concat())
}

/// For an aggregate or a window, whether every group or window it forms lies within one
/// county; `None` for other operators.
fn by_county(plan: &Arc<dyn ExecutionPlan>) -> Option<bool> {
    let window = match plan.downcast_ref::<BoundedWindowAggExec>() {
        Some(w) => Some((w.input(), w.partition_keys())),
        None => plan
            .downcast_ref::<WindowAggExec>()
            .map(|w| (w.input(), w.partition_keys())),
    };
    if let Some((input, keys)) = window {
        return Some(keys.iter().any(|k| is_county_code(input, k)));
    }
    let aggregate = plan.downcast_ref::<AggregateExec>()?;
    let group = aggregate.group_expr();
    // Grouping sets formed below (`__grouping_id`) may total over counties.
    let sets_below = group.expr().iter().any(|(e, _)| {
        e.downcast_ref::<Column>()
            .is_some_and(|c| c.name() == Aggregate::INTERNAL_GROUPING_ID)
    });
    let county: Vec<bool> = group
        .expr()
        .iter()
        .map(|(e, _)| is_county_code(aggregate.input(), e))
        .collect();
    Some(
        !sets_below
            && county.contains(&true)
            && group
                .groups()
                .iter()
                .all(|set| set.iter().zip(&county).any(|(&null, &c)| c && !null)),
    )
}

/// The nodes of every fragment that feeds `plan`: a node appears once for each of its
/// fragments.
fn node_parts_under(plan: &Arc<dyn ExecutionPlan>) -> Result<Vec<NodeCode>> {
    let mut nodes = Vec::new();
    plan.apply(|p| {
        if let Some(fragment) = p.downcast_ref::<NodeFragmentExec>() {
            nodes.extend(fragment.nodes().iter().map(|n| n.code));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(nodes)
}

/// Whether `join` matches rows on `county_code` from both sides (among other keys).
fn on_county_code(join: &HashJoinExec) -> bool {
    join.on()
        .iter()
        .any(|(l, r)| is_county_code(join.left(), l) && is_county_code(join.right(), r))
}

/// Whether `expr`, over the output of `input`, is a node table's `county_code`.
fn is_county_code(input: &Arc<dyn ExecutionPlan>, expr: &Arc<dyn PhysicalExpr>) -> bool {
    expr.downcast_ref::<Column>()
        .is_some_and(|c| carries_county_code(input, c.index()))
}

/// Whether column `index` of `plan` is a node table's `county_code`, passed on unchanged
/// and never NULL for want of a match: at a node, every row holds the node's own code. A
/// column only named so, as in `'140215' AS county_code`, is not one.
fn carries_county_code(plan: &Arc<dyn ExecutionPlan>, index: usize) -> bool {
    let column_of = |expr: &Arc<dyn PhysicalExpr>| expr.downcast_ref::<Column>().map(Column::index);
    let below = |input: &Arc<dyn ExecutionPlan>, i: Option<usize>| {
        i.is_some_and(|i| carries_county_code(input, i))
    };
    if let Some(fragment) = plan.downcast_ref::<NodeFragmentExec>() {
        return carries_county_code(fragment.fragment(), index);
    }
    if plan.is::<TableLeafExec>() {
        return plan
            .schema()
            .fields()
            .get(index)
            .is_some_and(|f| f.name() == "county_code");
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let source = projection
            .expr()
            .get(index)
            .and_then(|e| column_of(&e.expr));
        return below(projection.input(), source);
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let source = match filter.projection() {
            Some(kept) => kept.get(index).copied(),
            None => Some(index),
        };
        return below(filter.input(), source);
    }
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        let group = aggregate.group_expr();
        let source = group.expr().get(index).and_then(|(e, _)| column_of(e));
        return group.is_single() && below(aggregate.input(), source);
    }
    if let Some(join) = Join::of(plan) {
        let (_, columns) = build_join_schema(
            &join.left().schema(),
            &join.right().schema(),
            &join.join_type(),
        );
        let at = match join.projection() {
            Some(kept) => kept.get(index).copied(),
            None => Some(index),
        };
        let outer = join.join_type();
        return match at.and_then(|i| columns.get(i)) {
            Some(c)
                if c.side == JoinSide::Left
                    && !matches!(outer, JoinType::Right | JoinType::Full) =>
            {
                carries_county_code(join.left(), c.index)
            }
            Some(c)
                if c.side == JoinSide::Right
                    && !matches!(outer, JoinType::Left | JoinType::Full) =>
            {
                carries_county_code(join.right(), c.index)
            }
            _ => false,
        };
    }
    if plan.is::<UnionExec>() || plan.is::<InterleaveExec>() {
        return plan
            .children()
            .into_iter()
            .all(|c| carries_county_code(c, index));
    }
    // Operators that pass their input's columns on in place, adding any after them.
    let passes_on = plan.is::<RepartitionExec>()
        || plan.is::<CoalescePartitionsExec>()
        || plan.is::<CooperativeExec>()
        || plan.is::<SortExec>()
        || plan.is::<SortPreservingMergeExec>()
        || plan.is::<LocalLimitExec>()
        || plan.is::<GlobalLimitExec>()
        || plan.is::<BoundedWindowAggExec>()
        || plan.is::<WindowAggExec>();
    match plan.children().as_slice() {
        [input] if passes_on => carries_county_code(input, index),
        _ => false,
    }
}

/// A subtree that reads only the reference table and rows written in the query
/// ([`constant_rows`]), which every node can give alike. It is rewritten to read the node's
/// copy of the table, on one partition: its rows are few, and a node repartitions
/// nothing it is sent.
fn as_reference(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if !constant_rows(plan)? {
        return Ok(None);
    }
    let rewritten = plan.clone().transform_up(|p| {
        if let Some(reference) = p.downcast_ref::<ReferenceExec>() {
            return Ok(Transformed::yes(
                Arc::new(reference.as_leaf()?) as Arc<dyn ExecutionPlan>
            ));
        }
        match p.downcast_ref::<RepartitionExec>() {
            Some(r) if r.input().output_partitioning().partition_count() == 1 => {
                Ok(Transformed::yes(r.input().clone()))
            }
            Some(r) => Ok(Transformed::yes(
                Arc::new(CoalescePartitionsExec::new(r.input().clone())) as Arc<dyn ExecutionPlan>,
            )),
            None => Ok(Transformed::no(p)),
        }
    })?;
    Ok(Some(rewritten.data))
}
