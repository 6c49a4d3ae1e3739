//! An aggregate split in two phases: partial aggregates over parts of its rows, and one
//! aggregate that merges their states. The city splits an aggregate over the sides of a
//! union so that each side runs in the nodes; a node splits one over its cores. Where
//! each part holds whole groups, the two phases join again into one. Some aggregates'
//! partial states are the values themselves: those must be merged where they are made.

use std::sync::Arc;

use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;

/// `aggregate`'s partial phase over `input`, a part of its rows.
pub fn partial_of(
    aggregate: &AggregateExec,
    input: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(Arc::new(in_mode(aggregate, AggregateMode::Partial, input)?))
}

/// The aggregate whose partial phase is `partial`, whole, in `mode`: over the same rows,
/// it gives final figures.
pub fn whole_of(partial: &AggregateExec, mode: AggregateMode) -> Result<AggregateExec> {
    in_mode(partial, mode, partial.input().clone())
}

/// `aggregate`'s expressions over `input`, in `mode`, which reads rows as `aggregate` does.
fn in_mode(
    aggregate: &AggregateExec,
    mode: AggregateMode,
    input: Arc<dyn ExecutionPlan>,
) -> Result<AggregateExec> {
    AggregateExec::try_new(
        mode,
        aggregate.group_expr().clone(),
        aggregate.aggr_expr().to_vec(),
        aggregate.filter_expr().to_vec(),
        input,
        aggregate.input_schema(),
    )
}

/// The aggregate that merges, in `mode`, the states of `aggregate`'s partial phases
/// that `input` brings.
pub fn merge_of(
    aggregate: &AggregateExec,
    mode: AggregateMode,
    input: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(Arc::new(AggregateExec::try_new(
        mode,
        aggregate.group_expr().as_final(),
        aggregate.aggr_expr().to_vec(),
        vec![None; aggregate.aggr_expr().len()],
        input,
        aggregate.input_schema(),
    )?))
}

/// Aggregate functions that run only whole, over groups a node holds whole: their partial
/// states are the values themselves, or a digest of them, which must not leave the node.
pub(crate) const WHOLE_AGGREGATES: &[&str] = &[
    "median",
    "percentile_cont",
    "approx_median",
    "approx_percentile_cont",
    "approx_percentile_cont_with_weight",
];

/// The first function of [`WHOLE_AGGREGATES`] whose partial state `fragment` computes and
/// would send anywhere but straight into the aggregate that merges it.
pub fn unmerged_partial_state(fragment: &Arc<dyn ExecutionPlan>) -> Option<String> {
    unmerged_below(fragment, None)
}

/// [`unmerged_partial_state`] of `plan`, whose output goes straight into a merge of the
/// aggregate functions `merge` names, if any.
fn unmerged_below(plan: &Arc<dyn ExecutionPlan>, merge: Option<&[String]>) -> Option<String> {
    let aggregate = plan.downcast_ref::<AggregateExec>();
    if let Some(partial) = aggregate.filter(|a| *a.mode() == AggregateMode::Partial) {
        let functions = functions(partial);
        let whole_only = functions
            .iter()
            .find(|f| WHOLE_AGGREGATES.contains(&f.as_str()));
        if merge != Some(functions.as_slice())
            && let Some(function) = whole_only
        {
            return Some(function.clone());
        }
    }
    let merging = aggregate
        .filter(|a| {
            matches!(
                a.mode(),
                AggregateMode::Final | AggregateMode::FinalPartitioned
            )
        })
        .map(functions);
    let passes = plan.is::<CoalescePartitionsExec>()
        || plan.is::<CooperativeExec>()
        || plan.name() == "CoalesceBatchesExec";
    let below = match (&merging, passes) {
        (Some(functions), _) => Some(functions.as_slice()),
        (None, true) => merge,
        (None, false) => None,
    };
    plan.children()
        .into_iter()
        .find_map(|input| unmerged_below(input, below))
}

/// The names of `aggregate`'s functions, in order.
fn functions(aggregate: &AggregateExec) -> Vec<String> {
    aggregate
        .aggr_expr()
        .iter()
        .map(|e| e.fun().name().to_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::functions_aggregate::median::median_udaf;
    use datafusion::functions_aggregate::min_max::max_udaf;
    use datafusion::logical_expr::AggregateUDF;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_plan::aggregates::PhysicalGroupBy;
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::physical_plan::expressions::col;

    use super::*;

    /// `function(argument)` by `county_code`, in `mode`, over the rows of `read`; `input`
    /// is those rows, or for a merge the partial phase over them.
    fn aggregate(
        function: Arc<AggregateUDF>,
        argument: &str,
        mode: AggregateMode,
        input: Arc<dyn ExecutionPlan>,
        read: SchemaRef,
    ) -> Arc<dyn ExecutionPlan> {
        let mut group = PhysicalGroupBy::new_single(vec![(
            col("county_code", &read).unwrap(),
            "county_code".into(),
        )]);
        if mode != AggregateMode::Partial {
            group = group.as_final();
        }
        let expr = AggregateExprBuilder::new(function, vec![col(argument, &read).unwrap()])
            .schema(read.clone())
            .alias("figure")
            .build()
            .unwrap();
        Arc::new(
            AggregateExec::try_new(mode, group, vec![Arc::new(expr)], vec![None], input, read)
                .unwrap(),
        )
    }

    fn rows() -> Arc<dyn ExecutionPlan> {
        Arc::new(EmptyExec::new(Arc::new(Schema::new(vec![
            Field::new("county_code", DataType::Utf8, false),
            Field::new("amount", DataType::Float64, false),
        ]))))
    }

    #[test]
    fn a_median_state_goes_only_straight_into_its_merge() {
        let rows = rows();
        let median = |mode, input| aggregate(median_udaf(), "amount", mode, input, rows.schema());
        let partial = median(AggregateMode::Partial, rows.clone());
        assert_eq!(unmerged_partial_state(&partial).as_deref(), Some("median"));
        let gathered = Arc::new(CoalescePartitionsExec::new(partial.clone()));
        let merged = median(AggregateMode::Final, gathered);
        assert_eq!(unmerged_partial_state(&merged), None);

        // Crafted plans: a merge of another function, or another aggregate between the
        // state and its merge, whose output leaves.
        let states = partial.schema();
        let max_of_states = aggregate(
            max_udaf(),
            "amount",
            AggregateMode::Final,
            partial.clone(),
            rows.schema(),
        );
        assert_eq!(
            unmerged_partial_state(&max_of_states).as_deref(),
            Some("median")
        );
        let count =
            |mode, input| aggregate(count_udaf(), "county_code", mode, input, states.clone());
        let counted = count(
            AggregateMode::Final,
            count(AggregateMode::Partial, partial.clone()),
        );
        assert_eq!(unmerged_partial_state(&counted).as_deref(), Some("median"));
    }
}
