//! Files that break the contract are refused by name and column; good tables stay served.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Decimal128Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, new_null_array,
};
use arrow::compute::{cast, concat};
use arrow::datatypes::{
    DataType, Field, Int32Type, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use sunlight_client::SqlClient;
use sunlight_datagen::node_root;
use sunlight_domain::NodeCode;
use sunlight_proto::v1::node_service_client::NodeServiceClient;
use sunlight_proto::v1::table_status::State;
use sunlight_proto::v1::{DescribeRequest, NodeDescription};

use crate::oracle;
use crate::support::{
    NodeProcess, TOKEN, copy_dir, generated_city, parquet_batches, write_parquet,
};

#[tokio::test(flavor = "multi_thread")]
async fn mismatched_and_corrupt_files_are_refused() {
    let root = node_files();

    // A disbursements file whose amount is text, in a folder of a partition by period, as
    // Hive writes one, that leaves period out of the file.
    let schema = Arc::new(Schema::new(vec![
        Field::new("payment_id", DataType::Utf8, false),
        Field::new("amount", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["x-1"])),
            Arc::new(StringArray::from(vec!["1.50"])),
        ],
    )
    .unwrap();
    let partition = root.path().join("disbursements/period=2024-01-01");
    std::fs::create_dir_all(&partition).unwrap();
    write_parquet(&partition.join("extra.parquet"), &[batch], None);
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
    let extra = url("disbursements/period=2024-01-01/extra.parquet");
    assert!(
        banner.contains(&format!("{extra}: ")) && banner.contains("column"),
        "{banner}"
    );
    assert!(
        banner.contains("column period is missing (its folder period=… holds it"),
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
        err.contains("period=2024-01-01/extra.parquet") && err.contains("amount"),
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
    let description = described(&node.addr).await;
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
        state("disbursements").problems[0]
            .contains("amount holds text, the contract says Decimal128(12, 2)")
            && state("disbursements").problems[0].contains("`sunlight import` converts"),
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

/// Values that break no type but what the contract says of them (an ID whose birth date
/// part is not a date or whose check character is wrong, a gender other than M and F, a
/// level past 4): the node serves their rows and reports them as data-quality errors of
/// its files, persons by count only.
#[tokio::test(flavor = "multi_thread")]
async fn values_the_contract_does_not_name_are_served_and_reported() {
    let city = generated_city(50, 3);
    let code: NodeCode = "140222".parse().unwrap();
    let copy = tempfile::tempdir().unwrap();
    let root = node_root(copy.path(), code);
    copy_dir(&node_root(city.dir.path(), code), &root);
    let genders = |column: &ArrayRef| -> ArrayRef {
        let values = column.as_string::<i32>().iter().enumerate();
        let changed: StringArray = values
            .map(|(i, g)| if i < 3 { Some("X") } else { g })
            .collect();
        Arc::new(changed)
    };
    with_column(&root, "persons/part-0.parquet", "gender", genders, None);
    // Three persons' IDs as a clerk might mistype them: a wrong check character, one
    // character short, and a lower-case x. Their rows elsewhere keep the true IDs. The
    // fourth row names the fifth's person, who is then on two rows of the registry.
    let mistyped = |column: &ArrayRef| -> ArrayRef {
        let ids = column.as_string::<i32>();
        let changed: StringArray = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let id = id.unwrap();
                let (body, check) = id.split_at(17);
                Some(match i {
                    0 => format!("{body}{}", if check == "0" { "1" } else { "0" }),
                    1 => body.to_string(),
                    2 => format!("{body}x"),
                    3 => ids.value(4).to_string(),
                    _ => id.to_string(),
                })
            })
            .collect();
        Arc::new(changed)
    };
    with_column(&root, "persons/part-0.parquet", "person_id", mistyped, None);
    let levels = |column: &ArrayRef| -> ArrayRef {
        let values = column.as_primitive::<Int32Type>().iter().enumerate();
        let changed: Int32Array = values
            .map(|(i, l)| if i == 0 { Some(7) } else { l })
            .collect();
        Arc::new(changed)
    };
    with_column(
        &root,
        "disability_certs/part-0.parquet",
        "level",
        levels,
        None,
    );
    let node = NodeProcess::start("140222", &root);

    let oracle = oracle::context(copy.path(), &[code]);
    let undated = oracle::strings(
        &oracle,
        "SELECT CAST(count(DISTINCT person_id) AS VARCHAR) FROM (SELECT person_id FROM persons \
         UNION ALL SELECT person_id FROM disbursements UNION ALL SELECT person_id FROM payroll \
         UNION ALL SELECT person_id FROM disability_certs) WHERE TRY_CAST(substr(person_id, 7, \
         4) || '-' || substr(person_id, 11, 2) || '-' || substr(person_id, 13, 2) AS DATE) IS NULL",
    )
    .await;
    let undated: u64 = undated.first().unwrap().parse().unwrap();
    assert!(undated > 0, "the generated city plants such IDs");
    let registry = oracle::strings(
        &oracle,
        "SELECT CAST(count(*) AS VARCHAR) || ' rows, ' || \
         CAST(count(DISTINCT person_id) AS VARCHAR) || ' persons' FROM persons",
    )
    .await;

    let description = described(&node.addr).await;
    assert_eq!(
        description.data_quality,
        [
            format!(
                "{undated} person(s) have a person_id whose birth date part (characters 7-14) \
                 is not a date; underage_elderly_allowance counts none of their payments"
            ),
            "3 person(s) have a person_id not in the form GB 11643 gives it: 1 with other \
             than 18 characters; 1 with a last character other than a digit or X; 1 with a \
             check character other than the one its first 17 digits give (ISO 7064 MOD 11-2)"
                .to_string(),
            format!(
                "1 row(s) of persons repeat the person_id of another row ({}); \
                 deceased_recipient counts a death on any of a person's rows, and \
                 shared_account each of their households",
                registry.first().unwrap()
            ),
            "3 row(s) of persons hold a gender that is not one of M, F (\"X\")".to_string(),
            "1 row(s) of disability_certs hold a level that is not a level from 1 (most \
             severe) to 4 (\"7\")"
                .to_string(),
        ]
    );
    assert!(
        description
            .tables
            .iter()
            .all(|t| t.state() == State::Served),
        "{description:?}"
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
    // Numbers in floating point are read as the contract's, but a level of 2.5, a cap of
    // a tenth of a fen and one beyond the contract's digits are not values of its types.
    let floating = |first: Vec<f64>| {
        move |column: &ArrayRef| {
            let floats = cast(column, &DataType::Float64).unwrap();
            let first = Float64Array::from(first);
            let rest = floats.slice(first.len(), floats.len() - first.len());
            concat(&[&first as &dyn Array, rest.as_ref()]).unwrap()
        }
    };
    with_column(
        root,
        "disability_certs/halves.parquet",
        "level",
        floating(vec![2.5]),
        None,
    );
    with_column(
        root,
        "subsidy_standards/fractions.parquet",
        "cap",
        floating(vec![100.005, 1e11]),
        None,
    );
    // A cap in a longer decimal, as Oracle exports one, has a tenth of a fen too.
    let oracle = |column: &ArrayRef| {
        let first = Decimal128Array::from(vec![1_000_050]).with_precision_and_scale(38, 4);
        let rest = cast(
            &column.slice(1, column.len() - 1),
            &DataType::Decimal128(38, 4),
        );
        concat(&[&first.unwrap() as &dyn Array, rest.unwrap().as_ref()]).unwrap()
    };
    with_column(
        root,
        "subsidy_standards/oracle.parquet",
        "cap",
        oracle,
        None,
    );
    // Text as bytes, as Hive writes it, is read as text, but one of these names is not.
    let not_utf8 = |column: &ArrayRef| {
        let first = BinaryArray::from(vec![b"\xff\xfe".as_slice()]);
        let rest = cast(&column.slice(1, column.len() - 1), &DataType::Binary).unwrap();
        concat(&[&first as &dyn Array, rest.as_ref()]).unwrap()
    };
    with_column(root, "persons/bytes.parquet", "name", not_utf8, None);
    // A column of type Null, as pandas writes one without values, has no village at all.
    let no_values = |column: &ArrayRef| new_null_array(&DataType::Null, column.len());
    with_column(root, "persons/blank.parquet", "village", no_values, None);
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
        "wide.parquet: column level holds 1 value(s) the contract's Int32 cannot hold exactly",
        "halves.parquet: column level holds 1 value(s) the contract's Int32 cannot hold",
        "fractions.parquet: column cap holds 2 value(s) the contract's Decimal128(12, 2) \
         cannot hold exactly",
        "blank.parquet: column village holds",
        "bytes.parquet: column name holds 1 value(s) that are not UTF-8 text",
        "oracle.parquet: column cap holds 1 value(s) the contract's Decimal128(12, 2) cannot",
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

/// A file damaged, or taken away, before the node lists its files again fails the queries
/// that read it, at the node and at the city, and the error names the file and what became
/// of it: the one file of a table, or one of a table's several.
#[tokio::test(flavor = "multi_thread")]
async fn files_that_change_between_listings_are_named() {
    let root = node_files();
    let certs = root.path().join("disability_certs");
    std::fs::copy(certs.join("part-0.parquet"), certs.join("part-1.parquet")).unwrap();
    let (_node, _city, mut local, mut city) = node_and_city(root.path(), "3600").await;
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
        "{url}: has changed since the node checked it ({size} bytes then, 100 now): \
         not a readable Parquet file"
    );
    let err = local.query(sql).await.unwrap_err().to_string();
    assert!(
        err.contains(&named)
            && err.contains("once it has checked them again")
            && err.matches("Parquet error").count() == 1,
        "{err}"
    );
    let err = city.query(sql).await.unwrap_err().to_string();
    assert!(err.contains("node 140222") && err.contains(&named), "{err}");

    let removed = certs.join("part-0.parquet");
    std::fs::remove_file(&removed).unwrap();
    let err = local
        .query("SELECT level, count(*) FROM disability_certs GROUP BY 1")
        .await
        .unwrap_err()
        .to_string();
    let gone = url::Url::from_file_path(&removed).unwrap();
    assert!(
        err.contains(&format!("{gone}: is gone since the node checked it"))
            && !err.contains("part-1"),
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

/// Files imported, damaged or removed while the node serves are served as they are from
/// its next listing of them, at the node and through the city, with no restart.
#[tokio::test(flavor = "multi_thread")]
async fn files_that_change_are_served_from_the_next_listing() {
    let root = node_files();
    let (_node, _city, mut local, mut city) = node_and_city(root.path(), "1").await;
    let sql = "SELECT count(*), count(DISTINCT person_id) FROM disbursements";
    let before = counts(&mut local, sql).await;
    assert_eq!(counts(&mut city, sql).await, before);
    let before = before.unwrap();

    // A second file of the same rows, written beside the folder and moved in whole, as
    // `sunlight import` writes through the object store.
    let folder = root.path().join("disbursements");
    let written = root.path().join("written.parquet");
    std::fs::copy(folder.join("part-0.parquet"), &written).unwrap();
    std::fs::rename(&written, folder.join("part-1.parquet")).unwrap();
    let doubled = Ok(vec![before[0] * 2, before[1]]);
    assert_eq!(until(&mut local, sql, |c| *c == doubled).await, doubled);
    assert_eq!(counts(&mut city, sql).await, doubled);

    let added = folder.join("part-1.parquet");
    std::fs::File::options()
        .write(true)
        .open(&added)
        .unwrap()
        .set_len(100)
        .unwrap();
    let refusal = format!(
        "table disbursements is not served by this node: {}: not a readable Parquet file",
        url::Url::from_file_path(&added).unwrap()
    );
    let refused = until(&mut local, sql, |c| {
        c.as_ref().is_err_and(|e| e.contains(&refusal))
    });
    assert!(refused.await.is_err());
    let err = counts(&mut city, sql).await.unwrap_err();
    assert!(
        err.contains("node 140222") && err.contains(&refusal),
        "{err}"
    );

    std::fs::remove_file(&added).unwrap();
    let restored = Ok(before);
    assert_eq!(until(&mut local, sql, |c| *c == restored).await, restored);
    assert_eq!(counts(&mut city, sql).await, restored);
}

/// Node 140222 over `root`, listing its files every `rescan_seconds`, and a coordinator
/// over it, with a client of each: the processes, the node's client, the city's.
async fn node_and_city(
    root: &Path,
    rescan_seconds: &str,
) -> (NodeProcess, NodeProcess, SqlClient, SqlClient) {
    let node = NodeProcess::start_with("140222", root, &["--rescan-seconds", rescan_seconds]);
    let city = NodeProcess::coordinator(&[("140222".into(), node.addr.clone())], &[]);
    let local_client = SqlClient::connect(&node.addr, TOKEN).await.unwrap();
    let city_client = SqlClient::connect(&city.addr, TOKEN).await.unwrap();
    (node, city, local_client, city_client)
}

/// The integers of the one row `sql` answers, or its error.
async fn counts(client: &mut SqlClient, sql: &str) -> Result<Vec<i64>, String> {
    let answer = client.query(sql).await.map_err(|e| e.to_string())?;
    let columns = answer.batches[0].columns().iter();
    Ok(columns
        .map(|c| c.as_primitive::<Int64Type>().value(0))
        .collect())
}

/// The answer to `sql` once `wanted` holds of it, or the last one after a minute.
async fn until(
    client: &mut SqlClient,
    sql: &str,
    wanted: impl Fn(&Result<Vec<i64>, String>) -> bool,
) -> Result<Vec<i64>, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let answer = counts(client, sql).await;
        if wanted(&answer) || std::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A copy of node 140222's files in a small generated city.
/// What the node at `addr` says of itself over its control service.
async fn described(addr: &str) -> NodeDescription {
    let mut control = NodeServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(DescribeRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    control.describe(request).await.unwrap().into_inner()
}

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
