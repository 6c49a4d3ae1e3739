//! `sunlight import`: CSV files into a node's data root, converted to the contract's
//! types. Files in UTF-8 (with or without a byte-order mark) or in a named legacy encoding
//! such as GBK are read. Every bad value is reported with its line and column, and nothing
//! is written unless the whole file is good.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Int32Builder, RecordBatch,
    StringArray, StringBuilder,
};
use arrow::compute::cast;
use arrow::compute::kernels::cast_utils::{Parser, parse_decimal};
use arrow::datatypes::{DataType, Date32Type, Decimal128Type, Field, Schema};
use encoding_rs::{DecoderResult, Encoding, UTF_8};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};
use sunlight_domain::Table;
use sunlight_node::{DataRoot, S3Config};

use crate::{Error, Result};

/// Most bad values listed in one error.
const MAX_REPORTED: usize = 50;

/// The column of `disbursements` the contract makes unique across the city.
const PAYMENT: &str = "payment_id";

/// A value that does not fit its column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// 1-based line of the CSV file (the header is line 1).
    pub line: usize,
    /// Column name.
    pub column: String,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.problem
        )
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

/// `bytes` as text in `encoding`, or in the encoding a leading byte-order mark names (as
/// Excel's "Unicode text" is UTF-16), without the mark. A byte sequence the encoding does
/// not hold is an error naming its line, as nothing may be replaced.
fn decode(bytes: &[u8], encoding: &'static Encoding) -> std::result::Result<String, String> {
    let mut decoder = encoding.new_decoder();
    let capacity = decoder
        .max_utf8_buffer_length_without_replacement(bytes.len())
        .unwrap_or(bytes.len());
    let mut text = String::with_capacity(capacity);
    match decoder.decode_to_string_without_replacement(bytes, &mut text, true) {
        (DecoderResult::Malformed(..), _) => {
            let line = text.matches('\n').count() + 1;
            let encoding = decoder.encoding();
            let hint = if encoding == UTF_8 {
                "; a file Excel saved as \"CSV\" on Chinese Windows is in GBK: pass --encoding gbk"
            } else {
                ""
            };
            Err(format!("line {line} is not {} text{hint}", encoding.name()))
        }
        _ => Ok(text),
    }
}

/// Converts `csv`, text in `encoding`, to the contract schema of `table`.
pub fn read_csv(csv: &Path, table: Table, encoding: &'static Encoding) -> Result<RecordBatch> {
    let contract = table.schema();
    let bytes = std::fs::read(csv).map_err(|source| Error::Read {
        path: csv.into(),
        source,
    })?;
    let text = decode(&bytes, encoding).map_err(|problem| Error::Csv {
        path: csv.into(),
        errors: vec![problem],
    })?;
    drop(bytes);
    // Excel's "Unicode text" separates by tabs.
    let first_line = text.lines().next().unwrap_or_default();
    let delimiter = match !first_line.contains(',') && first_line.contains('\t') {
        true => b'\t',
        false => b',',
    };
    let (header, _) = arrow::csv::reader::Format::default()
        .with_header(true)
        .with_delimiter(delimiter)
        .infer_schema(Cursor::new(text.as_bytes()), Some(0))
        .map_err(|e| Error::Csv {
            path: csv.into(),
            errors: vec![format!("cannot read the header: {e}")],
        })?;
    for field in header.fields() {
        if contract.field_with_name(field.name()).is_err() {
            return Err(Error::Csv {
                path: csv.into(),
                errors: vec![format!(
                    "column {} is not in the {table} contract",
                    field.name()
                )],
            });
        }
    }
    if let Some(missing) = contract
        .fields()
        .iter()
        .find(|f| header.field_with_name(f.name()).is_err())
    {
        return Err(Error::Csv {
            path: csv.into(),
            errors: vec![format!("column {} is missing", missing.name())],
        });
    }
    let text_schema = Arc::new(Schema::new(
        header
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let reader = arrow::csv::ReaderBuilder::new(text_schema.clone())
        .with_header(true)
        .with_delimiter(delimiter)
        .build(Cursor::new(text.as_bytes()))
        .map_err(|e| Error::Csv {
            path: csv.into(),
            errors: vec![e.to_string()],
        })?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Csv {
            path: csv.into(),
            errors: vec![e.to_string()],
        })?;
    let cells = arrow::compute::concat_batches(&text_schema, &batches).expect("same schema");

    let mut errors = Vec::new();
    let mut columns = Vec::new();
    for field in contract.fields() {
        let index = text_schema.index_of(field.name()).expect("checked above");
        let values = cells
            .column(index)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("read as text");
        if table == Table::Disbursements && field.name() == PAYMENT {
            repeated_payments(values, &mut errors);
        }
        columns.push(convert(table, field, values, &mut errors));
    }
    if !errors.is_empty() {
        let total = errors.len();
        let mut lines: Vec<String> = errors
            .into_iter()
            .take(MAX_REPORTED)
            .map(|e| e.to_string())
            .collect();
        if total > MAX_REPORTED {
            lines.push(format!("… and {} more", total - MAX_REPORTED));
        }
        return Err(Error::Csv {
            path: csv.into(),
            errors: lines,
        });
    }
    Ok(RecordBatch::try_new(contract, columns).expect("columns follow the contract"))
}

/// Each `payment_id` that repeats an earlier line's.
fn repeated_payments(values: &StringArray, errors: &mut Vec<RowError>) {
    let mut first = HashMap::new();
    for (row, value) in values.iter().enumerate() {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            continue;
        };
        if let Some(earlier) = first.insert(value, row) {
            first.insert(value, earlier);
            errors.push(RowError {
                line: row + 2,
                column: PAYMENT.into(),
                problem: format!(
                    "{value:?} repeats line {}; a payment_id is unique",
                    earlier + 2
                ),
            });
        }
    }
}

fn convert(
    table: Table,
    field: &Field,
    values: &StringArray,
    errors: &mut Vec<RowError>,
) -> ArrayRef {
    let mut report = |row: usize, problem: String| {
        errors.push(RowError {
            line: row + 2,
            column: field.name().clone(),
            problem,
        });
    };
    let cells = values
        .iter()
        .enumerate()
        .map(|(row, v)| (row, v.map(str::trim).filter(|v| !v.is_empty())));
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
            "a date (YYYY-MM-DD or YYYY/M/D)"
        ),
        DataType::Int32 => build!(
            Int32Builder::new(),
            |v: &str| v.parse::<i32>().ok(),
            "a whole number"
        ),
        DataType::Boolean => build!(
            BooleanBuilder::new(),
            |v: &str| match v.to_ascii_lowercase().as_str() {
                "true" | "t" | "1" => Some(true),
                "false" | "f" | "0" => Some(false),
                _ => None,
            },
            "true or false"
        ),
        DataType::Decimal128(p, s) => {
            let (p, s) = (*p, *s);
            build!(
                Decimal128Builder::new()
                    .with_precision_and_scale(p, s)
                    .expect("contract type"),
                |v: &str| parse_decimal::<Decimal128Type>(v, p, s).ok(),
                "an amount in yuan with at most 2 decimals"
            )
        }
        other => unreachable!("the contract has no {other} column"),
    }
}

/// Refuses `batch`, rows of `disbursements`, if a Parquet file of the table under `root`
/// holds one of its payment_ids, naming the file and the first of them.
async fn held_payments(root: &DataRoot, batch: &RecordBatch) -> Result<()> {
    let column = batch.column_by_name(PAYMENT).expect("contract column");
    let new: HashSet<&str> = column.as_string::<i32>().iter().flatten().collect();
    let store_error = |location: &ObjectPath, e: &dyn std::fmt::Display| Error::Store {
        location: root.object_url(location).to_string(),
        reason: e.to_string(),
    };
    let (files, _) = root.table_files(Table::Disbursements).await?;
    for file in &files {
        let bytes = async { root.store().get(&file.location).await?.bytes().await }
            .await
            .map_err(|e| store_error(&file.location, &e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| store_error(&file.location, &e))?;
        let Some(index) = builder.schema().index_of(PAYMENT).ok() else {
            continue;
        };
        let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(|e| store_error(&file.location, &e))?;
        let mut held = Vec::new();
        for read in reader {
            let read = read.map_err(|e| store_error(&file.location, &e))?;
            let ids = cast(read.column(0), &DataType::Utf8)
                .map_err(|e| store_error(&file.location, &e))?;
            held.extend(
                ids.as_string::<i32>()
                    .iter()
                    .flatten()
                    .filter(|id| new.contains(id))
                    .map(str::to_string),
            );
        }
        if let Some(first) = held.first() {
            return Err(Error::PaymentsHeld {
                location: root.object_url(&file.location).to_string(),
                count: held.len(),
                first: first.clone(),
            });
        }
    }
    Ok(())
}

/// A date written `YYYY-MM-DD`, or `YYYY/M/D` as Excel writes dates in a Chinese locale,
/// in days since the epoch. A time may follow if it is midnight (`2021/9/1 0:00`); a time
/// of day is not a date, and is not dropped.
fn parse_date(v: &str) -> Option<i32> {
    let (day, time) = v.split_once([' ', 'T']).unwrap_or((v, ""));
    if time.contains(|c: char| !matches!(c, '0' | ':' | '.')) {
        return None;
    }
    match day.contains('/') {
        true => {
            let date = chrono::NaiveDate::parse_from_str(day, "%Y/%m/%d").ok()?;
            Some(Date32Type::from_naive_date(date))
        }
        false => Date32Type::parse(day),
    }
}

/// Writes `batch` as a new Parquet file of `table` under the data root `data`, and
/// returns the object's URL. Rows the root holds already in a file of the same rows are
/// refused.
pub async fn write_table(
    data: &str,
    s3: &S3Config,
    table: Table,
    batch: &RecordBatch,
) -> Result<String> {
    let root = DataRoot::open(data, s3).map_err(Error::Node)?;
    let mut bytes = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut bytes, batch.schema(), None).map_err(|e| Error::Encode {
            path: PathBuf::from(table.name()),
            reason: e.to_string(),
        })?;
    writer.write(batch).map_err(|e| Error::Encode {
        path: PathBuf::from(table.name()),
        reason: e.to_string(),
    })?;
    writer.close().map_err(|e| Error::Encode {
        path: PathBuf::from(table.name()),
        reason: e.to_string(),
    })?;
    if table == Table::Disbursements {
        held_payments(&root, batch).await?;
    }
    // Named by its rows: the same rows imported again would be counted twice.
    let digest = hex::encode(Sha256::digest(&bytes));
    let location = root
        .table_prefix(table)
        .join(format!("import-{}.parquet", &digest[..32]).as_str());
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
    root.store()
        .put(&location, PutPayload::from(bytes))
        .await
        .map_err(|e| Error::Store {
            location: url.clone(),
            reason: e.to_string(),
        })?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` read as a CSV file of `table` in UTF-8.
    fn read(text: &str, table: Table) -> Result<RecordBatch> {
        read_encoded(text.as_bytes(), table, UTF_8)
    }

    /// `bytes` read as a CSV file of `table` in `encoding`.
    fn read_encoded(
        bytes: &[u8],
        table: Table,
        encoding: &'static Encoding,
    ) -> Result<RecordBatch> {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join(format!("{}.csv", table.name()));
        std::fs::write(&csv, bytes).unwrap();
        read_csv(&csv, table, encoding)
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
        let Err(Error::Csv { errors, .. }) = read(
            &CERTS.replace("2015-01-01", "1/1/2015"),
            Table::DisabilityCerts,
        ) else {
            panic!("a day first is not read")
        };
        assert_eq!(
            errors,
            ["line 2, column issued_on: \"1/1/2015\" is not a date (YYYY-MM-DD or YYYY/M/D)"]
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
        let Err(Error::Csv { errors, .. }) = read_encoded(&gbk, Table::DisabilityCerts, UTF_8)
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
        let Err(Error::Csv { errors, .. }) = read else {
            panic!("should fail")
        };
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("line 3, column level"), "{errors:?}");
        assert!(
            errors[1].starts_with("line 5, column level: \"5\" is not a level from 1"),
            "{errors:?}"
        );
        assert!(
            errors[2].starts_with("line 4, column issued_on"),
            "{errors:?}"
        );
    }

    #[test]
    fn reports_values_the_contract_does_not_name() {
        let read = read(
            "person_id,name,gender,birth_date,household_id,county_code,township,village,death_date\n\
             11010519491231002X,张三,M,1949-12-31,H1,140215,镇,村,\n\
             11010519491231002X,李四,男,1949-12-31,H1,140216,镇,村,\n",
            Table::Persons,
        );
        let Err(Error::Csv { errors, .. }) = read else {
            panic!("should fail")
        };
        assert_eq!(
            errors,
            [
                "line 3, column gender: \"男\" is not one of M, F",
                "line 3, column county_code: \"140216\" is not a node code: 140200, \
                 140212–140215 or 140221–140226",
            ],
        );
    }

    #[tokio::test]
    async fn the_same_rows_are_imported_once() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().display().to_string();
        let (gbk, _, _) = encoding_rs::GBK.encode(CERTS);
        let gbk = read_encoded(&gbk, Table::DisabilityCerts, encoding("gbk").unwrap()).unwrap();
        let s3 = S3Config::default();
        let first = write_table(&data, &s3, Table::DisabilityCerts, &gbk)
            .await
            .unwrap();
        // The same rows, from a file in another encoding.
        let again = read(CERTS, Table::DisabilityCerts).unwrap();
        let refused = write_table(&data, &s3, Table::DisabilityCerts, &again).await;
        assert!(
            matches!(&refused, Err(Error::AlreadyImported { location }) if *location == first),
            "{refused:?}"
        );
        let other = read(&CERTS.replace("C2", "C3"), Table::DisabilityCerts).unwrap();
        write_table(&data, &s3, Table::DisabilityCerts, &other)
            .await
            .unwrap();
        let files = std::fs::read_dir(root.path().join("disability_certs")).unwrap();
        assert_eq!(files.count(), 2);
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
        let Err(Error::Csv { errors, .. }) = read(&repeated, Table::Disbursements) else {
            panic!("a repeated payment_id is refused")
        };
        assert_eq!(
            errors,
            ["line 4, column payment_id: \"140215-1\" repeats line 2; a payment_id is unique"]
        );

        let root = tempfile::tempdir().unwrap();
        let data = root.path().display().to_string();
        let s3 = S3Config::default();
        let first = read(PAYMENTS, Table::Disbursements).unwrap();
        let held = write_table(&data, &s3, Table::Disbursements, &first)
            .await
            .unwrap();
        let overlapping = PAYMENTS.replace("140215-1,", "140215-3,");
        let overlapping = read(&overlapping, Table::Disbursements).unwrap();
        let refused = write_table(&data, &s3, Table::Disbursements, &overlapping).await;
        assert!(
            matches!(&refused, Err(Error::PaymentsHeld { location, count: 1, first })
                if *location == held && first == "140215-2"),
            "{refused:?}"
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
