//! A real node process over generated data, queried over Flight SQL.

use sunlight_client::SqlClient;
use sunlight_datagen::node_root;
use sunlight_domain::NodeCode;

use crate::oracle::{context, count};
use crate::support::{NodeProcess, TOKEN, shared_city};

fn yunzhou() -> NodeCode {
    "140215".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn count_equals_the_rows_in_the_files() {
    let city = shared_city();
    let node = NodeProcess::start("140215", &node_root(city.dir.path(), yunzhou()));
    let mut client = SqlClient::connect(&node.addr, TOKEN).await.unwrap();
    let result = client
        .query("SELECT count(*) FROM disbursements")
        .await
        .unwrap();
    let served = arrow::util::pretty::pretty_format_batches(&result.batches)
        .unwrap()
        .to_string();
    let expected = city.report.rows[&yunzhou()][&sunlight_domain::Table::Disbursements];
    let direct = count(
        &context(city.dir.path(), &[yunzhou()]),
        "SELECT count(*) FROM disbursements",
    )
    .await;
    assert_eq!(direct as usize, expected);
    assert!(served.contains(&format!("| {expected} ")), "{served}");
}

#[tokio::test(flavor = "multi_thread")]
async fn results_equal_datafusion_over_the_files() {
    let city = shared_city();
    let node = NodeProcess::start("140215", &node_root(city.dir.path(), yunzhou()));
    let oracle = context(city.dir.path(), &[yunzhou()]);
    let mut client = SqlClient::connect(&node.addr, TOKEN).await.unwrap();
    for sql in [
        "SELECT subsidy_type, count(*), sum(amount), min(period), max(period) FROM disbursements GROUP BY subsidy_type ORDER BY subsidy_type",
        "SELECT township, count(DISTINCT person_id) FROM disbursements WHERE period BETWEEN DATE '2022-01-01' AND DATE '2022-12-31' GROUP BY township ORDER BY township",
        "SELECT d.subsidy_type, count(*) FROM disbursements d JOIN persons p ON p.person_id = d.person_id WHERE p.death_date IS NOT NULL GROUP BY d.subsidy_type ORDER BY 1",
        "SELECT payment_id, amount FROM disbursements ORDER BY amount DESC, payment_id LIMIT 7",
    ] {
        let served = client.query(sql).await.unwrap();
        let local = oracle.sql(sql).await.unwrap().collect().await.unwrap();
        assert_eq!(
            arrow::util::pretty::pretty_format_batches(&served.batches)
                .unwrap()
                .to_string(),
            arrow::util::pretty::pretty_format_batches(&local)
                .unwrap()
                .to_string(),
            "{sql}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_errors() {
    let city = shared_city();
    let node = NodeProcess::start("140200", &node_root(city.dir.path(), NodeCode::CITY));
    let mut client = SqlClient::connect(&node.addr, TOKEN).await.unwrap();

    // 140200 holds no disbursements: the table is there and empty.
    let empty = client
        .query("SELECT count(*) AS n FROM disbursements")
        .await
        .unwrap();
    assert!(
        arrow::util::pretty::pretty_format_batches(&empty.batches)
            .unwrap()
            .to_string()
            .contains("| 0 ")
    );

    let cases = [
        ("SELEC 1", tonic::Code::InvalidArgument, "SELEC"),
        (
            "SELECT * FROM paymentz",
            tonic::Code::InvalidArgument,
            "paymentz",
        ),
        (
            "SELECT nope FROM payroll",
            tonic::Code::InvalidArgument,
            "nope",
        ),
        (
            "CREATE TABLE x (a INT)",
            tonic::Code::InvalidArgument,
            "DDL",
        ),
        (
            "INSERT INTO payroll SELECT * FROM payroll",
            tonic::Code::InvalidArgument,
            "DML",
        ),
    ];
    for (sql, code, mentions) in cases {
        match client.query(sql).await {
            Err(sunlight_client::Error::Service {
                code: got, message, ..
            }) => {
                assert_eq!(got, code, "{sql}: {message}");
                assert!(message.contains(mentions), "{sql}: {message}");
            }
            other => panic!("{sql} should fail, got {other:?}"),
        }
    }

    let mut stranger = SqlClient::connect(&node.addr, "not-a-token").await.unwrap();
    match stranger.query("SELECT 1").await {
        Err(sunlight_client::Error::Service { code, .. }) => {
            assert_eq!(code, tonic::Code::Unauthenticated)
        }
        other => panic!("an unknown token must be refused, got {other:?}"),
    }
    assert!(node.terminate(), "the node exits cleanly on SIGTERM");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_is_down_is_named() {
    let err = match SqlClient::connect("127.0.0.1:1", TOKEN).await {
        Err(e) => e,
        Ok(mut c) => c.query("SELECT 1").await.unwrap_err(),
    };
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}
