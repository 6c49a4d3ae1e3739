//! The reference table `subsidy_standards` at the city: one copy, checked against every
//! node's copy. In fragments it becomes a scan of the node's own (identical) copy, and a
//! join with it is built from it ([`BuiltFromReference`]).

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinType, Statistics, project_schema};
use datafusion::config::ConfigOptions;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::joins::{CrossJoinExec, NestedLoopJoinExec, PartitionMode};
use datafusion::physical_plan::memory::{LazyMemoryExec, MemoryStream};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use sunlight_domain::Table;
use sunlight_fragment::{Join, TableLeafExec, is_values};

use crate::fragment_exec::NodeFragmentExec;

/// The city's copy of `subsidy_standards`.
#[derive(Debug)]
pub struct ReferenceTable {
    batches: Vec<RecordBatch>,
    sha256: String,
}

impl ReferenceTable {
    /// A table over rows in the contract schema, whose `standards_sha256` is `sha256`.
    pub fn new(batches: Vec<RecordBatch>, sha256: String) -> Self {
        Self { batches, sha256 }
    }

    /// The `standards_sha256` of the copy.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

#[async_trait::async_trait]
impl TableProvider for ReferenceTable {
    fn schema(&self) -> SchemaRef {
        Table::SubsidyStandards.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(ReferenceExec::try_new(
            &self.batches,
            projection.cloned(),
            self.sha256.clone(),
        )?))
    }
}

/// A scan of the reference table: runs at the city, or becomes the node's own scan when
/// it is shipped inside a fragment.
#[derive(Debug)]
pub struct ReferenceExec {
    batches: Vec<RecordBatch>,
    projection: Option<Vec<usize>>,
    sha256: String,
    properties: Arc<PlanProperties>,
}

impl ReferenceExec {
    fn try_new(
        batches: &[RecordBatch],
        projection: Option<Vec<usize>>,
        sha256: String,
    ) -> Result<Self> {
        let schema = project_schema(&Table::SubsidyStandards.schema(), projection.as_ref())?;
        let batches = batches
            .iter()
            .map(|b| match &projection {
                Some(p) => b.project(p),
                None => Ok(b.clone()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            batches,
            projection,
            sha256,
            properties,
        })
    }

    /// The same scan as a leaf of a fragment: of the node's own copy, which must be the
    /// city's.
    pub fn as_leaf(&self) -> Result<TableLeafExec> {
        Ok(
            TableLeafExec::try_new(Table::SubsidyStandards, self.projection.clone(), 1, None)?
                .with_copy(Some(self.sha256.clone())),
        )
    }
}

impl DisplayAs for ReferenceExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ReferenceExec: table=subsidy_standards, rows={}",
            self.batches
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>()
        )
    }
}

impl ExecutionPlan for ReferenceExec {
    fn name(&self) -> &str {
        "ReferenceExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn partition_statistics(&self, _partition: Option<usize>) -> Result<Arc<Statistics>> {
        let mut stats = Statistics::new_unknown(&self.schema());
        stats.num_rows = Precision::Exact(self.batches.iter().map(RecordBatch::num_rows).sum());
        stats.total_byte_size = Precision::Exact(
            self.batches
                .iter()
                .map(RecordBatch::get_array_memory_size)
                .sum(),
        );
        Ok(Arc::new(stats))
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Ok(Box::pin(MemoryStream::try_new(
            self.batches.clone(),
            self.schema(),
            None,
        )?))
    }
}

/// Whether every row of `plan` is the reference table's or written in the query
/// ([`is_values`]): rows every node can give alike.
pub fn constant_rows(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    let mut constant = true;
    plan.apply(|p| {
        let leaf = p.children().is_empty() || p.is::<NodeFragmentExec>();
        if leaf && !(p.is::<ReferenceExec>() || is_values(p.as_ref())) {
            constant = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(constant)
}

/// Joins of a node table with constant rows ([`constant_rows`]: the reference table, as
/// on `amount > cap`, rows written in the query, or a short series it generates, first
/// written out as rows) built from those rows: the join collects its left input once, and
/// streams its right one, whose rows stay split by node, so that each node can run the
/// join over its own rows. DataFusion, which knows
/// nothing of the size of a node's table, keeps the order the query wrote, and splits both
/// sides of a hash join by its keys. A cross join becomes a join by nested loops without a
/// condition. Runs before DataFusion's own rules, so that they plan the rest around the
/// join.
#[derive(Debug, Default)]
pub struct BuiltFromReference;

impl PhysicalOptimizerRule for BuiltFromReference {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(plan
            .transform_up(series_as_rows)?
            .data
            .transform_up(built_from_reference)?
            .data)
    }

    fn name(&self) -> &str {
        "built_from_reference"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The most rows of a series the city writes into a fragment ([`series_as_rows`]).
pub(crate) const SERIES_ROWS: usize = 100_000;

/// `plan`, where it generates a series (`generate_series`, `range`) of at most
/// [`SERIES_ROWS`] rows, as those rows written out: constant rows, which a node joins with
/// its own as it joins the reference table. A longer series stays at the city.
fn series_as_rows(plan: Arc<dyn ExecutionPlan>) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    let Some(series) = plan.downcast_ref::<LazyMemoryExec>() else {
        return Ok(Transformed::no(plan));
    };
    let schema = series.schema();
    let (mut partitions, mut rows) = (Vec::new(), 0);
    for generator in series.generators() {
        // A generator of its own, from the first row.
        let generator = generator.read().reset_state();
        let mut batches = Vec::new();
        while let Some(batch) = generator.write().generate_next_batch()? {
            rows += batch.num_rows();
            if rows > SERIES_ROWS {
                return Ok(Transformed::no(plan));
            }
            // The columns the scan keeps.
            let kept = schema
                .fields()
                .iter()
                .map(|f| batch.schema().index_of(f.name()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            batches.push(batch.project(&kept)?);
        }
        partitions.push(batches);
    }
    let rows = MemorySourceConfig::try_new_exec(&partitions, schema, None)?;
    Ok(Transformed::yes(rows as Arc<dyn ExecutionPlan>))
}

fn built_from_reference(
    plan: Arc<dyn ExecutionPlan>,
) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    if let Some(cross) = plan.downcast_ref::<CrossJoinExec>() {
        return Ok(match cross_built(cross)? {
            Some(built) => Transformed::yes(built),
            None => Transformed::no(plan),
        });
    }
    let Some(join) = Join::of(&plan) else {
        return Ok(Transformed::no(plan));
    };
    let swaps = join.join_type().supports_swap();
    let built = match (constant_sides(join.left(), join.right())?, join) {
        // A null-aware anti join (`NOT IN`) keeps its left rows by what the whole right
        // side holds, and is not swapped.
        ((false, true), Join::Hash(hash)) if swaps && !hash.null_aware => {
            Some(hash.swap_inputs(PartitionMode::CollectLeft)?)
        }
        ((false, true), Join::Loops(loops)) if swaps => Some(loops.swap_inputs()?),
        // Built once rather than split by its keys, as for the rows of groups the city
        // sends ([`crate::joined_groups`]).
        ((true, false), Join::Hash(hash))
            if *hash.partition_mode() != PartitionMode::CollectLeft =>
        {
            Some(
                hash.builder()
                    .with_partition_mode(PartitionMode::CollectLeft)
                    .build_exec()?,
            )
        }
        _ => None,
    };
    Ok(match built {
        Some(built) => Transformed::yes(built),
        None => Transformed::no(plan),
    })
}

/// `cross` as a join by nested loops without a condition, built from its side of
/// constant rows, if one side is and the other is not.
fn cross_built(cross: &CrossJoinExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let loops = || {
        NestedLoopJoinExec::try_new(
            cross.left().clone(),
            cross.right().clone(),
            None,
            &JoinType::Inner,
            None,
        )
    };
    Ok(match constant_sides(cross.left(), cross.right())? {
        (true, false) => Some(Arc::new(loops()?)),
        (false, true) => Some(loops()?.swap_inputs()?),
        _ => None,
    })
}

/// Whether each of `left` and `right` gives constant rows ([`constant_rows`]).
fn constant_sides(
    left: &Arc<dyn ExecutionPlan>,
    right: &Arc<dyn ExecutionPlan>,
) -> Result<(bool, bool)> {
    Ok((constant_rows(left)?, constant_rows(right)?))
}
