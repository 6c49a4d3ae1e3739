//! The seven built-in models, added, approved, rolled out and run through the CLI over
//! eleven node processes: every node's `model_hits` equal the generator's ground truth
//! and the rules computed by centralized DataFusion; bad packages and unapproved
//! rollouts are refused and leave the registry unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use sunlight_client::SqlClient;
use sunlight_datagen::GroundTruth;
use sunlight_domain::ProblemModel;

use crate::ground_truth;
use sunlight_domain::NodeCode;

use crate::support::{
    ServiceProcess, TOKEN, Tapped, new_user, shared_city, start_city, sunlight, sunlight_fails,
};

pub(crate) fn model(coordinator: &str, token: &str, args: &[&str]) -> String {
    let mut all = vec!["model", "--coordinator", coordinator, "--token", token];
    all.extend_from_slice(args);
    sunlight(&all)
}

/// Runs `sunlight model` expecting failure; returns its standard error.
fn model_fails(coordinator: &str, token: &str, args: &[&str]) -> String {
    let mut all = vec!["model", "--coordinator", coordinator, "--token", token];
    all.extend_from_slice(args);
    sunlight_fails(&all)
}

/// Writes version `version` of a one-model package with `rule` into `dir`.
fn package(dir: &Path, id: &str, version: u32, rule: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("model.toml"),
        format!(
            "id = \"{id}\"\nversion = {version}\ntitle_zh = \"测试\"\ntitle_en = \"test\"\n\
             description = \"a test rule\"\nseverity = \"low\"\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("rule.sql"), rule).unwrap();
    dir.display().to_string()
}

/// Adds a second administrator, who approves what the bootstrap administrator adds.
fn approver(coordinator: &str) -> String {
    new_user(coordinator, "approver", "administrator", &[])
}

/// Approves (as a second administrator) and rolls out the built-in models: the canary
/// 140215 first, then every node.
pub(crate) fn approve_and_roll_out(coordinator: &str) -> String {
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
    approver
}

/// Adds, approves, rolls out and runs the built-in models at `coordinator`, whose one
/// node is `node` of county `code`, the rollout's canary county: the models that look at
/// one node only find exactly the county's hits planted in `truth`.
pub(crate) async fn one_county_models_find_the_planted_hits(
    coordinator: &str,
    code: NodeCode,
    node: ServiceProcess,
    truth: &GroundTruth,
) {
    model(coordinator, TOKEN, &["add", "--builtin"]);
    approve_and_roll_out(coordinator);
    let ran = model(coordinator, TOKEN, &["run"]);
    assert!(!ran.contains("FAILED"), "{ran}");
    let found = node_hits(&[(code, node)]).await;
    for m in [
        ProblemModel::UnderageElderlyAllowance,
        ProblemModel::DeceasedRecipient,
        ProblemModel::OverStandard,
        ProblemModel::DisabilityWithoutCert,
    ] {
        let planted: BTreeSet<String> = truth
            .of(m)
            .iter()
            .filter(|id| id.starts_with(code.as_str()))
            .cloned()
            .collect();
        assert!(!planted.is_empty(), "{m}");
        assert_eq!(found.get(m.id()), Some(&planted), "{m}");
    }
}

/// Every node's own `model_hits`, read as its county analyst would: model → payment ids.
pub(crate) async fn node_hits(
    nodes: &[(NodeCode, ServiceProcess)],
) -> BTreeMap<String, BTreeSet<String>> {
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
    let own = model_fails(
        &coordinator,
        TOKEN,
        &["approve", "--id", "over_standard", "--version", "1"],
    );
    assert!(own.contains("cannot approve"), "{own}");
    let early = model_fails(
        &coordinator,
        TOKEN,
        &[
            "rollout",
            "--id",
            "over_standard",
            "--version",
            "1",
            "--all",
        ],
    );
    assert!(early.contains("not approved"), "{early}");
    let again = model_fails(&coordinator, TOKEN, &["add", "--builtin"]);
    assert!(again.contains("already has version 1"), "{again}");

    approve_and_roll_out(&coordinator);
    let before = model(&coordinator, TOKEN, &["list"]);
    assert_bad_packages_are_refused(&coordinator);
    assert_eq!(
        model(&coordinator, TOKEN, &["list"]),
        before,
        "the registry changed"
    );

    // Every node installed the seven versions rolled out to it, rules included.
    for (_, node) in &running.nodes {
        let mut client = SqlClient::connect(&node.addr, TOKEN).await.unwrap();
        let installed = client
            .query("SELECT model_id, package FROM model_versions WHERE model_version = 1")
            .await
            .unwrap();
        assert_eq!(installed.num_rows(), 7);
        let rules: Vec<&str> = installed
            .batches
            .iter()
            .flat_map(|b| b.column(1).as_string::<i32>().iter().flatten())
            .collect();
        assert!(
            rules
                .iter()
                .any(|p| p.contains("HAVING count(DISTINCT household) >= 2"))
        );
    }

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

    // Linkage as a capability: rows sharing person, type and period anywhere in the city
    // are exactly duplicate_payment's hits, node by node.
    let linked = sunlight(&[
        "linkage",
        "run",
        "--coordinator",
        &coordinator,
        "--token",
        TOKEN,
        "--table",
        "disbursements",
        "--key",
        "person_id,subsidy_type,period",
    ]);
    for (code, _) in &running.nodes {
        let expected = city
            .report
            .truth
            .of(ProblemModel::DuplicatePayment)
            .iter()
            .filter(|p| p.starts_with(code.as_str()))
            .count();
        let row = linked
            .lines()
            .find(|l| l.starts_with(code.as_str()))
            .unwrap_or_else(|| panic!("no {code} in {linked}"));
        assert_eq!(
            row.split_whitespace().nth(1),
            Some(expected.to_string().as_str()),
            "{row}"
        );
    }
    for (args, expected) in [
        (["persons", "person_id"], "not over persons"),
        (["disbursements", "nope"], "no column \"nope\""),
    ] {
        let err = sunlight_fails(&[
            "linkage",
            "run",
            "--coordinator",
            &coordinator,
            "--token",
            TOKEN,
            "--table",
            args[0],
            "--key",
            args[1],
        ]);
        assert!(err.contains(expected), "{err}");
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

/// The hand-written city of `fixtures/handmade`, imported with `sunlight import`, served
/// by three nodes and a coordinator, with the built-in models deployed and run once.
struct HandmadeCity {
    fixture: PathBuf,
    nodes: Vec<(NodeCode, ServiceProcess)>,
    coordinator: ServiceProcess,
    approver: String,
    _dir: tempfile::TempDir,
}

impl HandmadeCity {
    /// The hits worked out by hand, by model.
    fn expected_hits(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let text = std::fs::read_to_string(self.fixture.join("expected_hits.csv")).unwrap();
        for line in text.lines().skip(1) {
            let (model, payment) = line.split_once(',').unwrap();
            expected
                .entry(model.to_string())
                .or_default()
                .insert(payment.to_string());
        }
        expected
    }
}

/// `extra` goes to the coordinator; `run` runs the models once.
fn handmade_city(extra: &[&str], run: bool) -> HandmadeCity {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../integration-tests/fixtures/handmade");
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for code in ["140200", "140215", "140221"] {
        let data = dir.path().join(code);
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
    let coordinator = ServiceProcess::coordinator(&addrs, extra);
    model(&coordinator.addr, TOKEN, &["add", "--builtin"]);
    let approver = approve_and_roll_out(&coordinator.addr);
    if run {
        let ran = model(&coordinator.addr, TOKEN, &["run"]);
        assert!(!ran.contains("FAILED"), "{ran}");
    }
    HandmadeCity {
        fixture,
        nodes,
        coordinator,
        approver,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn built_in_models_find_the_hand_written_hits() {
    let city = handmade_city(&[], true);
    let expected = city.expected_hits();
    let found = node_hits(&city.nodes).await;
    for m in ProblemModel::ALL {
        assert_eq!(found.get(m.id()), expected.get(m.id()), "{m}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn outcomes_give_precision_and_a_candidate_shadows_then_rolls_back() {
    let city = handmade_city(&[], true);
    let coordinator = city.coordinator.addr.clone();
    let county = &city
        .nodes
        .iter()
        .find(|(c, _)| c.as_str() == "140215")
        .unwrap()
        .1
        .addr;
    let outcome = |model: &str, payment: &str, status: &str, recovered: &str| {
        vec![
            "outcome".to_string(),
            "--node".into(),
            county.clone(),
            "--token".into(),
            TOKEN.into(),
            "--model".into(),
            model.into(),
            "--payment-id".into(),
            payment.into(),
            "--status".into(),
            status.into(),
            "--recovered".into(),
            recovered.into(),
        ]
    };
    let run = |args: Vec<String>| sunlight(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let fails =
        |args: Vec<String>| sunlight_fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run(outcome(
        "over_standard",
        "140215-000000011",
        "confirmed",
        "0.01",
    ));
    run(outcome(
        "deceased_recipient",
        "140215-000000004",
        "dismissed",
        "",
    ));
    let err = fails(outcome(
        "over_standard",
        "140215-000000012",
        "confirmed",
        "",
    ));
    assert!(err.contains("not a hit of this model"), "{err}");
    let err = fails(outcome("over_standard", "140215-000000011", "maybe", ""));
    assert!(err.contains("\"confirmed\" or \"dismissed\""), "{err}");
    let err = fails(outcome(
        "over_standard",
        "140215-000000011",
        "confirmed",
        "12.345",
    ));
    assert!(err.contains("recovered amount"), "{err}");

    // An investigator opens a hit for a case: audited, then shown in clear.
    let investigator = new_user(&coordinator, "qian", "investigator", &[]);
    let open = |token: &str, payment: &str, reason: &str| {
        vec![
            "case".to_string(),
            "open".into(),
            "--coordinator".into(),
            coordinator.clone(),
            "--token".into(),
            token.into(),
            "--model".into(),
            "over_standard".into(),
            "--payment-id".into(),
            payment.into(),
            "--case-no".into(),
            "JW-2026-017".into(),
            "--reason".into(),
            reason.into(),
            "--format".into(),
            "csv".into(),
        ]
    };
    // They pick it from the hits of the model's latest run, which show no identifier.
    let hits = |token: &str, extra: &[&str]| {
        let mut args = vec![
            "case".to_string(),
            "hits".into(),
            "--coordinator".into(),
            coordinator.clone(),
            "--token".into(),
            token.into(),
            "--format".into(),
            "csv".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let listed = run(hits(&investigator, &["--model", "over_standard"]));
    let lines: Vec<&str> = listed.lines().collect();
    assert!(
        lines[0].starts_with("model_id,model_version,payment_id,run_id"),
        "{listed}"
    );
    let payments = |lines: &[&str]| -> Vec<String> {
        lines[1..]
            .iter()
            .map(|l| l.split(',').nth(2).unwrap().to_string())
            .collect()
    };
    let recorded: Vec<String> = node_hits(&city.nodes).await["over_standard"]
        .iter()
        .cloned()
        .collect();
    assert_eq!(payments(&lines), recorded, "{listed}");
    assert!(
        !listed.contains("140215196001010091") && !listed.contains("郑九"),
        "{listed}"
    );
    let only = run(hits(
        &investigator,
        &["--model", "over_standard", "--nodes", "140215"],
    ));
    assert_eq!(
        payments(&only.lines().collect::<Vec<_>>()),
        ["140215-000000011"],
        "{only}"
    );
    // Each with the verdict the county's analysts recorded on it.
    assert!(
        only.lines().next().unwrap().ends_with(",verdict,recovered"),
        "{only}"
    );
    assert!(
        only.lines().nth(1).unwrap().ends_with(",confirmed,0.01"),
        "{only}"
    );
    let err = fails(hits(
        &investigator,
        &["--model", "over_standard", "--nodes", "140299"],
    ));
    assert!(
        err.contains("has not run on node 140299; it ran on 140200"),
        "{err}"
    );
    let err = fails(hits(&investigator, &["--model", "no_such_model"]));
    assert!(err.contains("has not run on any node"), "{err}");
    let err = fails(hits(TOKEN, &["--model", "over_standard"]));
    assert!(err.contains("needs the role investigator"), "{err}");

    let rows = run(open(
        &investigator,
        "140215-000000011",
        "paid above the DIBAO cap",
    ));
    assert!(
        rows.contains("140215196001010091") && rows.contains("郑九") && rows.contains("600.01"),
        "{rows}"
    );
    let err = fails(open(&investigator, "140215-000000012", "paid the cap"));
    assert!(err.contains("not a hit of this model"), "{err}");
    let err = fails(open(TOKEN, "140215-000000011", "curious"));
    assert!(err.contains("needs the role investigator"), "{err}");
    let err = fails(open(&investigator, "140215-000000011", " "));
    assert!(err.contains("case number and a reason"), "{err}");
    let audited = |action: &str| {
        sunlight(&[
            "audit",
            "list",
            "--coordinator",
            &coordinator,
            "--token",
            TOKEN,
            "--action",
            action,
            "--format",
            "csv",
        ])
    };
    let cases = audited("case.open");
    assert!(
        cases.contains("JW-2026-017")
            && cases.contains("qian")
            && cases.contains("refused by node 140215"),
        "{cases}"
    );
    let listings = audited("case.hits");
    assert_eq!(listings.matches("qian").count(), 2, "{listings}");

    let precision = model(&coordinator, TOKEN, &["outcomes"]);
    let line = |text: &str, model: &str, node: &str| {
        text.lines()
            .find(|l| l.starts_with(model) && l.contains(node))
            .unwrap_or_else(|| panic!("no {model} {node} in {text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        line(&precision, "over_standard", "140215")[2..],
        ["1", "0", "1.000", "0.01"]
    );
    assert_eq!(
        line(&precision, "deceased_recipient", "140215")[2..],
        ["0", "1", "0.000", "0.00"]
    );

    // A candidate that also flags payments of exactly the cap, shadowed beside v1.
    let recorded = node_hits(&city.nodes).await["over_standard"].clone();
    let dir = tempfile::tempdir().unwrap();
    let rule = "SELECT d.payment_id FROM disbursements d JOIN subsidy_standards s \
                ON s.subsidy_type = d.subsidy_type AND s.valid_from <= d.period \
                AND (s.valid_to IS NULL OR d.period <= s.valid_to) WHERE d.amount >= s.cap";
    let path = package(&dir.path().join("v2"), "over_standard", 2, rule);
    model(&coordinator, TOKEN, &["add", "--package", &path]);
    let shadow = model(
        &coordinator,
        TOKEN,
        &["shadow", "--id", "over_standard", "--version", "2"],
    );
    let row = line(&shadow, "140215", "v1");
    assert_eq!(row[..5], ["140215", "v1", "1", "v2", "11"], "{shadow}");
    assert_eq!(row[5..], ["1/0", "1/0"], "{shadow}");
    // The shadow recorded nothing.
    assert_eq!(node_hits(&city.nodes).await["over_standard"], recorded);

    model(
        &coordinator,
        &city.approver,
        &["approve", "--id", "over_standard", "--version", "2"],
    );
    model(
        &coordinator,
        TOKEN,
        &[
            "rollout",
            "--id",
            "over_standard",
            "--version",
            "2",
            "--all",
        ],
    );
    assert!(
        model(&coordinator, TOKEN, &["list"])
            .contains("over_standard v2 runs on 140200, 140215, 140221")
    );
    model(
        &coordinator,
        TOKEN,
        &[
            "rollback",
            "--id",
            "over_standard",
            "--version",
            "1",
            "--nodes",
            "140215",
        ],
    );
    let status = model(&coordinator, TOKEN, &["status"]);
    let row = line(&status, "over_standard", "140215");
    assert_eq!(
        (row[2].as_str(), row[4].as_str(), row[5].as_str()),
        ("v1", "v1", "1"),
        "{status}"
    );
    let list = model(&coordinator, TOKEN, &["list"]);
    assert!(
        list.contains("over_standard v1 runs on 140215")
            && list.contains("over_standard v2 runs on 140200, 140221"),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leader_runs_the_models_on_a_schedule() {
    let city = handmade_city(&["--model-schedule-secs", "1"], false);
    let records: usize = city.expected_hits().values().map(BTreeSet::len).sum();
    let headline = format!("7 models, {records} suspect records");
    // A run records each model's summary a node at a time, after the nodes wrote its
    // hits: the report tells when a run has recorded them all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let report = sunlight(&[
            "report",
            "--coordinator",
            &city.coordinator.addr,
            "--token",
            TOKEN,
        ]);
        if report.contains(&headline) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled run recorded every model's hits in 20 s: {report}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let found = node_hits(&city.nodes).await;
    assert!(
        ProblemModel::ALL.iter().all(|m| found.contains_key(m.id())),
        "{found:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_identifier_leaves_a_node_during_model_runs_and_linkage() {
    let city = handmade_city(&[], false);
    let tapped = Tapped::start(
        city.nodes
            .iter()
            .map(|(code, node)| (code.to_string(), node.addr.as_str())),
    )
    .await;
    let coordinator = &tapped.coordinator;
    model(&coordinator.addr, TOKEN, &["add", "--builtin"]);
    approve_and_roll_out(&coordinator.addr);
    let ran = model(&coordinator.addr, TOKEN, &["run"]);
    assert!(!ran.contains("FAILED"), "{ran}");
    tapped.link_disbursements();
    let wire = tapped.wire();
    // The taps do see what nodes may send: per-township summaries.
    let township = "聚乐乡".as_bytes();
    assert!(
        wire.windows(township.len()).any(|w| w == township),
        "the taps saw no summaries"
    );
    // Every person_id, name and account_no of the fixture, in any table.
    let mut secrets = BTreeSet::new();
    for code in ["140200", "140215", "140221"] {
        for entry in std::fs::read_dir(city.fixture.join(code)).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let mut lines = text.lines();
            let header: Vec<&str> = lines.next().unwrap().split(',').collect();
            for line in lines {
                for (column, value) in header.iter().zip(line.split(',')) {
                    if ["person_id", "name", "account_no"].contains(column) && !value.is_empty() {
                        secrets.insert(value.to_string());
                    }
                }
            }
        }
    }
    assert!(secrets.len() > 30);
    for secret in &secrets {
        let found = wire.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "{secret} left a node");
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
        let path = package(&dir.path().join(id), id, 1, rule);
        let err = model_fails(coordinator, TOKEN, &["add", "--package", &path]);
        assert!(err.contains(expected), "{id}: {err}");
    }
}
