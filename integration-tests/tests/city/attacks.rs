//! The attack suite: attempts to get identities or small cells out of the city or past a
//! node's egress guard. Each is refused with an error that names the rule, and each
//! refusal is in an audit log: the city's replicated log for what reached the city, the
//! node's access log for what went straight to a node.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_client::FlightServiceClient;
use datafusion::common::ScalarValue;
use datafusion::config::ConfigOptions;
use datafusion::functions_aggregate::approx_distinct::approx_distinct_udaf;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::median::median_udaf;
use datafusion::logical_expr::{AggregateUDF, Operator};
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::expressions::{binary, col, lit};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use futures::TryStreamExt;
use sunlight_client::{QueryResult, SqlClient};
use sunlight_datagen::node_root;
use sunlight_domain::{NodeCode, Table};
use sunlight_fragment::{TableLeafExec, encode_plan, ticket};
use sunlight_policy::{Token, Tokenizer};
use sunlight_proto::v1::node_service_client::NodeServiceClient;
use sunlight_proto::v1::{
    CaseOpening, FragmentTicket, ModelStep, PersonTokenSet, PersonTokensRequest, RunHits,
};

use crate::oracle;
use crate::support::{
    CITY_TOKEN, LINKAGE_KEY, ServiceProcess, TOKEN, admin, new_user, shared_city, start_city,
    sunlight, sunlight_fails,
};

/// The one value of a query over node 140215's files.
async fn fact(sql: &str) -> String {
    let ctx = oracle::context(shared_city().dir.path(), &["140215".parse().unwrap()]);
    let values = oracle::strings(&ctx, sql).await;
    values.into_iter().next().expect("a value")
}

/// The birth date and village of a person of node 140215 alone with that birth date in
/// that village.
async fn lonely() -> (String, String) {
    (
        fact(
            "SELECT CAST(birth_date AS VARCHAR) AS born FROM persons GROUP BY village, birth_date \
             HAVING count(*) = 1 ORDER BY village, birth_date LIMIT 1",
        )
        .await,
        fact(
            "SELECT village FROM persons GROUP BY village, birth_date HAVING count(*) = 1 \
             ORDER BY village, birth_date LIMIT 1",
        )
        .await,
    )
}

fn audit_rows(coordinator: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["audit", "list", "--format", "json"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--coordinator", coordinator, "--token", TOKEN]);
    serde_json::from_str(&sunlight(&all)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn attacks_at_the_city_are_refused_by_rule_and_audited() {
    let city = start_city(shared_city().dir.path(), &[]);
    let addr = city.coordinator.addr.clone();
    let analyst = new_user(&addr, "li", "city_analyst", &[]);
    let mut client = SqlClient::connect(&addr, &analyst).await.unwrap();

    let someone = fact("SELECT person_id FROM persons ORDER BY person_id LIMIT 1").await;
    let (lonely_birth, lonely_village) = lonely().await;
    let payment = fact("SELECT payment_id FROM disbursements ORDER BY payment_id LIMIT 1").await;
    let attacks = [
        ("SELECT person_id FROM persons", "direct-identifier"),
        (
            "SELECT name, count(*) FROM disbursements GROUP BY name",
            "direct-identifier",
        ),
        (
            "SELECT account_no, sum(amount) FROM disbursements GROUP BY account_no",
            "direct-identifier",
        ),
        (
            &format!("SELECT count(*) FROM disbursements WHERE person_id = '{someone}'"),
            "direct-identifier",
        ),
        (
            &format!(
                "SELECT count(*), sum(d.amount) FROM disbursements d JOIN persons p \
                 ON p.county_code = d.county_code AND p.person_id = d.person_id \
                 WHERE p.birth_date = DATE '{lonely_birth}' AND p.village = '{lonely_village}'"
            ),
            "min-group-size",
        ),
        (
            "SELECT count(*) FROM persons WHERE person_id LIKE '140215195%'",
            "direct-identifier",
        ),
        (
            "SELECT substr(person_id, 7, 4) AS born, count(*) FROM persons GROUP BY 1",
            "direct-identifier",
        ),
        (
            "SELECT count(*) FROM disbursements GROUP BY person_id",
            "min-group-size",
        ),
        // A window by person sorts by the identifier, one person a partition.
        (
            "SELECT county_code, count(*) FROM (SELECT county_code, row_number() OVER \
             (PARTITION BY person_id ORDER BY period) AS rn FROM disbursements) t \
             WHERE rn = 1 GROUP BY 1",
            "direct-identifier",
        ),
        (
            "SELECT p.name, d.amount FROM persons p JOIN disbursements d \
             ON p.county_code = d.county_code AND p.person_id = d.person_id",
            "direct-identifier",
        ),
        (
            "SELECT count(*) FROM disbursements d JOIN payroll y ON y.person_id = d.person_id",
            "min-group-size",
        ),
        (
            "SELECT CAST(substr(person_id, 17, 1) AS INT) AS digit, count(*) FROM persons GROUP BY 1",
            "direct-identifier",
        ),
        (
            "SELECT amount * 1 AS a FROM disbursements",
            "quasi-identifier",
        ),
        ("SELECT birth_date FROM persons", "quasi-identifier"),
        (
            "SELECT sum(DISTINCT amount) FROM disbursements",
            "quasi-identifier",
        ),
        (
            "SELECT length(name), count(*) FROM persons GROUP BY 1",
            "direct-identifier",
        ),
        ("SELECT max(person_id) FROM persons", "direct-identifier"),
        (
            "SELECT payment_id, township FROM disbursements LIMIT 5",
            "aggregates-only",
        ),
        (
            &format!(
                "SELECT birth_date, gender, count(*) FROM persons \
                 WHERE county_code = '140215' AND village = '{lonely_village}' GROUP BY 1, 2"
            ),
            "min-group-size",
        ),
        (
            "SELECT mask_id(person_id) AS id, amount FROM disbursements",
            "quasi-identifier",
        ),
        (
            &format!(
                "SELECT CASE WHEN person_id = '{someone}' THEN 1 ELSE 0 END AS hit, count(*) \
                 FROM persons GROUP BY 1"
            ),
            "direct-identifier",
        ),
        // A join on an identifier with a value singles out the person, inside groups
        // large enough to pass: by a literal a subquery selects, or by a VALUES list.
        (
            &format!(
                "SELECT d.county_code, count(*), count(p.pid) FROM disbursements d LEFT JOIN \
                 (SELECT DISTINCT '{someone}' AS pid, county_code FROM persons) p \
                 ON p.pid = d.person_id AND p.county_code = d.county_code GROUP BY 1"
            ),
            "direct-identifier",
        ),
        (
            &format!(
                "SELECT d.county_code, count(*), count(v.t) FROM disbursements d \
                 LEFT JOIN (VALUES ('{someone}')) v(t) ON v.t = d.person_id GROUP BY 1"
            ),
            "direct-identifier",
        ),
        // A figure made from one payment of a large group tells of that payment: by its
        // FILTER, by a value zero or NULL elsewhere, by a test that sets it apart (in a
        // subquery too), in a subquery's groups, or from the rows an outer join matched.
        (
            &format!(
                "SELECT county_code, sum(amount) FILTER (WHERE payment_id = '{payment}') \
                 FROM disbursements GROUP BY 1"
            ),
            "min-group-size",
        ),
        (
            &format!(
                "SELECT sum(amount * CAST(payment_id = '{payment}' AS INT)) FROM disbursements"
            ),
            "min-group-size",
        ),
        // All but the one payment, to take from the whole, which another answer shows.
        (
            &format!(
                "SELECT county_code, sum(amount) FILTER (WHERE payment_id <> '{payment}') \
                 FROM disbursements GROUP BY 1"
            ),
            "min-group-size",
        ),
        (
            &format!(
                "SELECT county_code, sum(CASE WHEN payment_id = '{payment}' THEN amount \
                 ELSE 1 END) FROM disbursements GROUP BY 1"
            ),
            "min-group-size",
        ),
        (
            &format!(
                "SELECT county_code, sum(x) FROM (SELECT county_code, CASE WHEN \
                 payment_id = '{payment}' THEN amount ELSE 1 END AS x FROM disbursements) t \
                 GROUP BY 1"
            ),
            "min-group-size",
        ),
        (
            &format!(
                "SELECT county_code, sum(s) FROM (SELECT county_code, village, sum(amount) \
                 FILTER (WHERE payment_id = '{payment}') AS s FROM disbursements \
                 GROUP BY 1, 2) t GROUP BY 1"
            ),
            "min-group-size",
        ),
        (
            &format!(
                "SELECT p.county_code, count(*), sum(x.amount) FROM persons p LEFT JOIN \
                 (SELECT county_code, person_id, amount FROM disbursements \
                 WHERE payment_id = '{payment}') x \
                 ON x.county_code = p.county_code AND x.person_id = p.person_id GROUP BY 1"
            ),
            "min-group-size",
        ),
        // A test made without a boolean, which the node cannot count, is refused.
        (
            &format!(
                "SELECT county_code, sum(amount * strpos(payment_id, '{payment}') + 1) \
                 FROM disbursements GROUP BY 1"
            ),
            "untraceable",
        ),
    ];
    for (sql, rule) in &attacks {
        let err = client.query(sql).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("refused by rule {rule}")),
            "{sql}\n{err}"
        );
    }
    // The amounts a distinct sum would need at the city: refused there, before any node
    // is asked, as every node would refuse its fragment.
    let err = client
        .query("SELECT avg(DISTINCT amount) FROM disbursements")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("city disclosure control: refused by rule quasi-identifier")
            && !err.contains("refused the fragment"),
        "{err}"
    );

    // A differencing pair: the whole village, then the village without one person.
    let whole = format!(
        "SELECT count(*) FROM persons WHERE county_code = '140215' \
         AND village = '{lonely_village}'"
    );
    let without_one = format!(
        "SELECT count(*) FROM persons WHERE county_code = '140215' \
         AND village = '{lonely_village}' AND birth_date <> DATE '{lonely_birth}'"
    );
    client.query(&whole).await.unwrap();
    let err = client.query(&without_one).await.unwrap_err().to_string();
    assert!(
        err.contains("refused by rule differencing") && err.contains("differ by 1"),
        "{err}"
    );

    let rows = audit_rows(&addr, &["--user", "li", "--action", "query"]);
    for (sql, rule) in attacks
        .iter()
        .chain([&(without_one.as_str(), "differencing")])
    {
        let record =
            rows.iter()
                .find(|r| {
                    serde_json::from_str::<serde_json::Value>(r["detail"].as_str().unwrap())
                        .unwrap()["sql"]
                        == *sql
                })
                .unwrap_or_else(|| panic!("no audit record of {sql}"));
        let decision = record["decision"].as_str().unwrap();
        assert!(
            decision.starts_with("refused:") && decision.contains(rule),
            "{sql}: {decision}"
        );
        assert_eq!(record["role"], "city_analyst");
    }

    // The same pair in groups: each node sketches the persons of a whole table ahead,
    // and those of a filtered one as it runs. The two agree.
    client
        .query("SELECT gender, count(*) FROM persons GROUP BY gender")
        .await
        .unwrap();
    let err = client
        .query(&format!(
            "SELECT gender, count(*) FROM persons WHERE county_code <> '140215' \
             OR village <> '{lonely_village}' OR birth_date <> DATE '{lonely_birth}' \
             GROUP BY gender"
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refused by rule differencing") && err.contains("differ by 1"),
        "{err}"
    );

    // The pair within one answer, and the pair repeated, so that the whole answer counts
    // each person twice: each part compares on its own.
    let gender = fact(&format!(
        "SELECT gender FROM persons WHERE village = '{lonely_village}' \
         AND birth_date = DATE '{lonely_birth}'"
    ))
    .await;
    let count = |without: &str| {
        format!(
            "SELECT count(*) AS n FROM persons WHERE county_code = '140215' \
             AND gender = '{gender}' {without}"
        )
    };
    let one_fewer = count(&format!(
        "AND (village <> '{lonely_village}' OR birth_date <> DATE '{lonely_birth}')"
    ));
    let twice = |sql: &str| format!("SELECT a.n, b.n FROM ({sql}) a CROSS JOIN ({sql}) b");
    client.query(&twice(&count(""))).await.unwrap();
    for (sql, says) in [
        (
            format!("SELECT ({}) - ({one_fewer}) AS d", count("")),
            "two parts of this answer",
        ),
        (twice(&one_fewer), "from those behind your answer to"),
    ] {
        let err = client.query(&sql).await.unwrap_err().to_string();
        assert!(
            err.contains("refused by rule differencing")
                && err.contains(says)
                && err.contains("differ by 1"),
            "{sql}\n{err}"
        );
    }
}

/// A group one node holds back is never merged in part with other nodes' rows. Grouped by
/// county, that node's small group is left out; grouped across counties by plain keys,
/// that group is left out at every node. Every group shown equals the files. Where the
/// city would merge the group into a total, a window or a group of its own, or a node
/// would send totals over it, the answer is refused, as is a breakdown that holds a group
/// back after a total over it.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_held_back_at_one_node_is_never_merged_in_part() {
    let dir = shared_city().dir.path();
    let city = start_city(dir, &[]);
    let mut client = SqlClient::connect(&city.coordinator.addr, TOKEN)
        .await
        .unwrap();
    let (birth, village) = lonely().await;
    let gender = fact(&format!(
        "SELECT gender FROM persons WHERE village = '{village}' AND birth_date = DATE '{birth}'"
    ))
    .await;
    let one_at_140215 = format!(
        "county_code <> '140215' OR (village = '{village}' AND birth_date = DATE '{birth}')"
    );

    let across = "merges groups across nodes";
    for (sql, says) in [
        (
            format!("SELECT count(*) FROM persons WHERE {one_at_140215}"),
            [across, "could not name them"],
        ),
        (
            format!(
                "SELECT gender, count(*), sum(count(*)) OVER () FROM persons \
                 WHERE {one_at_140215} GROUP BY gender"
            ),
            [across, "more than groups by plain keys"],
        ),
        // The sides of a union at one node are merged at the city too.
        (
            format!(
                "SELECT count(*) FROM (SELECT person_id FROM persons WHERE county_code = \
                 '140215' AND village = '{village}' AND birth_date = DATE '{birth}' \
                 UNION ALL SELECT person_id FROM payroll WHERE county_code = '140215') t"
            ),
            [across, "could not name them"],
        ),
        // A distinct count over the sides of a union for the same nodes runs over the
        // union in each node, which counts each side's rows as a part of the figure: a
        // side of one person would tell of them, though the persons behind the group are
        // the same with or without theirs.
        (
            format!(
                "SELECT count(*), count(DISTINCT person_id) FROM (SELECT person_id FROM \
                 persons WHERE county_code = '140215' AND village = '{village}' AND \
                 birth_date = DATE '{birth}' UNION ALL SELECT person_id FROM persons WHERE \
                 county_code = '140215') t"
            ),
            [
                "made, wholly or in part, from the rows of 1 of them alone",
                "side of the union",
            ],
        ),
        // A list of distinct values is formed at the city from the groups of the value:
        // by county, the lonely person's gender would leave the list of theirs, and their
        // row the count.
        (
            format!(
                "SELECT county_code, array_agg(DISTINCT gender), count(*) FROM persons \
                 WHERE gender <> '{gender}' OR (village = '{village}' AND birth_date = \
                 DATE '{birth}') GROUP BY 1"
            ),
            [across, "a list of distinct values"],
        ),
        // So is a window over a county's groups: its total would leave their row out.
        (
            format!(
                "SELECT county_code, gender, count(*), sum(count(*)) OVER (PARTITION BY \
                 county_code) FROM persons WHERE gender <> '{gender}' OR (village = \
                 '{village}' AND birth_date = DATE '{birth}') GROUP BY 1, 2"
            ),
            [across, "a window"],
        ),
        // The standards a join matched at any node: left out, the lonely person's would
        // show as matched nowhere, and the count of the other counties' persons as the
        // whole of it.
        (
            format!(
                "SELECT s.subsidy_type, count(p.person_id) FROM subsidy_standards s LEFT JOIN \
                 persons p ON s.min_age IS NOT NULL AND ({one_at_140215}) GROUP BY 1"
            ),
            [across, "the standards a join matched at any node"],
        ),
        // Rows kept for matching no group: without the lonely person's, their village
        // would pass EXCEPT, or show no count, as if no one there were born that day.
        (
            format!(
                "SELECT village FROM persons WHERE county_code = '140215' GROUP BY 1 EXCEPT \
                 SELECT village FROM persons WHERE village = '{village}' AND birth_date = \
                 DATE '{birth}' GROUP BY 1"
            ),
            [
                "keeps rows for matching none of the groups on one side",
                "Widen the side",
            ],
        ),
        (
            format!(
                "SELECT x.county_code, x.village, y.n FROM (SELECT county_code, village FROM \
                 persons WHERE county_code = '140215' GROUP BY 1, 2) x LEFT JOIN (SELECT \
                 county_code, village, count(*) AS n FROM persons WHERE birth_date = DATE \
                 '{birth}' GROUP BY 1, 2) y ON y.county_code = x.county_code \
                 AND y.village = x.village"
            ),
            [
                "keeps rows for matching none of the groups on one side",
                "Widen the side",
            ],
        ),
        // Totals formed with the groups, across counties or within one, would give the
        // held-back group away by subtraction: the node refuses them.
        (
            format!(
                "SELECT county_code, gender, count(*) AS n FROM persons WHERE {one_at_140215} \
                 GROUP BY GROUPING SETS ((county_code, gender), (gender))"
            ),
            ["totals over its groups", "140215"],
        ),
        (
            format!(
                "SELECT county_code, gender, count(*) AS n FROM persons \
                 WHERE county_code = '140215' AND (gender <> '{gender}' \
                 OR (village = '{village}' AND birth_date = DATE '{birth}')) \
                 GROUP BY ROLLUP(county_code, gender)"
            ),
            ["totals over its groups", "140215"],
        ),
    ] {
        let err = client.query(&sql).await.unwrap_err().to_string();
        assert!(
            err.contains("refused by rule min-group-size") && says.iter().all(|s| err.contains(s)),
            "{sql}\n{err}"
        );
    }

    let files = oracle::city_context(dir).await;
    // A scalar subquery merges its own figure across nodes; no node held a group of it
    // back, so it does not stop the groups held back below the other merge being left out.
    let with_subquery =
        format!("({one_at_140215}) AND birth_date >= (SELECT min(birth_date) FROM persons)");
    // The lonely person's side of a union, and all of 140215 or of the city.
    let union = |everyone: &str| {
        format!(
            "(SELECT county_code, gender FROM persons WHERE county_code = '140215' AND \
             village = '{village}' AND birth_date = DATE '{birth}' UNION ALL \
             SELECT county_code, gender FROM persons {everyone}) t"
        )
    };
    for (case, (groups, from, left_out)) in [
        (
            "county_code, gender",
            format!("persons WHERE {one_at_140215}"),
            format!("140215 {gender} "),
        ),
        (
            "gender",
            format!("persons WHERE {one_at_140215}"),
            format!("{gender} "),
        ),
        (
            "gender",
            format!("persons WHERE {with_subquery}"),
            format!("{gender} "),
        ),
        // The group is also a value of the list the filter reads: left out at every
        // node, it leaves no part of it to hold back, and it still counts as left out.
        (
            "gender",
            format!("persons WHERE ({one_at_140215}) AND gender IN (SELECT gender FROM persons)"),
            format!("{gender} "),
        ),
        (
            "gender",
            format!(
                "persons p WHERE ({one_at_140215}) AND EXISTS (SELECT 1 FROM persons q \
                 WHERE q.gender = p.gender)"
            ),
            format!("{gender} "),
        ),
        // The list holds a value of other meaning whose key is the group's: it keeps it,
        // and so the other groups keep the rows of 140212 it lets through.
        (
            "gender",
            format!(
                "persons p WHERE ({one_at_140215}) AND (CASE WHEN p.county_code = '140212' \
                 THEN '{gender}' ELSE '?' END) IN (SELECT CASE WHEN q.county_code = '140212' \
                 THEN '{gender}' ELSE '?' END FROM persons q)"
            ),
            format!("{gender} "),
        ),
        // A union's side at one node held the group back: the other side's part of it
        // is left out too, within one node and within one county.
        (
            "gender",
            union("WHERE county_code = '140215'"),
            format!("{gender} "),
        ),
        (
            "county_code, gender",
            union(""),
            format!("140215 {gender} "),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        // Each case asks as an analyst of its own: the persons behind one case, or behind
        // a part of it such as its subquery, differ from another's by the lonely person.
        let analyst = new_user(
            &city.coordinator.addr,
            &format!("case{case}"),
            "city_analyst",
            &[],
        );
        let mut client = SqlClient::connect(&city.coordinator.addr, &analyst)
            .await
            .unwrap();
        let sql =
            format!("SELECT concat_ws(' ', {groups}, count(*)) AS g FROM {from} GROUP BY {groups}");
        let answer = client.query(&sql).await.unwrap();
        assert_eq!(answer.suppressed_groups, 1, "{groups}");
        let shown: BTreeSet<String> = answer
            .batches
            .iter()
            .flat_map(|b| {
                let groups = b.column(0).as_string::<i32>();
                groups
                    .iter()
                    .flatten()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut expected = oracle::strings(&files, &sql).await;
        let all = expected.len();
        expected.retain(|g| !g.starts_with(&left_out));
        assert_eq!(expected.len(), all - 1, "one group is left out: {groups}");
        assert_eq!(shown, expected, "{groups}");
    }

    // A county's total, then its breakdown that holds back the lonely person's group:
    // the total less the groups shown would give that group away.
    let county = format!(
        "FROM persons WHERE county_code = '140215' AND (gender <> '{gender}' \
         OR (village = '{village}' AND birth_date = DATE '{birth}'))"
    );
    client
        .query(&format!("SELECT county_code, count(*) {county} GROUP BY 1"))
        .await
        .unwrap();
    let breakdown = format!("SELECT county_code, gender, count(*) {county} GROUP BY 1, 2");
    let err = client.query(&breakdown).await.unwrap_err().to_string();
    assert!(
        err.contains("refused by rule differencing")
            && err.contains("in the groups shown by")
            && err.contains("differ by 1"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_and_wrong_roles_are_refused_and_audited() {
    let city = start_city(shared_city().dir.path(), &[]);
    let addr = city.coordinator.addr.clone();
    let sql = "SELECT count(*) FROM disbursements";
    let expiring = new_user(&addr, "short", "city_analyst", &["--valid-for", "1s"]);
    let revoked = new_user(&addr, "gone", "city_analyst", &[]);
    admin(&addr, TOKEN, &["user", "revoke", "--name", "gone"]);
    let county = new_user(&addr, "zhao", "county_analyst", &["--node", "140215"]);
    let auditor = new_user(&addr, "qian", "auditor", &[]);
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    for (token, expected) in [
        ("sl_forged0000000000000000000000", "unknown token"),
        (expiring.as_str(), "expired"),
        (revoked.as_str(), "revoked"),
        (county.as_str(), "county analyst of 140215"),
        (auditor.as_str(), "is an auditor"),
    ] {
        let mut client = SqlClient::connect(&addr, token).await.unwrap();
        let err = client.query(sql).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
    }
    // A renewed token works in place of the revoked one.
    let renewed = admin(&addr, TOKEN, &["user", "renew", "--name", "gone"]);
    let renewed = renewed
        .split_once("store it now): ")
        .map(|(_, t)| t.trim().to_string())
        .unwrap_or_else(|| panic!("no token printed: {renewed}"));
    let mut client = SqlClient::connect(&addr, &renewed).await.unwrap();
    assert_eq!(client.query(sql).await.unwrap().num_rows(), 1);
    let mut client = SqlClient::connect(&addr, &revoked).await.unwrap();
    let err = client.query(sql).await.unwrap_err().to_string();
    assert!(err.contains("unknown token"), "{err}");
    // An administrator's call says which role it needs.
    let err = sunlight_fails(&[
        "admin",
        "--coordinator",
        &addr,
        "--token",
        &auditor,
        "user",
        "revoke",
        "--name",
        "short",
    ]);
    assert!(
        err.contains("qian has the role auditor; this call needs the role administrator"),
        "{err}"
    );
    // The county analyst runs SQL at his own node instead, and only there, until revoked:
    // the city sends each node its analysts.
    let node = |code: &str| {
        let (_, process) = city.nodes.iter().find(|(c, _)| c.as_str() == code).unwrap();
        process.addr.clone()
    };
    let own = node("140215");
    let counted = once_it_is(&own, &county, sql, true).await.unwrap();
    assert_eq!(counted.num_rows(), 1);
    let err = answer(&node("140212"), &county, sql).await.unwrap_err();
    assert!(err.contains("unknown or revoked token"), "{err}");
    admin(&addr, TOKEN, &["user", "revoke", "--name", "zhao"]);
    let err = once_it_is(&own, &county, sql, false).await.unwrap_err();
    assert!(err.contains("unknown or revoked token"), "{err}");

    // Refusals are audited in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let rows = audit_rows(&addr, &["--action", "access"]);
        let by = |user: &str, says: &str| {
            rows.iter()
                .any(|r| r["user"] == user && r["decision"].as_str().unwrap().contains(says))
        };
        let all = by("unknown", "unknown token")
            && by("short", "expired")
            && by("gone", "revoked")
            && by("zhao", "county analyst")
            && by("qian", "auditor");
        if all {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{rows:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `token`'s answer to `sql` at `addr`, or the error, as text.
async fn answer(addr: &str, token: &str, sql: &str) -> Result<QueryResult, String> {
    let mut client = SqlClient::connect(addr, token).await.unwrap();
    client.query(sql).await.map_err(|e| e.to_string())
}

/// [`answer`], asked again every 200 ms for up to 20 s until it is an answer (or, unless
/// `answered`, an error): the last one. The city sends nodes their analysts by itself.
async fn once_it_is(
    addr: &str,
    token: &str,
    sql: &str,
    answered: bool,
) -> Result<QueryResult, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let result = answer(addr, token, sql).await;
        if result.is_ok() == answered || std::time::Instant::now() > deadline {
            return result;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A node started with `--local-analysts-only` takes no county analysts from the city;
/// one that takes them names them in its access log.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_may_take_no_county_analysts_from_the_city() {
    let city = shared_city();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.jsonl");
    let root = |code: &str| node_root(city.dir.path(), code.parse().unwrap());
    let taking = ServiceProcess::start_with(
        "140215",
        &root("140215"),
        &["--audit-log", &log.display().to_string()],
    );
    let local = ServiceProcess::start_with("140221", &root("140221"), &["--local-analysts-only"]);
    let nodes = [
        ("140215".to_string(), taking.addr.clone()),
        ("140221".to_string(), local.addr.clone()),
    ];
    let coordinator = ServiceProcess::coordinator(&nodes, &[]);
    let addr = &coordinator.addr;
    let wang = new_user(addr, "wang", "county_analyst", &["--node", "140221"]);
    let zhao = new_user(addr, "zhao", "county_analyst", &["--node", "140215"]);
    let sql = "SELECT count(*) FROM payroll";
    // Once zhao's node has him, the city has sent wang's node its analysts too.
    once_it_is(&taking.addr, &zhao, sql, true).await.unwrap();
    let err = answer(&local.addr, &wang, sql).await.unwrap_err();
    assert!(err.contains("unknown or revoked token"), "{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("\"county analysts\"") && l.contains("holds zhao@city")),
        "{text}"
    );
    assert!(
        text.contains("\"user\":\"zhao@city\",\"action\":\"sql\""),
        "{text}"
    );
}

/// Sends a fragment straight to a node, as a hostile coordinator would.
/// `function` of `arg` over `rows` in `mode`, grouped by the columns `groups`.
fn aggregate(
    mode: AggregateMode,
    rows: Arc<dyn ExecutionPlan>,
    groups: &[&str],
    function: Arc<AggregateUDF>,
    arg: Arc<dyn PhysicalExpr>,
) -> Arc<dyn ExecutionPlan> {
    let schema = rows.schema();
    let groups = groups
        .iter()
        .map(|g| (col(g, &schema).unwrap(), g.to_string()))
        .collect();
    let function = AggregateExprBuilder::new(function, vec![arg])
        .schema(schema.clone())
        .alias("value")
        .build()
        .unwrap();
    Arc::new(
        AggregateExec::try_new(
            mode,
            PhysicalGroupBy::new_single(groups),
            vec![Arc::new(function)],
            vec![None],
            rows,
            schema,
        )
        .unwrap(),
    )
}

async fn send_fragment(
    node: &str,
    code: &str,
    token: &str,
    plan: Arc<dyn ExecutionPlan>,
) -> Result<Vec<arrow::record_batch::RecordBatch>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{node}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let ticket = ticket(&FragmentTicket {
        plan: encode_plan(plan).unwrap().to_vec(),
        query_id: "crafted".into(),
        node: code.into(),
        excluded_groups: vec![],
        shared_persons: None,
    });
    let mut request = tonic::Request::new(ticket);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let stream = FlightServiceClient::new(channel)
        .do_get(request)
        .await?
        .into_inner();
    FlightRecordBatchStream::new_from_flight_data(stream.map_err(Into::into))
        .try_collect()
        .await
        .map_err(|e| tonic::Status::internal(e.to_string()))
}

/// A client of the node service at `addr`, and `message` as a request made with `token`.
async fn control<T>(
    addr: &str,
    token: &str,
    message: T,
) -> (
    NodeServiceClient<tonic::transport::Channel>,
    tonic::Request<T>,
) {
    let client = NodeServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    (client, request)
}

/// The node at `addr`'s answer to a request for its person tokens, made with `token`.
async fn person_tokens(addr: &str, token: &str) -> Result<PersonTokenSet, tonic::Status> {
    let (mut client, request) = control(addr, token, PersonTokensRequest {}).await;
    Ok(client.person_tokens(request).await?.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_guards_itself_against_crafted_fragments_and_strangers() {
    let city = shared_city();
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("access.jsonl");
    let log_arg = log.display().to_string();
    let code: NodeCode = "140215".parse().unwrap();
    let node = ServiceProcess::start_with(
        code.as_str(),
        &node_root(city.dir.path(), code),
        &["--audit-log", &log_arg],
    );

    // Raw quasi-identifiers row by row.
    let leaf = |table: Table, columns: &[&str]| -> Arc<dyn ExecutionPlan> {
        let schema = table.schema();
        let projection = columns
            .iter()
            .map(|c| schema.index_of(c).unwrap())
            .collect();
        Arc::new(TableLeafExec::try_new(table, Some(projection), 1, None).unwrap())
    };
    let err = send_fragment(
        &node.addr,
        "140215",
        CITY_TOKEN,
        leaf(Table::Persons, &["person_id", "birth_date"]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("refused by rule quasi-identifier")
            && err.message().contains("persons.birth_date"),
        "{err}"
    );

    // Single rows picked by a quasi-identifier tell its values, even when it is not sent.
    let picked: Arc<dyn ExecutionPlan> = {
        let rows = leaf(Table::Disbursements, &["payment_id", "amount"]);
        let schema = rows.schema();
        let large = binary(
            col("amount", &schema).unwrap(),
            Operator::Gt,
            lit(ScalarValue::Decimal128(Some(100_000), 12, 2)),
            &schema,
        )
        .unwrap();
        let filtered = Arc::new(FilterExec::try_new(large, rows).unwrap());
        let id = ProjectionExpr {
            expr: col("payment_id", &schema).unwrap(),
            alias: "payment_id".into(),
        };
        Arc::new(ProjectionExec::try_new(vec![id], filtered).unwrap())
    };
    let err = send_fragment(&node.addr, "140215", CITY_TOKEN, picked)
        .await
        .unwrap_err();
    assert!(
        err.message().contains("refused by rule quasi-identifier")
            && err
                .message()
                .contains("chosen or ordered by disbursements.amount"),
        "{err}"
    );

    // A median's partial state is the amounts themselves, even grouped by county.
    let rows = leaf(Table::Disbursements, &["county_code", "amount"]);
    let amount = col("amount", &rows.schema()).unwrap();
    let partial_median = aggregate(
        AggregateMode::Partial,
        rows,
        &["county_code"],
        median_udaf(),
        amount,
    );
    let err = send_fragment(&node.addr, "140215", CITY_TOKEN, partial_median)
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("aggregate median is not allowed in a fragment's partial phase"),
        "{err}"
    );

    // An estimate's partial state is a sketch of the birth dates' hashes, from which
    // every birth date there could be is tested in turn.
    let persons = leaf(Table::Persons, &["county_code", "birth_date"]);
    let born = col("birth_date", &persons.schema()).unwrap();
    let partial_estimate = aggregate(
        AggregateMode::Partial,
        persons,
        &["county_code"],
        approx_distinct_udaf(),
        born,
    );
    let err = send_fragment(&node.addr, "140215", CITY_TOKEN, partial_estimate)
        .await
        .unwrap_err();
    assert!(
        err.message().contains("refused by rule quasi-identifier")
            && err.message().contains("or a sketch of them"),
        "{err}"
    );

    // A whole table about no person, such as the reference table, is counted as any other.
    let standards = aggregate(
        AggregateMode::Single,
        leaf(Table::SubsidyStandards, &["subsidy_type"]),
        &[],
        count_udaf(),
        lit(1i64),
    );
    let counted = send_fragment(&node.addr, "140215", CITY_TOKEN, standards)
        .await
        .unwrap();
    let expected = oracle::strings(
        &oracle::context(city.dir.path(), &[code]),
        "SELECT count(*) FROM subsidy_standards",
    )
    .await;
    let n = counted[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(BTreeSet::from([n.to_string()]), expected);

    // A function outside the nodes' list: the city refuses it before asking, and a node
    // refuses it in a fragment made elsewhere.
    let hashed: Arc<dyn ExecutionPlan> = {
        let rows = leaf(Table::Disbursements, &["county_code"]);
        let schema = rows.schema();
        let md5 = ScalarFunctionExpr::try_new(
            datafusion::functions::crypto::md5(),
            vec![col("county_code", &schema).unwrap()],
            &schema,
            Arc::new(ConfigOptions::default()),
        )
        .unwrap();
        let hash = ProjectionExpr {
            expr: Arc::new(md5),
            alias: "hash".into(),
        };
        Arc::new(ProjectionExec::try_new(vec![hash], rows).unwrap())
    };
    let err = send_fragment(&node.addr, "140215", CITY_TOKEN, hashed)
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("function md5 is not allowed in a fragment"),
        "{err}"
    );

    // Identifiers leave only as keyed tokens, as their 16 bytes.
    let rows = send_fragment(
        &node.addr,
        "140215",
        CITY_TOKEN,
        leaf(Table::Persons, &["person_id", "name", "county_code"]),
    )
    .await
    .unwrap();
    let clear = oracle::strings(
        &oracle::context(city.dir.path(), &[code]),
        "SELECT person_id FROM persons UNION ALL SELECT name FROM persons",
    )
    .await;
    let tokens = Tokenizer::new(LINKAGE_KEY, 0);
    let expected: HashSet<Token> = clear.iter().map(|v| tokens.token(v)).collect();
    let sent: Vec<&[u8]> = rows
        .iter()
        .flat_map(|b| (0..2).flat_map(move |c| b.column(c).as_fixed_size_binary().iter().flatten()))
        .collect();
    assert!(!sent.is_empty());
    assert!(
        sent.iter()
            .all(|v| Token::try_from(*v).is_ok_and(|t| expected.contains(&t))),
        "identifiers left other than as their tokens"
    );

    // The city's identity runs no SQL here, and a stranger's token is nobody's.
    let mut as_city = SqlClient::connect(&node.addr, CITY_TOKEN).await.unwrap();
    let err = as_city.query("SELECT * FROM persons").await.unwrap_err();
    assert!(err.to_string().contains("may not run SQL here"), "{err}");
    let mut other_county = SqlClient::connect(&node.addr, "token-of-another-county")
        .await
        .unwrap();
    let err = other_county.query("SELECT 1").await.unwrap_err();
    assert!(err.to_string().contains("Unauthenticated"), "{err}");

    // The tokens of all the county's persons go to the city alone, and so do model steps,
    // hit listings and case openings: a county's analyst may neither record hits the
    // city reports nor open a case in an investigator's name.
    let for_the_city = |result: Result<(), tonic::Status>, action: &str| {
        let err = result.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        let says = format!("{action} is for the city's coordinator");
        assert!(err.message().contains(&says), "{err}");
    };
    for_the_city(
        person_tokens(&node.addr, TOKEN).await.map(drop),
        "person tokens",
    );
    let (mut client, request) = control(&node.addr, TOKEN, ModelStep::default()).await;
    for_the_city(client.run_model(request).await.map(drop), "model step");
    let (mut client, request) = control(&node.addr, TOKEN, RunHits::default()).await;
    for_the_city(client.list_hits(request).await.map(drop), "hit listing");
    let opening = CaseOpening {
        model_id: "deceased_recipient".into(),
        payment_ids: vec!["140215-000000001".into()],
        case_no: "2026-001".into(),
        reason: "a look".into(),
        investigator: "someone else".into(),
    };
    let (mut client, request) = control(&node.addr, TOKEN, opening).await;
    for_the_city(client.open_case(request).await.map(drop), "case opening");

    // A node without a linkage key has no tokens to give, and says so.
    let keyless = ServiceProcess::start_keyless(code.as_str(), &node_root(city.dir.path(), code));
    let err = person_tokens(&keyless.addr, CITY_TOKEN).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message()
            .contains("node 140215 has no linkage key, so its persons have no tokens"),
        "{err}"
    );

    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let refused = |action: &str, says: &str| {
        records
            .iter()
            .any(|r| r["action"] == action && r["decision"].as_str().unwrap().contains(says))
    };
    assert!(refused("fragment", "quasi-identifier"), "{text}");
    assert!(refused("sql", "may not run SQL here"), "{text}");
    assert!(refused("access", "unknown or revoked token"), "{text}");
    for action in ["person tokens", "model step", "hit listing", "case opening"] {
        assert!(refused(action, "for the city's coordinator"), "{text}");
    }
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "fragment"
                && r["decision"].as_str().unwrap().starts_with("allowed")),
        "{text}"
    );
    let verified = sunlight(&["audit", "verify", "--node-log", &log_arg]);
    assert!(verified.contains("chain intact"), "{verified}");
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&log, lines[1..].join("\n")).unwrap();
    let err = sunlight_fails(&["audit", "verify", "--node-log", &log_arg]);
    assert!(err.contains("broken at line 1"), "{err}");
}
