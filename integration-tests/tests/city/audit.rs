//! Every city query lands in the replicated audit log with its user, statement, plan hash
//! and the rows and bytes that left each node; the log's hash chain verifies, and an
//! altered, reordered or shortened export does not.

use sunlight_client::SqlClient;

use crate::support::{TOKEN, new_user, shared_city, start_city, sunlight, sunlight_fails};

fn audit(coordinator: &str, args: &[&str]) -> String {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--coordinator", coordinator, "--token", TOKEN]);
    sunlight(&all)
}

#[tokio::test(flavor = "multi_thread")]
async fn city_queries_are_audited_and_the_chain_verifies() {
    let city = start_city(shared_city().dir.path(), &[]);
    let addr = city.coordinator.addr.clone();
    let mut client = SqlClient::connect(&addr, TOKEN).await.unwrap();
    let ok = "SELECT county_code, count(*) FROM disbursements WHERE county_code IN ('140215', '140221') GROUP BY 1";
    client.query(ok).await.unwrap();
    client.query("SELECT * FROM salaries").await.unwrap_err();

    let listed = audit(&addr, &["list", "--action", "query", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(rows.len(), 2, "{listed}");
    let answered = &rows[0];
    assert_eq!(answered["user"], "cli");
    assert_eq!(answered["role"], "administrator");
    assert!(
        answered["decision"]
            .as_str()
            .unwrap()
            .starts_with("allowed: 2 rows")
    );
    let detail: serde_json::Value =
        serde_json::from_str(answered["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["sql"], ok);
    assert_eq!(detail["plan_sha256"].as_str().unwrap().len(), 64);
    let nodes = detail["nodes"].as_object().unwrap();
    assert_eq!(
        nodes.keys().collect::<Vec<_>>(),
        ["140215", "140221"],
        "pruned nodes are not touched"
    );
    assert!(
        nodes
            .values()
            .all(|n| n["rows"].as_u64().unwrap() >= 1 && n["bytes"].as_u64().unwrap() > 0)
    );
    let refused = rows[1]["decision"].as_str().unwrap();
    assert!(
        refused.starts_with("refused:") && refused.contains("salaries"),
        "{refused}"
    );

    // County analysts query their own node, never the city.
    let token = new_user(&addr, "zhao", "county_analyst", &["--node", "140215"]);
    let err = sunlight_fails(&["sql", "--city", &addr, "--token", &token, "SELECT 1"]);
    assert!(err.contains("county analyst of 140215"), "{err}");
    let by_user = audit(
        &addr,
        &[
            "list", "--user", "cli", "--action", "user.add", "--format", "csv",
        ],
    );
    assert!(
        by_user.contains("zhao as county_analyst of 140215"),
        "{by_user}"
    );
    let by_role = audit(
        &addr,
        &["list", "--role", "county_analyst", "--format", "csv"],
    );
    assert!(by_role.contains("zhao,county_analyst,access"), "{by_role}");
    // Filters that could match nothing by mistake are refused.
    for (filter, says) in [
        (
            &["--role", "nobody"][..],
            "unknown role \"nobody\"; expected one of city_analyst",
        ),
        (
            &["--since", "2026-12-01", "--until", "2026-11-01"][..],
            "--since 2026-12-01 is not before --until 2026-11-01",
        ),
    ] {
        let mut args = vec!["audit", "list", "--coordinator", &addr, "--token", TOKEN];
        args.extend_from_slice(filter);
        let err = sunlight_fails(&args);
        assert!(err.contains(says), "{err}");
    }

    // A token with a lifetime stops working when it ends; a forged one never worked.
    let temp = new_user(&addr, "temp", "city_analyst", &["--valid-for", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    let err = sunlight_fails(&["sql", "--city", &addr, "--token", &temp, "SELECT 1"]);
    assert!(err.contains("token of temp expired"), "{err}");
    let err = sunlight_fails(&["sql", "--city", &addr, "--token", "sl_forged", "SELECT 1"]);
    assert!(err.contains("unknown token"), "{err}");
    let err = sunlight_fails(&[
        "admin",
        "--coordinator",
        &addr,
        "--token",
        TOKEN,
        "user",
        "add",
        "--name",
        "x",
        "--role",
        "auditor",
        "--valid-for",
        "5x",
    ]);
    assert!(err.contains("--valid-for \"5x\""), "{err}");

    assert!(audit(&addr, &["verify"]).contains("chain intact"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.json");
    let file_arg = file.display().to_string();
    audit(&addr, &["export", "--output", &file_arg]);
    sunlight(&["audit", "verify", "--file", &file_arg]);
    let records: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let tamper = |edit: &dyn Fn(&mut Vec<serde_json::Value>), expected: &str| {
        let mut copy = records.clone();
        edit(&mut copy);
        std::fs::write(&file, serde_json::to_string(&copy).unwrap()).unwrap();
        let err = sunlight_fails(&["audit", "verify", "--file", &file_arg]);
        assert!(err.contains(expected), "{expected}: {err}");
    };
    tamper(
        &|r| r[1]["detail"] = "nothing to see".into(),
        "record 2 was altered",
    );
    tamper(&|r| r.swap(2, 3), "record 3 is missing");
    tamper(
        &|r| {
            r.remove(1);
        },
        "record 2 is missing",
    );
}

/// An audit log larger than one gRPC reply (4 MiB by default) is still listed and
/// verified: it is read page by page.
#[tokio::test(flavor = "multi_thread")]
async fn an_audit_log_larger_than_a_reply_is_read_page_by_page() {
    let city = start_city(shared_city().dir.path(), &[]);
    let addr = city.coordinator.addr.clone();
    let mut client = SqlClient::connect(&addr, TOKEN).await.unwrap();
    let long = "x".repeat(400_000);
    let sql = format!("SELECT count(*) FROM payroll WHERE employer <> '{long}'");
    for _ in 0..12 {
        client.query(&sql).await.unwrap();
    }
    let listed = audit(&addr, &["list", "--action", "query", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(rows.len(), 12);
    assert!(
        rows.iter()
            .all(|r| r["detail"].as_str().unwrap().contains(&long))
    );
    assert!(audit(&addr, &["verify"]).contains("chain intact"));
}
