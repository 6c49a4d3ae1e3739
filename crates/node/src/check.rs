//! The one place where a node decides whether a fragment from the city may run: known
//! tables only, read-only operators only, and allow-listed functions only.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;

use crate::{Error, Result};

/// Operators a fragment may contain; none of them writes.
const OPERATORS: &[&str] = &[
    "TableLeafExec",
    "FilterExec",
    "ProjectionExec",
    "AggregateExec",
    "SortExec",
    "LocalLimitExec",
    "GlobalLimitExec",
    "CoalesceBatchesExec",
    "CoalescePartitionsExec",
    "SortPreservingMergeExec",
    "HashJoinExec",
    "UnionExec",
    "CooperativeExec",
];

/// Scalar functions a fragment may call.
const FUNCTIONS: &[&str] = &[
    "mask_id",
    "mask_name",
    "abs",
    "ceil",
    "floor",
    "round",
    "trunc",
    "coalesce",
    "nullif",
    "nvl",
    "greatest",
    "least",
    "date_part",
    "date_trunc",
    "make_date",
    "to_date",
    "extract",
    "substr",
    "substring",
    "left",
    "right",
    "length",
    "char_length",
    "character_length",
    "lower",
    "upper",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "concat",
    "concat_ws",
    "starts_with",
    "ends_with",
    "strpos",
    "replace",
    "lpad",
    "rpad",
    "to_char",
    "date_bin",
    "power",
    "sqrt",
    "signum",
    "isnan",
    "iszero",
    "ln",
    "log",
    "log10",
    "exp",
    "nvl2",
    "split_part",
    "regexp_like",
    "regexp_replace",
    "regexp_count",
    "reverse",
    "initcap",
    "translate",
    "to_timestamp",
    "array_has",
    "array_compact",
    "cardinality",
];

/// Aggregate functions a fragment may compute: their partial states are statistics, never
/// lists of the values themselves.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "bool_and",
    "bool_or",
    "stddev",
    "stddev_pop",
    "var",
    "var_pop",
    "corr",
    "covar_samp",
    "covar_pop",
    "regr_slope",
    "regr_intercept",
    "regr_count",
    "regr_r2",
    "regr_avgx",
    "regr_avgy",
    "regr_sxx",
    "regr_syy",
    "regr_sxy",
    "approx_distinct",
];

/// Aggregate functions a fragment may compute only whole, over groups it holds whole: their
/// partial states are the values themselves, or a digest of them, which must not leave
/// the node.
const WHOLE_AGGREGATES: &[&str] = &[
    "median",
    "percentile_cont",
    "approx_median",
    "approx_percentile_cont",
    "approx_percentile_cont_with_weight",
];

/// Refuses a fragment with an operator, function or aggregate outside the allow-lists.
pub fn check_fragment(plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    let mut refusal = None;
    plan.apply(|p| {
        // Variants such as `SortExec(TopK)` are checked by their operator.
        let name = p.name().split('(').next().unwrap_or_default();
        if !OPERATORS.contains(&name) {
            refusal = Some(format!("operator {name} is not allowed in a fragment"));
            return Ok(TreeNodeRecursion::Stop);
        }
        if let Some(aggregate) = p.downcast_ref::<AggregateExec>() {
            for expr in aggregate.aggr_expr() {
                let function = expr.fun().name().to_lowercase();
                if WHOLE_AGGREGATES.contains(&function.as_str()) {
                    continue;
                }
                if !AGGREGATES.contains(&function.as_str()) {
                    refusal = Some(format!(
                        "aggregate {function} is not allowed in a fragment: only \
                         aggregates whose partial state is a statistic, not the values \
                         themselves, run at a node ({}), and, grouped by county_code, {}",
                        AGGREGATES.join(", "),
                        WHOLE_AGGREGATES.join(", ")
                    ));
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        p.apply_expressions(&mut |e| {
            e.apply(|sub| {
                if let Some(f) = sub.downcast_ref::<ScalarFunctionExpr>()
                    && !FUNCTIONS.contains(&f.name())
                {
                    refusal = Some(format!(
                        "function {} is not allowed in a fragment",
                        f.name()
                    ));
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    if refusal.is_none()
        && let Some(function) = unmerged_partial_state(plan, false)
    {
        refusal = Some(format!(
            "aggregate {function} is not allowed in a fragment's partial phase: its partial \
             state is the values themselves. Group by county_code, in every grouping set, so \
             that each node computes it whole"
        ));
    }
    match refusal {
        Some(reason) => Err(Error::FragmentRefused(reason)),
        None => Ok(()),
    }
}

/// The first function of [`WHOLE_AGGREGATES`] whose partial state goes anywhere but
/// straight into the aggregate that merges it. `merged` says whether `plan`'s output goes
/// straight into a merge.
fn unmerged_partial_state(plan: &Arc<dyn ExecutionPlan>, merged: bool) -> Option<String> {
    let aggregate = plan.downcast_ref::<AggregateExec>();
    let whole_only = aggregate
        .filter(|a| *a.mode() == AggregateMode::Partial && !merged)
        .and_then(|a| {
            a.aggr_expr()
                .iter()
                .map(|e| e.fun().name().to_lowercase())
                .find(|f| WHOLE_AGGREGATES.contains(&f.as_str()))
        });
    if whole_only.is_some() {
        return whole_only;
    }
    let merges = aggregate.is_some_and(|a| {
        matches!(
            a.mode(),
            AggregateMode::Final | AggregateMode::FinalPartitioned
        )
    });
    let passes = plan.is::<CoalescePartitionsExec>()
        || plan.is::<CooperativeExec>()
        || plan.name() == "CoalesceBatchesExec";
    let below = merges || (merged && passes);
    plan.children()
        .into_iter()
        .find_map(|input| unmerged_partial_state(input, below))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::functions_aggregate::median::median_udaf;
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
        assert_eq!(
            unmerged_partial_state(&partial, false).as_deref(),
            Some("median")
        );
        let gathered = Arc::new(CoalescePartitionsExec::new(partial.clone()));
        let merged = median(AggregateMode::Final, gathered);
        assert_eq!(unmerged_partial_state(&merged, false), None);

        // A crafted plan that feeds the state to another aggregate, whose output leaves.
        let states = partial.schema();
        let count =
            |mode, input| aggregate(count_udaf(), "county_code", mode, input, states.clone());
        let counted = count(
            AggregateMode::Final,
            count(AggregateMode::Partial, partial.clone()),
        );
        assert_eq!(
            unmerged_partial_state(&counted, false).as_deref(),
            Some("median")
        );
    }
}
