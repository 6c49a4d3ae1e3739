//! Federated SQL at the city over eleven real node processes, compared with one
//! DataFusion context over all the files.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;
use arrow::util::display::array_value_to_string;
use datafusion::prelude::SessionContext;
use sunlight_client::{QueryResult, SqlClient};

use crate::models::{approve_and_roll_out, model};
use crate::oracle::{city_context, count, strings};
use sunlight_datagen::node_root;
use sunlight_domain::{NodeCode, SubsidyStandard, default_standards};
use sunlight_flightsql::{MAX_NESTING, MAX_RELATIONS};

use crate::support::{
    CITY_TOKEN, RunningCity, ServiceProcess, TOKEN, Tapped, admin, copy_dir, shared_city, slow_tap,
    start_city, write_parquet,
};

const SUITE: &str = include_str!("../../queries/federated.sql");

fn queries() -> Vec<String> {
    SUITE
        .split("\n;\n")
        .map(|q| {
            q.lines()
                .filter(|l| !l.starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
                .trim()
                .to_string()
        })
        .filter(|q| !q.is_empty())
        .collect()
}

/// The rows as text, a cell's padding trimmed; sorted unless the query orders them.
pub fn rows(batches: &[RecordBatch], ordered: bool) -> Vec<String> {
    let text = arrow::util::pretty::pretty_format_batches(batches)
        .unwrap()
        .to_string();
    let mut rows: Vec<String> = text
        .lines()
        .skip(3)
        .filter(|l| !l.starts_with('+'))
        .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>().join("|"))
        .collect();
    if !ordered {
        rows.sort();
    }
    rows
}

/// The shared city running, one DataFusion context over its files, and a client of its
/// coordinator.
pub async fn city_and_oracle() -> (RunningCity, SessionContext, SqlClient) {
    let city = shared_city();
    let running = start_city(city.dir.path(), &[]);
    let oracle = city_context(city.dir.path()).await;
    let client = SqlClient::connect(&running.coordinator.addr, TOKEN)
        .await
        .unwrap();
    (running, oracle, client)
}

/// `sql`'s answer at the city and in `oracle`, and whether its rows come in order.
async fn asked_both(
    client: &mut SqlClient,
    oracle: &SessionContext,
    sql: &str,
) -> (QueryResult, Vec<RecordBatch>, bool) {
    let federated = client
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}\n{e}"));
    let central = oracle.sql(sql).await.unwrap().collect().await.unwrap();
    (federated, central, sql.contains("ORDER BY"))
}

/// Asserts that each of `queries` answers at the city as in `oracle`.
async fn answered_as_centrally(client: &mut SqlClient, oracle: &SessionContext, queries: &[&str]) {
    for sql in queries {
        let (federated, central, ordered) = asked_both(client, oracle, sql).await;
        assert_eq!(
            rows(&federated.batches, ordered),
            rows(&central, ordered),
            "{sql}"
        );
    }
}

/// EXPLAIN's physical plan of `sql`: the city's part, and the fragments from the first on.
async fn explained(client: &mut SqlClient, sql: &str) -> (String, String) {
    let text = printed(client, &format!("EXPLAIN {sql}")).await;
    let (_, physical) = text.split_once("physical_plan").unwrap_or_default();
    let (city, fragments) = physical.split_once("fragment:").unwrap_or_default();
    (city.to_string(), fragments.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn federated_queries_equal_centralized_datafusion() {
    let (_running, oracle, mut client) = city_and_oracle().await;
    let queries = queries();
    assert!(
        queries.len() >= 30,
        "the suite has {} queries",
        queries.len()
    );
    let mut wrong = Vec::new();
    for sql in &queries {
        let (federated, central, ordered) = asked_both(&mut client, &oracle, sql).await;
        assert!(federated.missing_nodes.is_empty());
        if rows(&federated.batches, ordered) != rows(&central, ordered)
            || federated.suppressed_groups > 0
        {
            wrong.push(format!(
                "{sql}\n  {} group(s) suppressed\n  federated: {:?}\n  oracle:    {:?}",
                federated.suppressed_groups,
                rows(&federated.batches, ordered),
                rows(&central, ordered)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// An estimate of distinct values that nodes protect (persons, birth dates, dates of the
/// rows a filter on amounts keeps), whose sketch they refuse to send, is answered with
/// their exact count, of the estimate's type; one of public values stays an estimate,
/// equal to the central one.
#[tokio::test(flavor = "multi_thread")]
async fn estimates_of_distinct_protected_values_are_their_counts() {
    let (_running, oracle, mut client) = city_and_oracle().await;
    for (estimate, exact) in [
        (
            "SELECT subsidy_type, approx_distinct(person_id) FILTER (WHERE amount > 300) \
             FROM disbursements GROUP BY 1 ORDER BY 1",
            "SELECT subsidy_type, CAST(count(DISTINCT person_id) FILTER (WHERE amount > 300) \
             AS BIGINT UNSIGNED) FROM disbursements GROUP BY 1 ORDER BY 1",
        ),
        (
            "SELECT county_code, gender, approx_distinct(birth_date) FROM persons \
             GROUP BY 1, 2 ORDER BY 1, 2",
            "SELECT county_code, gender, CAST(count(DISTINCT birth_date) AS BIGINT UNSIGNED) \
             FROM persons GROUP BY 1, 2 ORDER BY 1, 2",
        ),
        (
            "SELECT approx_distinct(d) FROM (SELECT birth_date AS d FROM persons \
             UNION ALL SELECT period FROM disbursements WHERE amount > 300) t",
            "SELECT CAST(count(DISTINCT d) AS BIGINT UNSIGNED) FROM (SELECT birth_date AS d \
             FROM persons UNION ALL SELECT period FROM disbursements WHERE amount > 300) t",
        ),
    ] {
        let federated = client.query(estimate).await.unwrap();
        let central = oracle.sql(exact).await.unwrap().collect().await.unwrap();
        assert_eq!(
            rows(&federated.batches, true),
            rows(&central, true),
            "{estimate}"
        );
    }
    let public = "SELECT subsidy_type, approx_distinct(township), approx_distinct(paid_on) \
                  FROM disbursements GROUP BY 1 ORDER BY 1";
    answered_as_centrally(&mut client, &oracle, &[public]).await;
}

/// A union of a public and a quasi-identifying column, which DataFusion plans with the
/// class of one side and of none, is answered.
#[tokio::test(flavor = "multi_thread")]
async fn a_union_of_columns_of_two_classes_is_answered() {
    let (_running, oracle, mut client) = city_and_oracle().await;
    let sql = "SELECT count(d) FROM (SELECT period AS d FROM disbursements UNION ALL \
               SELECT start_date FROM payroll) t";
    let answer = client.query(sql).await.unwrap();
    let counted = answer.batches[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0);
    let sides = count(&oracle, "SELECT count(period) FROM disbursements").await
        + count(&oracle, "SELECT count(start_date) FROM payroll").await;
    assert_eq!(counted, sides);
}

/// Unions are answered as centrally however they are planned: of an identifier and a
/// column of another class or nullability, which DataFusion casts to the type it has
/// (counted by tokens, whichever side it is on); of sides that keep `county_code`, which
/// it interleaves as split alike; of sides for different nodes, whose distinct count
/// every node of either side runs over both, in one form; and of a side for no node.
#[tokio::test(flavor = "multi_thread")]
async fn unions_of_any_classes_and_nodes_are_answered() {
    let (_running, oracle, mut client) = city_and_oracle().await;
    answered_as_centrally(
        &mut client,
        &oracle,
        &[
            "SELECT count(DISTINCT x) FROM (SELECT person_id AS x FROM persons UNION ALL \
         SELECT county_code FROM payroll) t",
            "SELECT count(DISTINCT x) FROM (SELECT county_code AS x FROM payroll UNION ALL \
         SELECT person_id FROM persons) t",
            "SELECT count(DISTINCT x) FROM (SELECT person_id AS x FROM payroll UNION ALL \
         SELECT account_no FROM disbursements WHERE account_no IS NOT NULL) t",
            "SELECT count(x) FROM (SELECT county_code AS x FROM disbursements UNION ALL \
         SELECT county_code FROM payroll WHERE end_date IS NULL) t",
            "SELECT count(DISTINCT d) FROM (SELECT period AS d FROM disbursements WHERE \
         county_code = '140212' UNION ALL SELECT birth_date FROM persons) t",
            "SELECT count(DISTINCT x), count(*) FROM (SELECT name AS x FROM persons \
         UNION ALL SELECT subsidy_type FROM disbursements WHERE county_code = '140215') t",
            "SELECT subsidy_type, sum(amount) FROM (SELECT subsidy_type, amount FROM disbursements \
         WHERE county_code = 'none' UNION ALL SELECT subsidy_type, amount FROM disbursements \
         WHERE county_code = '140215') t GROUP BY 1 ORDER BY 1",
        ],
    )
    .await;
}

/// Lists of distinct values across counties, which no node sends as an aggregate's state,
/// are formed at the city from the groups of the value, under a shared FILTER too, where a
/// group passing it nowhere keeps its row, and beside counts, sums and extremes; a value
/// held for too few persons refuses them.
#[tokio::test(flavor = "multi_thread")]
async fn lists_of_distinct_values_are_formed_from_their_groups() {
    let (_running, oracle, mut client) = city_and_oracle().await;
    answered_as_centrally(
        &mut client,
        &oracle,
        &[
            "SELECT county_code, array_agg(DISTINCT subsidy_type ORDER BY subsidy_type) \
             FROM disbursements GROUP BY 1 ORDER BY 1",
            "SELECT subsidy_type, string_agg(DISTINCT department, ',' ORDER BY department) \
             FILTER (WHERE amount > 300), array_agg(DISTINCT department ORDER BY department \
             DESC) FILTER (WHERE amount > 300) FROM disbursements GROUP BY 1 ORDER BY 1",
            "SELECT array_agg(DISTINCT level ORDER BY level) FROM disability_certs",
            // Beside counts, sums and extremes of the rows, which merge over the groups.
            "SELECT subsidy_type, array_agg(DISTINCT county_code ORDER BY county_code) FILTER \
             (WHERE amount > 300), count(*), sum(amount), min(period), max(amount) FROM \
             disbursements GROUP BY 1 ORDER BY 1",
            // Two lists by county, of two nodes: each part runs whole inside the nodes, and
            // the city joins the parts' groups.
            "SELECT county_code, subsidy_type, string_agg(DISTINCT department, ',' ORDER BY \
             department), array_agg(DISTINCT paid_on IS NULL), count(amount) FROM \
             disbursements WHERE county_code IN ('140212', '140221') GROUP BY 1, 2 ORDER BY 1, 2",
        ],
    )
    .await;
    let err = client
        .query("SELECT array_agg(DISTINCT birth_date ORDER BY birth_date) FROM persons")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused by rule min-group-size"), "{err}");
}

/// Joins with the standards on a condition without equal keys, the reference table on
/// either side and cross joins among them, run inside each node, built from its copy of
/// the table, and equal the central answers, as does a NOT IN over them.
#[tokio::test(flavor = "multi_thread")]
async fn joins_with_the_standards_without_equal_keys_run_at_the_nodes() {
    let (_running, oracle, mut client) = city_and_oracle().await;
    let above_cap = "SELECT s.subsidy_type, count(*), sum(d.amount) FROM subsidy_standards s \
                     JOIN disbursements d ON d.amount > s.cap * 2 GROUP BY 1 ORDER BY 1";
    answered_as_centrally(
        &mut client,
        &oracle,
        &[
            above_cap,
            "SELECT d.county_code, count(*) FROM disbursements d, subsidy_standards s \
         WHERE s.subsidy_type = 'DIBAO' AND d.amount > s.cap GROUP BY 1 ORDER BY 1",
            "SELECT d.subsidy_type, count(*), count(s.cap) FROM disbursements d LEFT JOIN \
         subsidy_standards s ON d.amount > s.cap AND s.subsidy_type = 'TEKUN' GROUP BY 1 \
         ORDER BY 1",
            "SELECT count(*) FROM disbursements d WHERE EXISTS (SELECT 1 FROM subsidy_standards s \
         WHERE d.amount > s.cap)",
            "SELECT count(*) FROM disbursements d CROSS JOIN subsidy_standards s \
         WHERE d.county_code = '140212'",
            "SELECT count(*), avg(d.amount) FROM disbursements d, (VALUES (500), (1000)) v(x) \
         WHERE d.amount > v.x",
            // Standards the query rules out, as the nodes are sent them: no rows.
            "SELECT count(*) FROM disbursements d WHERE d.amount > ALL (SELECT cap FROM \
             subsidy_standards WHERE false)",
            "SELECT d.county_code, count(*), count(s.cap) FROM disbursements d LEFT JOIN \
             (SELECT subsidy_type, cap FROM subsidy_standards WHERE 1 = 0) s \
             ON s.subsidy_type = d.subsidy_type GROUP BY 1 ORDER BY 1",
            // NOT IN over values that may be NULL: none passes where one is.
            "SELECT level, count(*) FROM disability_certs WHERE level NOT IN \
         (SELECT requires_cert_level FROM subsidy_standards) GROUP BY 1",
            "SELECT level, count(*) FROM disability_certs WHERE level NOT IN \
         (SELECT requires_cert_level FROM subsidy_standards WHERE requires_cert_level > 0) \
         GROUP BY 1 ORDER BY 1",
        ],
    )
    .await;
    let (city_part, fragment) = explained(&mut client, above_cap).await;
    assert!(
        fragment.contains("NestedLoopJoinExec")
            && fragment.contains("TableLeafExec: table=subsidy_standards")
            && !city_part.contains("Join"),
        "{city_part}\n{fragment}"
    );
}

/// Queries that DataFusion alone answers other than SQL says answer as SQL says, at the
/// city and at a node; the oracle runs them as written otherwise. A comparison with `ANY`
/// or `ALL` of a subquery that reads, unaliased, the table its left side reads answers as
/// with the subquery aliased (DataFusion alone answers it with no rows or every row:
/// apache/datafusion#25258), and `SIMILAR TO` matches the whole text with `LIKE`'s
/// wildcards (DataFusion alone matches a regular expression anywhere in it).
#[tokio::test(flavor = "multi_thread")]
async fn what_datafusion_alone_answers_wrong_answers_as_sql_says() {
    let (running, oracle, mut client) = city_and_oracle().await;
    for (unaliased, aliased) in [
        (
            "SELECT county_code, count(*) FROM disbursements WHERE township SIMILAR TO '%乡' \
             GROUP BY 1 ORDER BY 1",
            "SELECT county_code, count(*) FROM disbursements WHERE township LIKE '%乡' \
             GROUP BY 1 ORDER BY 1",
        ),
        (
            "SELECT subsidy_type, count(*) FROM disbursements \
             WHERE village NOT SIMILAR TO '(上|下)%' GROUP BY 1 ORDER BY 1",
            "SELECT subsidy_type, count(*) FROM disbursements \
             WHERE NOT (village LIKE '上%' OR village LIKE '下%') GROUP BY 1 ORDER BY 1",
        ),
        (
            "SELECT count(*) FROM disbursements WHERE township = ALL \
             (SELECT DISTINCT township FROM disbursements)",
            "SELECT count(*) FROM disbursements d WHERE d.township = ALL \
             (SELECT DISTINCT e.township FROM disbursements e)",
        ),
        (
            "SELECT county_code, count(*) FROM disbursements WHERE subsidy_type <> ANY \
             (SELECT subsidy_type FROM disbursements WHERE county_code = '140212' GROUP BY 1) \
             GROUP BY 1 ORDER BY 1",
            "SELECT d.county_code, count(*) FROM disbursements d WHERE d.subsidy_type <> ANY \
             (SELECT e.subsidy_type FROM disbursements e WHERE e.county_code = '140212' GROUP BY 1) \
             GROUP BY 1 ORDER BY 1",
        ),
        (
            "SELECT county_code, count(*) FROM disbursements WHERE period >= ALL \
             (SELECT DISTINCT period FROM disbursements WHERE subsidy_type = 'YULU') \
             GROUP BY 1 ORDER BY 1",
            "SELECT d.county_code, count(*) FROM disbursements d WHERE d.period >= ALL \
             (SELECT DISTINCT e.period FROM disbursements e WHERE e.subsidy_type = 'YULU') \
             GROUP BY 1 ORDER BY 1",
        ),
        (
            "SELECT subsidy_type, count(*) FROM disbursements WHERE period > ANY \
             (SELECT DISTINCT period FROM disbursements WHERE subsidy_type = 'YULU') \
             GROUP BY 1 ORDER BY 1",
            "SELECT d.subsidy_type, count(*) FROM disbursements d WHERE d.period > ANY \
             (SELECT DISTINCT e.period FROM disbursements e WHERE e.subsidy_type = 'YULU') \
             GROUP BY 1 ORDER BY 1",
        ),
    ] {
        answered_as(&mut client, &oracle, unaliased, aliased).await;
    }
    // A county analyst's rows, at the node.
    let (code, node) = &running.nodes[4];
    let mut analyst = SqlClient::connect(&node.addr, TOKEN).await.unwrap();
    let here = format!("county_code = '{}'", code.as_str());
    answered_as(
        &mut analyst,
        &oracle,
        "SELECT count(*) FROM disbursements WHERE amount > ALL \
         (SELECT DISTINCT amount FROM disbursements WHERE subsidy_type = 'DIBAO')",
        &format!(
            "SELECT count(*) FROM disbursements d WHERE d.{here} AND d.amount > ALL \
             (SELECT DISTINCT e.amount FROM disbursements e WHERE e.{here} AND e.subsidy_type = 'DIBAO')"
        ),
    )
    .await;
}

/// Asserts that `sql` answers at `asker` as `central` does in `oracle`.
async fn answered_as(asker: &mut SqlClient, oracle: &SessionContext, sql: &str, central: &str) {
    let answer = asker
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}\n{e}"));
    let expected = oracle.sql(central).await.unwrap().collect().await.unwrap();
    assert_eq!(rows(&answer.batches, true), rows(&expected, true), "{sql}");
}

/// Joins that keep or test the standards (an outer join, EXISTS, NOT EXISTS, EXCEPT) run
/// as the inner join at the nodes, and the standards it matched anywhere, formed at the
/// city: each standard counts once, as centrally, rather than once for every node.
#[tokio::test(flavor = "multi_thread")]
async fn joins_that_keep_the_standards_count_each_standard_once() {
    let (_running, oracle, mut client) = city_and_oracle().await;
    let kept = "SELECT s.subsidy_type, count(d.payment_id), sum(d.amount), count(*) FROM \
                subsidy_standards s LEFT JOIN disbursements d ON d.subsidy_type = s.subsidy_type \
                AND d.amount > 2500 GROUP BY 1 ORDER BY 1";
    answered_as_centrally(
        &mut client,
        &oracle,
        &[
            kept,
            "SELECT s.department, count(d.payment_id), avg(d.amount) FROM disbursements d \
             RIGHT JOIN subsidy_standards s ON d.subsidy_type = s.subsidy_type \
             AND d.county_code = '140212' GROUP BY 1 ORDER BY 1",
            "SELECT s.subsidy_type FROM subsidy_standards s LEFT JOIN disbursements d \
             ON d.subsidy_type = s.subsidy_type AND d.amount > 2500 WHERE d.payment_id IS NULL \
             ORDER BY 1",
            // Both sides' subsidy_type, of which the figures read one.
            "SELECT s.subsidy_type, count(*) FROM disbursements d RIGHT JOIN subsidy_standards s \
             ON d.subsidy_type = s.subsidy_type AND d.county_code IN ('140212', '140213') \
             GROUP BY 1 HAVING count(d.payment_id) > 10 ORDER BY 1",
            "SELECT subsidy_type, cap FROM subsidy_standards s WHERE NOT EXISTS (SELECT 1 FROM \
             disbursements d WHERE d.subsidy_type = s.subsidy_type AND d.amount > s.cap * 2) \
             ORDER BY 1",
            "SELECT subsidy_type FROM subsidy_standards s WHERE s.min_age IS NULL OR EXISTS \
             (SELECT 1 FROM persons p WHERE p.birth_date < DATE '1950-01-01' \
             AND s.min_age IS NOT NULL) ORDER BY 1",
            "SELECT department FROM subsidy_standards EXCEPT SELECT township FROM persons \
             ORDER BY 1",
            // The payments a join keeps joined with the persons paid, in each county.
            "SELECT s.subsidy_type, count(p.person_id), count(d.payment_id) FROM \
             subsidy_standards s LEFT JOIN disbursements d ON d.subsidy_type = s.subsidy_type \
             AND d.amount > 1500 LEFT JOIN persons p ON p.person_id = d.person_id \
             AND p.county_code = d.county_code AND p.gender = 'F' GROUP BY 1 ORDER BY 1",
            "SELECT s.department, count(d.payment_id), sum(d.amount) FROM subsidy_standards s \
             LEFT JOIN disbursements d ON d.subsidy_type = s.subsidy_type AND d.amount > 1200 \
             JOIN persons p ON p.person_id = d.person_id AND p.county_code = d.county_code \
             WHERE p.gender = 'M' GROUP BY 1 ORDER BY 1",
            "SELECT s.subsidy_type, count(p.person_id) FROM disbursements d RIGHT JOIN \
             subsidy_standards s ON d.subsidy_type = s.subsidy_type AND d.amount > 1500 \
             LEFT JOIN persons p ON p.person_id = d.person_id \
             AND p.county_code = d.county_code AND p.gender = 'F' GROUP BY 1 ORDER BY 1",
            // Distinct counts of the payments' columns, which the unmatched standards have
            // none of.
            "SELECT s.department, count(DISTINCT d.person_id), count(DISTINCT d.village), \
             count(d.payment_id) FROM subsidy_standards s LEFT JOIN disbursements d \
             ON d.subsidy_type = s.subsidy_type AND d.amount > 1500 GROUP BY 1 ORDER BY 1",
        ],
    )
    .await;
    // The nodes' inner join and the city's unmatched standards, united at the city.
    let (city_part, rest) = explained(&mut client, kept).await;
    let (fragment, city_side) = rest.split_once("ReferenceExec").unwrap_or_default();
    assert!(
        city_part.contains("UnionExec")
            && fragment.contains("join_type=Inner")
            && fragment.contains("TableLeafExec: table=subsidy_standards")
            && fragment.contains("join_type=LeftAnti")
            && city_side.contains("__matched_"),
        "{city_part}\n{rest}"
    );
}

/// A series the query generates (years, months) joins the nodes' rows inside each node, as
/// the standards do, written out in the fragment: kept or tested, each of its rows counts
/// once, as centrally. A series too long to send is joined nowhere, and the refusal says
/// how long one may be.
#[tokio::test(flavor = "multi_thread")]
async fn series_the_query_generates_join_at_the_nodes() {
    let (_running, oracle, mut client) = city_and_oracle().await;
    let by_year = "SELECT y.value, count(d.payment_id), sum(d.amount) FROM \
                   generate_series(2019, 2025) y LEFT JOIN disbursements d \
                   ON date_part('year', d.period) = y.value GROUP BY 1 ORDER BY 1";
    answered_as_centrally(
        &mut client,
        &oracle,
        &[
            by_year,
            "SELECT m.value, count(*) FROM generate_series(DATE '2022-01-01', \
             DATE '2022-12-01', INTERVAL '1 month') m JOIN disbursements d \
             ON d.period = m.value GROUP BY 1 ORDER BY 1",
            "SELECT m.value FROM generate_series(DATE '2019-01-01', DATE '2024-12-01', \
             INTERVAL '1 month') m WHERE NOT EXISTS (SELECT 1 FROM disbursements d \
             WHERE d.period = m.value) ORDER BY 1",
            "SELECT r.value, count(p.person_id) FROM range(1900, 2030, 10) r LEFT JOIN persons p \
             ON date_part('year', p.birth_date) >= r.value \
             AND date_part('year', p.birth_date) < r.value + 10 GROUP BY 1 ORDER BY 1",
        ],
    )
    .await;
    let (_, fragment) = explained(&mut client, by_year).await;
    assert!(
        fragment.contains("DataSourceExec: partitions=1") && !fragment.contains("LazyMemoryExec"),
        "{fragment}"
    );
    let err = client
        .query(
            "SELECT count(*) FROM range(1, 200000) r JOIN disbursements d \
             ON CAST(d.amount AS BIGINT) = r.value",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a series it generates of up to 100000 rows"),
        "{err}"
    );
}

/// A join on `county_code` whose one side a filter on `county_code` left to fewer nodes
/// (in an outer join's condition, which DataFusion does not carry to the other side) runs
/// inside the other side's nodes too, where the filter finds none of the first side's
/// rows, and equals the central answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_join_by_county_of_sides_for_different_nodes_runs_at_the_nodes() {
    let (_running, oracle, mut client) = city_and_oracle().await;
    let kept = "SELECT y.county_code, count(d.payment_id), count(*) FROM payroll y LEFT JOIN \
                disbursements d ON y.person_id = d.person_id AND y.county_code = d.county_code \
                AND d.county_code IN ('140212', '140213') GROUP BY 1 ORDER BY 1";
    answered_as_centrally(
        &mut client,
        &oracle,
        &[
            kept,
            "SELECT d.county_code, count(*) FROM (SELECT * FROM disbursements WHERE \
             county_code IN ('140212', '140213')) d RIGHT JOIN payroll y \
             ON y.person_id = d.person_id AND y.county_code = d.county_code GROUP BY 1 ORDER BY 1",
        ],
    )
    .await;
    let (city_part, fragment) = explained(&mut client, kept).await;
    assert!(
        !city_part.contains("HashJoinExec") && fragment.contains("join_type=Left"),
        "{city_part}\n{fragment}"
    );
}

/// A join of the nodes' rows with groups aggregated across counties (above the type's
/// average, a correlated subquery by type, a total) runs inside each node, over the
/// groups the city formed first and sent in its fragment, and equals the central answer.
/// Groups one node held back refuse the query, rather than join the rest; a join that
/// keeps the groups counts each of them once.
#[tokio::test(flavor = "multi_thread")]
async fn joins_with_groups_across_counties_run_at_the_nodes() {
    let (_running, oracle, mut client) = city_and_oracle().await;
    let above_average = "SELECT d.subsidy_type, count(*), sum(d.amount) FROM disbursements d \
                         JOIN (SELECT subsidy_type, avg(amount) AS a FROM disbursements \
                         GROUP BY 1) x ON x.subsidy_type = d.subsidy_type AND d.amount >= x.a \
                         GROUP BY 1 ORDER BY 1";
    answered_as_centrally(
        &mut client,
        &oracle,
        &[
            above_average,
            "SELECT d.county_code, count(*) FROM disbursements d WHERE d.amount < (SELECT \
         avg(e.amount) FROM disbursements e WHERE e.subsidy_type = d.subsidy_type) \
         GROUP BY 1 ORDER BY 1",
            "SELECT x.subsidy_type, x.m, count(*) FROM (SELECT subsidy_type, max(amount) AS m \
         FROM disbursements GROUP BY 1) x JOIN disbursements d \
         ON d.subsidy_type = x.subsidy_type AND d.amount < x.m GROUP BY 1, 2 ORDER BY 1",
            "SELECT d.county_code, count(*), sum(d.amount) FROM disbursements d JOIN \
         (SELECT avg(amount) AS a FROM disbursements) x ON d.amount > x.a GROUP BY 1 ORDER BY 1",
            "SELECT d.county_code, count(*), count(x.a) FROM disbursements d LEFT JOIN \
         (SELECT subsidy_type, avg(amount) AS a FROM disbursements WHERE amount < 0 GROUP BY 1) \
         x ON x.subsidy_type = d.subsidy_type GROUP BY 1 ORDER BY 1",
        ],
    )
    .await;
    let (city_part, fragment) = explained(&mut client, above_average).await;
    assert!(
        city_part.contains("ScalarSubqueryExec")
            && !city_part.contains("Join")
            && fragment.contains("UnnestExec"),
        "{city_part}\n{fragment}"
    );
    let err = client
        .query(
            "SELECT count(*) FROM disbursements d JOIN (SELECT township, subsidy_type, period, \
             count(*) AS n FROM disbursements GROUP BY 1, 2, 3) x ON x.township = d.township \
             AND x.subsidy_type = d.subsidy_type AND x.period = d.period AND x.n > 1",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("held back at the nodes") && err.contains("the groups of a subquery joined"),
        "{err}"
    );
    // Groups the join keeps, matched or not, or tests on more than equal keys: the nodes
    // join them, and the city keeps those matched nowhere, or those matched.
    answered_as_centrally(
        &mut client,
        &oracle,
        &[
            "SELECT x.subsidy_type, count(d.payment_id), sum(d.amount) FROM (SELECT \
           subsidy_type, avg(amount) AS a FROM disbursements GROUP BY 1) x LEFT JOIN \
           disbursements d ON d.subsidy_type = x.subsidy_type AND d.amount > 3 * x.a \
           GROUP BY 1 ORDER BY 1",
            "SELECT x.subsidy_type, x.a FROM (SELECT subsidy_type, avg(amount) AS a FROM \
           disbursements GROUP BY 1) x WHERE EXISTS (SELECT 1 FROM disbursements d \
           WHERE d.subsidy_type = x.subsidy_type AND d.amount > 4 * x.a) ORDER BY 1",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_shows_each_fragment_and_analyze_counts_bytes() {
    let city = shared_city();
    let running = start_city(city.dir.path(), &[]);
    let mut client = SqlClient::connect(&running.coordinator.addr, TOKEN)
        .await
        .unwrap();
    let sql = "SELECT county_code, count(*) FROM disbursements WHERE subsidy_type = 'DIBAO' GROUP BY county_code";
    let text = printed(&mut client, &format!("EXPLAIN {sql}")).await;
    assert!(
        text.contains("NodeFragmentExec: nodes=[140200, 140212"),
        "{text}"
    );
    let (city_part, fragment) = text.split_once("fragment:").unwrap_or_default();
    assert!(
        fragment.contains("AggregateExec: mode=SinglePartitioned")
            && !city_part.contains("AggregateExec"),
        "an aggregate by county_code runs whole on the nodes:\n{text}"
    );
    assert!(
        text.contains("TableLeafExec: table=disbursements"),
        "{text}"
    );
    let tree = printed(&mut client, &format!("EXPLAIN FORMAT TREE {sql}")).await;
    assert!(
        tree.contains("NodeFragmentExec")
            && tree.contains("fragment:")
            && tree.contains("AggregateExec")
            && tree.contains("TableLeafExec"),
        "the tree names the fragment's operators:\n{tree}"
    );
    // The box names the operators, not their text: DataFusion 55 cannot split a long
    // text of Chinese characters into a box's lines.
    let township = "古湾乡".repeat(8);
    let tree = printed(
        &mut client,
        &format!(
            "EXPLAIN FORMAT TREE SELECT count(*) FROM disbursements WHERE township = '{township}'"
        ),
    )
    .await;
    assert!(tree.contains("FilterExec"), "{tree}");

    for (filter, nodes) in [
        ("county_code = '140215'", "nodes=[140215]"),
        ("county_code = 140215", "nodes=[140215]"),
        (
            "county_code BETWEEN '140213' AND '140215'",
            "nodes=[140213, 140214, 140215]",
        ),
        (
            "county_code LIKE '14022%'",
            "nodes=[140221, 140222, 140223, 140224, 140225, 140226]",
        ),
        (
            "(county_code LIKE '14022%' AND county_code < '140224') OR CAST(county_code AS INT) = 140213",
            "nodes=[140213, 140221, 140222, 140223]",
        ),
        (
            "county_code BETWEEN '140213' AND '140215' AND county_code NOT IN ('140214')",
            "nodes=[140213, 140215]",
        ),
    ] {
        let explain = format!("EXPLAIN SELECT count(*) FROM disbursements WHERE {filter}");
        let text = printed(&mut client, &explain).await;
        assert!(text.contains(nodes), "{filter} prunes nodes:\n{text}");
    }

    let text = printed(&mut client, &format!("EXPLAIN ANALYZE {sql}")).await;
    assert!(
        text.contains("bytes_from_140215=")
            && text.contains("rows_from_140215=")
            && text.contains("time_from_140215=")
            && text.contains("groups_held_back="),
        "{text}"
    );
    // A count is one row from each node, framed with no more padding than Arrow allows.
    let moved = bytes_moved(&mut client, "SELECT count(*) FROM disbursements").await;
    assert!(moved <= 11.0 * 160.0, "{moved} B for a count over 11 nodes");

    // EXCEPT reads the groups of its first side twice, as rows and inside the groups the
    // second matched with them: each node is asked for them once, by whichever copy asks
    // first, and sends them once.
    let except = "SELECT subsidy_type FROM disbursements EXCEPT SELECT subsidy_type \
                  FROM disbursements WHERE department = '教育' ORDER BY 1";
    let text = printed(&mut client, &format!("EXPLAIN ANALYZE {except}")).await;
    let copies: Vec<Vec<(String, f64)>> = text
        .split("NodeFragmentExec:")
        .filter(|fragment| fragment.contains("answers shared with its copies"))
        .map(bytes_by_node)
        .collect();
    assert_eq!(copies.len(), 2, "{text}");
    let sent = |node: &str| {
        copies
            .iter()
            .filter(|copy| copy.iter().any(|(n, bytes)| n == node && *bytes > 0.0))
            .count()
    };
    let nodes: Vec<&String> = copies[0].iter().map(|(node, _)| node).collect();
    assert!(
        nodes.len() == 11
            && nodes.iter().all(|node| sent(node) <= 1)
            && nodes.iter().filter(|node| sent(node) == 1).count() >= 10,
        "{copies:?}\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_is_down_is_named_or_listed() {
    let city = shared_city();
    let mut running = start_city(city.dir.path(), &[]);
    let (code, node) = running.nodes.remove(4);
    assert!(node.terminate());
    let mut client = SqlClient::connect(&running.coordinator.addr, TOKEN)
        .await
        .unwrap();
    let sql = "SELECT county_code, count(*) FROM disbursements GROUP BY county_code ORDER BY 1";
    let started = std::time::Instant::now();
    let err = client.query(sql).await.unwrap_err().to_string();
    assert!(err.contains(&format!("node {code}")), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "failing took {:?}",
        started.elapsed()
    );

    client.allow_partial_results();
    let partial = client.query(sql).await.unwrap();
    assert_eq!(partial.missing_nodes, vec![code.to_string()]);
    // Why, without the advice to ask for partial results, which this answer is.
    let reason = &partial.missing_reasons[code.as_str()];
    assert!(
        reason.starts_with(&format!("node {code} (")) && reason.contains("is unavailable: "),
        "{reason}"
    );
    assert!(!reason.contains("partial results"), "{reason}");
    let text = arrow::util::pretty::pretty_format_batches(&partial.batches)
        .unwrap()
        .to_string();
    assert!(
        !text.contains(code.as_str()) && text.contains("140226"),
        "{text}"
    );
    // A fragment the plan holds twice, whose copies share the nodes' answers, leaves the
    // node out of both.
    let except = client
        .query(
            "SELECT subsidy_type FROM disbursements EXCEPT SELECT subsidy_type FROM \
             disbursements WHERE department = '教育' ORDER BY 1",
        )
        .await
        .unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&except.batches)
        .unwrap()
        .to_string();
    assert_eq!(except.missing_nodes, vec![code.to_string()], "{text}");
    assert!(text.contains("GENGDI") && !text.contains("YULU"), "{text}");
}

/// A node that refuses one fragment of a partial answer and answers another is left out
/// of the whole answer, which is then the answer of the other nodes, whichever fragment
/// the city asks first.
#[tokio::test(flavor = "multi_thread")]
async fn a_partial_answer_leaves_out_a_node_that_failed_part_of_it() {
    let city = shared_city();
    let (whole, part): (NodeCode, NodeCode) =
        ("140215".parse().unwrap(), "140221".parse().unwrap());
    // 140221 serves its disbursements, and refuses its payroll, which holds a broken file.
    let broken = tempfile::tempdir().unwrap();
    copy_dir(&node_root(city.dir.path(), part), broken.path());
    std::fs::write(
        broken.path().join("payroll/broken.parquet"),
        b"PAR1 not parquet",
    )
    .unwrap();
    let nodes = [
        ServiceProcess::start(whole.as_str(), &node_root(city.dir.path(), whole)),
        ServiceProcess::start(part.as_str(), broken.path()),
    ];
    let addrs = [whole, part].map(|c| c.to_string());
    let addrs: Vec<_> = addrs
        .into_iter()
        .zip(nodes.iter().map(|n| n.addr.clone()))
        .collect();
    let coordinator = ServiceProcess::coordinator(&addrs, &[]);
    let mut client = SqlClient::connect(&coordinator.addr, TOKEN).await.unwrap();
    let counts = |answer: &QueryResult| -> Vec<i64> {
        let batch = &answer.batches[0];
        batch
            .columns()
            .iter()
            .map(|c| c.as_primitive::<Int64Type>().value(0))
            .collect()
    };
    let alone = client
        .query(&format!(
            "SELECT (SELECT count(*) FROM disbursements WHERE county_code = '{whole}') AS d, \
             (SELECT count(*) FROM payroll WHERE county_code = '{whole}') AS p"
        ))
        .await
        .unwrap();
    let alone = counts(&alone);

    client.allow_partial_results();
    for (sql, order) in [
        (
            "SELECT (SELECT count(*) FROM disbursements) AS d, (SELECT count(*) FROM payroll) AS p",
            [0, 1],
        ),
        (
            "SELECT (SELECT count(*) FROM payroll) AS p, (SELECT count(*) FROM disbursements) AS d",
            [1, 0],
        ),
    ] {
        let partial = client.query(sql).await.unwrap();
        assert_eq!(partial.missing_nodes, vec![part.to_string()], "{sql}");
        assert_eq!(counts(&partial), order.map(|i| alone[i]), "{sql}");
        let reason = &partial.missing_reasons[part.as_str()];
        assert!(
            reason.contains("refused the fragment")
                && reason.contains("table payroll is not served by this node")
                && reason.contains("broken.parquet"),
            "{reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_past_the_deadline_is_named_or_listed() {
    let city = shared_city();
    let fast: Vec<_> = ["140215", "140221"]
        .iter()
        .map(|c| {
            (
                c.to_string(),
                ServiceProcess::start(c, &node_root(city.dir.path(), c.parse().unwrap())),
            )
        })
        .collect();
    let sql = "SELECT county_code, count(*) FROM disbursements GROUP BY county_code ORDER BY 1";
    // The fast node numbers its persons on its first query, which on a busy machine may
    // take longer than the deadline below: that first query goes through a patient city.
    let first = &fast[0];
    let patient = ServiceProcess::coordinator(&[(first.0.clone(), first.1.addr.clone())], &[]);
    SqlClient::connect(&patient.addr, TOKEN)
        .await
        .unwrap()
        .query(sql)
        .await
        .unwrap();
    // 140221 answers, but only after the coordinator's deadline.
    let slow = slow_tap(&fast[1].1.addr, Duration::from_millis(3_000)).await;
    let addrs = vec![
        (fast[0].0.clone(), fast[0].1.addr.clone()),
        (fast[1].0.clone(), slow.addr.clone()),
    ];
    let coordinator = ServiceProcess::coordinator(&addrs, &["--fragment-timeout-ms", "1000"]);
    let mut client = SqlClient::connect(&coordinator.addr, TOKEN).await.unwrap();
    let started = std::time::Instant::now();
    let err = client.query(sql).await.unwrap_err().to_string();
    assert!(
        err.contains("node 140221") && err.contains("did not answer within"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failing took {:?}",
        started.elapsed()
    );
    client.allow_partial_results();
    let partial = client.query(sql).await.unwrap();
    assert_eq!(partial.missing_nodes, vec!["140221".to_string()]);
    assert_eq!(partial.num_rows(), 1);

    // The deadline counts from the run: a client that asks for the schema and runs the
    // statement later than the deadline still has its whole time.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", coordinator.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    raw.set_token(TOKEN.to_string());
    let fast_only = format!(
        "SELECT county_code, count(*) FROM disbursements WHERE county_code = '{}' GROUP BY 1",
        first.0
    );
    let info = raw.execute(fast_only, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<RecordBatch> =
        futures::TryStreamExt::try_collect(raw.do_get(ticket).await.unwrap())
            .await
            .unwrap();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
}

/// The CPU time `pid` has used so far, in clock ticks (Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Each person's payments joined with themselves three times over: many minutes of work
/// for a node, which emits many batches for each batch it reads.
const ENDLESS: &str = "SELECT d.subsidy_type, count(*) FROM disbursements d \
    JOIN disbursements e ON e.county_code = d.county_code AND e.person_id = d.person_id \
    JOIN disbursements f ON f.county_code = d.county_code AND f.person_id = d.person_id \
    JOIN disbursements g ON g.county_code = d.county_code AND g.person_id = d.person_id \
    GROUP BY 1";

/// Waits until `node` spends half a second with (nearly) no CPU, failing after 15 s.
async fn falls_quiet(node: &ServiceProcess) {
    let given_up = std::time::Instant::now();
    loop {
        let before = cpu_ticks(node.pid());
        tokio::time::sleep(Duration::from_millis(500)).await;
        if cpu_ticks(node.pid()) - before <= 5 {
            return;
        }
        assert!(
            given_up.elapsed() < Duration::from_secs(15),
            "the node still runs the fragment {:?} after the city gave up",
            given_up.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fragment_the_city_gives_up_on_stops_at_its_node() {
    let city = shared_city();
    let node = ServiceProcess::start(
        "140215",
        &node_root(city.dir.path(), "140215".parse().unwrap()),
    );
    let nodes = [("140215".to_string(), node.addr.clone())];

    // The city gives up at its deadline...
    let hasty = ServiceProcess::coordinator(&nodes, &["--fragment-timeout-ms", "1500"]);
    let mut client = SqlClient::connect(&hasty.addr, TOKEN).await.unwrap();
    let err = client.query(ENDLESS).await.unwrap_err().to_string();
    assert!(err.contains("did not answer within"), "{err}");
    falls_quiet(&node).await;

    // ...or when its client goes away, long before its deadline of 30 s.
    let patient = ServiceProcess::coordinator(&nodes, &[]);
    let mut client = SqlClient::connect(&patient.addr, TOKEN).await.unwrap();
    let abandoned = tokio::time::timeout(Duration::from_secs(2), client.query(ENDLESS)).await;
    assert!(abandoned.is_err(), "{abandoned:?}");
    drop(client);
    falls_quiet(&node).await;

    let mut client = SqlClient::connect(&patient.addr, TOKEN).await.unwrap();
    let answer = client
        .query("SELECT count(*) FROM disbursements")
        .await
        .unwrap();
    assert_eq!(answer.num_rows(), 1);
}

/// Node 140215 of the shared city, started with `extra` flags, a city of it alone, and a
/// client of that city.
async fn alone(extra: &[&str]) -> (ServiceProcess, ServiceProcess, SqlClient) {
    let root = node_root(shared_city().dir.path(), "140215".parse().unwrap());
    let node = ServiceProcess::start_with("140215", &root, extra);
    let coordinator = ServiceProcess::coordinator(&[("140215".into(), node.addr.clone())], &[]);
    let client = SqlClient::connect(&coordinator.addr, TOKEN).await.unwrap();
    (node, coordinator, client)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_city_past_its_memory_limit_fails_the_query_and_serves_on() {
    let city = shared_city();
    let running = start_city(city.dir.path(), &["--memory-limit-mb", "1"]);
    let mut client = SqlClient::connect(&running.coordinator.addr, TOKEN)
        .await
        .unwrap();
    // The nodes send the distinct payment ids, every payment's, for the city to count.
    let err = client
        .query("SELECT count(DISTINCT payment_id) FROM disbursements")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the city's queries may hold 1 MiB at once")
            && err.contains("Resources exhausted"),
        "{err}"
    );
    // A query whose merge fits runs, and answers as a city without a limit does.
    let sql = "SELECT county_code, count(*), sum(amount) FROM disbursements GROUP BY 1 ORDER BY 1";
    let limited = client.query(sql).await.unwrap();
    let unlimited = start_city(city.dir.path(), &[]);
    let mut other = SqlClient::connect(&unlimited.coordinator.addr, TOKEN)
        .await
        .unwrap();
    let expected = other.query(sql).await.unwrap();
    assert_eq!(rows(&limited.batches, true), rows(&expected.batches, true));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_past_its_memory_limit_fails_the_query_by_name_and_serves_on() {
    let (node, _city, mut client) = alone(&["--memory-limit-mb", "16"]).await;
    // A count of distinct values keeps them all in memory, here millions of pairs of
    // payments in one village.
    let err = client
        .query(
            "SELECT count(DISTINCT a.payment_id || b.payment_id) FROM disbursements a \
             JOIN disbursements b ON b.county_code = a.county_code AND b.village = a.village",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("node 140215") && err.contains("Resources exhausted"),
        "{err}"
    );
    // Once the failed query's other partitions have stopped, queries within the limit
    // run: the node serves on.
    falls_quiet(&node).await;
    let sql = "SELECT village, count(*) FROM disbursements GROUP BY 1 ORDER BY 1";
    let villages = client.query(sql).await.unwrap();
    let (_node, _city, mut unlimited) = alone(&[]).await;
    let expected = unlimited.query(sql).await.unwrap();
    assert_eq!(rows(&villages.batches, true), rows(&expected.batches, true));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_queries_at_the_city_get_clear_errors() {
    let city = shared_city();
    let running = start_city(city.dir.path(), &[]);
    let mut client = SqlClient::connect(&running.coordinator.addr, TOKEN)
        .await
        .unwrap();
    for (sql, mentions) in [
        ("SELECT * FROM paymentz", "paymentz"),
        (
            "SELEC 1",
            "SQL error: Expected: an SQL statement, found: SELEC at Line: 1, Column: 1",
        ),
        ("DROP TABLE persons", "DDL"),
        // A clause DataFusion would pass over, answering over every row.
        (
            "SELECT subsidy_type, count(*) FROM disbursements TABLESAMPLE (10 PERCENT) \
             GROUP BY 1",
            "the statement samples disbursements, which this server does not do",
        ),
        (
            "SELECT count(*) FROM disbursements WHERE subsidy_type = $1",
            "InvalidArgument): Error during planning: the statement has placeholder(s) $1 and \
             no values were bound",
        ),
        (
            "SELECT subsidy_type, median(amount) FROM disbursements GROUP BY 1",
            "refused by rule quasi-identifier: median over groups that span counties would \
             need the values themselves at the city: its partial state is the values. Group \
             by county_code, in every grouping set",
        ),
        // A function the nodes do not run, over single rows: refused by the city, which
        // names no node, since every node would refuse it alike.
        (
            "SELECT county_code, count(*) FROM disbursements WHERE md5(township) <> '' \
             GROUP BY 1",
            "refused the request (PermissionDenied): a node would refuse this query's \
             fragment: function md5 is not allowed in a fragment",
        ),
        // A list of values in the order of another: the nodes never send the values, and
        // the city says which lists it forms itself.
        (
            "SELECT string_agg(DISTINCT subsidy_type, ',' ORDER BY township) \
             FROM disbursements",
            "aggregate string_agg is not allowed in a fragment",
        ),
        // A bitwise figure: rows that leave it unchanged need not be NULL or zero, so
        // the persons behind it cannot be counted.
        (
            "SELECT category, bit_and(level) FROM disability_certs GROUP BY 1",
            "aggregate bit_and is not allowed in a fragment: disclosure control counts the \
             persons behind a figure by the rows whose value is not NULL or zero",
        ),
        (
            "SELECT array_agg(township) FROM disbursements",
            "The city forms lists of distinct values itself (array_agg(DISTINCT x), \
             string_agg(DISTINCT x, ','), ordered by x if at all), beside any aggregate the \
             nodes compute",
        ),
        // A distinct count of a value the city has for the standards the nodes did not
        // match: the nodes' states of it would have to merge with the city's.
        (
            "SELECT s.subsidy_type, count(DISTINCT coalesce(d.village, '-')) FROM \
             subsidy_standards s LEFT JOIN disbursements d ON s.subsidy_type = d.subsidy_type \
             GROUP BY 1",
            "under a distinct count only of the other table's columns as they are; to count \
             distinct values of more for every standard, join subsidy_standards to a \
             subquery that aggregates the node table by subsidy_type",
        ),
        // A column only named county_code does not keep a join within each node.
        (
            "SELECT count(*) FROM disbursements d JOIN (SELECT '140215' AS county_code, gender \
             FROM persons WHERE gender = 'F') p ON d.county_code = p.county_code",
            "Here a join runs at the city, over single rows of the nodes: a node runs a join \
             itself only between its own tables on equal county_code",
        ),
        // A window over single rows across counties: the city says how to join the
        // group's figures.
        (
            "SELECT county_code, count(*) FROM (SELECT county_code, amount, avg(amount) OVER \
             (PARTITION BY subsidy_type) AS a FROM disbursements) t \
             WHERE amount > 2 * a GROUP BY 1",
            "Here a window runs at the city, over single rows of the nodes: a node runs no \
             windows itself",
        ),
        // Persons matched across counties: the models' work, over tokens.
        (
            "SELECT count(*) FROM disbursements d WHERE d.person_id IN (SELECT person_id FROM \
             payroll)",
            "Here a join runs at the city, over single rows of the nodes: a node runs a join \
             itself only between its own tables on equal county_code (disability_certs has \
             none), or with subsidy_standards, rows the query writes or a series it \
             generates of up to 100000 rows, or the groups of a subquery that aggregates node \
             tables (by no identifier), keeping their unmatched rows too, under a distinct \
             count only of the other table's columns as they are; to count distinct values of \
             more for every standard, join subsidy_standards to a subquery that aggregates the \
             node table by subsidy_type; to keep rows whose column is in a list, use IN (…). \
             This join \
             matches persons by an identifier across counties, which only tokens may do: the \
             models match them so (`sunlight model list`), and `sunlight linkage run` finds \
             the rows whose key occurs at more than one node",
        ),
        // Groups by person_id are single persons, whichever node holds them.
        (
            "SELECT count(*) FROM (SELECT person_id FROM disbursements GROUP BY person_id \
             HAVING count(DISTINCT county_code) > 1) t",
            "each group is one person: count persons with count(DISTINCT …); to count \
             persons by what each county paid them, group by county_code as well",
        ),
        (
            "SELECT count(*) FROM (SELECT person_id FROM disbursements GROUP BY person_id \
             HAVING count(DISTINCT subsidy_type) > 1) t",
            "or find persons paid in several counties with `sunlight linkage run`",
        ),
        // A value the query cannot convert is the caller's fault, whether the city's
        // planner meets it or the nodes do, row by row.
        (
            "SELECT count(*) FROM disbursements WHERE amount > 'abc'",
            "(InvalidArgument): Optimizer rule 'simplify_expressions' failed\ncaused by\n\
             Arrow error: Cast error: Cannot cast string 'abc'",
        ),
        (
            "SELECT county_code, sum(CAST(village AS INT)) FROM disbursements GROUP BY 1",
            "failed running the fragment (InvalidArgument): Arrow error: Cast error: Cannot \
             cast string",
        ),
        // So is an argument a function refuses as it runs.
        (
            "SELECT date_part('decade', period) AS d, count(*) FROM disbursements GROUP BY 1",
            "failed running the fragment (InvalidArgument): Execution error: Date part \
             'decade' not supported",
        ),
        // And arguments that fit none of a function's signatures, which DataFusion
        // words as an internal error of its own.
        (
            "SELECT county_code, sum(paid_on) FROM disbursements GROUP BY 1",
            "(InvalidArgument): Error during planning: Function 'sum' failed to match any \
             signature",
        ),
        // A condition on a subquery's rows outside WHERE and HAVING, which DataFusion
        // fails to plan, naming an expression of its own.
        (
            "SELECT county_code, count(*) FILTER (WHERE subsidy_type IN (SELECT \
             subsidy_type FROM subsidy_standards WHERE min_age IS NOT NULL)) \
             FROM disbursements GROUP BY 1",
            "(InvalidArgument): Error during planning: IN (SELECT …) is answered only as a \
             condition of WHERE or HAVING, not in GROUP BY or an aggregate's argument or \
             FILTER; move the condition to WHERE",
        ),
        (
            "SELECT county_code, sum(CASE WHEN amount > ALL (SELECT cap FROM \
             subsidy_standards) THEN 1 ELSE 0 END) FROM disbursements GROUP BY 1",
            "Error during planning: > ALL (SELECT …) is answered only as a condition of WHERE \
             or HAVING",
        ),
    ] {
        let err = client.query(sql).await.unwrap_err().to_string();
        assert!(err.contains(mentions), "{sql}: {err}");
        assert!(!err.contains("bug report"), "{sql}: {err}");
    }
    let mut stranger = SqlClient::connect(&running.coordinator.addr, "wrong-token")
        .await
        .unwrap();
    assert!(
        stranger
            .query("SELECT 1")
            .await
            .unwrap_err()
            .to_string()
            .contains("Unauthenticated")
    );
}

/// Expressions nest up to the limit at the city and at a node; a deeper chain, or a
/// statement of more relations than the limit, which would overflow a server's stack as it
/// is planned or dropped, is refused whole, and the servers serve on.
#[tokio::test(flavor = "multi_thread")]
async fn statements_past_the_size_limits_are_refused_and_the_servers_serve_on() {
    let (running, oracle, mut client) = city_and_oracle().await;
    // An OR of n comparisons nests n + 1 deep: its ORs, the last comparison, its column.
    // Comparisons other than equality stay a chain.
    let alternatives = |n: usize| {
        (0..n)
            .map(|i| match i % 2 {
                0 => format!("amount > {i}"),
                _ => format!("paid_on < DATE '2023-01-{:02}'", 1 + i % 28),
            })
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    // The deepest expression as deep as it plans, runs and travels: the comparison, its
    // sums, and `amount`, none of which the optimizer folds.
    let deepest = format!(
        "SELECT county_code, count(*) FROM disbursements WHERE amount{} > 300 GROUP BY 1 \
         ORDER BY 1",
        " + 1".repeat(MAX_NESTING - 2)
    );
    // A selection of values as BI tools write it, a chain of equalities, is read as the
    // list it is, however long.
    let values: Vec<usize> = (0..50_000).map(|i| 3 * i).collect();
    let selected = |filter: String| {
        format!(
            "SELECT county_code, count(*), sum(amount) FROM disbursements WHERE {filter} \
             GROUP BY 1 ORDER BY 1"
        )
    };
    let chain = values.iter().map(|v| format!("amount = {v}"));
    let chosen = selected(chain.collect::<Vec<_>>().join(" OR "));
    let list = values.iter().map(usize::to_string).collect::<Vec<_>>();
    let listed = selected(format!("amount IN ({})", list.join(", ")));
    let (code, node) = &running.nodes[4];
    let mut county = SqlClient::connect(&node.addr, TOKEN).await.unwrap();
    let nested = "(InvalidArgument): Error during planning: the statement nests expressions \
                  more than 256 levels deep";
    let combined = format!(
        "(InvalidArgument): Error during planning: the statement combines more than \
         {MAX_RELATIONS} relations"
    );
    for (sql, refusal) in [
        (
            format!(
                "SELECT count(*) FROM disbursements WHERE {}",
                alternatives(MAX_NESTING)
            ),
            nested,
        ),
        // Long enough to overflow where it is parsed, in a statement that names `SET`.
        (
            format!(
                "SELECT count(*) FROM disbursements WHERE {} -- not a SET",
                alternatives(50_000)
            ),
            nested,
        ),
        (
            vec!["SELECT county_code FROM payroll"; 20_000].join(" UNION ALL "),
            &combined,
        ),
    ] {
        for asked in [&mut client, &mut county] {
            let err = asked.query(&sql).await.unwrap_err().to_string();
            assert!(err.contains(refusal), "{err}");
        }
    }
    for (sql, central) in [(&deepest, &deepest), (&chosen, &listed)] {
        let at_city = client.query(sql).await.unwrap();
        let at_node = county.query(sql).await.unwrap();
        let central = oracle.sql(central).await.unwrap().collect().await.unwrap();
        assert_eq!(rows(&at_city.batches, true), rows(&central, true));
        let own: Vec<_> = rows(&central, true)
            .into_iter()
            .filter(|row| row.starts_with(&format!("|{code}|")))
            .collect();
        assert!(!own.is_empty());
        assert_eq!(rows(&at_node.batches, true), own);
    }
    // Past gRPC's usual 4 MiB: the reply to a statement of 3 MB, which repeats it, and a
    // row of 5 MB, at the city and at a node.
    let long_literal = format!("SELECT length('{}') AS n", "x".repeat(3_000_000));
    let long_row = "SELECT length(repeat('x', 5000000)) AS n, repeat('y', 5000000) AS s";
    for asked in [&mut client, &mut county] {
        let answer = asked.query(&long_literal).await.unwrap();
        assert_eq!(rows(&answer.batches, true), ["|3000000|"]);
        let answer = asked.query(long_row).await.unwrap();
        let cell = |i: usize| array_value_to_string(answer.batches[0].column(i), 0).unwrap();
        assert_eq!((cell(0), cell(1).len()), ("5000000".to_string(), 5_000_000));
    }
    // A fragment larger than a node takes is refused at the city, saying so; the node
    // answers its county analyst's statement itself.
    let fractions: Vec<String> = (0..200_000).map(|i| format!("{}.25", 3 * i)).collect();
    let wide = format!(
        "SELECT count(*) FROM disbursements WHERE amount IN ({})",
        fractions.join(", ")
    );
    let err = client.query(&wide).await.unwrap_err().to_string();
    assert!(
        err.contains("the query's part for the nodes encodes to 5.")
            && err.contains("and a node takes requests of 4 MiB at the most"),
        "{err}"
    );
    county.query(&wide).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_with_another_nodes_county_code_fails_by_name() {
    let city = crate::support::generated_city(40, 9);
    let yunzhou: sunlight_domain::NodeCode = "140215".parse().unwrap();
    let persons = sunlight_datagen::node_root(city.dir.path(), yunzhou).join("persons");
    let ctx = datafusion::prelude::SessionContext::new();
    let file = persons.join("part-0.parquet");
    ctx.register_parquet("p", file.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    let stray = ctx
        .sql(
            "SELECT person_id, name, gender, birth_date, household_id, '140221' AS county_code, township, village, \
             death_date FROM p LIMIT 1",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    write_parquet(&persons.join("stray.parquet"), &stray[..1], None);

    let running = start_city(city.dir.path(), &[]);
    let mut client = SqlClient::connect(&running.coordinator.addr, TOKEN)
        .await
        .unwrap();
    let err = client
        .query("SELECT county_code, count(*) FROM persons GROUP BY county_code")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "refused the fragment (FailedPrecondition): node 140215 holds persons rows with \
             county_code 140221"
        ),
        "{err}"
    );
}

/// Writes `standards` as `code`'s copy of `subsidy_standards` in `city`.
fn write_standards(city: &Path, code: NodeCode, standards: &[SubsidyStandard]) {
    let file = node_root(city, code).join("subsidy_standards/part-0.parquet");
    write_parquet(&file, &[sunlight_domain::standards_batch(standards)], None);
}

/// Restarts `code`'s node over its files, at a new address the city is told of.
fn restart_node(running: &mut RunningCity, city: &Path, code: NodeCode) {
    let at = running.nodes.iter().position(|(c, _)| *c == code).unwrap();
    let node = ServiceProcess::start(code.as_str(), &node_root(city, code));
    let add = ["node", "add", "--code", code.as_str(), "--addr", &node.addr];
    let token = ["--node-token", CITY_TOKEN];
    admin(
        &running.coordinator.addr,
        TOKEN,
        &[&add[..], &token].concat(),
    );
    std::mem::replace(&mut running.nodes[at].1, node).kill();
}

/// Bytes all nodes sent for `sql`, as EXPLAIN ANALYZE shows them (to 3 or 4 digits).
async fn bytes_moved(client: &mut SqlClient, sql: &str) -> f64 {
    bytes_in(&printed(client, &format!("EXPLAIN ANALYZE {sql}")).await)
}

/// The bytes from the nodes that the metrics in `text` count.
fn bytes_in(text: &str) -> f64 {
    bytes_by_node(text).iter().map(|(_, bytes)| bytes).sum()
}

/// Each node's bytes that the metrics in `text` count, by node code, in their order.
fn bytes_by_node(text: &str) -> Vec<(String, f64)> {
    text.split("bytes_from_")
        .skip(1)
        .map(|metric| {
            let (node, value) = metric.split_once('=').unwrap();
            let value = value[..value.find([',', ']']).unwrap()].trim();
            let (number, unit) = value.split_once(' ').unwrap_or((value, ""));
            let scale = match unit {
                "K" => 1e3,
                "M" => 1e6,
                "B" => 1e9,
                _ => 1.0,
            };
            (node.to_string(), number.parse::<f64>().unwrap() * scale)
        })
        .collect()
}

/// The city's answer to `sql`, printed.
async fn printed(client: &mut SqlClient, sql: &str) -> String {
    let answer = client.query(sql).await.unwrap();
    arrow::util::pretty::pretty_format_batches(&answer.batches)
        .unwrap()
        .to_string()
}

/// Distinct counts of persons across counties, of every kind the nodes list persons for.
const DISTINCT_PERSONS: &[&str] = &[
    "SELECT count(DISTINCT person_id) FROM disbursements",
    "SELECT subsidy_type, count(DISTINCT person_id) FROM disbursements GROUP BY 1 ORDER BY 1",
    "SELECT date_trunc('year', period) AS y, count(DISTINCT person_id), count(*) \
     FROM disbursements WHERE amount > 100 GROUP BY 1 ORDER BY 1",
    "SELECT p.gender, count(DISTINCT d.person_id) FROM disbursements d JOIN persons p \
     ON p.person_id = d.person_id AND p.county_code = d.county_code GROUP BY 1 ORDER BY 1",
    "SELECT subsidy_type, count(DISTINCT person_id) AS n FROM disbursements \
     GROUP BY 1 HAVING count(DISTINCT person_id) > 20 ORDER BY n DESC",
    "SELECT count(DISTINCT person_id) FROM payroll",
    // Two fragments, whose lists of a node's persons overlap: not counted with the set.
    "SELECT count(DISTINCT person_id) FROM (SELECT person_id FROM persons \
     WHERE death_date IS NOT NULL UNION ALL SELECT person_id FROM payroll) t",
];

#[tokio::test(flavor = "multi_thread")]
async fn distinct_counts_of_persons_send_only_shared_persons_tokens_and_stay_exact() {
    let city = shared_city();
    let mut running = start_city(city.dir.path(), &[]);
    let oracle = city_context(city.dir.path()).await;
    let mut client = SqlClient::connect(&running.coordinator.addr, TOKEN)
        .await
        .unwrap();
    // Persons paid in two counties, which the nodes must list by token for the city to
    // count them once.
    let in_two = "SELECT count(*) FROM (SELECT person_id FROM disbursements \
         GROUP BY person_id HAVING count(DISTINCT county_code) > 1)";
    assert!(count(&oracle, in_two).await > 0);
    let whole = DISTINCT_PERSONS[0];
    let persons = count(&oracle, whole).await as f64;

    // The coordinator finds the shared persons as it starts; from then on the nodes send
    // less than a 16-byte token a person.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let moved = bytes_moved(&mut client, whole).await;
        if moved < 16.0 * persons / 2.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{moved} B for {persons} persons"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    same_as_oracle(&mut client, &oracle).await;

    // A node that restarts at its address does not hold the set: it refuses, and the
    // city counts again without it, as exactly.
    let taiyuan = running
        .nodes
        .iter()
        .position(|(c, _)| c.as_str() == "140215")
        .unwrap();
    let (code, node) = running.nodes.remove(taiyuan);
    let addr = node.addr.clone();
    node.kill();
    let node = ServiceProcess::start_listening(
        code.as_str(),
        &node_root(city.dir.path(), code),
        &addr,
        &[],
    );
    running.nodes.insert(taiyuan, (code, node));
    // Asked for partial results, the city does not take the refusal for a missing node.
    let mut partial = SqlClient::connect(&running.coordinator.addr, TOKEN)
        .await
        .unwrap();
    partial.allow_partial_results();
    let answer = partial.query(whole).await.unwrap();
    assert!(
        answer.missing_nodes.is_empty(),
        "{:?}",
        answer.missing_nodes
    );
    let central = oracle.sql(whole).await.unwrap().collect().await.unwrap();
    assert_eq!(rows(&answer.batches, false), rows(&central, false));
    same_as_oracle(&mut client, &oracle).await;
}

/// Asks the city each of [`DISTINCT_PERSONS`] and compares with `oracle`'s answer.
async fn same_as_oracle(client: &mut SqlClient, oracle: &SessionContext) {
    for sql in DISTINCT_PERSONS {
        let (federated, central, ordered) = asked_both(client, oracle, sql).await;
        assert_eq!(federated.suppressed_groups, 0, "{sql}");
        assert_eq!(
            rows(&federated.batches, ordered),
            rows(&central, ordered),
            "{sql}"
        );
    }
}

/// The cap of DIBAO in the city's copy of `subsidy_standards`.
async fn dibao_cap(client: &mut SqlClient) -> String {
    let cap = client
        .query("SELECT cap FROM subsidy_standards WHERE subsidy_type = 'DIBAO'")
        .await
        .unwrap();
    rows(&cap.batches, true).concat().replace('|', "")
}

/// A join of the nodes' rows with `subsidy_standards`, which each node runs over its copy.
const STANDARDS_JOIN: &str = "SELECT s.department, count(*) FROM disbursements d JOIN \
     subsidy_standards s ON s.subsidy_type = d.subsidy_type GROUP BY 1";

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_a_different_reference_copy_is_named() {
    let city = crate::support::generated_city(30, 4);
    let tianzhen: NodeCode = "140222".parse().unwrap();
    let mut raised = default_standards();
    raised[0].cap_fen += 100;
    write_standards(city.dir.path(), tianzhen, &raised);

    let mut running = start_city(city.dir.path(), &[]);
    let banner = running.coordinator.banner.join("\n");
    assert!(
        banner.contains("node 140222 holds a DIFFERENT copy"),
        "{banner}"
    );
    // The city answers with the copy most nodes hold.
    let mut client = SqlClient::connect(&running.coordinator.addr, TOKEN)
        .await
        .unwrap();
    assert_eq!(dibao_cap(&mut client).await, "600.00");
    // A join with it runs at each node over the node's own copy: the one that differs
    // refuses, by name, rather than answer with its copy.
    let err = client.query(STANDARDS_JOIN).await.unwrap_err().to_string();
    assert!(
        err.contains("node 140222")
            && err.contains("subsidy_standards")
            && err.contains("is not the copy the city reads"),
        "{err}"
    );
    client.allow_partial_results();
    let partial = client.query(STANDARDS_JOIN).await.unwrap();
    assert_eq!(partial.missing_nodes, vec!["140222".to_string()]);
    assert!(partial.num_rows() > 0);
    // The node runs no model rule that reads its copy either; the other rules it runs.
    let coordinator = running.coordinator.addr.clone();
    model(&coordinator, TOKEN, &["add", "--builtin"]);
    approve_and_roll_out(&coordinator);
    let ran = model(&coordinator, TOKEN, &["run"]);
    let failed: Vec<&str> = ran.lines().filter(|l| l.contains("FAILED")).collect();
    assert_eq!(failed.len(), 4, "{ran}");
    for line in failed {
        assert!(
            line.contains("FAILED on 140222") && line.contains("is not the copy the city reads"),
            "{ran}"
        );
    }

    // Given the copy the others hold and restarted, the node joins again, and the city
    // needs no restart for it.
    write_standards(city.dir.path(), tianzhen, &default_standards());
    restart_node(&mut running, city.dir.path(), tianzhen);
    let ran = model(&coordinator, TOKEN, &["run"]);
    assert!(!ran.contains("FAILED"), "{ran}");
    let mut client = SqlClient::connect(&running.coordinator.addr, TOKEN)
        .await
        .unwrap();
    let whole = client.query(STANDARDS_JOIN).await.unwrap();
    assert!(whole.missing_nodes.is_empty());
    assert_eq!(whole.num_rows(), partial.num_rows());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_city_follows_a_reference_copy_most_nodes_changed() {
    let city = crate::support::generated_city(30, 5);
    let mut running = start_city(city.dir.path(), &["--standards-check-secs", "1"]);
    let mut raised = default_standards();
    raised[0].cap_fen += 100;
    for code in NodeCode::all() {
        write_standards(city.dir.path(), code, &raised);
        restart_node(&mut running, city.dir.path(), code);
    }
    // Until the city reads the copies again, every node refuses the join; then it runs.
    let mut client = SqlClient::connect(&running.coordinator.addr, TOKEN)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while let Err(e) = client.query(STANDARDS_JOIN).await {
        assert!(std::time::Instant::now() < deadline, "{e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(dibao_cap(&mut client).await, "601.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_suite_and_a_linkage_run_send_no_identifier_over_the_wire() {
    let city = shared_city();
    let running = start_city(city.dir.path(), &[]);
    let tapped = Tapped::start(
        running
            .nodes
            .iter()
            .map(|(code, node)| (code.to_string(), node.addr.as_str())),
    )
    .await;
    let mut client = SqlClient::connect(&tapped.coordinator.addr, TOKEN)
        .await
        .unwrap();
    for sql in queries() {
        client
            .query(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}\n{e}"));
    }
    tapped.link_disbursements();
    let wire = tapped.wire();
    assert!(wire.len() > 100_000, "the taps saw {} bytes", wire.len());

    let oracle = city_context(city.dir.path()).await;
    let places = strings(
        &oracle,
        "SELECT township FROM persons UNION SELECT village FROM persons \
         UNION SELECT employer FROM payroll UNION SELECT department FROM disbursements",
    )
    .await
    .into_iter()
    .collect::<String>();
    let mut secrets: HashMap<usize, HashSet<Vec<u8>>> = HashMap::new();
    for sql in [
        "SELECT person_id FROM persons",
        "SELECT account_no FROM disbursements WHERE account_no IS NOT NULL",
        "SELECT name FROM persons",
    ] {
        for value in strings(&oracle, sql).await {
            // A name that is also part of a place name leaves with the place.
            if !places.contains(&value) {
                let bytes = value.into_bytes();
                secrets.entry(bytes.len()).or_default().insert(bytes);
            }
        }
    }
    assert!(secrets.values().map(HashSet::len).sum::<usize>() > 50_000);
    for (length, set) in &secrets {
        if let Some(found) = wire.windows(*length).find(|w| set.contains(*w)) {
            panic!("{} left a node", String::from_utf8_lossy(found));
        }
    }
}
