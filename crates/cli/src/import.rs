//! `sunlight import`: CSV or Parquet files into a node's data root, converted to the
//! contract's types. CSV files in UTF-8 (with or without a byte-order mark) or in a named
//! legacy encoding such as GBK are read; a Parquet file's values are read as the text they
//! print as, and converted as a CSV file's are. Every bad value is reported with its line
//! (or row) and column, and nothing is written unless every file is good.
//!
//! A file is read as a stream, a batch of rows at a time, into a Parquet file in a folder
//! of its own; memory holds a batch, the Parquet writer's row group and the payment_ids
//! of the import. The Parquet files go to the data root once all are converted and
//! checked.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::array::{
    ArrayRef, BooleanArray, BooleanBuilder, Date32Builder, Decimal128Builder, Int32Builder,
    RecordBatch, StringArray, StringBuilder,
};
use arrow::compute::kernels::cast_utils::{Parser, parse_decimal};
use arrow::compute::{cast, filter};
use arrow::datatypes::{DataType, Date32Type, Decimal128Type, Field, Schema};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatchReader;
use encoding_rs::{Decoder, DecoderResult, Encoding, UTF_8};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, WriteMultipart};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use sha2::{Digest, Sha256};
use sunlight_domain::{Table, birth_date_part, form_problem};
use sunlight_node::{DataRoot, PARQUET_MAGIC, S3Config};

use crate::interrupt::Interrupt;
use crate::{Error, Result};

/// Most bad values listed in one error.
const MAX_REPORTED: usize = 50;

/// The column of `disbursements` the contract makes unique across the city.
const PAYMENT: &str = "payment_id";

/// The column of every table about persons that holds their resident ID.
const PERSON: &str = "person_id";

/// A column each of whose values names one row of its table.
struct Key {
    column: &'static str,
    /// Why a value names one row.
    rule: &'static str,
    /// Whether a value that repeats refuses its file, rather than being warned of.
    refuses: bool,
}

impl Key {
    /// The key of `table`, if it has one: of a payment, and of a person in the registry.
    fn of(table: Table) -> Option<Self> {
        match table {
            Table::Disbursements => Some(Self {
                column: PAYMENT,
                rule: "a payment_id is unique",
                refuses: true,
            }),
            Table::Persons => Some(Self {
                column: PERSON,
                rule: "the registry holds a person once",
                refuses: false,
            }),
            _ => None,
        }
    }
}

/// Rows converted at a time.
const BATCH_ROWS: usize = 64 * 1024;

/// What an interrupted import leaves.
const NOTHING_WRITTEN: &str = "nothing was imported";

/// Bytes read or sent at a time.
const CHUNK_BYTES: usize = 1 << 20;

/// The rows of a file being imported, a batch at a time.
type Batches = Box<dyn Iterator<Item = Result<RecordBatch>>>;

/// How the rows of an imported file are placed in its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// By line of a CSV file, whose header is line 1.
    Line,
    /// By row of a Parquet file, from 1.
    Row,
}

impl Unit {
    /// The place of the row that follows `read` rows.
    fn after(self, read: usize) -> usize {
        match self {
            Self::Line => read + 2,
            Self::Row => read + 1,
        }
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Line => "line",
            Self::Row => "row",
        })
    }
}

/// A value that does not fit its column.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RowError {
    unit: Unit,
    /// The line or row, from 1.
    at: usize,
    /// Column name.
    column: String,
    /// What is wrong.
    problem: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}, column {}: {}",
            self.unit, self.at, self.column, self.problem
        )
    }
}

/// The bad values of a file: the first [`MAX_REPORTED`] of them, and how many in all.
#[derive(Debug, Default)]
struct Problems {
    shown: Vec<RowError>,
    total: usize,
}

impl Problems {
    fn push(&mut self, error: RowError) {
        self.total += 1;
        if self.shown.len() < MAX_REPORTED {
            self.shown.push(error);
        }
    }

    fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// A line each of the values shown, in the order of their lines (or rows), and one of
    /// how many more there are.
    fn lines(&self) -> Vec<String> {
        let mut shown: Vec<&RowError> = self.shown.iter().collect();
        shown.sort_by_key(|e| e.at);
        let mut lines: Vec<String> = shown.into_iter().map(RowError::to_string).collect();
        if self.total > MAX_REPORTED {
            lines.push(format!("… and {} more", self.total - MAX_REPORTED));
        }
        lines
    }

    /// The error that refuses `csv` for them.
    fn refuse(self, csv: &Path) -> Error {
        Error::NotImported {
            path: csv.into(),
            errors: self.lines(),
        }
    }
}

/// The encoding a label such as `utf-8`, `gbk` or `gb18030` names (WHATWG labels).
pub fn encoding(label: &str) -> Result<&'static Encoding> {
    Encoding::for_label(label.trim().as_bytes()).ok_or_else(|| {
        Error::Usage(format!(
            "unknown text encoding {label:?}: name one such as utf-8, gbk, gb18030 or big5"
        ))
    })
}

/// Bytes that are not text in the encoding a file is read in.
#[derive(Debug)]
struct NotText {
    line: usize,
    encoding: &'static Encoding,
}

impl std::fmt::Display for NotText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {} is not {} text", self.line, self.encoding.name())?;
        if self.encoding == UTF_8 {
            write!(
                f,
                "; a file Excel saved as \"CSV\" on Chinese Windows is in GBK: pass --encoding gbk"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for NotText {}

/// The text of `bytes`, in an encoding or in the one a leading byte-order mark names (as
/// Excel's "Unicode text" is UTF-16), read as UTF-8 without the mark. A byte sequence the
/// encoding does not hold fails the read with [`NotText`], as nothing may be replaced.
struct Utf8Text<R> {
    bytes: R,
    decoder: Decoder,
    input: Box<[u8]>,
    input_at: usize,
    input_end: usize,
    /// `bytes` has no more.
    drained: bool,
    output: Box<[u8]>,
    output_at: usize,
    output_end: usize,
    /// The decoder has been told the input ended.
    ended: bool,
    /// Line breaks decoded so far.
    lines: usize,
}

impl<R: Read> Utf8Text<R> {
    fn new(bytes: R, encoding: &'static Encoding) -> Self {
        Self {
            bytes,
            decoder: encoding.new_decoder(),
            input: vec![0; CHUNK_BYTES].into(),
            input_at: 0,
            input_end: 0,
            drained: false,
            output: vec![0; CHUNK_BYTES].into(),
            output_at: 0,
            output_end: 0,
            ended: false,
            lines: 0,
        }
    }
}

impl<R: Read> BufRead for Utf8Text<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.output_at == self.output_end && !self.ended {
            if self.input_at == self.input_end && !self.drained {
                self.input_at = 0;
                self.input_end = self.bytes.read(&mut self.input)?;
                self.drained = self.input_end == 0;
            }
            let (result, read, written) = self.decoder.decode_to_utf8_without_replacement(
                &self.input[self.input_at..self.input_end],
                &mut self.output,
                self.drained,
            );
            self.input_at += read;
            let lines = self.output[..written]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            if let DecoderResult::Malformed(..) = result {
                let line = self.lines + lines + 1;
                let encoding = self.decoder.encoding();
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    NotText { line, encoding },
                ));
            }
            self.lines += lines;
            (self.output_at, self.output_end) = (0, written);
            self.ended = self.drained && matches!(result, DecoderResult::InputEmpty);
        }
        Ok(&self.output[self.output_at..self.output_end])
    }

    fn consume(&mut self, amount: usize) {
        self.output_at += amount;
    }
}

impl<R: Read> Read for Utf8Text<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let text = self.fill_buf()?;
        let amount = text.len().min(out.len());
        out[..amount].copy_from_slice(&text[..amount]);
        self.consume(amount);
        Ok(amount)
    }
}

/// What a read error of `csv` says: the line that is not text, or the reader's error.
fn unreadable(csv: &Path, error: ArrowError) -> Error {
    let problem = match &error {
        ArrowError::IoError(_, e) => e.get_ref().and_then(|e| e.downcast_ref::<NotText>()),
        _ => None,
    };
    Error::NotImported {
        path: csv.into(),
        errors: vec![problem.map_or_else(|| error.to_string(), NotText::to_string)],
    }
}

/// Where a value was read: a file of the import and a line or row of it.
#[derive(Debug, Clone, Copy)]
struct Place {
    file: usize,
    at: usize,
}

/// A file converted, as a Parquet file not yet in the data root.
#[derive(Debug)]
struct Converted {
    path: PathBuf,
    unit: Unit,
    rows: usize,
    parquet: PathBuf,
    /// SHA-256 of the Parquet file, in hex: it names the file in the data root.
    digest: String,
    /// Its doubtful IDs ([`note_ids`], [`Import::note_repeats`]).
    doubtful_ids: Problems,
}

/// A file written into the data root.
#[derive(Debug)]
pub struct Imported {
    /// The file imported.
    pub path: PathBuf,
    /// Its rows.
    pub rows: usize,
    /// The URL of the Parquet file written.
    pub location: String,
    /// How many doubts its `person_id` values raise: a value not in the form GB 11643
    /// gives it, or, of `persons`, another row's. They are imported as they are.
    pub doubtful_ids: usize,
    /// Where the first of those doubts are, and what each is, a line each.
    pub doubts: Vec<String>,
}

/// CSV or Parquet files read into one table of the contract: each converted to a Parquet
/// file in a folder of the import's own, none written to the data root until all are good.
#[derive(Debug)]
pub struct Import {
    table: Table,
    encoding: &'static Encoding,
    staging: tempfile::TempDir,
    /// Ends the import between two batches, or two parts of an upload.
    interrupt: Interrupt,
    files: Vec<Converted>,
    /// Where each value of the table's [`Key`] was read.
    keys: HashMap<Box<str>, Place>,
}

impl Import {
    /// An import into `table` of files in `encoding`, which `interrupt` ends with nothing
    /// written to the data root and its own folder gone.
    pub(crate) fn new(
        table: Table,
        encoding: &'static Encoding,
        interrupt: Interrupt,
    ) -> Result<Self> {
        let staging = tempfile::Builder::new()
            .prefix("sunlight-import-")
            .tempdir()
            .map_err(|source| Error::Write {
                path: std::env::temp_dir(),
                source,
            })?;
        Ok(Self {
            table,
            encoding,
            staging,
            interrupt,
            files: Vec::new(),
            keys: HashMap::new(),
        })
    }

    /// Converts `path`, a CSV or a Parquet file, to the contract's types, or refuses it with
    /// its bad values, each named by line (or row) and column (the first 50, and how many
    /// in all). Returns the rows read, but those of empty cells alone.
    pub fn add(&mut self, path: &Path) -> Result<usize> {
        let mut file = File::open(path).map_err(|source| Error::Read {
            path: path.into(),
            source,
        })?;
        let mut magic = [0; 4];
        let parquet = file.read_exact(&mut magic).is_ok() && magic == *PARQUET_MAGIC;
        file.rewind().map_err(|source| Error::Read {
            path: path.into(),
            source,
        })?;
        let (unit, (header, batches)) = match parquet {
            true => (Unit::Row, parquet_batches(path, file)?),
            false => (Unit::Line, self.csv_batches(path, file)?),
        };
        let columns = Columns {
            header,
            folders: folder_values(path),
        };
        self.check_header(path, &columns)?;
        let contract = self.table.schema();
        let staged = self
            .staging
            .path()
            .join(format!("{}.parquet", self.files.len()));
        let encode_error = |e: &dyn std::fmt::Display| Error::Encode {
            path: staged.clone(),
            reason: e.to_string(),
        };
        let out = File::create(&staged).map_err(|source| Error::Write {
            path: staged.clone(),
            source,
        })?;
        let out = Digesting {
            file: out,
            digest: Sha256::new(),
        };
        let mut writer =
            ArrowWriter::try_new(out, contract.clone(), None).map_err(|e| encode_error(&e))?;
        let mut problems = Problems::default();
        let mut doubtful_ids = Problems::default();
        let key = Key::of(self.table);
        let mut keys = HashMap::new();
        let (mut read, mut rows) = (0, 0);
        for batch in batches {
            self.interrupt.check(NOTHING_WRITTEN)?;
            let batch = batch?;
            let first = unit.after(read);
            read += batch.num_rows();
            let cells = Cells::of(
                path,
                &columns,
                &contract,
                &batch,
                unit,
                first,
                &mut problems,
            )?;
            let mut columns = Vec::new();
            for (field, values) in contract.fields().iter().zip(&cells.columns) {
                if let Some(key) = key.as_ref().filter(|k| field.name() == k.column) {
                    let found = match key.refuses {
                        true => &mut problems,
                        false => &mut doubtful_ids,
                    };
                    self.note_repeats(key, values, &cells, &mut keys, found);
                }
                if field.name() == PERSON {
                    note_ids(values, &cells, &mut doubtful_ids);
                }
                columns.push(convert(self.table, field, values, &cells, &mut problems));
            }
            rows += cells.places.len();
            if problems.is_empty() {
                let batch = RecordBatch::try_new(contract.clone(), columns)
                    .expect("columns follow the contract");
                writer.write(&batch).map_err(|e| encode_error(&e))?;
            }
        }
        if !problems.is_empty() {
            return Err(problems.refuse(path));
        }
        // The writer's last row group and footer, and the file they end.
        let digest = writer.into_inner().map_err(|e| encode_error(&e))?.digest;
        let file = self.files.len();
        self.keys
            .extend(keys.into_iter().map(|(id, at)| (id, Place { file, at })));
        self.files.push(Converted {
            path: path.into(),
            unit,
            rows,
            parquet: staged,
            digest: hex::encode(digest.finalize()),
            doubtful_ids,
        });
        Ok(rows)
    }

    /// The header of the CSV file `csv`, opened as `file`, and its rows, a batch at a
    /// time, every column as text.
    fn csv_batches(&self, csv: &Path, file: File) -> Result<(Schema, Batches)> {
        let mut text = Utf8Text::new(file, self.encoding);
        let mut header_line = String::new();
        text.read_line(&mut header_line)
            .map_err(|e| unreadable(csv, e.into()))?;
        // Excel's "Unicode text" separates by tabs.
        let delimiter = match !header_line.contains(',') && header_line.contains('\t') {
            true => b'\t',
            false => b',',
        };
        let (header, _) = arrow::csv::reader::Format::default()
            .with_header(true)
            .with_delimiter(delimiter)
            .infer_schema(header_line.as_bytes(), Some(0))
            .map_err(|e| Error::NotImported {
                path: csv.into(),
                errors: vec![format!("cannot read the header: {e}")],
            })?;
        let header = Schema::new(
            header
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), DataType::Utf8, true))
                .collect::<Vec<_>>(),
        );
        // The header is read again, so that the reader counts lines as the file does.
        let reader = arrow::csv::ReaderBuilder::new(Arc::new(header.clone()))
            .with_header(true)
            .with_delimiter(delimiter)
            .with_batch_size(BATCH_ROWS)
            .build_buffered(io::Cursor::new(header_line).chain(text))
            .map_err(|e| unreadable(csv, e))?;
        let csv = csv.to_path_buf();
        Ok((
            header,
            Box::new(reader.map(move |batch| batch.map_err(|e| unreadable(&csv, e)))),
        ))
    }

    /// Refuses a header that names a column the contract does not, or lacks one it names
    /// that the file's folders do not give either.
    fn check_header(&self, path: &Path, columns: &Columns) -> Result<()> {
        let (contract, header) = (self.table.schema(), &columns.header);
        let problem = match header
            .fields()
            .iter()
            .position(|f| contract.field_with_name(f.name()).is_err())
            .map(|extra| (extra, header.field(extra)))
        {
            // As a spreadsheet writes a column it was asked to clear: a comma at the end.
            Some((extra, nameless)) if nameless.name().trim().is_empty() => Some(format!(
                "column {} of the header has no name; remove it, or name a contract column",
                extra + 1
            )),
            Some((_, extra)) => {
                let index = match extra.name().starts_with("__index_level_") {
                    true => " (it is pandas' index: write the frame with index=False)",
                    false => "",
                };
                Some(format!(
                    "column {} is not in the {} contract{index}",
                    extra.name(),
                    self.table
                ))
            }
            None => contract
                .fields()
                .iter()
                .find(|f| columns.source(f.name()).is_none())
                .map(|missing| format!("column {} is missing", missing.name())),
        };
        match problem {
            Some(problem) => Err(Error::NotImported {
                path: path.into(),
                errors: vec![problem],
            }),
            None => Ok(()),
        }
    }

    /// Notes in `added` the line (or row) of each value of `values`, the `key` column of
    /// `cells` of the file being added, and reports in `found` each that repeats one read
    /// before in this import.
    fn note_repeats(
        &self,
        key: &Key,
        values: &StringArray,
        cells: &Cells,
        added: &mut HashMap<Box<str>, usize>,
        found: &mut Problems,
    ) {
        let unit = cells.unit;
        for (value, &at) in values.iter().zip(&cells.places) {
            let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
                continue;
            };
            let earlier = match (self.keys.get(value), added.get(value)) {
                (Some(earlier), _) => {
                    let file = &self.files[earlier.file];
                    format!("{} {} of {}", file.unit, earlier.at, file.path.display())
                }
                (None, Some(earlier)) => format!("{unit} {earlier}"),
                (None, None) => {
                    added.insert(value.into(), at);
                    continue;
                }
            };
            // A value that refuses its file is quoted; a resident ID never is.
            let value = match key.refuses {
                true => format!("{value:?}"),
                false => "the ID".to_string(),
            };
            found.push(RowError {
                unit,
                at,
                column: key.column.into(),
                problem: format!("{value} repeats {earlier}; {}", key.rule),
            });
        }
    }

    /// Writes each converted file as a new Parquet file of the table under the data root
    /// `data`, one after another, taking back those written if one fails. Nothing is
    /// written if two files hold the same rows, or if rows of a file are held there
    /// already: a file of the same rows, or, of `disbursements`, a payment_id. A person
    /// of `persons` held there already is written, and is one of its file's doubts.
    pub async fn write(mut self, data: &str, s3: &S3Config) -> Result<Vec<Imported>> {
        let root = DataRoot::open(data, s3).map_err(Error::Node)?;
        if let Some(key) = Key::of(self.table) {
            let held = held_keys(&root, self.table, &key, &self.keys);
            for held in self.interrupt.unless(NOTHING_WRITTEN, held).await? {
                if key.refuses {
                    return Err(Error::PaymentsHeld {
                        location: held.location,
                        count: held.places.len(),
                        first: held.first,
                    });
                }
                for place in held.places {
                    let file = &mut self.files[place.file];
                    file.doubtful_ids.push(RowError {
                        unit: file.unit,
                        at: place.at,
                        column: key.column.into(),
                        problem: format!(
                            "the ID is held already in {}; {}",
                            held.location, key.rule
                        ),
                    });
                }
            }
        }
        let mut locations: Vec<ObjectPath> = Vec::new();
        for (index, file) in self.files.iter().enumerate() {
            if let Some(twin) = self.files[..index].iter().find(|f| f.digest == file.digest) {
                return Err(Error::NotImported {
                    path: file.path.clone(),
                    errors: vec![format!(
                        "holds the same rows as {}: nothing was written",
                        twin.path.display()
                    )],
                });
            }
            // Named by its rows: the same rows imported again would be counted twice.
            let location = root
                .table_prefix(self.table)
                .join(format!("import-{}.parquet", &file.digest[..32]).as_str());
            let url = root.object_url(&location).to_string();
            match root.store().head(&location).await {
                Ok(_) => return Err(Error::AlreadyImported { location: url }),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(Error::Store {
                        location: url,
                        reason: e.to_string(),
                    });
                }
            }
            locations.push(location);
        }
        let mut imported = Vec::new();
        for (index, (file, location)) in self.files.iter().zip(&locations).enumerate() {
            if let Err(e) = upload(&root, location, &file.parquet, &self.interrupt).await {
                // The files sent before it are taken back: an import writes all or none.
                for sent in &locations[..index] {
                    if let Err(e) = root.store().delete(sent).await {
                        tracing::warn!(location = %root.object_url(sent), "not taken back: {e}");
                    }
                }
                return Err(e);
            }
            imported.push(Imported {
                path: file.path.clone(),
                rows: file.rows,
                location: root.object_url(location).to_string(),
                doubtful_ids: file.doubtful_ids.total,
                doubts: file.doubtful_ids.lines(),
            });
        }
        Ok(imported)
    }
}

/// Where a file's values for the contract's columns are: its own columns, which its header
/// names, and those its folders give every row.
struct Columns {
    header: Schema,
    /// The values of [`folder_values`].
    folders: HashMap<String, Option<String>>,
}

/// Where the values of a column are.
enum Source<'a> {
    /// In the file's column of this index.
    File(usize),
    /// In a folder's name, the same for every row.
    Folder(Option<&'a str>),
}

impl Columns {
    /// Where the values of the column `name` are: the file's own, or else its folders'.
    fn source(&self, name: &str) -> Option<Source<'_>> {
        match self.header.index_of(name) {
            Ok(index) => Some(Source::File(index)),
            Err(_) => Some(Source::Folder(self.folders.get(name)?.as_deref())),
        }
    }
}

/// The values the folders of `path` give every row of the file, as Hive and Spark write a
/// table partitioned by a column they leave out of its files:
/// `disbursements/period=2021-09-01/part-0.parquet`. A value is written with `%XX` for the
/// bytes a folder's name may not hold, and Hive's `__HIVE_DEFAULT_PARTITION__` is a null.
fn folder_values(path: &Path) -> HashMap<String, Option<String>> {
    let folders = path.parent().into_iter().flat_map(Path::components);
    folders
        .filter_map(|folder| folder.as_os_str().to_str()?.split_once('='))
        .filter(|(column, _)| !column.is_empty())
        .map(|(column, value)| {
            let decoded = percent_encoding::percent_decode_str(value).decode_utf8();
            let value = decoded.map_or_else(|_| value.to_string(), String::from);
            (
                column.to_string(),
                (value != "__HIVE_DEFAULT_PARTITION__").then_some(value),
            )
        })
        .collect()
}

/// A batch of a file's rows as text, in the contract's columns, and where each row is.
struct Cells {
    columns: Vec<StringArray>,
    unit: Unit,
    /// The line or row of each row, from 1.
    places: Vec<usize>,
}

impl Cells {
    /// The rows of `batch`, of a file of `columns`, from the one at `first` on, as text in
    /// `contract`'s columns. A row whose cells in the file are all empty, as a spreadsheet
    /// leaves where it was asked to clear one, is left out: it holds no value to lose. So
    /// is a row with bytes that are not UTF-8 (as a Parquet file may hold), which are
    /// reported.
    fn of(
        path: &Path,
        columns: &Columns,
        contract: &Schema,
        batch: &RecordBatch,
        unit: Unit,
        first: usize,
        problems: &mut Problems,
    ) -> Result<Self> {
        let mut keep = vec![false; batch.num_rows()];
        let mut lost = vec![false; batch.num_rows()];
        let mut texts = Vec::new();
        for field in contract.fields() {
            let (text, held, in_file) = match columns.source(field.name()) {
                Some(Source::File(index)) => {
                    let column = batch.column(index);
                    let text = cast(column, &DataType::Utf8).map_err(|e| Error::NotImported {
                        path: path.into(),
                        errors: vec![format!("column {}: {e}", field.name())],
                    })?;
                    (text, column.logical_nulls(), true)
                }
                Some(Source::Folder(value)) => {
                    let text = StringArray::from(vec![value; batch.num_rows()]);
                    let held = text.logical_nulls();
                    (Arc::new(text) as ArrayRef, held, false)
                }
                None => unreachable!("checked header"),
            };
            for (row, value) in text.as_string::<i32>().iter().enumerate() {
                match value {
                    Some(value) => keep[row] |= in_file && !value.trim().is_empty(),
                    // The cast makes nulls of bytes that are not UTF-8.
                    None if held.as_ref().is_none_or(|n| n.is_valid(row)) => {
                        lost[row] = true;
                        problems.push(RowError {
                            unit,
                            at: first + row,
                            column: field.name().clone(),
                            problem: "is not UTF-8 text".into(),
                        });
                    }
                    None => {}
                }
            }
            texts.push(text);
        }
        let kept: Vec<bool> = keep.iter().zip(&lost).map(|(k, l)| *k && !l).collect();
        let mask = BooleanArray::from(kept.clone());
        let columns = texts
            .iter()
            .map(|text| {
                let kept = filter(text, &mask).expect("a mask as long as the batch");
                kept.as_string::<i32>().clone()
            })
            .collect();
        let places = (first..)
            .zip(kept)
            .filter(|(_, k)| *k)
            .map(|(at, _)| at)
            .collect();
        Ok(Self {
            columns,
            unit,
            places,
        })
    }
}

/// A staged file that digests what is written to it, so that the file is not read again
/// for its digest.
struct Digesting {
    file: File,
    digest: Sha256,
}

impl Write for Digesting {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        self.digest.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The columns of the Parquet file `path`, opened as `file`, and its rows, a batch at a
/// time.
fn parquet_batches(path: &Path, file: File) -> Result<(Schema, Batches)> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|builder| builder.with_batch_size(BATCH_ROWS).build())
        .map_err(|e| unreadable_parquet(path, e))?;
    let header = reader.schema().as_ref().clone();
    let path = path.to_path_buf();
    let batches = reader.map(move |batch| batch.map_err(|e| unreadable_parquet(&path, e)));
    Ok((header, Box::new(batches)))
}

/// What a read error of the Parquet file `path` says.
fn unreadable_parquet(path: &Path, error: impl std::fmt::Display) -> Error {
    Error::NotImported {
        path: path.into(),
        errors: vec![format!("not a readable Parquet file: {error}")],
    }
}

/// Sends the file `from` to `location`, a part at a time; the object appears whole, once
/// every part is stored, or not at all, as where `interrupt` ends the upload.
async fn upload(
    root: &DataRoot,
    location: &ObjectPath,
    from: &Path,
    interrupt: &Interrupt,
) -> Result<()> {
    let failed = |reason: String| Error::Store {
        location: root.object_url(location).to_string(),
        reason,
    };
    let parts = root
        .store()
        .put_multipart(location)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut upload = WriteMultipart::new(parts);
    let sending = async {
        let mut file = File::open(from).map_err(|e| failed(e.to_string()))?;
        let mut chunk = vec![0; CHUNK_BYTES];
        loop {
            // A store may take parts as fast as they are read, with no wait between.
            interrupt.check(NOTHING_WRITTEN)?;
            let read = file.read(&mut chunk).map_err(|e| failed(e.to_string()))?;
            if read == 0 {
                return Ok(());
            }
            upload
                .wait_for_capacity(4)
                .await
                .map_err(|e| failed(e.to_string()))?;
            upload.write(&chunk[..read]);
        }
    };
    match interrupt.unless(NOTHING_WRITTEN, sending).await {
        Ok(()) => upload
            .finish()
            .await
            .map(drop)
            .map_err(|e| failed(e.to_string())),
        Err(e) => {
            let _ = upload.abort().await;
            Err(e)
        }
    }
}

/// Notes each `person_id` of `values`, of `cells`, that is not in the form GB 11643
/// gives it, or whose birth date part is not a date, by its line (or row) and what is
/// wrong, never the ID. Such IDs are imported as they are, so that nothing is lost; the
/// node reports them too, by count.
fn note_ids(values: &StringArray, cells: &Cells, doubtful: &mut Problems) {
    for (value, &at) in values.iter().zip(&cells.places) {
        let Some(id) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            continue;
        };
        let problem = match form_problem(id) {
            Some(problem) => format!("the ID has {}", problem.what()),
            None if birth_date_part(id).is_none() => {
                "the ID's birth date part (characters 7-14) is not a date".to_string()
            }
            None => continue,
        };
        doubtful.push(RowError {
            unit: cells.unit,
            at,
            column: PERSON.into(),
            problem,
        });
    }
}

fn convert(
    table: Table,
    field: &Field,
    values: &StringArray,
    cells: &Cells,
    problems: &mut Problems,
) -> ArrayRef {
    let mut report = |row: usize, problem: String| {
        problems.push(RowError {
            unit: cells.unit,
            at: cells.places[row],
            column: field.name().clone(),
            problem,
        });
    };
    let cells = values.iter().enumerate().map(|(row, v)| {
        let v = v.map(str::trim).filter(|v| !v.is_empty());
        (row, v.map(|v| table.canonical(field.name(), v)))
    });
    macro_rules! build {
        ($builder:expr, $parse:expr, $what:literal) => {{
            let mut builder = $builder;
            for (row, cell) in cells {
                match cell {
                    None if field.is_nullable() => builder.append_null(),
                    None => {
                        report(row, "is empty, but the column may not be null".into());
                        builder.append_null();
                    }
                    Some(v) => match ($parse(v), table.value_problem(field.name(), v)) {
                        (Some(parsed), None) => builder.append_value(parsed),
                        (Some(_), Some(problem)) => {
                            report(row, format!("{v:?} {problem}"));
                            builder.append_null();
                        }
                        (None, _) => {
                            report(row, format!("{v:?} is not {}", $what));
                            builder.append_null();
                        }
                    },
                }
            }
            Arc::new(builder.finish()) as ArrayRef
        }};
    }
    match field.data_type() {
        DataType::Utf8 => build!(StringBuilder::new(), |v: &str| Some(v.to_string()), "text"),
        DataType::Date32 => build!(
            Date32Builder::new(),
            parse_date,
            "a date (YYYY-MM-DD, YYYY/M/D, YYYY年M月D日 or YYYYMMDD)"
        ),
        DataType::Int32 => build!(
            Int32Builder::new(),
            |v: &str| i32::try_from(exact_decimal(v, 10, 0)?).ok(),
            "a whole number"
        ),
        DataType::Boolean => build!(
            BooleanBuilder::new(),
            // As spreadsheets write a yes or a no, in English or in Chinese.
            |v: &str| match v.to_ascii_lowercase().as_str() {
                "true" | "t" | "1" | "yes" | "y" | "是" => Some(true),
                "false" | "f" | "0" | "no" | "n" | "否" => Some(false),
                _ => None,
            },
            "true or false (or 是, 否)"
        ),
        DataType::Decimal128(p, s) => {
            let (p, s) = (*p, *s);
            build!(
                Decimal128Builder::new()
                    .with_precision_and_scale(p, s)
                    .expect("contract type"),
                |v: &str| exact_decimal(v, p, s),
                "an amount in yuan with at most 2 decimals"
            )
        }
        other => unreachable!("the contract has no {other} column"),
    }
}

/// Values of a table's key that a file of the table in the data root holds already.
struct Held {
    /// The URL of the file.
    location: String,
    /// The first of them the file holds.
    first: String,
    /// Where each was read in the import, in the order the file holds them.
    places: Vec<Place>,
}

/// The values of `new`, of `key` in the files of an import into `table`, that Parquet
/// files of the table under `root` hold already, file by file.
async fn held_keys(
    root: &DataRoot,
    table: Table,
    key: &Key,
    new: &HashMap<Box<str>, Place>,
) -> Result<Vec<Held>> {
    let (files, _) = root.table_files(table).await?;
    let mut held = Vec::new();
    for file in files {
        let location = root.object_url(&file.location).to_string();
        let store_error = |e: &dyn std::fmt::Display| Error::Store {
            location: location.clone(),
            reason: e.to_string(),
        };
        let bytes = async { root.store().get(&file.location).await?.bytes().await }
            .await
            .map_err(|e| store_error(&e))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| store_error(&e))?;
        let Some(index) = builder.schema().index_of(key.column).ok() else {
            continue;
        };
        let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
        let batches = builder
            .with_projection(mask)
            .build()
            .map_err(|e| store_error(&e))?;
        let (mut first, mut places, mut seen) = (None, Vec::new(), HashSet::new());
        for batch in batches {
            let batch = batch.map_err(|e| store_error(&e))?;
            let values = cast(batch.column(0), &DataType::Utf8).map_err(|e| store_error(&e))?;
            for value in values.as_string::<i32>().iter().flatten() {
                // Each value once, where the file holds it more than once.
                if let Some((value, &place)) = new.get_key_value(value)
                    && seen.insert(value)
                {
                    first.get_or_insert_with(|| value.to_string());
                    places.push(place);
                }
            }
        }
        if let Some(first) = first {
            held.push(Held {
                location,
                first,
                places,
            });
        }
    }
    Ok(held)
}

/// `v`, a number, as a decimal of `scale` digits after the point and `precision` in all,
/// only if it has no more digits after the point than `scale`, but zeros: `1.50` and
/// `1.5e1` are exact with two, `1.505` is not (Arrow's parser would drop the 5).
fn exact_decimal(v: &str, precision: u8, scale: i8) -> Option<i128> {
    let (digits, exponent) = v.split_once(['e', 'E']).unwrap_or((v, "0"));
    let (_, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let places = fraction.trim_end_matches('0').len() as i64 - exponent.parse::<i64>().ok()?;
    match places <= i64::from(scale) {
        true => parse_decimal::<Decimal128Type>(v, precision, scale).ok(),
        false => None,
    }
}

/// A date written `YYYY-MM-DD`, `YYYY/M/D` or `YYYY年M月D日` as Excel writes dates in a
/// Chinese locale, or `YYYYMMDD` as database exports do, in days since the epoch. A time
/// may follow if it is midnight (`2021/9/1 0:00`), with
/// the offset of its zone where it has one (`2021-09-01T00:00:00+08:00`, the day there); a
/// time of day is not a date, and is not dropped.
fn parse_date(v: &str) -> Option<i32> {
    let (day, time) = v.split_once([' ', 'T']).unwrap_or((v, ""));
    let time = match time.split_once(['+', '-']) {
        Some((time, offset)) if offset.bytes().all(|b| b.is_ascii_digit() || b == b':') => time,
        _ => time.strip_suffix('Z').unwrap_or(time),
    };
    if time.contains(|c: char| !matches!(c, '0' | ':' | '.')) {
        return None;
    }
    let format = match day {
        _ if day.contains('/') => "%Y/%m/%d",
        _ if day.contains('年') => "%Y年%m月%d日",
        _ if day.len() == 8 && day.bytes().all(|b| b.is_ascii_digit()) => "%Y%m%d",
        _ => return Date32Type::parse(day),
    };
    let date = chrono::NaiveDate::parse_from_str(day, format).ok()?;
    Some(Date32Type::from_naive_date(date))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sunlight_domain::ResidentId;

    /// `bytes` written as a CSV file of `table`, read in `encoding` by an import.
    fn import_of(bytes: &[u8], table: Table, encoding: &'static Encoding) -> Result<Import> {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join(format!("{}.csv", table.name()));
        std::fs::write(&csv, bytes).unwrap();
        let mut import = Import::new(table, encoding, Interrupt::by_hand().1)?;
        import.add(&csv)?;
        Ok(import)
    }

    /// `bytes` read as a CSV file of `table` in `encoding`: the rows of its Parquet file.
    fn read_encoded(
        bytes: &[u8],
        table: Table,
        encoding: &'static Encoding,
    ) -> Result<RecordBatch> {
        let import = import_of(bytes, table, encoding)?;
        let parquet = File::open(&import.files[0].parquet).unwrap();
        let batches = ParquetRecordBatchReaderBuilder::try_new(parquet)
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        Ok(arrow::compute::concat_batches(&table.schema(), &batches).unwrap())
    }

    /// `text` read as a CSV file of `table` in UTF-8.
    fn read(text: &str, table: Table) -> Result<RecordBatch> {
        read_encoded(text.as_bytes(), table, UTF_8)
    }

    /// What refuses `text`, read as [`read`] does, which must be refused because `why`.
    fn refused(text: &str, table: Table, why: &str) -> Vec<String> {
        match read(text, table) {
            Err(Error::NotImported { errors, .. }) => errors,
            other => panic!("{why}: {other:?}"),
        }
    }

    /// Writes the one file of `text`, of `table`, under the data root `data`.
    async fn write(text: &str, table: Table, data: &str) -> Result<String> {
        let import = import_of(text.as_bytes(), table, UTF_8)?;
        let mut written = import.write(data, &S3Config::default()).await?;
        Ok(written.remove(0).location)
    }

    const CERTS: &str = "person_id,cert_no,category,level,issued_on,revoked_on\r\n\
                         A,C1,肢体,2,2015-01-01,\r\n\
                         B,C2,视力,1,2016-01-01,2020-02-02\r\n";

    #[test]
    fn reads_dates_as_excel_writes_them() {
        let excel = CERTS
            .replace("2015-01-01", "2015/1/1")
            .replace("2016-01-01", "2016-01-01 00:00:00")
            .replace("2020-02-02", "2020/02/2 0:00");
        let excel = read(&excel, Table::DisabilityCerts).unwrap();
        assert_eq!(excel, read(CERTS, Table::DisabilityCerts).unwrap());
        let chinese_and_exported = CERTS
            .replace("2015-01-01", "2015年1月1日")
            .replace("2016-01-01", "20160101")
            .replace("2020-02-02", "2020-02-02T00:00:00+08:00");
        let chinese_and_exported = read(&chinese_and_exported, Table::DisabilityCerts).unwrap();
        assert_eq!(chinese_and_exported, excel);
        let errors = refused(
            &CERTS
                .replace("2015-01-01", "20151301")
                .replace("2016-01-01", "2016-01-01T08:00:00+08:00"),
            Table::DisabilityCerts,
            "no 13th month, and no time of day",
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        let errors = refused(
            &CERTS.replace("2015-01-01", "1/1/2015"),
            Table::DisabilityCerts,
            "a day first is not read",
        );
        assert_eq!(
            errors,
            [
                "line 2, column issued_on: \"1/1/2015\" is not a date (YYYY-MM-DD, YYYY/M/D, YYYY年M月D日 or \
             YYYYMMDD)"
            ]
        );
    }

    #[test]
    fn reads_gbk_utf_16_and_byte_order_marks() {
        let (gbk, _, unmappable) = encoding_rs::GBK.encode(CERTS);
        assert!(!unmappable);
        let gbk = read_encoded(&gbk, Table::DisabilityCerts, encoding("GBK").unwrap()).unwrap();
        let with_bom = [b"\xEF\xBB\xBF".as_slice(), CERTS.as_bytes()].concat();
        let utf8 = read_encoded(&with_bom, Table::DisabilityCerts, UTF_8).unwrap();
        assert_eq!(gbk, utf8);
        // Excel's "Unicode text": UTF-16 with its byte-order mark, separated by tabs.
        let mut unicode_text = vec![0xFF, 0xFE];
        for unit in CERTS.replace(',', "\t").encode_utf16() {
            unicode_text.extend(unit.to_le_bytes());
        }
        let unicode_text = read_encoded(&unicode_text, Table::DisabilityCerts, UTF_8).unwrap();
        assert_eq!(unicode_text, utf8);
        let categories = utf8
            .column(2)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(
            categories.iter().collect::<Vec<_>>(),
            [Some("肢体"), Some("视力")]
        );
    }

    #[test]
    fn names_the_line_that_is_not_in_the_encoding() {
        let (gbk, _, _) = encoding_rs::GBK.encode(CERTS);
        let Err(Error::NotImported { errors, .. }) =
            read_encoded(&gbk, Table::DisabilityCerts, UTF_8)
        else {
            panic!("GBK bytes are not UTF-8")
        };
        assert_eq!(
            errors,
            [
                "line 2 is not UTF-8 text; a file Excel saved as \"CSV\" on Chinese Windows is in \
              GBK: pass --encoding gbk"
            ]
        );
        assert!(matches!(encoding("latin-9000"), Err(Error::Usage(m)) if m.contains("latin-9000")));
    }

    #[test]
    fn reports_every_bad_value_by_line() {
        let read = read(
            "person_id,cert_no,category,level,issued_on,revoked_on\n\
             11010519491231002X,C1,肢体,2,2015-01-01,\n\
             11010519491231002X,C2,视力,two,2015-01-01,\n\
             11010519491231002X,C3,视力,1,2015-13-01,\n\
             11010519491231002X,C4,视力,5,2015-01-01,\n",
            Table::DisabilityCerts,
        );
        let Err(Error::NotImported { errors, .. }) = read else {
            panic!("should fail")
        };
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("line 3, column level"), "{errors:?}");
        assert!(
            errors[1].starts_with("line 4, column issued_on"),
            "{errors:?}"
        );
        assert!(
            errors[2].starts_with("line 5, column level: \"5\" is not a level from 1"),
            "{errors:?}"
        );
    }

    #[test]
    fn names_the_line_of_a_row_of_too_few_values() {
        let short = CERTS.replace("B,C2,视力,1,", "B,C2,1,");
        let errors = refused(&short, Table::DisabilityCerts, "a short row is refused");
        assert_eq!(
            errors,
            ["Csv error: incorrect number of fields for line 3, expected 6 got 5"]
        );
    }

    #[test]
    fn reports_values_the_contract_does_not_name() {
        let errors = refused(
            "person_id,name,gender,birth_date,household_id,county_code,township,village,death_date\n\
             11010519491231002X,张三,M,1949-12-31,H1,140215,镇,村,\n\
             11010519491231002X,李四,未知,1949-12-31,H1,140216,镇,村,\n",
            Table::Persons,
            "an unknown gender and county are refused",
        );
        assert_eq!(
            errors,
            [
                "line 3, column gender: \"未知\" is not one of M, F",
                "line 3, column county_code: \"140216\" is not a node code: 140200, \
                 140212–140215 or 140221–140226",
            ],
        );
        // A gender as Chinese registries write it is the contract's.
        let persons = "person_id,name,gender,birth_date,household_id,county_code,township,\
                       village,death_date\n\
                       11010519491231002X,张三,M,1949-12-31,H1,140215,镇,村,\n\
                       11010519491231002X,李四,F,1949-12-31,H1,140215,镇,村,\n";
        let chinese = persons.replace(",M,", ",男,").replace(",F,", ",女,");
        assert_eq!(
            read(&chinese, Table::Persons).unwrap(),
            read(persons, Table::Persons).unwrap()
        );
    }

    #[tokio::test]
    async fn the_same_rows_are_imported_once() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().display().to_string();
        let (gbk, _, _) = encoding_rs::GBK.encode(CERTS);
        let gbk = import_of(&gbk, Table::DisabilityCerts, encoding("gbk").unwrap()).unwrap();
        let first = gbk.write(&data, &S3Config::default()).await.unwrap();
        // The same rows, from a file in another encoding.
        let refused = write(CERTS, Table::DisabilityCerts, &data).await;
        assert!(
            matches!(&refused, Err(Error::AlreadyImported { location }) if *location == first[0].location),
            "{refused:?}"
        );
        let other = CERTS.replace("C2", "C3");
        write(&other, Table::DisabilityCerts, &data).await.unwrap();
        let files = std::fs::read_dir(root.path().join("disability_certs")).unwrap();
        assert_eq!(files.count(), 2);
    }

    /// IDs not in the form GB 11643 gives them are imported as they are, each named by
    /// its line and what is wrong with it, never quoted.
    #[tokio::test]
    async fn ids_not_in_the_standards_form_are_imported_and_named() {
        let born = chrono::NaiveDate::from_ymd_opt(1950, 1, 1).unwrap();
        let good = ResidentId::compose("140215", born, 1);
        let good = good.as_str();
        let undated = format!(
            "14021519501301001{}",
            ResidentId::check_char("14021519501301001")
        );
        let wrong_check = format!("{}{}", &good[..17], if good.ends_with('0') { 1 } else { 0 });
        let text = format!(
            "person_id,cert_no,category,level,issued_on,revoked_on\n\
             {good},C1,肢体,2,2015-01-01,\n\
             A,C2,视力,1,2016-01-01,\n\
             {undated},C3,视力,1,2016-01-01,\n\
             {wrong_check},C4,视力,1,2016-01-01,\n"
        );
        let root = tempfile::tempdir().unwrap();
        let import = import_of(text.as_bytes(), Table::DisabilityCerts, UTF_8).unwrap();
        let imported = import
            .write(&root.path().display().to_string(), &S3Config::default())
            .await
            .unwrap()
            .remove(0);
        assert_eq!((imported.rows, imported.doubtful_ids), (4, 3));
        assert_eq!(
            imported.doubts,
            [
                "line 3, column person_id: the ID has other than 18 characters",
                "line 4, column person_id: the ID's birth date part (characters 7-14) is not a date",
                "line 5, column person_id: the ID has a check character other than the one its \
                 first 17 digits give (ISO 7064 MOD 11-2)",
            ]
        );
    }

    /// A person on two rows of the registry is imported as written, and each repeat is
    /// named by its line and the line it repeats, in one file, across the files, or in
    /// the data root.
    #[tokio::test]
    async fn a_person_twice_in_the_registry_is_named() {
        let born = chrono::NaiveDate::from_ymd_opt(1950, 1, 1).unwrap();
        let [a, b] = [1, 2].map(|n| ResidentId::compose("140215", born, n).as_str().to_string());
        let row = |id: &str| format!("{id},张三,M,1950-01-01,H1,140215,聚乐乡,东村,\n");
        let header = "person_id,name,gender,birth_date,household_id,county_code,township,village,\
                      death_date\n";
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.csv");
        std::fs::write(&first, format!("{header}{}{}{}", row(&a), row(&b), row(&a))).unwrap();
        let second = dir.path().join("second.csv");
        std::fs::write(&second, format!("{header}{}", row(&b))).unwrap();
        let mut import = Import::new(Table::Persons, UTF_8, Interrupt::by_hand().1).unwrap();
        assert_eq!(import.add(&first).unwrap(), 3);
        assert_eq!(import.add(&second).unwrap(), 1);
        let doubts: Vec<Vec<String>> = import
            .files
            .iter()
            .map(|f| f.doubtful_ids.lines())
            .collect();
        assert_eq!(
            doubts,
            [
                vec![
                    "line 4, column person_id: the ID repeats line 2; the registry holds a \
                     person once"
                        .to_string()
                ],
                vec![format!(
                    "line 2, column person_id: the ID repeats line 3 of {}; the registry \
                     holds a person once",
                    first.display()
                )],
            ]
        );
        let root = tempfile::tempdir().unwrap();
        let data = root.path().display().to_string();
        let written = import.write(&data, &S3Config::default()).await.unwrap();
        let third = dir.path().join("third.csv");
        std::fs::write(&third, format!("{header}{}", row(&a))).unwrap();
        let mut import = Import::new(Table::Persons, UTF_8, Interrupt::by_hand().1).unwrap();
        import.add(&third).unwrap();
        let imported = import.write(&data, &S3Config::default()).await.unwrap();
        assert_eq!(
            imported[0].doubts,
            [format!(
                "line 2, column person_id: the ID is held already in {}; the registry holds \
                 a person once",
                written[0].location
            )]
        );
    }

    const PAYMENTS: &str = "payment_id,person_id,name,county_code,township,village,subsidy_type,\
                            period,amount,account_no,paid_on,department\n\
                            140215-1,A,张三,140215,聚乐乡,东村,DIBAO,2024-01-01,500.00,62,2024-01-05,民政\n\
                            140215-2,B,李四,140215,聚乐乡,东村,DIBAO,2024-01-01,500.00,63,2024-01-05,民政\n";

    #[tokio::test]
    async fn a_payment_id_is_imported_once() {
        let repeated = format!(
            "{PAYMENTS}140215-1,C,王五,140215,聚乐乡,西村,DIBAO,2024-01-01,1,64,2024-01-05,民政\n"
        );
        let errors = refused(
            &repeated,
            Table::Disbursements,
            "a repeated payment_id is refused",
        );
        assert_eq!(
            errors,
            ["line 4, column payment_id: \"140215-1\" repeats line 2; a payment_id is unique"]
        );

        let root = tempfile::tempdir().unwrap();
        let data = root.path().display().to_string();
        let held = write(PAYMENTS, Table::Disbursements, &data).await.unwrap();
        let overlapping = PAYMENTS.replace("140215-1,", "140215-3,");
        let refused = write(&overlapping, Table::Disbursements, &data).await;
        assert!(
            matches!(&refused, Err(Error::PaymentsHeld { location, count: 1, first })
                if *location == held && first == "140215-2"),
            "{refused:?}"
        );
    }

    /// Files of one import are checked together: a payment_id of one repeats in the next,
    /// and two of the same rows write nothing.
    #[tokio::test]
    async fn files_of_one_import_are_checked_together() {
        let dir = tempfile::tempdir().unwrap();
        let csv = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let january = csv("january.csv", PAYMENTS);
        let february = PAYMENTS
            .replace("140215-1,", "140215-3,")
            .replace("2024-01", "2024-02");
        let february = csv("february.csv", &february);
        let mut import = Import::new(Table::Disbursements, UTF_8, Interrupt::by_hand().1).unwrap();
        assert_eq!(import.add(&january).unwrap(), 2);
        let Err(Error::NotImported { path, errors }) = import.add(&february) else {
            panic!("a payment_id of the first file is refused in the second")
        };
        assert_eq!(path, february);
        assert_eq!(
            errors,
            [format!(
                "line 3, column payment_id: \"140215-2\" repeats line 3 of {}; a payment_id is \
                 unique",
                january.display()
            )]
        );
        // A file refused leaves nothing of its own behind.
        let march = PAYMENTS
            .replace("140215-1,", "140215-3,")
            .replace("140215-2,", "140215-4,");
        import.add(&csv("march.csv", &march)).unwrap();

        let root = tempfile::tempdir().unwrap();
        let certs = csv("certs.csv", CERTS);
        let copy = csv("copy.csv", CERTS);
        let mut import =
            Import::new(Table::DisabilityCerts, UTF_8, Interrupt::by_hand().1).unwrap();
        import.add(&certs).unwrap();
        import.add(&copy).unwrap();
        let data = root.path().display().to_string();
        let refused = import.write(&data, &S3Config::default()).await;
        assert!(
            matches!(&refused, Err(Error::NotImported { path, errors })
                if *path == copy && errors[0].contains("certs.csv")),
            "{refused:?}"
        );
        assert!(!root.path().join("disability_certs").exists());
    }

    /// A file the store fails to take has the files sent before it taken back.
    #[tokio::test]
    async fn an_import_that_fails_part_way_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut import =
            Import::new(Table::DisabilityCerts, UTF_8, Interrupt::by_hand().1).unwrap();
        for (name, text) in [
            ("a.csv", CERTS.to_string()),
            ("b.csv", CERTS.replace("C2", "C3")),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            import.add(&path).unwrap();
        }
        let root = tempfile::tempdir().unwrap();
        // A folder where the second file is to go, which the store cannot replace.
        let table = root.path().join("disability_certs");
        let blocked = table.join(format!("import-{}.parquet", &import.files[1].digest[..32]));
        std::fs::create_dir_all(blocked.join("inside")).unwrap();
        let data = root.path().display().to_string();
        let refused = import.write(&data, &S3Config::default()).await;
        assert!(
            matches!(&refused, Err(Error::Store { location, .. })
                if location.ends_with(&*blocked.file_name().unwrap().to_string_lossy())),
            "{refused:?}"
        );
        let root = DataRoot::open(&data, &S3Config::default()).unwrap();
        let (files, _) = root.table_files(Table::DisabilityCerts).await.unwrap();
        assert!(files.is_empty(), "{files:?}");
    }

    /// Ctrl-C ends an import as it converts a file, or before it uploads one, with
    /// nothing written to the data root and the import's own folder gone.
    #[tokio::test]
    async fn an_interrupted_import_writes_nothing_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs.csv");
        std::fs::write(&certs, CERTS).unwrap();
        let root = tempfile::tempdir().unwrap();
        let data = root.path().display().to_string();
        for converted in [false, true] {
            let (interrupt, interrupted) = Interrupt::by_hand();
            let mut import = Import::new(Table::DisabilityCerts, UTF_8, interrupted).unwrap();
            let staging = import.staging.path().to_path_buf();
            let ended = match converted {
                false => {
                    interrupt.send(true).unwrap();
                    let ended = import.add(&certs).map(drop);
                    drop(import);
                    ended
                }
                true => {
                    import.add(&certs).unwrap();
                    interrupt.send(true).unwrap();
                    import.write(&data, &S3Config::default()).await.map(drop)
                }
            };
            assert!(
                matches!(&ended, Err(Error::Interrupted(left)) if left == NOTHING_WRITTEN),
                "{ended:?}"
            );
            assert!(!staging.exists(), "{}", staging.display());
        }
        let root = DataRoot::open(&data, &S3Config::default()).unwrap();
        let (files, _) = root.table_files(Table::DisabilityCerts).await.unwrap();
        assert!(files.is_empty(), "{files:?}");
    }

    /// Bytes that come a few at a time, as from a slow pipe.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            out[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn text_that_comes_a_byte_at_a_time_is_read_whole() {
        let (gbk, _, _) = encoding_rs::GBK.encode(CERTS);
        let mut text = String::new();
        Utf8Text::new(Trickle(&gbk), encoding_rs::GBK)
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, CERTS);

        // A byte GBK does not hold, on the third line.
        let third = CERTS.find("B,").unwrap();
        let bad = [&gbk[..third], b"\xFF", &gbk[third..]].concat();
        let error = Utf8Text::new(Trickle(&bad), encoding_rs::GBK)
            .read_to_string(&mut String::new())
            .unwrap_err();
        assert_eq!(error.to_string(), "line 3 is not GBK text");
    }

    /// A file of more rows than a batch and more bytes than a chunk: its lines are counted
    /// across them, and the bad values past the first fifty are counted.
    #[test]
    fn counts_lines_across_batches() {
        let mut text = String::from("person_id,cert_no,category,level,issued_on,revoked_on\n");
        let rows = BATCH_ROWS + 60;
        for row in 0..rows {
            let level = match row < BATCH_ROWS {
                true => "1",
                false => "one",
            };
            text += &format!("P{row},C{row},肢体,{level},2015-01-01,\n");
        }
        assert!(text.len() > 2 * CHUNK_BYTES);
        let errors = refused(&text, Table::DisabilityCerts, "the bad levels are refused");
        assert_eq!(errors.len(), MAX_REPORTED + 1);
        assert_eq!(
            errors[0],
            format!(
                "line {}, column level: \"one\" is not a whole number",
                BATCH_ROWS + 2
            )
        );
        assert_eq!(errors[MAX_REPORTED], "… and 10 more");

        let good = read(&text.replace(",one,", ",2,"), Table::DisabilityCerts).unwrap();
        assert_eq!(good.num_rows(), rows);
    }

    #[test]
    fn refuses_digits_the_contract_cannot_hold() {
        let exact = PAYMENTS
            .replacen("500.00", "5e2", 1)
            .replacen("500.00", "500.0000", 1);
        assert_eq!(
            read(&exact, Table::Disbursements).unwrap(),
            read(PAYMENTS, Table::Disbursements).unwrap()
        );
        let errors = refused(
            &PAYMENTS
                .replacen("500.00", "5.00001e2", 1)
                .replacen("500.00", "500.005", 1),
            Table::Disbursements,
            "a fraction of a fen is not dropped",
        );
        let not_an_amount = "is not an amount in yuan with at most 2 decimals";
        assert_eq!(
            errors,
            [
                format!("line 2, column amount: \"5.00001e2\" {not_an_amount}"),
                format!("line 3, column amount: \"500.005\" {not_an_amount}"),
            ]
        );
        // A level written as a float, as a spreadsheet may, is a level when it is whole.
        let whole = CERTS.replace(",2,", ",2.0,");
        assert_eq!(
            read(&whole, Table::DisabilityCerts).unwrap(),
            read(CERTS, Table::DisabilityCerts).unwrap()
        );
        let errors = refused(
            &CERTS.replace(",2,", ",2.5,").replace(",1,", ",7.0,"),
            Table::DisabilityCerts,
            "a level must be a whole number from 1 to 4",
        );
        assert_eq!(
            errors,
            [
                "line 2, column level: \"2.5\" is not a whole number",
                "line 3, column level: \"7.0\" is not a level from 1 (most severe) to 4",
            ]
        );
    }

    #[test]
    fn leaves_out_rows_of_empty_cells_alone() {
        let cleared = format!("{CERTS},,,,,\r\n , ,,,,\r\n");
        assert_eq!(
            read(&cleared, Table::DisabilityCerts).unwrap(),
            read(CERTS, Table::DisabilityCerts).unwrap()
        );
        // The lines after one left out keep their numbers.
        let errors = refused(
            &format!("{cleared}C,C3,肢体,9,2017-01-01,\r\n"),
            Table::DisabilityCerts,
            "a level of 9 is refused",
        );
        assert_eq!(
            errors,
            ["line 6, column level: \"9\" is not a level from 1 (most severe) to 4"]
        );
    }

    #[test]
    fn names_a_column_without_a_name() {
        let errors = refused(
            &CERTS.replace("revoked_on\r\n", "revoked_on,\r\n"),
            Table::DisabilityCerts,
            "a column without a name is refused",
        );
        assert_eq!(
            errors,
            ["column 7 of the header has no name; remove it, or name a contract column"]
        );
    }

    #[test]
    fn reads_a_column_its_folders_give() -> Result<()> {
        // As Hive and Spark write a table partitioned by period: the files leave it out.
        let without_period: String = PAYMENTS
            .lines()
            .map(|line| {
                let mut cells: Vec<&str> = line.split(',').collect();
                cells.remove(7);
                cells.join(",") + "\n"
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("disbursements/period=2024-01-01");
        std::fs::create_dir_all(&folder).unwrap();
        let csv = folder.join("part-0.csv");
        std::fs::write(&csv, &without_period).unwrap();
        let import = || Import::new(Table::Disbursements, UTF_8, Interrupt::by_hand().1);
        let mut partitioned = import()?;
        partitioned.add(&csv)?;
        let whole = import_of(PAYMENTS.as_bytes(), Table::Disbursements, UTF_8)?;
        assert_eq!(partitioned.files[0].digest, whole.files[0].digest);
        // The digest taken as the file was written is the written file's.
        let written = std::fs::read(&whole.files[0].parquet).unwrap();
        assert_eq!(whole.files[0].digest, hex::encode(Sha256::digest(&written)));
        // A folder's value is checked as a cell's is; without the folder, the column is
        // missing.
        let bad = dir.path().join("period=2024-13-01");
        std::fs::create_dir_all(&bad).unwrap();
        std::fs::write(bad.join("part-0.csv"), &without_period).unwrap();
        let Err(Error::NotImported { errors, .. }) = import()?.add(&bad.join("part-0.csv")) else {
            panic!("no 13th month")
        };
        assert!(
            errors[0].starts_with("line 2, column period: \"2024-13-01\""),
            "{errors:?}"
        );
        std::fs::write(dir.path().join("flat.csv"), &without_period).unwrap();
        let Err(Error::NotImported { errors, .. }) = import()?.add(&dir.path().join("flat.csv"))
        else {
            panic!("a column is missing")
        };
        assert_eq!(errors, ["column period is missing"]);
        Ok(())
    }

    #[test]
    fn reads_a_yes_or_a_no_as_spreadsheets_write_them() {
        let standards = "subsidy_type,name_zh,department,min_age,cap,requires_cert_level,\
                         excludes_payroll,valid_from,valid_to\n\
                         DIBAO,最低生活保障,民政,,600,,true,2018-01-01,\n\
                         GAOLING,高龄补贴,民政,80,200,,false,2018-01-01,\n";
        let chinese = standards.replace("true", "是").replace("false", "否");
        assert_eq!(
            read(&chinese, Table::SubsidyStandards).unwrap(),
            read(standards, Table::SubsidyStandards).unwrap()
        );
        let Err(Error::NotImported { errors, .. }) =
            read(&standards.replace("true", "maybe"), Table::SubsidyStandards)
        else {
            panic!("maybe is neither")
        };
        assert_eq!(
            errors,
            ["line 2, column excludes_payroll: \"maybe\" is not true or false (or 是, 否)"]
        );
    }

    /// Writes `columns` as the Parquet file `name` in `dir`.
    fn parquet_file(dir: &Path, name: &str, columns: Vec<(&str, ArrayRef)>) -> PathBuf {
        let path = dir.join(name);
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut writer =
            ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        path
    }

    #[test]
    fn reads_parquet_files_in_the_types_writers_use() {
        use arrow::array::{
            BinaryArray, Float64Array, LargeStringArray, NullArray, TimestampSecondArray,
        };
        let dir = tempfile::tempdir().unwrap();
        let text = |values: [&str; 2]| Arc::new(LargeStringArray::from(values.to_vec())) as _;
        let day = |days: [i64; 2]| {
            let seconds = days.map(|d| d * 86_400 - 8 * 3_600);
            let zoned = TimestampSecondArray::from(seconds.to_vec()).with_timezone("+08:00");
            Arc::new(zoned) as ArrayRef
        };
        // As pandas writes disability_certs: text as large strings, the levels of a column
        // with gaps in floating point, dates as timestamps at midnight in their zone, and
        // no revocation as a column of type Null.
        let certs = |levels: [f64; 2], issued: [i64; 2]| {
            vec![
                ("revoked_on", Arc::new(NullArray::new(2)) as ArrayRef),
                ("person_id", text(["A", "B"])),
                ("cert_no", text(["C1", "C2"])),
                ("category", text(["肢体", "视力"])),
                ("level", Arc::new(Float64Array::from(levels.to_vec())) as _),
                ("issued_on", day(issued)),
            ]
        };
        let pandas = parquet_file(
            dir.path(),
            "pandas.parquet",
            certs([2.0, 1.0], [16_436, 16_801]),
        );
        let mut import =
            Import::new(Table::DisabilityCerts, UTF_8, Interrupt::by_hand().1).unwrap();
        assert_eq!(import.add(&pandas).unwrap(), 2);
        let csv = CERTS.replace("2020-02-02", "");
        assert_eq!(
            import.files[0].digest,
            import_of(csv.as_bytes(), Table::DisabilityCerts, UTF_8)
                .unwrap()
                .files[0]
                .digest
        );
        // Bad values are named by row, from 1.
        let bad = parquet_file(dir.path(), "bad.parquet", certs([2.0, 2.5], [16_436, 0]));
        let Err(Error::NotImported { errors, .. }) = import.add(&bad) else {
            panic!("a level of 2.5 is refused")
        };
        assert_eq!(
            errors,
            ["row 2, column level: \"2.5\" is not a whole number"]
        );
        std::fs::write(dir.path().join("broken.parquet"), b"PAR1 and no more").unwrap();
        let Err(Error::NotImported { errors, .. }) = import.add(&dir.path().join("broken.parquet"))
        else {
            panic!("a broken file is refused")
        };
        assert!(
            errors[0].starts_with("not a readable Parquet file"),
            "{errors:?}"
        );
        // Text as bytes, as Hive writes it, is text where it is UTF-8.
        let mut bytes = certs([2.0, 1.0], [16_436, 16_801]);
        let categories: Vec<&[u8]> = vec![b"\xff", "视力".as_bytes()];
        bytes[3].1 = Arc::new(BinaryArray::from(categories));
        let bytes = parquet_file(dir.path(), "bytes.parquet", bytes);
        let Err(Error::NotImported { errors, .. }) = import.add(&bytes) else {
            panic!("bytes that are not text are refused")
        };
        assert_eq!(errors, ["row 1, column category: is not UTF-8 text"]);
        // pandas writes the index of a frame whose rows were filtered as a column.
        let mut indexed = certs([2.0, 1.0], [16_436, 16_801]);
        let index = Arc::new(Float64Array::from(vec![3.0, 7.0]));
        indexed.push(("__index_level_0__", index));
        let indexed = parquet_file(dir.path(), "indexed.parquet", indexed);
        let Err(Error::NotImported { errors, .. }) = import.add(&indexed) else {
            panic!("a column the contract does not name is refused")
        };
        assert_eq!(
            errors,
            [
                "column __index_level_0__ is not in the disability_certs contract (it is \
                 pandas' index: write the frame with index=False)"
            ]
        );
    }

    #[test]
    fn converts_a_good_file() {
        let batch = read(
            "person_id,cert_no,category,level,issued_on,revoked_on\nA,C1,肢体,2,2015-01-01,2020-02-02\n",
            Table::DisabilityCerts,
        )
        .unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.schema(), Table::DisabilityCerts.schema());
    }
}
