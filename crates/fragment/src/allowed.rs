//! What a fragment may contain: read-only operators, deterministic built-in functions, and
//! aggregates whose partial state is a statistic. A node refuses a fragment with anything
//! else, and the city checks the fragments it cuts by the same lists before it asks any
//! node.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;

use crate::split::{WHOLE_AGGREGATES, unmerged_partial_state};

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
    "NestedLoopJoinExec",
    "UnionExec",
    "UnnestExec",
    "CooperativeExec",
];

/// Scalar functions a fragment may call: deterministic, without side effects, and no
/// unkeyed hash that could stand in for an identifier.
const FUNCTIONS: &[&str] = &[
    // The platform's own.
    "mask_id",
    "mask_name",
    // Numbers.
    "abs",
    "ceil",
    "floor",
    "round",
    "trunc",
    "signum",
    "power",
    "sqrt",
    "cbrt",
    "exp",
    "ln",
    "log",
    "log2",
    "log10",
    "pi",
    "degrees",
    "radians",
    "sin",
    "cos",
    "tan",
    "cot",
    "asin",
    "acos",
    "atan",
    "atan2",
    "sinh",
    "cosh",
    "tanh",
    "asinh",
    "acosh",
    "atanh",
    "factorial",
    "gcd",
    "lcm",
    "isnan",
    "iszero",
    "nanvl",
    // Nulls and choices.
    "coalesce",
    "nullif",
    "nvl",
    "nvl2",
    "greatest",
    "least",
    // Dates and times.
    "date_part",
    "date_trunc",
    "date_bin",
    "make_date",
    "to_date",
    "to_char",
    "to_timestamp",
    "to_timestamp_seconds",
    "to_timestamp_millis",
    "to_timestamp_micros",
    "to_timestamp_nanos",
    "to_unixtime",
    "from_unixtime",
    // Text.
    "substr",
    "substring",
    "substr_index",
    "left",
    "right",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "bit_length",
    "ascii",
    "chr",
    "to_hex",
    "lower",
    "upper",
    "initcap",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "lpad",
    "rpad",
    "concat",
    "concat_ws",
    "starts_with",
    "ends_with",
    "contains",
    "strpos",
    "find_in_set",
    "replace",
    "translate",
    "reverse",
    "split_part",
    "levenshtein",
    "regexp_like",
    "regexp_match",
    "regexp_replace",
    "regexp_count",
    "regexp_instr",
    // Lists.
    "array_has",
    "array_compact",
    "cardinality",
    // Rows of values, as `(a, b) IN ((…), (…))` compares them, and the columns of the
    // rows of groups the city sends.
    "struct",
    "get_field",
];

/// Aggregate functions a fragment may compute in any phase: their partial states are
/// statistics, never lists of the values themselves. `first_value` and `last_value` keep
/// one row's value and its ordering values, as `min` and `max` keep one value.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "first_value",
    "last_value",
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

/// The name of `plan`'s operator, where a fragment may not contain it. Variants such as
/// `SortExec(TopK)` count as their operator. Of data sources, a fragment may hold rows
/// it carries itself ([`is_values`]) and read no files.
pub fn refused_operator(plan: &dyn ExecutionPlan) -> Option<&str> {
    let name = plan.name().split('(').next().unwrap_or_default();
    (!OPERATORS.contains(&name) && !is_values(plan)).then_some(name)
}

/// Whether `plan` gives rows written in the query itself: a `VALUES` list's, the one row
/// of a `SELECT` without `FROM`, or none, where the query rules every row out.
pub fn is_values(plan: &dyn ExecutionPlan) -> bool {
    plan.is::<PlaceholderRowExec>()
        || plan.is::<EmptyExec>()
        || plan.downcast_ref::<DataSourceExec>().is_some_and(|d| {
            d.data_source()
                .downcast_ref::<MemorySourceConfig>()
                .is_some()
        })
}

/// Bitwise aggregates: their partial state is one integer, but rows can leave their
/// figure unchanged without being NULL or zero, so the census could not count its persons.
const BITWISE: [&str; 3] = ["bit_and", "bit_or", "bit_xor"];

/// Whether a node computes aggregate `function`: anywhere, or whole over groups by
/// county_code.
pub fn runs_at_nodes(function: &str) -> bool {
    let function = function.to_lowercase();
    AGGREGATES.contains(&function.as_str()) || WHOLE_AGGREGATES.contains(&function.as_str())
}

/// Why a node would refuse the aggregate or scalar functions `plan`'s own operator calls,
/// apart from its inputs.
pub fn refused_function(plan: &dyn ExecutionPlan) -> Result<Option<String>> {
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        for expr in aggregate.aggr_expr() {
            let function = expr.fun().name();
            if !runs_at_nodes(function) {
                let why = if BITWISE.contains(&function) {
                    "disclosure control counts the persons behind a figure by the rows \
                     whose value is not NULL or zero, and a bitwise figure is left unchanged \
                     by other rows too (all ones for bit_and, equal pairs for bit_xor), so \
                     it could show a single person's value; "
                } else {
                    ""
                };
                return Ok(Some(format!(
                    "aggregate {function} is not allowed in a fragment: {why}only aggregates \
                     whose partial state is a statistic, not the values themselves, and \
                     whose persons disclosure control can count, run at a node ({}), and, \
                     grouped by county_code, {}",
                    AGGREGATES.join(", "),
                    WHOLE_AGGREGATES.join(", ")
                )));
            }
        }
    }
    let mut function = None;
    plan.apply_expressions(&mut |e| {
        e.apply(|sub| {
            function = sub
                .downcast_ref::<ScalarFunctionExpr>()
                .map(ScalarFunctionExpr::name)
                .filter(|name| !FUNCTIONS.contains(name))
                .map(str::to_string);
            Ok(match function {
                Some(_) => TreeNodeRecursion::Stop,
                None => TreeNodeRecursion::Continue,
            })
        })
    })?;
    Ok(function.map(|f| {
        format!(
            "function {f} is not allowed in a fragment: a node runs deterministic built-in \
             functions only, and no hashes; the city applies other functions only to \
             aggregated figures"
        )
    }))
}

/// Why a node would refuse `fragment`: an operator outside the allow-list, a
/// [`refused_function`] of any operator, or the partial state of an aggregate computed
/// only whole, such as `median`, sent anywhere but straight into its merge.
pub fn refusal(fragment: &Arc<dyn ExecutionPlan>) -> Result<Option<String>> {
    let mut refusal = None;
    fragment.apply(|p| {
        refusal = match refused_operator(p.as_ref()) {
            Some(operator) => Some(format!("operator {operator} is not allowed in a fragment")),
            None => refused_function(p.as_ref())?,
        };
        Ok(match refusal {
            Some(_) => TreeNodeRecursion::Stop,
            None => TreeNodeRecursion::Continue,
        })
    })?;
    Ok(refusal.or_else(|| {
        unmerged_partial_state(fragment).map(|function| {
            format!(
                "aggregate {function} is not allowed in a fragment's partial phase: its \
                 partial state is the values themselves. Group by county_code, in every \
                 grouping set, so that each node computes it whole"
            )
        })
    }))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::physical_plan::{FileScanConfigBuilder, ParquetSource};
    use datafusion::execution::object_store::ObjectStoreUrl;

    use super::*;

    #[test]
    fn a_fragment_may_carry_rows_but_read_no_other_source() {
        let schema = Arc::new(Schema::new(vec![Field::new("t", DataType::Utf8, false)]));
        let values = MemorySourceConfig::try_new_exec(&[vec![]], schema.clone(), None).unwrap();
        assert_eq!(refused_operator(values.as_ref()), None);
        let one_row = PlaceholderRowExec::new(schema.clone());
        assert_eq!(refused_operator(&one_row), None);
        assert_eq!(refused_operator(&EmptyExec::new(schema.clone())), None);
        let files = FileScanConfigBuilder::new(
            ObjectStoreUrl::local_filesystem(),
            Arc::new(ParquetSource::new(schema)),
        )
        .build();
        let files = DataSourceExec::from_data_source(files);
        assert_eq!(refused_operator(files.as_ref()), Some("DataSourceExec"));
    }
}
