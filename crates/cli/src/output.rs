//! Printing or writing query results as an aligned table, CSV, JSON or Parquet.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use clap::ValueEnum;
use parquet::arrow::ArrowWriter;
use sunlight_client::QueryResult;

use crate::{Error, Result};

/// How a result is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row, as a JSON array.
    Json,
    /// A Parquet file; needs `--output`.
    Parquet,
}

impl Format {
    /// Refuses a format that needs a file, Parquet, when there is none.
    pub fn check_output(self, output: Option<&Path>) -> Result<()> {
        match (self, output) {
            (Format::Parquet, None) => {
                Err(Error::Usage("--format parquet needs --output FILE".into()))
            }
            _ => Ok(()),
        }
    }
}

/// Renders `result` to `output`, or to standard output when it is `None`.
pub fn write_result(result: &QueryResult, format: Format, output: Option<&Path>) -> Result<()> {
    let mut writer = ResultWriter::create(result.schema.clone(), format, output)?;
    for batch in &result.batches {
        writer.write(batch)?;
    }
    writer.finish()
}

/// Where the batches of an answer go as they come.
enum Sink {
    /// An aligned table needs every row for its widths.
    Table(Box<dyn Write>, Vec<RecordBatch>),
    Csv(arrow::csv::Writer<Box<dyn Write>>),
    Json(arrow::json::ArrayWriter<Box<dyn Write>>),
    Parquet(ArrowWriter<File>),
}

/// Writes an answer in a format, to a file or to standard output, a batch at a time:
/// CSV, JSON and Parquet hold no more than the batch being written. A file is written
/// beside its path and takes its name only once the answer is whole, so that an answer
/// that fails part way leaves no file that looks whole.
pub struct ResultWriter {
    schema: SchemaRef,
    path: PathBuf,
    sink: Sink,
    /// The file being written, until it is named.
    file: Option<tempfile::NamedTempFile>,
    rows: usize,
}

impl ResultWriter {
    /// A writer of an answer of `schema` to `output`, or to standard output when it is
    /// `None`.
    pub fn create(schema: SchemaRef, format: Format, output: Option<&Path>) -> Result<Self> {
        format.check_output(output)?;
        let path = output.map_or_else(|| PathBuf::from("<stdout>"), Path::to_path_buf);
        let file = output
            .map(|path| {
                let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
                tempfile::NamedTempFile::new_in(folder.unwrap_or(Path::new(".")))
            })
            .transpose()
            .map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
        let handle = || -> Result<File> {
            let file = file.as_ref().expect("a file is written");
            file.as_file().try_clone().map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })
        };
        let out = || -> Result<Box<dyn Write>> {
            Ok(match &file {
                Some(_) => Box::new(BufWriter::new(handle()?)),
                None => Box::new(BufWriter::new(std::io::stdout().lock())),
            })
        };
        let sink = match format {
            Format::Table => Sink::Table(out()?, Vec::new()),
            Format::Csv => Sink::Csv(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(out()?),
            ),
            Format::Json => Sink::Json(arrow::json::ArrayWriter::new(out()?)),
            Format::Parquet => {
                let writer = ArrowWriter::try_new(handle()?, schema.clone(), None)
                    .map_err(|e| encode_error(&path, e))?;
                Sink::Parquet(writer)
            }
        };
        Ok(Self {
            schema,
            path,
            sink,
            file,
            rows: 0,
        })
    }

    /// Writes the rows of `batch`.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows();
        let path = &self.path;
        match &mut self.sink {
            Sink::Table(_, batches) => {
                batches.push(batch.clone());
                Ok(())
            }
            Sink::Csv(writer) => writer
                .write(&nested_as_text(batch).map_err(|e| encode_error(path, e))?)
                .map_err(|e| encode_error(path, e)),
            Sink::Json(writer) => writer.write(batch).map_err(|e| encode_error(path, e)),
            Sink::Parquet(writer) => writer.write(batch).map_err(|e| encode_error(path, e)),
        }
    }

    /// Ends the answer: a table is drawn with its count of rows, a CSV answer of no rows
    /// still has its header, a JSON array or a Parquet file is closed, and a file takes
    /// its name.
    pub fn finish(mut self) -> Result<()> {
        if self.rows == 0 && matches!(self.sink, Sink::Csv(_)) {
            self.write(&RecordBatch::new_empty(self.schema.clone()))?;
        }
        let path = &self.path;
        let written = |source| Error::Write {
            path: path.clone(),
            source,
        };
        match self.sink {
            Sink::Table(mut out, mut batches) => {
                // An answer of no columns, as a `SET`'s, has no table to draw.
                let table = match self.schema.fields().is_empty() {
                    true => String::new(),
                    false => {
                        if batches.is_empty() {
                            batches.push(RecordBatch::new_empty(self.schema.clone()));
                        }
                        arrow::util::pretty::pretty_format_batches(&batches)
                            .map_err(|e| encode_error(path, e))?
                            .to_string()
                            + "\n"
                    }
                };
                let rows = match self.rows {
                    1 => "1 row".to_string(),
                    rows => format!("{rows} rows"),
                };
                writeln!(out, "{table}({rows})").map_err(written)?;
                out.flush().map_err(written)?;
            }
            Sink::Csv(writer) => writer.into_inner().flush().map_err(written)?,
            Sink::Json(mut writer) => {
                writer.finish().map_err(|e| encode_error(path, e))?;
                let mut out = writer.into_inner();
                writeln!(out).map_err(written)?;
                out.flush().map_err(written)?;
            }
            Sink::Parquet(writer) => {
                writer.close().map_err(|e| encode_error(path, e))?;
            }
        }
        if let Some(file) = self.file {
            file.persist(path).map_err(|e| written(e.error))?;
        }
        Ok(())
    }
}

fn encode_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Encode {
        path: path.into(),
        reason: reason.to_string(),
    }
}

/// `batch` with its nested columns (lists, structs, maps), which CSV has no form for, as
/// text written as the table shows them, e.g. `[DIBAO, YULU]`.
fn nested_as_text(batch: &RecordBatch) -> std::result::Result<RecordBatch, ArrowError> {
    let options = FormatOptions::default();
    let (fields, columns): (Vec<Field>, Vec<ArrayRef>) = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| {
            if !field.data_type().is_nested() {
                return Ok((field.as_ref().clone(), column.clone()));
            }
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
            let text: StringArray = (0..column.len())
                .map(|i| column.is_valid(i).then(|| formatter.value(i).to_string()))
                .collect();
            let field = Field::new(field.name(), DataType::Utf8, field.is_nullable());
            Ok((field, Arc::new(text) as ArrayRef))
        })
        .collect::<std::result::Result<Vec<_>, ArrowError>>()?
        .into_iter()
        .unzip();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int32Array, ListBuilder, StringBuilder, StructArray};

    use super::*;

    #[test]
    fn csv_writes_nested_columns_as_the_table_shows_them() {
        let mut lists = ListBuilder::new(StringBuilder::new());
        lists.values().append_value("DIBAO");
        lists.values().append_value("YULU");
        lists.append(true);
        lists.append(false);
        let levels = StructArray::from(vec![(
            Arc::new(Field::new("level", DataType::Int32, false)),
            Arc::new(Int32Array::from(vec![1, 4])) as ArrayRef,
        )]);
        let batch = RecordBatch::try_from_iter([
            (
                "county_code",
                Arc::new(StringArray::from(vec!["140215", "140221"])) as ArrayRef,
            ),
            ("types", Arc::new(lists.finish()) as ArrayRef),
            ("cert", Arc::new(levels) as ArrayRef),
        ])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let result = QueryResult::new(batch.schema(), vec![batch]);
        write_result(&result, Format::Csv, Some(&path)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "county_code,types,cert\n140215,\"[DIBAO, YULU]\",{level: 1}\n140221,,{level: 4}\n"
        );
    }

    #[test]
    fn a_file_takes_its_name_only_once_the_answer_is_whole() {
        let batch = RecordBatch::try_from_iter([(
            "county_code",
            Arc::new(StringArray::from(vec!["140215"])) as ArrayRef,
        )])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        for format in [Format::Csv, Format::Json, Format::Parquet, Format::Table] {
            let path = dir.path().join(format!("{format:?}"));
            let mut failed = ResultWriter::create(batch.schema(), format, Some(&path)).unwrap();
            failed.write(&batch).unwrap();
            // The answer fails part way: its writer is dropped unfinished.
            drop(failed);
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                0,
                "{format:?}"
            );

            let mut whole = ResultWriter::create(batch.schema(), format, Some(&path)).unwrap();
            whole.write(&batch).unwrap();
            whole.finish().unwrap();
            assert!(std::fs::metadata(&path).unwrap().len() > 0, "{format:?}");
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn a_table_ends_with_its_count_of_rows() {
        let count = |rows: &[&str]| {
            let batch = RecordBatch::try_from_iter([(
                "county_code",
                Arc::new(StringArray::from(rows.to_vec())) as ArrayRef,
            )])
            .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("out.txt");
            let result = QueryResult::new(batch.schema(), vec![batch]);
            write_result(&result, Format::Table, Some(&path)).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            text.lines().last().unwrap().to_string()
        };
        assert_eq!(count(&["140215"]), "(1 row)");
        assert_eq!(count(&["140215", "140221"]), "(2 rows)");
        assert_eq!(count(&[]), "(0 rows)");
    }
}
