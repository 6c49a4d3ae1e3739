//! Printing or writing query results as an aligned table, CSV, JSON or Parquet.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
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

/// Renders `result` to `output`, or to standard output when it is `None`.
pub fn write_result(result: &QueryResult, format: Format, output: Option<&Path>) -> Result<()> {
    let create = |path: &Path| {
        File::create(path).map_err(|source| Error::Write {
            path: path.into(),
            source,
        })
    };
    if format == Format::Parquet {
        let path =
            output.ok_or_else(|| Error::Usage("--format parquet needs --output FILE".into()))?;
        return write_parquet(result, create(path)?, path);
    }
    let mut sink: Box<dyn Write> = match output {
        Some(path) => Box::new(create(path)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let path = output.map_or_else(|| PathBuf::from("<stdout>"), Path::to_path_buf);
    let arrow_err = |source: arrow::error::ArrowError| Error::Encode {
        path: path.clone(),
        reason: source.to_string(),
    };
    match format {
        Format::Table => {
            // An answer of no columns, as a `SET`'s, has no table to draw.
            let table = match result.schema.fields().is_empty() {
                true => String::new(),
                false => {
                    arrow::util::pretty::pretty_format_batches(&non_empty(result))
                        .map_err(arrow_err)?
                        .to_string()
                        + "\n"
                }
            };
            let rows = match result.num_rows() {
                1 => "1 row".to_string(),
                rows => format!("{rows} rows"),
            };
            writeln!(sink, "{table}({rows})").map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut sink);
            for batch in non_empty(result) {
                writer
                    .write(&nested_as_text(&batch).map_err(arrow_err)?)
                    .map_err(arrow_err)?;
            }
        }
        Format::Json => {
            let mut writer = arrow::json::ArrayWriter::new(&mut sink);
            for batch in &result.batches {
                writer.write(batch).map_err(arrow_err)?;
            }
            writer.finish().map_err(arrow_err)?;
            writeln!(sink).map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
        }
        Format::Parquet => unreachable!("handled above"),
    }
    Ok(())
}

fn write_parquet(result: &QueryResult, file: File, path: &Path) -> Result<()> {
    let encode = |e: parquet::errors::ParquetError| Error::Encode {
        path: path.into(),
        reason: e.to_string(),
    };
    let mut writer = ArrowWriter::try_new(file, result.schema.clone(), None).map_err(encode)?;
    for batch in &result.batches {
        writer.write(batch).map_err(encode)?;
    }
    writer.close().map_err(encode)?;
    Ok(())
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

/// The batches, or one empty batch so that headers print for an empty result.
fn non_empty(result: &QueryResult) -> Vec<RecordBatch> {
    if result.batches.is_empty() {
        vec![RecordBatch::new_empty(result.schema.clone())]
    } else {
        result.batches.clone()
    }
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
