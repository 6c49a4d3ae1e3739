//! Printing or writing query results as an aligned table, CSV, JSON or Parquet.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
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
            writeln!(sink, "{table}({} rows)", result.num_rows()).map_err(|source| {
                Error::Write {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut sink);
            for batch in non_empty(result) {
                writer.write(&batch).map_err(arrow_err)?;
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

/// The batches, or one empty batch so that headers print for an empty result.
fn non_empty(result: &QueryResult) -> Vec<RecordBatch> {
    if result.batches.is_empty() {
        vec![RecordBatch::new_empty(result.schema.clone())]
    } else {
        result.batches.clone()
    }
}
