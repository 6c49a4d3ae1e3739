//! Rows of the contract's tables and the Parquet files they are written to.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, Date32Builder, Decimal128Builder, Int32Builder, RecordBatch,
    StringBuilder,
};
use chrono::NaiveDate;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use sunlight_domain::{NodeCode, Table, date32};

use crate::{Error, Result};

/// Rows buffered before a record batch is written.
const BATCH_ROWS: usize = 64 * 1024;

/// A `persons` row.
#[derive(Debug, Clone)]
pub struct PersonRow {
    pub person_id: String,
    pub name: String,
    pub gender: &'static str,
    pub birth_date: NaiveDate,
    pub household_id: Option<String>,
    pub county_code: NodeCode,
    pub township: String,
    pub village: String,
    pub death_date: Option<NaiveDate>,
}

/// A `disbursements` row; `county_code` is the node that writes it.
#[derive(Debug, Clone)]
pub struct PaymentRow {
    pub payment_id: String,
    pub person_id: String,
    pub name: String,
    pub township: String,
    pub village: String,
    pub subsidy_type: &'static str,
    pub period: NaiveDate,
    pub amount_fen: i128,
    pub account_no: Option<String>,
    pub paid_on: NaiveDate,
    pub department: &'static str,
}

/// A `payroll` row.
#[derive(Debug, Clone)]
pub struct PayrollRow {
    pub person_id: String,
    pub name: String,
    pub employer: String,
    pub employer_type: &'static str,
    pub county_code: NodeCode,
    pub start_date: NaiveDate,
    pub end_date: Option<NaiveDate>,
}

/// A `disability_certs` row.
#[derive(Debug, Clone)]
pub struct CertRow {
    pub person_id: String,
    pub cert_no: String,
    pub category: &'static str,
    pub level: i32,
    pub issued_on: NaiveDate,
    pub revoked_on: Option<NaiveDate>,
}

/// Column builders of one table.
pub trait Columns: Default {
    /// The row type pushed into the builders.
    type Row;
    /// The table these columns belong to.
    const TABLE: Table;
    /// Appends one row; `node` is the node whose files are written.
    fn push(&mut self, node: NodeCode, row: &Self::Row);
    /// Rows appended since the last [`Columns::finish`].
    fn len(&self) -> usize;
    /// The buffered columns, in schema order; the builders are left empty.
    fn finish(&mut self) -> Vec<ArrayRef>;
}

fn money() -> Decimal128Builder {
    Decimal128Builder::new()
        .with_precision_and_scale(12, 2)
        .expect("12,2 is valid")
}

#[derive(Default)]
pub struct PersonColumns {
    person_id: StringBuilder,
    name: StringBuilder,
    gender: StringBuilder,
    birth_date: Date32Builder,
    household_id: StringBuilder,
    county_code: StringBuilder,
    township: StringBuilder,
    village: StringBuilder,
    death_date: Date32Builder,
}

impl Columns for PersonColumns {
    type Row = PersonRow;
    const TABLE: Table = Table::Persons;

    fn push(&mut self, _node: NodeCode, row: &PersonRow) {
        self.person_id.append_value(&row.person_id);
        self.name.append_value(&row.name);
        self.gender.append_value(row.gender);
        self.birth_date.append_value(date32(row.birth_date));
        self.household_id.append_option(row.household_id.as_deref());
        self.county_code.append_value(row.county_code.as_str());
        self.township.append_value(&row.township);
        self.village.append_value(&row.village);
        self.death_date.append_option(row.death_date.map(date32));
    }

    fn len(&self) -> usize {
        self.person_id.len()
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.person_id.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.gender.finish()),
            Arc::new(self.birth_date.finish()),
            Arc::new(self.household_id.finish()),
            Arc::new(self.county_code.finish()),
            Arc::new(self.township.finish()),
            Arc::new(self.village.finish()),
            Arc::new(self.death_date.finish()),
        ]
    }
}

/// Disbursement rows with their payment ids.
pub struct PaymentColumns {
    payment_id: StringBuilder,
    person_id: StringBuilder,
    name: StringBuilder,
    county_code: StringBuilder,
    township: StringBuilder,
    village: StringBuilder,
    subsidy_type: StringBuilder,
    period: Date32Builder,
    amount: Decimal128Builder,
    account_no: StringBuilder,
    paid_on: Date32Builder,
    department: StringBuilder,
}

impl Default for PaymentColumns {
    fn default() -> Self {
        Self {
            payment_id: StringBuilder::new(),
            person_id: StringBuilder::new(),
            name: StringBuilder::new(),
            county_code: StringBuilder::new(),
            township: StringBuilder::new(),
            village: StringBuilder::new(),
            subsidy_type: StringBuilder::new(),
            period: Date32Builder::new(),
            amount: money(),
            account_no: StringBuilder::new(),
            paid_on: Date32Builder::new(),
            department: StringBuilder::new(),
        }
    }
}

impl Columns for PaymentColumns {
    type Row = PaymentRow;
    const TABLE: Table = Table::Disbursements;

    fn push(&mut self, node: NodeCode, row: &PaymentRow) {
        self.payment_id.append_value(&row.payment_id);
        self.person_id.append_value(&row.person_id);
        self.name.append_value(&row.name);
        self.county_code.append_value(node.as_str());
        self.township.append_value(&row.township);
        self.village.append_value(&row.village);
        self.subsidy_type.append_value(row.subsidy_type);
        self.period.append_value(date32(row.period));
        self.amount.append_value(row.amount_fen);
        self.account_no.append_option(row.account_no.as_deref());
        self.paid_on.append_value(date32(row.paid_on));
        self.department.append_value(row.department);
    }

    fn len(&self) -> usize {
        self.payment_id.len()
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.payment_id.finish()),
            Arc::new(self.person_id.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.county_code.finish()),
            Arc::new(self.township.finish()),
            Arc::new(self.village.finish()),
            Arc::new(self.subsidy_type.finish()),
            Arc::new(self.period.finish()),
            Arc::new(self.amount.finish()),
            Arc::new(self.account_no.finish()),
            Arc::new(self.paid_on.finish()),
            Arc::new(self.department.finish()),
        ]
    }
}

#[derive(Default)]
pub struct PayrollColumns {
    person_id: StringBuilder,
    name: StringBuilder,
    employer: StringBuilder,
    employer_type: StringBuilder,
    county_code: StringBuilder,
    start_date: Date32Builder,
    end_date: Date32Builder,
}

impl Columns for PayrollColumns {
    type Row = PayrollRow;
    const TABLE: Table = Table::Payroll;

    fn push(&mut self, _node: NodeCode, row: &PayrollRow) {
        self.person_id.append_value(&row.person_id);
        self.name.append_value(&row.name);
        self.employer.append_value(&row.employer);
        self.employer_type.append_value(row.employer_type);
        self.county_code.append_value(row.county_code.as_str());
        self.start_date.append_value(date32(row.start_date));
        self.end_date.append_option(row.end_date.map(date32));
    }

    fn len(&self) -> usize {
        self.person_id.len()
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.person_id.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.employer.finish()),
            Arc::new(self.employer_type.finish()),
            Arc::new(self.county_code.finish()),
            Arc::new(self.start_date.finish()),
            Arc::new(self.end_date.finish()),
        ]
    }
}

#[derive(Default)]
pub struct CertColumns {
    person_id: StringBuilder,
    cert_no: StringBuilder,
    category: StringBuilder,
    level: Int32Builder,
    issued_on: Date32Builder,
    revoked_on: Date32Builder,
}

impl Columns for CertColumns {
    type Row = CertRow;
    const TABLE: Table = Table::DisabilityCerts;

    fn push(&mut self, _node: NodeCode, row: &CertRow) {
        self.person_id.append_value(&row.person_id);
        self.cert_no.append_value(&row.cert_no);
        self.category.append_value(row.category);
        self.level.append_value(row.level);
        self.issued_on.append_value(date32(row.issued_on));
        self.revoked_on.append_option(row.revoked_on.map(date32));
    }

    fn len(&self) -> usize {
        self.person_id.len()
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.person_id.finish()),
            Arc::new(self.cert_no.finish()),
            Arc::new(self.category.finish()),
            Arc::new(self.level.finish()),
            Arc::new(self.issued_on.finish()),
            Arc::new(self.revoked_on.finish()),
        ]
    }
}

/// Writes a whole record batch as `<root>/<table>/part-0.parquet`.
pub fn write_batch(root: &Path, batch: &RecordBatch, table: Table) -> Result<()> {
    let mut file = ParquetFile::create(root, table)?;
    file.write(batch)?;
    file.close()
}

/// One Parquet file of a table, created on the first row so that a node with no rows of
/// a table has no folder for it.
pub struct TableFile<C: Columns> {
    node: NodeCode,
    root: PathBuf,
    columns: C,
    file: Option<ParquetFile>,
    rows: usize,
}

impl<C: Columns> TableFile<C> {
    /// A file under `root` (the node's data root) that is not created yet.
    pub fn new(node: NodeCode, root: &Path) -> Self {
        Self {
            node,
            root: root.to_path_buf(),
            columns: C::default(),
            file: None,
            rows: 0,
        }
    }

    /// Appends a row, writing a record batch when enough are buffered.
    pub fn push(&mut self, row: &C::Row) -> Result<()> {
        self.columns.push(self.node, row);
        self.rows += 1;
        if self.columns.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.columns.len() == 0 {
            return Ok(());
        }
        let batch = RecordBatch::try_new(C::TABLE.schema(), self.columns.finish())
            .expect("columns follow the contract schema");
        if self.file.is_none() {
            self.file = Some(ParquetFile::create(&self.root, C::TABLE)?);
        }
        self.file.as_mut().expect("created above").write(&batch)
    }

    /// Writes what is buffered and closes the file; returns the rows written.
    pub fn close(mut self) -> Result<usize> {
        self.flush()?;
        if let Some(file) = self.file.take() {
            file.close()?;
        }
        Ok(self.rows)
    }
}

struct ParquetFile {
    path: PathBuf,
    writer: ArrowWriter<File>,
}

impl ParquetFile {
    fn create(root: &Path, table: Table) -> Result<Self> {
        let dir = root.join(table.name());
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join("part-0.parquet");
        let file = File::create(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let writer = ArrowWriter::try_new(file, table.schema(), Some(props)).map_err(|source| {
            Error::Parquet {
                path: path.clone(),
                source,
            }
        })?;
        Ok(Self { path, writer })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch).map_err(|source| Error::Parquet {
            path: self.path.clone(),
            source,
        })
    }

    fn close(self) -> Result<()> {
        self.writer
            .close()
            .map(|_| ())
            .map_err(|source| Error::Parquet {
                path: self.path,
                source,
            })
    }
}
