//! [`CountyGuardExec`]: the city plans joins and groupings on `county_code` node by node,
//! trusting the contract that each row carries its node's code. This operator checks
//! that trust on every batch, so a node whose data breaks it fails the query by name
//! instead of letting the city merge a wrong answer. A table whose Parquet statistics
//! already prove it ([`proves_county`]) is not checked again row by row.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ScalarValue, Statistics};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::filter_pushdown::{FilterDescription, FilterPushdownPhase};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, StatisticsArgs,
};
use futures::StreamExt;
use sunlight_domain::{NodeCode, Table};

use crate::Error;

/// Whether a table's `statistics`, as its files' writer stored them, prove that every
/// row carries `code` in `column`: no nulls, and `code` as both the smallest and the
/// largest value.
pub fn proves_county(statistics: &Statistics, column: usize, code: NodeCode) -> bool {
    let county = &statistics.column_statistics[column];
    let is_code = |value: &Precision<ScalarValue>| match value {
        Precision::Exact(v) => v.try_as_str().flatten() == Some(code.as_str()),
        _ => false,
    };
    county.null_count == Precision::Exact(0)
        && is_code(&county.min_value)
        && is_code(&county.max_value)
}

/// Passes batches through, failing on a row whose `county_code` is not this node's.
#[derive(Debug)]
pub struct CountyGuardExec {
    input: Arc<dyn ExecutionPlan>,
    node: NodeCode,
    table: Table,
    column: usize,
}

impl CountyGuardExec {
    /// Guards `input`, whose column `column` is `county_code` of `table`.
    pub fn new(input: Arc<dyn ExecutionPlan>, node: NodeCode, table: Table, column: usize) -> Self {
        Self {
            input,
            node,
            table,
            column,
        }
    }
}

impl DisplayAs for CountyGuardExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "CountyGuardExec: {}.county_code = {}",
            self.table, self.node
        )
    }
}

impl ExecutionPlan for CountyGuardExec {
    fn name(&self) -> &str {
        "CountyGuardExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// Filters on the input's columns pass to the input, to prune its scan.
    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        FilterDescription::from_children(parent_filters, &self.children())
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    /// The input's: the guard passes every row or fails the query.
    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(input_stats[0].clone())
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Internal("no input".into()))?;
        Ok(Arc::new(Self::new(
            input,
            self.node,
            self.table,
            self.column,
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (node, table, column) = (self.node, self.table, self.column);
        let stream = self.input.execute(partition, context)?.map(move |batch| {
            let batch = batch?;
            let codes = cast(batch.column(column), &DataType::Utf8)?;
            let codes = codes.as_string::<i32>();
            if let Some(i) = (0..codes.len()).find(|&i| codes.is_null(i) || codes.value(i) != node.as_str()) {
                let found = if codes.is_null(i) { "NULL" } else { codes.value(i) };
                return Err(Error::Data(format!(
                    "node {node} holds {table} rows with county_code {found}; the contract says county_code is the \
                     code of the node that holds the row, and city queries that group or join by county rely on it. \
                     Correct the node's data"
                ))
                .into_datafusion());
            }
            Ok(batch)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }
}
