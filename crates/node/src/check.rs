//! The one place where a node decides whether a fragment from the city may run: known
//! tables only, read-only operators only, and allow-listed functions only.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use sunlight_fragment::{WHOLE_AGGREGATES, refused_operator, unmerged_partial_state};

use crate::{Error, Result};

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

/// Refuses a fragment with an operator, function or aggregate outside the allow-lists.
pub fn check_fragment(plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    let mut refusal = None;
    plan.apply(|p| {
        if let Some(name) = refused_operator(p.as_ref()) {
            refusal = Some(format!("operator {name} is not allowed in a fragment"));
            return Ok(TreeNodeRecursion::Stop);
        }
        if let Some(aggregate) = p.downcast_ref::<AggregateExec>() {
            for expr in aggregate.aggr_expr() {
                let function = expr.fun().name().to_lowercase();
                let known = |list: &[&str]| list.contains(&function.as_str());
                if !known(AGGREGATES) && !known(WHOLE_AGGREGATES) {
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
        && let Some(function) = unmerged_partial_state(plan)
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
