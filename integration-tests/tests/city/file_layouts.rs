//! The contract pins names and types, not how a file lays them out. Text stored as
//! large, view or dictionary-encoded strings or as bytes, numbers and dates in types that hold every
//! value of the contract's, or in floating point as pandas writes them, or as the long
//! decimals of an export from Oracle, a column without
//! values as type Null, columns in another order, columns the contract does not name,
//! a table split into several files or into many small ones, files named as Hive and
//! Impala name them, and small row groups are served as the generator's files are; the
//! columns the contract does not name are not served at all, nor the files writers keep
//! beside a table's, nor files that are not Parquet.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, new_null_array};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use sunlight_client::SqlClient;
use sunlight_datagen::node_root;
use sunlight_domain::NodeCode;

use crate::models::one_county_models_find_the_planted_hits;
use crate::support::{
    NodeProcess, ServiceProcess, TOKEN, copy_dir, parquet_batches, printed_answer, shared_city,
};

/// How a writer lays out a table's files and types its columns.
struct Layout {
    /// Files the table is split into.
    parts: usize,
    text: DataType,
    date: DataType,
    /// The type of the contract's `Int32` columns.
    whole: DataType,
    /// The type of the contract's `Decimal128(12, 2)` amounts.
    amount: DataType,
}

impl Layout {
    /// Text as `text`, dates as `date`, integers in 64 bits and amounts with two digits
    /// fewer.
    fn new(parts: usize, text: DataType, date: DataType) -> Self {
        Self {
            parts,
            text,
            date,
            whole: DataType::Int64,
            amount: DataType::Decimal128(10, 2),
        }
    }

    /// Integers and amounts as pandas writes a column with gaps, or money: floating point.
    fn floating(self) -> Self {
        Self {
            whole: DataType::Float64,
            amount: DataType::Float64,
            ..self
        }
    }

    /// Integers and amounts as an export from Oracle writes its `NUMBER`s: decimals of 38
    /// digits.
    fn oracle(self) -> Self {
        Self {
            whole: DataType::Decimal128(38, 0),
            amount: DataType::Decimal128(38, 18),
            ..self
        }
    }

    /// Rewrites the one file of `table` under `root` as this layout's files, with its
    /// columns in reverse order, a column without values as pandas writes one (of type
    /// Null), a column `remark` the contract does not name, and row groups of 1,000 rows.
    fn rewrite(&self, root: &Path, table: &str) {
        let folder = root.join(table);
        let original = folder.join("part-0.parquet");
        let batches = parquet_batches(&original);
        std::fs::remove_file(&original).unwrap();
        let retyped = |batch: &RecordBatch| {
            let (fields, columns): (Vec<Field>, Vec<_>) = batch
                .schema()
                .fields()
                .iter()
                .zip(batch.columns())
                .rev()
                .map(|(field, column)| {
                    let to = match field.data_type() {
                        _ if column.null_count() == column.len() => DataType::Null,
                        DataType::Utf8 => self.text.clone(),
                        DataType::Int32 => self.whole.clone(),
                        DataType::Date32 => self.date.clone(),
                        DataType::Decimal128(12, 2) => self.amount.clone(),
                        other => other.clone(),
                    };
                    let column = match to {
                        DataType::Null => new_null_array(&to, column.len()),
                        _ => cast(column, &to).unwrap(),
                    };
                    (field.as_ref().clone().with_data_type(to), column)
                })
                .unzip();
            let remark = Arc::new(StringArray::from(vec!["checked"; batch.num_rows()]));
            let fields = [fields, vec![Field::new("remark", DataType::Utf8, false)]].concat();
            let columns = [columns, vec![remark as ArrayRef]].concat();
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
        };
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(1000))
            .build();
        let rows = concat_batches(&batches[0].schema(), &batches).unwrap();
        let per_part = rows.num_rows().div_ceil(self.parts);
        for part in 0..self.parts {
            let start = (part * per_part).min(rows.num_rows());
            let chunk = retyped(&rows.slice(start, per_part.min(rows.num_rows() - start)));
            let file = folder.join(format!("layout-{part}.parquet"));
            let file = std::fs::File::create(file).unwrap();
            let mut writer =
                ArrowWriter::try_new(file, chunk.schema(), Some(props.clone())).unwrap();
            writer.write(&chunk).unwrap();
            writer.close().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn files_in_any_layout_and_wider_types_are_served_alike() {
    let city = shared_city();
    let code: NodeCode = "140215".parse().unwrap();
    let original = node_root(city.dir.path(), code);
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&original, copy.path());
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    // pandas writes its dates as timestamps in microseconds.
    let timestamp = DataType::Timestamp(TimeUnit::Microsecond, None);
    Layout::new(1, dictionary, timestamp.clone()).rewrite(copy.path(), "persons");
    // A table imported a day at a time: a file a day.
    Layout::new(60, DataType::LargeUtf8, DataType::Date64)
        .oracle()
        .rewrite(copy.path(), "disbursements");
    // A writer that knows the zone writes a day as its local midnight.
    let zoned = DataType::Timestamp(TimeUnit::Microsecond, Some("Asia/Shanghai".into()));
    Layout::new(2, DataType::Utf8View, zoned).rewrite(copy.path(), "payroll");
    // Hive and Impala write text as bytes, without saying they are UTF-8.
    Layout::new(1, DataType::Binary, DataType::Date64)
        .oracle()
        .rewrite(copy.path(), "disability_certs");
    // The reference table as pandas writes it: its ages and levels with gaps in floating
    // point, and no end of validity as a column of type Null.
    Layout::new(1, DataType::LargeUtf8, timestamp)
        .floating()
        .rewrite(copy.path(), "subsidy_standards");
    // What writers leave beside a table's files is not part of it: Spark's marker and
    // the files of a job still writing, and hidden files.
    let disbursements = copy.path().join("disbursements");
    let attempt = disbursements.join("_temporary/0/_temporary/attempt_0");
    std::fs::create_dir_all(&attempt).unwrap();
    let layout = disbursements.join("layout-0.parquet");
    std::fs::copy(&layout, attempt.join("part-00000.snappy.parquet")).unwrap();
    std::fs::copy(&layout, disbursements.join(".layout-0.parquet")).unwrap();
    std::fs::write(disbursements.join("_SUCCESS"), b"").unwrap();
    // A file is Parquet by its content where it is named as Hive's and Impala's are; a
    // file that is not, such as a note, is not read.
    let rename = |from: &str, to: &str| {
        std::fs::rename(disbursements.join(from), disbursements.join(to)).unwrap()
    };
    rename("layout-1.parquet", "000001_0");
    rename("layout-2.parquet", "layout-2.parq");
    std::fs::write(disbursements.join("README.txt"), "payments, a file a day").unwrap();
    // Nor is a copy kept beside a file, Parquet as it is.
    let copy_beside = disbursements.join("layout-3.parquet.bak");
    std::fs::copy(disbursements.join("layout-3.parquet"), copy_beside).unwrap();

    let rewritten = NodeProcess::start(code.as_str(), copy.path());
    assert!(
        !rewritten.banner.iter().any(|l| l.contains("REFUSED")),
        "{:?}",
        rewritten.banner
    );
    let generated = NodeProcess::start(code.as_str(), &original);
    let mut client = SqlClient::connect(&rewritten.addr, TOKEN).await.unwrap();
    let err = client
        .query("SELECT remark FROM persons")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("remark"), "{err}");
    for sql in [
        "SELECT gender, township, count(*), min(birth_date) FROM persons \
         GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT subsidy_type, count(*), sum(amount), count(DISTINCT person_id) \
         FROM disbursements WHERE village LIKE '%村' GROUP BY 1 ORDER BY 1",
        "SELECT p.gender, count(*) FROM disbursements d JOIN persons p \
         ON d.person_id = p.person_id AND d.county_code = p.county_code \
         WHERE p.death_date < d.period GROUP BY 1 ORDER BY 1",
        "SELECT e.employer_type, count(*) FROM payroll e JOIN disbursements d \
         ON e.person_id = d.person_id WHERE d.subsidy_type = 'DIBAO' GROUP BY 1 ORDER BY 1",
        "SELECT level, count(*), min(issued_on) FROM disability_certs \
         WHERE level < 3 AND revoked_on IS NULL GROUP BY 1 ORDER BY 1",
        "SELECT count(*), min(period), max(paid_on), min(amount), max(amount) \
         FROM disbursements WHERE amount > 100.5",
        "SELECT subsidy_type, min_age, cap, requires_cert_level, valid_from, valid_to \
         FROM subsidy_standards ORDER BY 1",
        // A difference of dates in a filter, which DataFusion's statistics trip on.
        "SELECT subsidy_type, count(*), avg(paid_on - period) FROM disbursements \
         WHERE paid_on - period > 10 GROUP BY 1 ORDER BY 1",
    ] {
        assert_eq!(
            printed_answer(&rewritten.addr, sql).await,
            printed_answer(&generated.addr, sql).await,
            "{sql}"
        );
    }

    // At the city, fragments count persons and send identifiers as tokens over either.
    let city_over = |node: &NodeProcess| {
        ServiceProcess::coordinator(&[(code.to_string(), node.addr.clone())], &[])
    };
    let (over_rewritten, over_generated) = (city_over(&rewritten), city_over(&generated));
    for sql in [
        "SELECT township, count(DISTINCT person_id), sum(amount) FROM disbursements \
         GROUP BY 1 ORDER BY 1",
        "SELECT d.subsidy_type, count(*) FROM disbursements d JOIN persons p \
         ON d.person_id = p.person_id AND d.county_code = p.county_code \
         WHERE p.gender = 'F' GROUP BY 1 ORDER BY 1",
        "SELECT count(*), min(birth_date), max(death_date), count(death_date) FROM persons",
        "SELECT min(level), max(level), count(*) FROM disability_certs",
        "SELECT s.department, count(*), sum(d.amount), max(s.cap), min(s.min_age) \
         FROM disbursements d JOIN subsidy_standards s ON d.subsidy_type = s.subsidy_type \
         WHERE s.valid_to IS NULL GROUP BY 1 ORDER BY 1",
        "SELECT employer_type, count(*), min(start_date) FROM payroll GROUP BY 1 ORDER BY 1",
        // Conditions the generated files' bounds prove for every row, and one they do not.
        "SELECT count(*), sum(amount) FROM disbursements \
         WHERE amount > 0 AND period >= DATE '2018-01-01' AND paid_on IS NOT NULL",
        "SELECT count(*), count(death_date) FROM persons WHERE birth_date > DATE '1900-01-01'",
        "SELECT subsidy_type, count(*) FROM disbursements \
         WHERE amount >= 50 AND period > DATE '2019-01-01' GROUP BY 1 ORDER BY 1",
    ] {
        assert_eq!(
            printed_answer(&over_rewritten.addr, sql).await,
            printed_answer(&over_generated.addr, sql).await,
            "{sql}"
        );
    }

    // The models read the rewritten files as the generated ones.
    drop(over_generated);
    let truth = &city.report.truth;
    one_county_models_find_the_planted_hits(&over_rewritten.addr, code, rewritten, truth).await;
}
