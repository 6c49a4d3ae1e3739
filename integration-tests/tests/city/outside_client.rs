//! Standard Flight SQL clients from outside the project (Python's ADBC driver, and the
//! older `flightsql-dbapi`) talk to a node and to the city; ADBC sets a session option
//! there and reads the notes of its answers from the session.

use std::path::Path;
use std::process::Command;

use sunlight_client::SqlClient;
use sunlight_datagen::node_root;
use sunlight_domain::{NodeCode, Table};

use crate::support::{NodeProcess, TOKEN, python, shared_city, start_city, succeeds};

/// What the client in `integration-tests/python/{script}` saw, run with `args`: the one
/// JSON object it prints.
async fn client_saw(script: &str, args: Vec<String>) -> serde_json::Value {
    let python = python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../integration-tests/python")
        .join(script);
    let stdout =
        tokio::task::spawn_blocking(move || succeeds(Command::new(python).arg(script).args(args)))
            .await
            .unwrap();
    serde_json::from_str(stdout.trim()).unwrap()
}

/// What the ADBC client saw at `addr`, asking about `county`.
async fn adbc_client(addr: &str, county: NodeCode) -> serde_json::Value {
    let args = vec![addr.to_string(), TOKEN.to_string(), county.to_string()];
    client_saw("adbc_client.py", args).await
}

/// The client's view agrees with the generated files: counts, a prepared statement with
/// bound values, an answer's columns before it runs, a count executed incrementally, the
/// catalog calls with the columns' SQL types, and the server's name. Writes are refused.
fn assert_sees(seen: &serde_json::Value, rows: usize, county_rows: usize) {
    assert_eq!(seen["count"].as_u64().unwrap() as usize, rows, "{seen}");
    assert_eq!(
        seen["polled_count"].as_u64().unwrap() as usize,
        rows,
        "{seen}"
    );
    assert_eq!(
        seen["county_count"].as_u64().unwrap() as usize,
        county_rows,
        "{seen}"
    );
    assert_eq!(seen["no_county_count"].as_u64(), Some(0), "{seen}");
    assert!(
        seen["wrong_count"]
            .as_str()
            .unwrap_or_default()
            .contains("the statement has 2 placeholder(s), and 1 value(s) were bound"),
        "{seen}"
    );
    let tables: Vec<&str> = seen["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for table in Table::ALL {
        assert!(
            tables.contains(&table.name()),
            "{} missing from {tables:?}",
            table.name()
        );
    }
    // Each column carries its SQL type, as the type list names it.
    for (column, sql_type) in [
        ("person_id", "VARCHAR"),
        ("amount", "DECIMAL"),
        ("period", "DATE"),
    ] {
        assert_eq!(seen["column_types"][column][0], sql_type, "{seen}");
    }
    assert_eq!(seen["table_types"], serde_json::json!(["TABLE"]));
    assert_eq!(
        seen["answer_columns"],
        serde_json::json!([
            ["subsidy_type", "string"],
            ["total", "decimal128(22, 2)"],
            ["n", "int64"]
        ]),
        "{seen}"
    );
    for (write, refusal) in [
        ("delete", "DML not supported: Delete"),
        ("ingest", "bulk ingest into disbursements is refused"),
    ] {
        let said = seen["writes"][write].as_str().unwrap_or_default();
        assert!(said.contains(refusal), "{write}: {said}");
    }
    assert!(seen["by_type"]["YULU"].as_str().is_some(), "{seen}");
    assert!(
        seen["vendor"]
            .as_str()
            .unwrap_or_default()
            .contains("sunlight"),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn adbc_flight_sql_driver_queries_a_node() {
    let city = shared_city();
    let code: NodeCode = "140215".parse().unwrap();
    let node = NodeProcess::start(code.as_str(), &node_root(city.dir.path(), code));
    let seen = adbc_client(&node.addr, code).await;
    let rows = city.report.rows[&code][&Table::Disbursements];
    assert_sees(&seen, rows, rows);
}

#[tokio::test(flavor = "multi_thread")]
async fn adbc_flight_sql_driver_queries_the_city() {
    let city = shared_city();
    let running = start_city(city.dir.path(), &[]);
    let code: NodeCode = "140215".parse().unwrap();
    let seen = adbc_client(&running.coordinator.addr, code).await;
    let rows = city
        .report
        .rows
        .values()
        .map(|tables| tables.get(&Table::Disbursements).copied().unwrap_or(0))
        .sum();
    assert_sees(&seen, rows, city.report.rows[&code][&Table::Disbursements]);
}

/// An older client, which binds values as unions and runs the statement by the handle it
/// prepared, ignoring the one its bind is answered with, gets the answers of the values it
/// bound: the city keeps them for it.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_flight_sql_client_runs_the_handle_it_prepared_with_its_values() {
    let city = shared_city();
    let running = start_city(city.dir.path(), &[]);
    let code: NodeCode = "140215".parse().unwrap();
    let args = vec![
        running.coordinator.addr.clone(),
        TOKEN.to_string(),
        code.to_string(),
    ];
    let seen = client_saw("dbapi_client.py", args).await;
    let rows = city.report.rows[&code][&Table::Disbursements];
    assert_eq!(seen["county"].as_u64(), Some(rows as u64), "{seen}");
    let over = seen["county_over_literal"].as_u64().unwrap();
    assert!(0 < over && over < rows as u64, "{seen}");
    assert_eq!(seen["county_over"].as_u64(), Some(over), "{seen}");
    assert_eq!(seen["no_county"].as_u64(), Some(0), "{seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_option_asks_the_city_for_partial_results() {
    let city = shared_city();
    let mut running = start_city(city.dir.path(), &[]);
    let down: NodeCode = "140223".parse().unwrap();
    let at = running.nodes.iter().position(|(c, _)| *c == down).unwrap();
    running.nodes.remove(at).1.kill();

    // Grouped by county, each node holds back its own small groups.
    let grouped = "SELECT county_code, date_part('year', birth_date) AS y, count(*) \
                   FROM persons GROUP BY 1, 2";
    let args = vec![
        running.coordinator.addr.clone(),
        TOKEN.to_string(),
        grouped.to_string(),
    ];
    let seen = client_saw("adbc_session.py", args).await;

    // Without the option, the node that is down fails the query by name.
    let whole = seen["whole_error"].as_str().unwrap_or_default();
    assert!(whole.contains("140223"), "{seen}");
    // With it, the answer leaves that node's rows out.
    let rows: usize = city
        .report
        .rows
        .iter()
        .filter(|(code, _)| **code != down)
        .map(|(_, tables)| tables.get(&Table::Disbursements).copied().unwrap_or(0))
        .sum();
    assert_eq!(seen["partial"].as_u64(), Some(rows as u64), "{seen}");
    assert_eq!(seen["options"]["partial_results"], true, "{seen}");
    // The session tells what the headers told: the node missing, and no group held back.
    assert_eq!(
        seen["partial_notes"],
        serde_json::json!({"missing_nodes": [down.to_string()], "suppressed_groups": 0}),
    );
    // And of the next answer, the groups the nodes held back, as the city's own client
    // reads them from the headers.
    let mut client = SqlClient::connect(&running.coordinator.addr, TOKEN)
        .await
        .unwrap();
    client.allow_partial_results();
    let answer = client.query(grouped).await.unwrap();
    assert!(
        answer.suppressed_groups > 0,
        "no group of {grouped} is held back"
    );
    assert_eq!(
        seen["grouped_rows"].as_u64(),
        Some(answer.num_rows() as u64)
    );
    assert_eq!(
        seen["grouped_notes"],
        serde_json::json!({
            "missing_nodes": [down.to_string()],
            "suppressed_groups": answer.suppressed_groups,
        }),
    );
    assert_eq!(
        seen["refused_notes"],
        serde_json::json!({"missing_nodes": null, "suppressed_groups": null}),
    );
    assert!(
        seen["unknown_error"]
            .as_str()
            .unwrap_or_default()
            .contains("no_such_option"),
        "{seen}"
    );

    // The same with SQL alone: SET makes the session, SHOW reads it, and a SET of
    // anything else names what may be set.
    assert_eq!(
        seen["sql_shown_before"],
        serde_json::json!([["partial_results", "false"]])
    );
    assert_eq!(
        seen["sql_shown"],
        serde_json::json!([["partial_results", "true"]])
    );
    assert_eq!(seen["sql_partial"].as_u64(), Some(rows as u64), "{seen}");
    assert_eq!(
        seen["sql_missing"],
        serde_json::json!([["missing_nodes", down.to_string()]])
    );
    let error = seen["sql_set_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("batch_size") && error.contains("partial_results only"),
        "{seen}"
    );
}
