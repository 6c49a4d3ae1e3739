//! [`TableLeafExec`]: the placeholder for "this node's copy of a contract table".

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use sunlight_domain::Table;

/// Name of the column a census leaf adds: the node's number of each row's person.
pub const PERSONS_COLUMN: &str = "__persons";

/// A scan of one contract table on whichever node runs the fragment. At the city it has
/// one partition per node; it never executes there.
#[derive(Debug, Clone)]
pub struct TableLeafExec {
    table: Table,
    projection: Option<Vec<usize>>,
    partitions: usize,
    limit: Option<usize>,
    persons: bool,
    ids_unread: bool,
    copy: Option<String>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl TableLeafExec {
    /// A leaf over `table`'s contract schema, projected, over `partitions` nodes.
    ///
    /// When `county_code` is projected the leaf declares hash partitioning on it: every
    /// row of a node carries that node's code, so two leaves over the same nodes are
    /// co-partitioned on `county_code` and a join on it can run inside each node.
    pub fn try_new(
        table: Table,
        projection: Option<Vec<usize>>,
        partitions: usize,
        limit: Option<usize>,
    ) -> Result<Self> {
        let full = table.schema();
        let schema = match &projection {
            Some(p) => Arc::new(full.project(p)?),
            None => full,
        };
        Ok(Self::with_schema(
            table, projection, partitions, limit, false, schema,
        ))
    }

    fn with_schema(
        table: Table,
        projection: Option<Vec<usize>>,
        partitions: usize,
        limit: Option<usize>,
        persons: bool,
        schema: SchemaRef,
    ) -> Self {
        let partitioning = match schema.index_of("county_code") {
            Ok(i) if partitions > 1 => {
                let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new("county_code", i));
                Partitioning::Hash(vec![column], partitions)
            }
            _ => Partitioning::UnknownPartitioning(partitions.max(1)),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            partitioning,
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            table,
            projection,
            partitions,
            limit,
            persons,
            ids_unread: false,
            copy: None,
            schema,
            properties,
        }
    }

    /// The same leaf, standing for the copy of the reference table whose
    /// `standards_sha256` is `sha256`: a node whose own copy differs refuses it.
    pub fn with_copy(mut self, sha256: Option<String>) -> Self {
        self.copy = sha256;
        self
    }

    /// The same leaf with one more column, [`PERSONS_COLUMN`]: the node's number of each
    /// row's person (null where `person_id` is), which the person census counts. Only a
    /// node resolves such a leaf, and it never travels.
    pub fn with_persons(&self) -> Self {
        let mut fields = self.schema.fields().to_vec();
        fields.push(Arc::new(Field::new(PERSONS_COLUMN, DataType::UInt32, true)));
        let schema = Arc::new(Schema::new(fields));
        Self::with_schema(
            self.table,
            self.projection.clone(),
            self.partitions,
            self.limit,
            true,
            schema,
        )
        .with_copy(self.copy.clone())
    }

    /// The same leaf over `partitions` nodes.
    pub fn over(&self, partitions: usize) -> Self {
        Self {
            ids_unread: self.ids_unread,
            ..Self::with_schema(
                self.table,
                self.projection.clone(),
                partitions,
                self.limit,
                self.persons,
                self.schema.clone(),
            )
            .with_copy(self.copy.clone())
        }
    }

    /// The same leaf, whose `person_id` values nothing reads: its persons are counted
    /// and joined by the census's numbers instead. The node writes in empty text rather
    /// than read them.
    pub fn with_ids_unread(&self) -> Self {
        Self {
            ids_unread: true,
            ..self.clone()
        }
    }

    /// The table scanned.
    pub fn table(&self) -> Table {
        self.table
    }

    /// Column indexes of the contract schema, if projected.
    pub fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }

    /// Number of nodes the leaf stands for.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// Column indexes of the contract schema that the leaf reads, in order: its
    /// projection, or every column.
    pub fn columns(&self) -> Vec<usize> {
        self.projection
            .clone()
            .unwrap_or_else(|| (0..self.table.schema().fields().len()).collect())
    }

    /// Row limit pushed to the scan.
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Whether the leaf ends with [`PERSONS_COLUMN`].
    pub fn persons(&self) -> bool {
        self.persons
    }

    /// Whether nothing reads the values of the leaf's `person_id` ([`Self::with_ids_unread`]).
    pub fn ids_unread(&self) -> bool {
        self.ids_unread
    }

    /// The digest of the reference table's copy the leaf stands for, if it names one.
    pub fn copy(&self) -> Option<&str> {
        self.copy.as_deref()
    }
}

impl DisplayAs for TableLeafExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let columns: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(
            f,
            "TableLeafExec: table={}, columns=[{}]",
            self.table,
            columns.join(", ")
        )?;
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        if self.ids_unread {
            write!(f, ", person_id unread")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for TableLeafExec {
    fn name(&self) -> &str {
        "TableLeafExec"
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

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Err(DataFusionError::Internal(format!(
            "a leaf of table {} runs only inside a node's fragment",
            self.table
        )))
    }
}
