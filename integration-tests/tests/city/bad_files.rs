//! Files that break the contract are refused by name and column; good tables stay served.

use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use sunlight_client::SqlClient;
use sunlight_datagen::node_root;
use sunlight_domain::NodeCode;
use sunlight_proto::v1::DescribeRequest;
use sunlight_proto::v1::node_service_client::NodeServiceClient;
use sunlight_proto::v1::table_status::State;

use crate::support::{NodeProcess, TOKEN, copy_dir, generated_city};

#[tokio::test(flavor = "multi_thread")]
async fn mismatched_and_corrupt_files_are_refused() {
    let city = generated_city(50, 3);
    let root = tempfile::tempdir().unwrap();
    copy_dir(
        &node_root(city.dir.path(), "140222".parse::<NodeCode>().unwrap()),
        root.path(),
    );

    // A disbursements file whose amount is a float.
    let schema = Arc::new(Schema::new(vec![
        Field::new("payment_id", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["x-1"])),
            Arc::new(Float64Array::from(vec![1.5])),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(root.path().join("disbursements/extra.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    // A persons file that is not Parquet at all.
    std::fs::write(
        root.path().join("persons/broken.parquet"),
        b"PAR1 this is not parquet",
    )
    .unwrap();

    let node = NodeProcess::start("140222", root.path());
    let banner = node.banner.join("\n");
    assert!(
        banner.contains("disbursements/extra.parquet") && banner.contains("column"),
        "{banner}"
    );
    assert!(
        banner.contains("persons/broken.parquet") && banner.contains("not a readable Parquet file"),
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
