//! The persons of the node's files, numbered once. The egress guard counts the persons
//! behind every group that leaves; rather than reading and hashing `person_id` in every
//! fragment, the node reads each file's `person_id` column once, keeps the number of
//! each row's person ([`PersonDirectory`]), and its census scans read the Parquet row
//! number instead, which they turn into the person's number ([`PersonsExec`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, UInt32Array, new_empty_array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Int64Type, SchemaRef, UInt16Type, UInt32Type};
use arrow::record_batch::RecordBatch;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ColumnStatistics, ScalarValue, Statistics};
use datafusion::config::ConfigOptions;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfigBuilder, wrap_partition_type_in_dict, wrap_partition_value_in_dict,
};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result as DfResult;
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter_pushdown::{FilterDescription, FilterPushdownPhase};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, StatisticsArgs, execute_stream,
};
use fixedbitset::FixedBitSet;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use object_store::path::Path as ObjectPath;
use parquet::arrow::RowNumber;
use sunlight_domain::{FormProblem, Table, birth_date_part, form_problem};
use sunlight_fragment::TableLeafExec;
use sunlight_policy::{Counted, NO_PERSON, PersonDirectory};

use crate::node::Node;
use crate::once::OnceMap;
use crate::quality::log_data_quality;
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
        let scan = files_scan(
            node,
            node.state(),
            table,
            std::slice::from_ref(file),
            &[person],
            None,
        )
        .await?;
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

    /// What is wrong with the `person_id` of the persons numbered so far.
    fn id_problems(&self) -> IdProblems {
        let mut problems = IdProblems::default();
        self.directory.each_id(|id| {
            problems.undated += usize::from(birth_date_part(id).is_none());
            if let Some(problem) = form_problem(id) {
                *problems.forms.entry(problem).or_default() += 1;
            }
        });
        problems
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
    node.served().filter(|&t| has_persons(t)).collect()
}

/// Numbers the persons of each of `node`'s served tables about persons, ahead of the first
/// query that counts them, which would otherwise wait for it, and logs what is wrong with
/// the values of its files ([`log_data_quality`]). A table that fails here is numbered
/// again by that query, which reports the failure.
pub async fn number_persons(node: Arc<Node>) {
    for table in served_with_persons(&node) {
        if let Err(e) = node.persons_of(table).await {
            tracing::debug!(table = table.name(), error = %e, "persons not numbered ahead");
        }
    }
    log_data_quality(&node).await;
}

/// Persons whose `person_id` is not as GB 11643 writes it: data-quality errors of the
/// files, whose rows are served as they are.
#[derive(Debug, Default)]
pub struct IdProblems {
    /// Persons whose birth date part (characters 7–14) is not a date, whose payments
    /// `underage_elderly_allowance` never counts.
    pub undated: usize,
    /// Persons by what keeps their ID from the standard's form, its birth date aside.
    pub forms: BTreeMap<FormProblem, usize>,
}

/// What is wrong with the `person_id` of the persons of `node`'s served tables, once each
/// table's persons are numbered.
pub async fn person_id_problems(node: &Node) -> Result<IdProblems> {
    for table in served_with_persons(node) {
        node.persons_of(table).await?;
    }
    Ok(node.person_index().id_problems())
}

/// A scan of `files` of `table` reading the columns `projection`, followed by the index
/// in `files` of each row's file, where there are several, and the row's number in its
/// file. The files are read in as many partitions as the session's target, or in one
/// where a `limit` stops it.
async fn files_scan(
    node: &Node,
    state: &SessionState,
    table: Table,
    files: &[ObjectMeta],
    projection: &[usize],
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let contract = table.schema();
    let row_number =
        Arc::new(Field::new("__row_number", DataType::Int64, false).with_extension_type(RowNumber));
    let mut projection = projection.to_vec();
    let mut table_schema =
        TableSchema::builder(contract.clone()).with_virtual_columns(vec![row_number]);
    let mut files: Vec<PartitionedFile> = files.iter().cloned().map(Into::into).collect();
    let mut added = 1;
    if files.len() > 1 {
        // A file's index is one value for all its rows: as a dictionary, a batch holds it
        // once.
        let index = Field::new(
            "__file",
            wrap_partition_type_in_dict(DataType::UInt32),
            false,
        );
        table_schema = table_schema.with_table_partition_cols(vec![Arc::new(index)]);
        for (file, index) in files.iter_mut().zip(0u32..) {
            let index = ScalarValue::UInt32(Some(index));
            file.partition_values = vec![wrap_partition_value_in_dict(index)];
        }
        added += 1;
    }
    // The scan's added columns follow the contract's.
    let count = contract.fields().len();
    projection.extend(count..count + added);
    let partitions = match limit {
        Some(_) => 1,
        None => state.config().target_partitions(),
    };
    let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
    let config = FileScanConfigBuilder::new(
        node.store_url().clone(),
        format.file_source(table_schema.build()),
    )
    .with_file_groups(FileGroup::new(files).split_files(partitions))
    .with_projection_indices(Some(projection))?
    .with_limit(limit)
    .build();
    Ok(format.create_physical_plan(state, config).await?)
}

/// A scan of `leaf`'s table with the number of each row's person as its last column:
/// one Parquet scan of all its files, whose rows' files and numbers in them become the
/// persons' numbers. A leaf with a limit stops once that many rows are read.
pub async fn scan_with_persons(
    node: &Node,
    leaf: &TableLeafExec,
    state: &SessionState,
) -> Result<Arc<dyn ExecutionPlan>> {
    let table = leaf.table();
    node.files().unchanged(table).await?;
    let files = node.files_of(table)?;
    if files.is_empty() {
        return Ok(Arc::new(EmptyExec::new(leaf.schema())));
    }
    let mut numbered = Vec::with_capacity(files.len());
    for file in files {
        numbered.push(NumberedFile {
            location: file.location.to_string(),
            numbers: node.person_index().numbers(node, table, file).await?,
        });
    }
    let rows = files_scan(node, state, table, files, &leaf.columns(), leaf.limit()).await?;
    Ok(Arc::new(PersonsExec::new(
        rows,
        numbered.into(),
        leaf.schema(),
    )))
}

/// The number of each row's person in one file, and the file, to name it.
#[derive(Debug)]
struct NumberedFile {
    location: String,
    numbers: UInt32Array,
}

impl NumberedFile {
    /// The persons of the rows `rows` of this file.
    fn persons(&self, rows: &Int64Array) -> DfResult<ArrayRef> {
        // A scan reads rows in order, so a batch is mostly a run of consecutive rows: a
        // slice of the file's numbers, not a copy.
        if let (Some(&first), Some(&last)) = (rows.values().first(), rows.values().last())
            && last - first + 1 == rows.len() as i64
        {
            self.index(last)?;
            return Ok(Arc::new(self.numbers.slice(self.index(first)?, rows.len())));
        }
        for &row in rows.values() {
            self.index(row)?;
        }
        Ok(take(&self.numbers, rows, None)?)
    }

    /// The person of row `row` of this file.
    fn person(&self, row: i64) -> DfResult<Option<u32>> {
        let row = self.index(row)?;
        Ok(self.numbers.is_valid(row).then(|| self.numbers.value(row)))
    }

    /// Row `row` as an index into the file's numbers, if the node numbered it.
    fn index(&self, row: i64) -> DfResult<usize> {
        usize::try_from(row)
            .ok()
            .filter(|&row| row < self.numbers.len())
            .ok_or_else(|| self.changed())
    }

    fn changed(&self) -> datafusion::error::DataFusionError {
        Error::Data(format!(
            "file {} has more rows than when the node numbered its persons; \
             the node serves it as it is now once it has checked it again",
            self.location
        ))
        .into_datafusion()
    }
}

/// Replaces the file index and row number that end its input's rows with the number of
/// that row's person.
#[derive(Debug)]
pub struct PersonsExec {
    input: Arc<dyn ExecutionPlan>,
    files: Arc<[NumberedFile]>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl PersonsExec {
    fn new(input: Arc<dyn ExecutionPlan>, files: Arc<[NumberedFile]>, schema: SchemaRef) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            input.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            input,
            files,
            schema,
            properties,
        }
    }
}

/// The batch with the columns its scan added, the row numbers and, where it reads several
/// files, file indexes ([`files_scan`]), replaced by those rows' persons.
fn with_persons(
    batch: &RecordBatch,
    files: &[NumberedFile],
    schema: &SchemaRef,
) -> DfResult<RecordBatch> {
    let count = batch.num_columns();
    let rows = batch.column(count - 1).as_primitive::<Int64Type>();
    let (persons, added) = match files {
        [file] => (file.persons(rows)?, 1),
        _ => (persons_of_files(batch.column(count - 2), rows, files)?, 2),
    };
    let mut columns = batch.columns()[..count - added].to_vec();
    columns.push(persons);
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The persons of `rows` of the files `indexes` names. A scan reads a file at a time, so a
/// batch is mostly of one file.
fn persons_of_files(
    indexes: &ArrayRef,
    rows: &Int64Array,
    files: &[NumberedFile],
) -> DfResult<ArrayRef> {
    let indexes = indexes.as_dictionary::<UInt16Type>();
    let named = indexes.values().as_primitive::<UInt32Type>();
    let file = |index: u32| {
        files.get(index as usize).ok_or_else(|| {
            datafusion::error::DataFusionError::Internal(format!("no file {index} in the scan"))
        })
    };
    Ok(match named.values().as_ref() {
        [] => new_empty_array(&DataType::UInt32),
        [index] => file(*index)?.persons(rows)?,
        _ => {
            let keys = indexes.keys().values().iter();
            let persons = keys.zip(rows.values());
            let persons = persons.map(|(&key, &row)| file(named.value(key.into()))?.person(row));
            Arc::new(persons.collect::<DfResult<UInt32Array>>()?)
        }
    })
}

impl DisplayAs for PersonsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PersonsExec: files={}", self.files.len())
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
    /// rows reads at most the files' rows.
    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        let mut statistics = Statistics::clone(&input_stats[0]);
        if statistics.num_rows == Precision::Absent {
            let rows = self.files.iter().map(|f| f.numbers.len()).sum();
            statistics.num_rows = Precision::Inexact(rows);
        }
        // The file index and row number become the person.
        let columns = &mut statistics.column_statistics;
        columns.truncate(self.schema.fields().len() - 1);
        columns.push(ColumnStatistics::new_unknown());
        Ok(Arc::new(statistics))
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(
            children.remove(0),
            self.files.clone(),
            self.schema.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let (files, schema) = (self.files.clone(), self.schema.clone());
        let rows = self
            .input
            .execute(partition, context)?
            .and_then(move |batch| std::future::ready(with_persons(&batch, &files, &schema)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            rows,
        )))
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::Schema;

    use super::*;

    /// The persons of the rows (file index, row number) of a scan of `files`, which names
    /// the files only where there are several.
    fn persons(files: &[NumberedFile], rows: Vec<(u32, i64)>) -> DfResult<Vec<Option<u32>>> {
        let (indexes, rows): (Vec<u32>, Vec<i64>) = rows.into_iter().unzip();
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(rows))];
        if files.len() > 1 {
            let indexes = UInt32Array::from(indexes);
            columns.insert(
                0,
                cast(&indexes, &wrap_partition_type_in_dict(DataType::UInt32))?,
            );
        }
        let rows = RecordBatch::try_from_iter(
            columns
                .into_iter()
                .enumerate()
                .map(|(i, c)| (format!("added {i}"), c)),
        )?;
        let person = Field::new("person", DataType::UInt32, true);
        let batch = with_persons(&rows, files, &Arc::new(Schema::new(vec![person])))?;
        Ok(batch
            .column(0)
            .as_primitive::<UInt32Type>()
            .iter()
            .collect())
    }

    #[test]
    fn rows_become_their_persons_and_a_row_the_node_did_not_number_is_an_error() {
        let files: Vec<NumberedFile> = [("f.parquet", vec![Some(7), None, Some(3), Some(7)])]
            .into_iter()
            .chain([("g.parquet", vec![Some(1), Some(2)])])
            .map(|(location, numbers)| NumberedFile {
                location: location.into(),
                numbers: UInt32Array::from(numbers),
            })
            .collect();
        // A run of rows, rows out of order, rows of two files, and none; of one file too.
        for files in [&files[..1], &files] {
            assert_eq!(
                persons(files, vec![(0, 1), (0, 2), (0, 3)]).unwrap(),
                [None, Some(3), Some(7)]
            );
            assert_eq!(
                persons(files, vec![(0, 3), (0, 0)]).unwrap(),
                [Some(7), Some(7)]
            );
            assert_eq!(persons(files, vec![]).unwrap(), []);
        }
        assert_eq!(
            persons(&files, vec![(1, 1), (0, 2), (0, 1), (1, 0)]).unwrap(),
            [Some(2), Some(3), None, Some(1)]
        );
        // Rows past a file's end, in a run, out of order and among another file's.
        for (rows, file) in [
            (vec![(0, 2), (0, 3), (0, 4)], "f.parquet"),
            (vec![(0, 0), (0, 9)], "f.parquet"),
            (vec![(0, 1), (1, 2)], "g.parquet"),
        ] {
            let err = persons(&files, rows).unwrap_err().to_string();
            assert!(
                err.contains(&format!(
                    "file {file} has more rows than when the node numbered"
                )),
                "{err}"
            );
        }
    }
}
