//! Files that break the contract are refused by name and column; good tables stay served.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, new_null_array,
};
use arrow::compute::{cast, concat};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMicrosecondType};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use sunlight_client::SqlClient;
use sunlight_datagen::node_root;
use sunlight_domain::NodeCode;
use sunlight_proto::v1::DescribeRequest;
use sunlight_proto::v1::node_service_client::NodeServiceClient;
use sunlight_proto::v1::table_status::State;

use crate::support::{
    NodeProcess, TOKEN, copy_dir, generated_city, parquet_batches, write_parquet,
};

#[tokio::test(flavor = "multi_thread")]
async fn mismatched_and_corrupt_files_are_refused() {
    let root = node_files();

    // A disbursements file whose amount is a float.
    let schema = Arc::new(Schema::new(vec![
        Field::new("payment_id", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["x-1"])),
            Arc::new(Float64Array::from(vec![1.5])),
        ],
    )
    .unwrap();
    write_parquet(
        &root.path().join("disbursements/extra.parquet"),
        &[batch],
        None,
    );
    // A persons file that is not Parquet at all.
    std::fs::write(
        root.path().join("persons/broken.parquet"),
        b"PAR1 this is not parquet",
    )
    .unwrap();

    let node = NodeProcess::start("140222", root.path());
    let banner = node.banner.join("\n");
    // Each file is named by its URL, which says where to find it whatever the
    // operator's working folder.
    let url = |file: &str| url::Url::from_file_path(root.path().join(file)).unwrap();
    assert!(
        banner.contains(&format!("{}: ", url("disbursements/extra.parquet")))
            && banner.contains("column"),
        "{banner}"
    );
    assert!(
        banner.contains(&format!(
            "{}: not a readable Parquet file",
            url("persons/broken.parquet")
        )),
        "{banner}"
    );

    let mut client = SqlClient::connect(&node.addr, TOKEN).await.unwrap();
    let err = client
        .query("SELECT count(*) FROM disbursements")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("disbursements/extra.parquet") && err.contains("amount"),
        "{err}"
    );
    let err = client
        .query("SELECT count(*) FROM persons")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("broken.parquet"), "{err}");

    let good = client
        .query("SELECT count(*) FROM disability_certs")
        .await
        .unwrap();
    assert_eq!(good.num_rows(), 1);
    let good = client.query("SELECT count(*) FROM payroll").await.unwrap();
    assert_eq!(good.num_rows(), 1);

    // The node describes the refusals over its control service too.
    let mut control = NodeServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let mut request = tonic::Request::new(DescribeRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let description = control.describe(request).await.unwrap().into_inner();
    assert_eq!(description.code, "140222");
    let state = |name: &str| {
        description
            .tables
            .iter()
            .find(|t| t.table == name)
            .unwrap()
            .clone()
    };
    assert_eq!(state("disbursements").state(), State::Refused);
    assert!(
        state("disbursements").problems[0].contains("amount has type Float64"),
        "{:?}",
        state("disbursements")
    );
    assert_eq!(state("payroll").state(), State::Served);
    assert!(
        NodeServiceClient::connect(format!("http://{}", node.addr))
            .await
            .unwrap()
            .describe(DescribeRequest {})
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn values_the_contract_does_not_allow_are_refused() {
    let root = node_files();
    // As most writers do, both files let every column be null. One file's footer counts
    // the nulls; the other has no statistics, so the node reads the column.
    let root = root.path();
    with_column(root, "persons/counted.parquet", "gender", two_nulls, None);
    let bare = WriterProperties::builder()
        .set_statistics_enabled(EnabledStatistics::None)
        .build();
    with_column(
        root,
        "persons/bare.parquet",
        "township",
        two_nulls,
        Some(bare),
    );
    // Levels in 64 bits are read as the contract's Int32, but one of these does not fit.
    let too_large = |level: &ArrayRef| {
        let wide = cast(level, &DataType::Int64).unwrap();
        let first = Int64Array::from(vec![5_000_000_000]);
        concat(&[&first as &dyn Array, wide.slice(1, wide.len() - 1).as_ref()]).unwrap()
    };
    with_column(
        root,
        "disability_certs/wide.parquet",
        "level",
        too_large,
        None,
    );
    // Dates as timestamps are read as dates, but one of these is not a midnight.
    let with_a_time = |start: &ArrayRef| {
        let micros = DataType::Timestamp(TimeUnit::Microsecond, None);
        let days = cast(start, &micros).unwrap();
        let noon = cast(&Int64Array::from(vec![43_200_000_000]), &micros).unwrap();
        concat(&[noon.as_ref(), days.slice(1, days.len() - 1).as_ref()]).unwrap()
    };
    with_column(
        root,
        "payroll/timed.parquet",
        "start_date",
        with_a_time,
        None,
    );
    // Midnights in UTC are eight in the morning in Shanghai: not days there.
    let utc_midnights_in_shanghai = |end: &ArrayRef| {
        let naive = cast(end, &DataType::Timestamp(TimeUnit::Microsecond, None)).unwrap();
        Arc::new(
            naive
                .as_primitive::<TimestampMicrosecondType>()
                .clone()
                .with_timezone("Asia/Shanghai"),
        ) as ArrayRef
    };
    with_column(
        root,
        "payroll/zoned.parquet",
        "end_date",
        utc_midnights_in_shanghai,
        None,
    );

    let node = NodeProcess::start("140222", root);
    let banner = node.banner.join("\n");
    for problem in [
        "counted.parquet: column gender holds 2 null value(s), where the contract requires one",
        "bare.parquet: column township holds 2 null value(s)",
        "wide.parquet: column level holds 1 value(s) beyond the contract's Int32",
        "timed.parquet: column start_date holds 1 timestamp(s) with a time of day",
        "zoned.parquet: column end_date holds",
    ] {
        assert!(banner.contains(problem), "{problem} not in {banner}");
    }
    let mut client = SqlClient::connect(&node.addr, TOKEN).await.unwrap();
    let err = client
        .query("SELECT count(*) FROM persons WHERE township IS NULL")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bare.parquet") && err.contains("township"),
        "{err}"
    );
    let good = client.query("SELECT count(*) FROM disbursements").await;
    assert_eq!(good.unwrap().num_rows(), 1);
}

/// A file damaged, or taken away, while the node serves fails the queries that read it, at
/// the node and at the city, and the error names the file and what became of it.
#[tokio::test(flavor = "multi_thread")]
async fn files_that_change_while_the_node_serves_are_named() {
    let root = node_files();
    let node = NodeProcess::start("140222", root.path());
    let coordinator = NodeProcess::coordinator(&[("140222".into(), node.addr.clone())], &[]);
    let mut local = SqlClient::connect(&node.addr, TOKEN).await.unwrap();
    let mut city = SqlClient::connect(&coordinator.addr, TOKEN).await.unwrap();
    let sql = "SELECT employer_type, count(*), min(start_date) FROM payroll GROUP BY 1";
    let before = city.query(sql).await.unwrap();
    assert!(before.num_rows() > 0);

    let payroll = root.path().join("payroll/part-0.parquet");
    let size = std::fs::metadata(&payroll).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&payroll)
        .unwrap()
        .set_len(100)
        .unwrap();
    let url = url::Url::from_file_path(&payroll).unwrap();
    let named = format!(
        "{url}: has changed since the node checked it at start ({size} bytes then, 100 now): \
         not a readable Parquet file"
    );
    let err = local.query(sql).await.unwrap_err().to_string();
    assert!(
        err.contains(&named) && err.contains("restart the node so that it checks its files again"),
        "{err}"
    );
    let err = city.query(sql).await.unwrap_err().to_string();
    assert!(err.contains("node 140222") && err.contains(&named), "{err}");

    let certs = root.path().join("disability_certs/part-0.parquet");
    std::fs::remove_file(&certs).unwrap();
    let err = local
        .query("SELECT level, count(*) FROM disability_certs GROUP BY 1")
        .await
        .unwrap_err()
        .to_string();
    let gone = url::Url::from_file_path(&certs).unwrap();
    assert!(
        err.contains(&format!(
            "{gone}: is gone since the node checked it at start"
        )),
        "{err}"
    );
    // A query that fails for its own sake names no file.
    let err = local
        .query("SELECT CAST(village AS INT) FROM disbursements")
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("since the node checked it"), "{err}");
    // Tables whose files did not change are served as before.
    let good = local.query("SELECT count(*) FROM disbursements").await;
    assert_eq!(good.unwrap().num_rows(), 1);
}

/// A copy of node 140222's files in a small generated city.
fn node_files() -> tempfile::TempDir {
    let city = generated_city(50, 3);
    let root = tempfile::tempdir().unwrap();
    copy_dir(
        &node_root(city.dir.path(), "140222".parse::<NodeCode>().unwrap()),
        root.path(),
    );
    root
}

/// Writes the rows of the generated file of `to`'s table under `root` to `to`, with every
/// column nullable and `column` as `change` makes it.
fn with_column(
    root: &Path,
    to: &str,
    column: &str,
    change: impl FnOnce(&ArrayRef) -> ArrayRef,
    properties: Option<WriterProperties>,
) {
    let to = root.join(to);
    let batches = parquet_batches(&to.with_file_name("part-0.parquet"));
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let index = batch.schema().index_of(column).unwrap();
    let mut columns = batch.columns().to_vec();
    columns[index] = change(&columns[index]);
    let schema = Arc::new(Schema::new(
        batch
            .schema()
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| {
                f.as_ref()
                    .clone()
                    .with_nullable(true)
                    .with_data_type(c.data_type().clone())
            })
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    write_parquet(&to, &[batch], properties);
}

/// `column` with its first two values null.
fn two_nulls(column: &ArrayRef) -> ArrayRef {
    let nulls = new_null_array(column.data_type(), 2);
    concat(&[nulls.as_ref(), column.slice(2, column.len() - 2).as_ref()]).unwrap()
}
