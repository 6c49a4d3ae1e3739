//! A real node process over generated data, queried over Flight SQL.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    ActionCreatePreparedSubstraitPlanRequest, Any, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetXdbcTypeInfo, ProstMessageExt, SqlInfo, XdbcDataType,
};
use arrow_flight::{Action, Criteria, FlightDescriptor, FlightInfo, Ticket};
use futures::TryStreamExt;
use prost::Message;
use sunlight_client::SqlClient;
use sunlight_datagen::node_root;
use sunlight_domain::NodeCode;
use tonic::transport::Channel;

use crate::oracle::{context, count};
use crate::support::{NodeProcess, TOKEN, shared_city, start_city};

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
        (
            "SELECT count(*) FROM payroll WHERE employer = $1",
            tonic::Code::InvalidArgument,
            "placeholder(s) $1 and no values were bound",
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

/// A Flight SQL client of `addr` with the test token.
async fn flight_sql_client(addr: &str) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    client.set_token(TOKEN.to_string());
    client
}

/// The parts of Flight SQL that GetSqlInfo says are not offered, transactions and
/// Substrait plans, are refused with a reason, not as calls the server lacks.
#[tokio::test(flavor = "multi_thread")]
async fn transactions_and_substrait_plans_are_refused_by_name() {
    let city = shared_city();
    let node = NodeProcess::start("140215", &node_root(city.dir.path(), yunzhou()));
    let mut client = flight_sql_client(&node.addr).await;
    let refusal = |result: Result<(), FlightError>| match result {
        Err(FlightError::Tonic(status)) => {
            assert_eq!(status.code(), tonic::Code::Unimplemented, "{status}");
            status.message().to_string()
        }
        other => panic!("expected a refusal, got {other:?}"),
    };
    let transaction = refusal(client.begin_transaction().await.map(drop));
    assert!(
        transaction.contains("transactions are not supported"),
        "{transaction}"
    );
    let plan = ActionCreatePreparedSubstraitPlanRequest {
        plan: None,
        transaction_id: None,
    };
    let action = Action::new("CreatePreparedSubstraitPlan", plan.as_any().encode_to_vec());
    let substrait = refusal(client.do_action(action).await.map(|_| ()));
    assert!(
        substrait.contains("Substrait plans are not accepted"),
        "{substrait}"
    );
}

/// Descriptors and tickets that carry no Flight SQL message, and the Flight calls Flight
/// SQL does not use, are refused with what to send instead.
#[tokio::test(flavor = "multi_thread")]
async fn requests_that_are_not_flight_sql_say_what_to_send() {
    let city = shared_city();
    let node = NodeProcess::start("140215", &node_root(city.dir.path(), yunzhou()));
    let channel = Channel::from_shared(format!("http://{}", node.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut flight = FlightServiceClient::new(channel);
    fn signed<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let bearer = format!("Bearer {TOKEN}").parse().unwrap();
        request.metadata_mut().insert("authorization", bearer);
        request
    }
    let unknown = Any {
        type_url: "type.googleapis.com/arrow.flight.protocol.sql.CommandFoo".into(),
        value: Default::default(),
    };
    let path = FlightDescriptor::new_path(vec!["disbursements".into()]);
    let garbage = FlightDescriptor::new_cmd(b"\x01\x02garbage".to_vec());
    let results = [
        (
            flight.get_flight_info(signed(path.clone())).await.map(drop),
            tonic::Code::InvalidArgument,
            "the descriptor names a path (disbursements); send a Flight SQL command",
        ),
        (
            flight.get_schema(signed(path)).await.map(drop),
            tonic::Code::InvalidArgument,
            "names a path",
        ),
        (
            flight
                .poll_flight_info(signed(FlightDescriptor::new_cmd(Vec::new())))
                .await
                .map(drop),
            tonic::Code::InvalidArgument,
            "the descriptor's command is empty",
        ),
        (
            flight.get_flight_info(signed(garbage)).await.map(drop),
            tonic::Code::InvalidArgument,
            "the descriptor's command is not a Flight SQL message",
        ),
        (
            flight
                .get_flight_info(signed(FlightDescriptor::new_cmd(unknown.encode_to_vec())))
                .await
                .map(drop),
            tonic::Code::Unimplemented,
            "CommandFoo is not a command this server answers; send a Flight SQL command: \
             CommandStatementQuery for SQL",
        ),
        (
            flight
                .do_get(signed(Ticket::new("nonsense")))
                .await
                .map(drop),
            tonic::Code::InvalidArgument,
            "the ticket is not one this server issued",
        ),
        (
            flight
                .list_flights(signed(Criteria::default()))
                .await
                .map(drop),
            tonic::Code::Unimplemented,
            "ListFlights is not served",
        ),
        (
            flight
                .do_exchange(signed(futures::stream::empty()))
                .await
                .map(drop),
            tonic::Code::Unimplemented,
            "DoExchange is not served",
        ),
    ];
    for (result, code, says) in results {
        let status = result.expect_err(says);
        assert_eq!(status.code(), code, "{status}");
        assert!(status.message().contains(says), "{status}");
    }
}

/// Runs one catalog call the way a JDBC driver does, GetFlightInfo and then DoGet of its
/// ticket; returns the announced schema, the number of rows and the rows, printed.
async fn catalog_call(
    client: &mut FlightSqlServiceClient<Channel>,
    info: Result<FlightInfo, FlightError>,
) -> (SchemaRef, usize, String) {
    let info = info.unwrap();
    let schema = Arc::new(info.clone().try_decode_schema().unwrap());
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<RecordBatch> = client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    for batch in &batches {
        assert_eq!(batch.schema(), schema, "rows match the announced schema");
    }
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let printed = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    (schema, rows, printed)
}

/// The key, type and dialect calls of JDBC's DatabaseMetaData: `payment_id` keys
/// disbursements, no table declares a foreign key, the type list names the contract's
/// types, and GetSqlInfo tells how names are folded and NULLs sorted.
async fn describes_keys_and_types(addr: &str) {
    let mut client = flight_sql_client(addr).await;
    let key = |catalog: Option<&str>, table: &str| CommandGetPrimaryKeys {
        catalog: catalog.map(str::to_string),
        db_schema: None,
        table: table.to_string(),
    };

    let info = client.get_primary_keys(key(None, "disbursements")).await;
    let (schema, rows, keys) = catalog_call(&mut client, info).await;
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        columns,
        [
            "catalog_name",
            "db_schema_name",
            "table_name",
            "column_name",
            "key_name",
            "key_sequence"
        ]
    );
    assert!(
        keys.contains("| sunlight     | public         | disbursements | payment_id  |          | 1            |"),
        "{keys}"
    );
    assert_eq!(rows, 1, "one key column: {keys}");
    for (catalog, table) in [(None, "persons"), (Some("other"), "disbursements")] {
        let info = client.get_primary_keys(key(catalog, table)).await;
        let (_, rows, none) = catalog_call(&mut client, info).await;
        assert_eq!(rows, 0, "{catalog:?}.{table}: {none}");
    }

    let imported = CommandGetImportedKeys {
        catalog: None,
        db_schema: None,
        table: "disbursements".to_string(),
    };
    let exported = CommandGetExportedKeys {
        catalog: None,
        db_schema: None,
        table: "subsidy_standards".to_string(),
    };
    for info in [
        client.get_imported_keys(imported).await,
        client.get_exported_keys(exported).await,
    ] {
        let (schema, rows, _) = catalog_call(&mut client, info).await;
        assert_eq!(schema.fields().len(), 13);
        assert_eq!(schema.field(0).name(), "pk_catalog_name");
        assert_eq!(schema.field(12).name(), "delete_rule");
        assert_eq!(rows, 0);
    }

    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await;
    let (_, _, types) = catalog_call(&mut client, info).await;
    for name in [
        "BOOLEAN",
        "INTEGER",
        "BIGINT",
        "DOUBLE",
        "DECIMAL",
        "VARCHAR",
        "DATE",
        "TIMESTAMP",
    ] {
        assert!(types.contains(&format!("| {name} ")), "{name}: {types}");
    }
    let date = CommandGetXdbcTypeInfo {
        data_type: Some(XdbcDataType::XdbcDate as i32),
    };
    let info = client.get_xdbc_type_info(date).await;
    let (_, rows, dates) = catalog_call(&mut client, info).await;
    assert!(dates.contains("| DATE "), "{dates}");
    assert_eq!(rows, 1, "only DATE: {dates}");

    let asked = [
        SqlInfo::SqlDdlTable,
        SqlInfo::SqlIdentifierCase,
        SqlInfo::SqlNullOrdering,
        SqlInfo::SqlSearchStringEscape,
        SqlInfo::SqlKeywords,
        SqlInfo::SqlNumericFunctions,
        SqlInfo::SqlOuterJoinsSupportLevel,
        SqlInfo::SqlSupportedUnions,
        SqlInfo::SqlMaxColumnNameLength,
    ];
    let info = client.get_sql_info(asked.to_vec()).await;
    let (_, rows, answered) = catalog_call(&mut client, info).await;
    assert_eq!(rows, asked.len(), "{answered}");
    // No DDL; unquoted names in lower case (3); NULLs sorted high (0); `\` escapes; full
    // outer joins (2); UNION and UNION ALL (3); no limit on a column's name (0); and, as a
    // JDBC driver's metadata reads them, the dialect's keywords and functions.
    let compact = answered.replace(' ', "");
    for row in [
        "|502|{bool_value=false}|",
        "|503|{int32_bitmask=3}|",
        "|507|{int32_bitmask=0}|",
        "|513|{string_value=\\}|",
        "|528|{int32_bitmask=2}|",
        "|540|{int32_bitmask=3}|",
        "|543|{bigint_value=0}|",
    ] {
        assert!(compact.contains(row), "{row}: {answered}");
    }
    for listed in ["SELECT", "abs", "sqrt"] {
        assert!(compact.contains(listed), "{listed}: {answered}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_describes_keys_and_types() {
    let city = shared_city();
    let node = NodeProcess::start("140215", &node_root(city.dir.path(), yunzhou()));
    describes_keys_and_types(&node.addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_city_describes_keys_and_types() {
    let city = shared_city();
    let running = start_city(city.dir.path(), &[]);
    describes_keys_and_types(&running.coordinator.addr).await;
}
