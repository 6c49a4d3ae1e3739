//! The seven built-in models, added, approved, rolled out and run through the CLI over
//! eleven node processes: every node's `model_hits` equal the generator's ground truth
//! and the rules computed by centralized DataFusion; bad packages and unapproved
//! rollouts are refused and leave the registry unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use arrow::array::AsArray;
use sunlight_client::SqlClient;
use sunlight_domain::ProblemModel;

use crate::ground_truth;
use sunlight_domain::NodeCode;

use crate::support::{ServiceProcess, TOKEN, shared_city, start_city, sunlight, sunlight_fails};

fn model(coordinator: &str, token: &str, args: &[&str]) -> String {
    let mut all = vec!["model", "--coordinator", coordinator, "--token", token];
    all.extend_from_slice(args);
    sunlight(&all)
}

/// Writes a one-model package with `rule` into `dir`.
fn package(dir: &Path, id: &str, rule: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("model.toml"),
        format!(
            "id = \"{id}\"\nversion = 1\ntitle_zh = \"测试\"\ntitle_en = \"test\"\n\
             description = \"a test rule\"\nseverity = \"low\"\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("rule.sql"), rule).unwrap();
    dir.display().to_string()
}

/// Adds a second administrator, who approves what the bootstrap administrator adds.
fn approver(coordinator: &str) -> String {
    let out = sunlight(&[
        "admin",
        "--coordinator",
        coordinator,
        "--token",
        TOKEN,
        "user",
        "add",
        "--name",
        "approver",
        "--role",
        "administrator",
    ]);
    out.lines()
        .find_map(|l| {
            l.split_once("store it now): ")
                .map(|(_, t)| t.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no token printed: {out}"))
}

/// Approves (as a second administrator) and rolls out the built-in models: the canary
/// 140215 first, then every node.
fn approve_and_roll_out(coordinator: &str) {
    let approver = approver(coordinator);
    for m in ProblemModel::ALL {
        model(
            coordinator,
            &approver,
            &["approve", "--id", m.id(), "--version", "1"],
        );
        model(
            coordinator,
            TOKEN,
            &[
                "rollout",
                "--id",
                m.id(),
                "--version",
                "1",
                "--nodes",
                "140215",
            ],
        );
        model(
            coordinator,
            TOKEN,
            &["rollout", "--id", m.id(), "--version", "1", "--all"],
        );
    }
}

/// Every node's own `model_hits`, read as its county analyst would: model → payment ids.
async fn node_hits(nodes: &[(NodeCode, ServiceProcess)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (code, node) in nodes {
        let mut client = SqlClient::connect(&node.addr, TOKEN).await.unwrap();
        let result = client
            .query("SELECT model_id, payment_id, county_code FROM model_hits")
            .await
            .unwrap();
        for batch in &result.batches {
            let (models, ids, counties) = (
                batch.column(0).as_string::<i32>(),
                batch.column(1).as_string::<i32>(),
                batch.column(2).as_string::<i32>(),
            );
            for i in 0..batch.num_rows() {
                assert_eq!(counties.value(i), code.as_str());
                found
                    .entry(models.value(i).to_string())
                    .or_default()
                    .insert(ids.value(i).to_string());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn built_in_models_find_exactly_the_planted_hits() {
    let city = shared_city();
    let running = start_city(city.dir.path(), &[]);
    let coordinator = running.coordinator.addr.clone();
    model(&coordinator, TOKEN, &["add", "--builtin"]);
    // The author cannot approve, and nothing unapproved rolls out.
    let own = sunlight_fails(&[
        "model",
        "--coordinator",
        &coordinator,
        "--token",
        TOKEN,
        "approve",
        "--id",
        "over_standard",
        "--version",
        "1",
    ]);
    assert!(own.contains("cannot approve"), "{own}");
    let early = sunlight_fails(&[
        "model",
        "--coordinator",
        &coordinator,
        "--token",
        TOKEN,
        "rollout",
        "--id",
        "over_standard",
        "--version",
        "1",
        "--all",
    ]);
    assert!(early.contains("not approved"), "{early}");
    let again = sunlight_fails(&[
        "model",
        "--coordinator",
        &coordinator,
        "--token",
        TOKEN,
        "add",
        "--builtin",
    ]);
    assert!(again.contains("already has version 1"), "{again}");

    approve_and_roll_out(&coordinator);
    let before = model(&coordinator, TOKEN, &["list"]);
    assert_bad_packages_are_refused(&coordinator);
    assert_eq!(
        model(&coordinator, TOKEN, &["list"]),
        before,
        "the registry changed"
    );

    let ran = model(&coordinator, TOKEN, &["run"]);
    assert!(!ran.contains("FAILED"), "{ran}");
    let mut found = node_hits(&running.nodes).await;
    for m in ProblemModel::ALL {
        let hits = found.remove(m.id()).unwrap_or_default();
        assert_eq!(
            &hits,
            city.report.truth.of(m),
            "{m}: hits differ from the planted truth"
        );
        assert_eq!(
            hits,
            ground_truth::hits(city.dir.path(), m).await,
            "{m}: hits differ from the rule in SQL"
        );
    }

    // The report adds up to the same numbers.
    let report = sunlight(&[
        "report",
        "--coordinator",
        &coordinator,
        "--token",
        TOKEN,
        "--format",
        "json",
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&report).unwrap();
    for m in ProblemModel::ALL {
        let total = rows
            .iter()
            .find(|r| r["model_id"] == m.id() && r["county_code"] == "all")
            .unwrap_or_else(|| panic!("no total of {m} in {report}"));
        assert_eq!(total["hits"], city.report.truth.of(m).len() as u64, "{m}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn built_in_models_find_the_hand_written_hits() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../integration-tests/fixtures/handmade");
    let city = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for code in ["140200", "140215", "140221"] {
        let data = city.path().join(code);
        std::fs::create_dir_all(&data).unwrap();
        let data_arg = data.display().to_string();
        let mut files = vec![(
            "subsidy_standards".to_string(),
            fixture.join("subsidy_standards.csv"),
        )];
        for entry in std::fs::read_dir(fixture.join(code)).unwrap() {
            let path = entry.unwrap().path();
            let table = path.file_stem().unwrap().to_string_lossy().to_string();
            files.push((table, path));
        }
        for (table, file) in files {
            sunlight(&[
                "import",
                "--data",
                &data_arg,
                "--table",
                &table,
                &file.display().to_string(),
            ]);
        }
        let code: NodeCode = code.parse().unwrap();
        nodes.push((code, ServiceProcess::start(code.as_str(), &data)));
    }
    let addrs: Vec<(String, String)> = nodes
        .iter()
        .map(|(c, p)| (c.to_string(), p.addr.clone()))
        .collect();
    let coordinator = ServiceProcess::coordinator(&addrs, &[]);
    model(&coordinator.addr, TOKEN, &["add", "--builtin"]);
    approve_and_roll_out(&coordinator.addr);
    let ran = model(&coordinator.addr, TOKEN, &["run"]);
    assert!(!ran.contains("FAILED"), "{ran}");

    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let text = std::fs::read_to_string(fixture.join("expected_hits.csv")).unwrap();
    for line in text.lines().skip(1) {
        let (model, payment) = line.split_once(',').unwrap();
        expected
            .entry(model.to_string())
            .or_default()
            .insert(payment.to_string());
    }
    let found = node_hits(&nodes).await;
    for m in ProblemModel::ALL {
        assert_eq!(found.get(m.id()), expected.get(m.id()), "{m}");
    }
}

fn assert_bad_packages_are_refused(coordinator: &str) {
    let dir = tempfile::tempdir().unwrap();
    for (id, rule, expected) in [
        ("broken_sql", "SELEC payment_id FROM disbursements", "SELEC"),
        (
            "unknown_table",
            "SELECT payment_id FROM salaries",
            "salaries",
        ),
        (
            "leaks_names",
            "SELECT payment_id, name FROM disbursements",
            "class-D column name",
        ),
    ] {
        let path = package(&dir.path().join(id), id, rule);
        let err = sunlight_fails(&[
            "model",
            "--coordinator",
            coordinator,
            "--token",
            TOKEN,
            "add",
            "--package",
            &path,
        ]);
        assert!(err.contains(expected), "{id}: {err}");
    }
}
