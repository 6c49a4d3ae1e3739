//! The persons of the node's files, numbered once. The egress guard counts the persons
//! behind every group that leaves; rather than reading and hashing `person_id` in every
//! fragment, the node reads each file's `person_id` column once, keeps the number of
//! each row's person ([`PersonDirectory`]), and its census scans read the Parquet row
//! number instead, which they turn into the person's number ([`PersonsExec`]).

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ColumnStatistics, Statistics};
use datafusion::config::ConfigOptions;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::FileScanConfigBuilder;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result as DfResult;
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter_pushdown::{FilterDescription, FilterPushdownPhase};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, StatisticsArgs, execute_stream,
};
use fixedbitset::FixedBitSet;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use object_store::path::Path as ObjectPath;
use parquet::arrow::RowNumber;
use sunlight_domain::Table;
use sunlight_fragment::TableLeafExec;
use sunlight_policy::{Counted, NO_PERSON, PersonDirectory};

use crate::catalog::TableState;
use crate::node::Node;
use crate::once::OnceMap;
use crate::{Error, Result};

const PERSON: &str = "person_id";

/// The person number of every row of the node's files, read once per file.
pub struct PersonIndex {
    directory: Arc<PersonDirectory>,
    files: OnceMap<ObjectPath, UInt32Array>,
    tables: OnceMap<Table, Counted>,
}

impl PersonIndex {
    /// An index that numbers persons in `directory`.
    pub fn new(directory: Arc<PersonDirectory>) -> Self {
        Self {
            directory,
            files: OnceMap::default(),
            tables: OnceMap::default(),
        }
    }

    /// The number of each row's person in `file` of `table`, by row; null for a row
    /// without a person.
    async fn numbers(&self, node: &Node, table: Table, file: &ObjectMeta) -> Result<UInt32Array> {
        self.files
            .get_or_try_init(file.location.clone(), || self.read(node, table, file))
            .await
    }

    async fn read(&self, node: &Node, table: Table, file: &ObjectMeta) -> Result<UInt32Array> {
        let person = table.schema().index_of(PERSON)?;
        let scan = file_scan(node, node.state(), table, file, &[person], None).await?;
        let mut batches = execute_stream(scan, node.task())?;
        // Four bytes a row while the file is read: the growing vector is the most memory
        // numbering takes.
        let mut numbers = Vec::new();
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            let ids = cast(batch.column(0), &DataType::Utf8)?;
            let rows = batch.column(1).as_primitive::<Int64Type>();
            let persons = self.directory.number(ids.as_string::<i32>().iter());
            for (&row, person) in rows.values().iter().zip(persons) {
                let row = row as usize;
                if row >= numbers.len() {
                    numbers.resize(row + 1, NO_PERSON);
                }
                numbers[row] = person;
            }
        }
        Ok(numbers
            .into_iter()
            .map(|n| (n != NO_PERSON).then_some(n))
            .collect())
    }

    /// The rows and distinct persons of `table` as a whole. The node's files do not
    /// change while it serves, so they are counted once.
    pub async fn table(&self, node: &Node, table: Table) -> Result<Counted> {
        self.tables
            .get_or_try_init(table, || async {
                let mut persons = FixedBitSet::new();
                let mut rows = 0;
                for file in node.files_of(table)? {
                    let numbers = self.numbers(node, table, file).await?;
                    rows += numbers.len();
                    for n in numbers.iter().flatten() {
                        persons.grow_and_insert(n as usize);
                    }
                }
                Ok(Counted {
                    rows,
                    persons: persons.count_ones(..),
                    sketch: self.directory.sketch(&persons),
                    members: Arc::new(persons),
                })
            })
            .await
    }
}

/// Whether rows of `table` are about persons: it has a `person_id`.
pub fn has_persons(table: Table) -> bool {
    table.schema().index_of(PERSON).is_ok()
}

/// The node's served tables about persons.
pub fn served_with_persons(node: &Node) -> Vec<Table> {
    let tables = node.tables().iter();
    tables
        .filter(|(t, state)| has_persons(*t) && matches!(state, TableState::Served { .. }))
        .map(|(t, _)| *t)
        .collect()
}

/// Numbers the persons of each of `node`'s served tables about persons, ahead of the first
/// query that counts them, which would otherwise wait for it. A table that fails here is
/// numbered again by that query, which reports the failure.
pub async fn number_persons(node: Arc<Node>) {
    for table in served_with_persons(&node) {
        if let Err(e) = node.persons_of(table).await {
            tracing::debug!(table = table.name(), error = %e, "persons not numbered ahead");
        }
    }
}

/// A scan of `file` of `table` reading the columns `projection`, followed by each row's
/// number in the file.
async fn file_scan(
    node: &Node,
    state: &SessionState,
    table: Table,
    file: &ObjectMeta,
    projection: &[usize],
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let contract = table.schema();
    let row_number =
        Arc::new(Field::new("__row_number", DataType::Int64, false).with_extension_type(RowNumber));
    let table_schema = TableSchema::builder(contract.clone())
        .with_virtual_columns(vec![row_number])
        .build();
    let mut projection = projection.to_vec();
    projection.push(contract.fields().len());
    let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
    let config =
        FileScanConfigBuilder::new(node.store_url().clone(), format.file_source(table_schema))
            .with_file(PartitionedFile::from(file.clone()))
            .with_projection_indices(Some(projection))?
            .with_limit(limit)
            .build();
    Ok(format.create_physical_plan(state, config).await?)
}

/// A scan of `leaf`'s table with the number of each row's person as its last column:
/// one Parquet scan per file, whose row numbers become the persons' numbers. A leaf with
/// a limit stops once that many rows are read.
pub async fn scan_with_persons(
    node: &Node,
    leaf: &TableLeafExec,
    state: &SessionState,
) -> Result<Arc<dyn ExecutionPlan>> {
    let table = leaf.table();
    let projection = leaf.columns();
    node.files().unchanged(table).await?;
    let mut scans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
    for file in node.files_of(table)? {
        let rows = file_scan(node, state, table, file, &projection, leaf.limit()).await?;
        scans.push(Arc::new(PersonsExec::new(
            rows,
            node.person_index().numbers(node, table, file).await?,
            file.location.to_string(),
            leaf.schema(),
        )));
    }
    Ok(match scans.len() {
        0 => Arc::new(EmptyExec::new(leaf.schema())),
        1 => scans.remove(0),
        _ => Arc::new(
            CoalescePartitionsExec::new(UnionExec::try_new(scans)?).with_fetch(leaf.limit()),
        ),
    })
}

/// Replaces the row number that ends its input's rows with the number of that row's
/// person in one file.
#[derive(Debug)]
pub struct PersonsExec {
    input: Arc<dyn ExecutionPlan>,
    numbers: UInt32Array,
    file: String,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl PersonsExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        numbers: UInt32Array,
        file: String,
        schema: SchemaRef,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            input.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            input,
            numbers,
            file,
            schema,
            properties,
        }
    }
}

/// The batch with its last column, row numbers, replaced by those rows' persons.
fn with_persons(
    batch: &RecordBatch,
    numbers: &UInt32Array,
    file: &str,
    schema: &SchemaRef,
) -> DfResult<RecordBatch> {
    let last = batch.num_columns() - 1;
    let rows = batch.column(last).as_primitive::<Int64Type>();
    let numbered = |row: i64| (row as usize) < numbers.len();
    let changed = || {
        Error::Data(format!(
            "file {file} has more rows than when the node numbered its persons; \
             the node serves it as it is now once it has checked it again"
        ))
        .into_datafusion()
    };
    // A scan reads rows in order, so a batch is mostly a run of consecutive rows: a
    // slice of the file's numbers, not a copy.
    let persons = match (rows.values().first(), rows.values().last()) {
        (Some(&first), Some(&last)) if last - first + 1 == rows.len() as i64 => {
            if !numbered(last) {
                return Err(changed());
            }
            Arc::new(numbers.slice(first as usize, rows.len())) as ArrayRef
        }
        _ => {
            if !rows.values().iter().all(|&row| numbered(row)) {
                return Err(changed());
            }
            take(numbers, rows, None)?
        }
    };
    let mut columns = batch.columns()[..last].to_vec();
    columns.push(persons);
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

impl DisplayAs for PersonsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PersonsExec: file={}", self.file)
    }
}

impl ExecutionPlan for PersonsExec {
    fn name(&self) -> &str {
        "PersonsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// Filters on the input's columns pass to the input, to prune its scan.
    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> DfResult<FilterDescription> {
        FilterDescription::from_children(parent_filters, &self.children())
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    /// The input's, with the person column unknown; a file scan that cannot count its
    /// rows reads at most the file's.
    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        let mut statistics = Statistics::clone(&input_stats[0]);
        if statistics.num_rows == Precision::Absent {
            statistics.num_rows = Precision::Inexact(self.numbers.len());
        }
        if let Some(persons) = statistics.column_statistics.last_mut() {
            *persons = ColumnStatistics::new_unknown();
        }
        Ok(Arc::new(statistics))
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(
            children.remove(0),
            self.numbers.clone(),
            self.file.clone(),
            self.schema.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let (numbers, file, schema) =
            (self.numbers.clone(), self.file.clone(), self.schema.clone());
        let rows = self
            .input
            .execute(partition, context)?
            .and_then(move |batch| {
                std::future::ready(with_persons(&batch, &numbers, &file, &schema))
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            rows,
        )))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;
    use arrow::datatypes::{Schema, UInt32Type};

    use super::*;

    #[test]
    fn rows_become_their_persons_and_a_row_the_node_did_not_number_is_an_error() {
        let numbers = UInt32Array::from(vec![Some(7), None, Some(3), Some(7)]);
        let rows_schema = Arc::new(Schema::new(vec![Field::new(
            "__row_number",
            DataType::Int64,
            false,
        )]));
        let persons_schema = Arc::new(Schema::new(vec![Field::new(
            "person",
            DataType::UInt32,
            true,
        )]));
        let persons = |rows: Vec<i64>| -> DfResult<Vec<Option<u32>>> {
            let rows =
                RecordBatch::try_new(rows_schema.clone(), vec![Arc::new(Int64Array::from(rows))])?;
            let batch = with_persons(&rows, &numbers, "f.parquet", &persons_schema)?;
            Ok(batch
                .column(0)
                .as_primitive::<UInt32Type>()
                .iter()
                .collect())
        };
        // A run of rows, and rows out of order.
        assert_eq!(persons(vec![1, 2, 3]).unwrap(), [None, Some(3), Some(7)]);
        assert_eq!(persons(vec![3, 0]).unwrap(), [Some(7), Some(7)]);
        for rows in [vec![2, 3, 4], vec![0, 9]] {
            let err = persons(rows).unwrap_err().to_string();
            assert!(
                err.contains("file f.parquet has more rows than when the node numbered"),
                "{err}"
            );
        }
    }
}
