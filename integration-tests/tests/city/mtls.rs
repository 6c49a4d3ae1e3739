//! Mutual TLS between the coordinator and the nodes, with certificates from
//! `deploy/certs.sh`: the city answers over it, and a client without the right
//! certificate reaches no node.

use std::path::Path;
use std::process::Command;

use sunlight_client::SqlClient;
use sunlight_datagen::node_root;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::oracle;
use crate::support::{ServiceProcess, TOKEN, shared_city, succeeds, sunlight, sunlight_fails};

/// A development CA with the coordinator's certificate and those of `nodes`.
fn certificates(nodes: &[&str]) -> tempfile::TempDir {
    let certs = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/certs.sh");
    succeeds(
        Command::new("bash")
            .arg(&script)
            .arg(certs.path())
            .args(nodes),
    );
    certs
}

#[tokio::test(flavor = "multi_thread")]
async fn the_city_reaches_its_nodes_over_mutual_tls_only() {
    let city = shared_city();
    let certs = certificates(&["140215", "140221"]);
    let file = |name: &str| certs.path().join(name).display().to_string();

    let codes = ["140215", "140221"];
    let nodes: Vec<ServiceProcess> = codes
        .iter()
        .map(|code| {
            let (cert, key, ca) = (
                file(&format!("{code}.pem")),
                file(&format!("{code}-key.pem")),
                file("ca.pem"),
            );
            ServiceProcess::start_with(
                code,
                &node_root(city.dir.path(), code.parse().unwrap()),
                &["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &ca],
            )
        })
        .collect();
    let addrs: Vec<(String, String)> = codes
        .iter()
        .zip(&nodes)
        .map(|(c, n)| (c.to_string(), n.addr.clone()))
        .collect();
    let (cert, key, ca) = (
        file("coordinator.pem"),
        file("coordinator-key.pem"),
        file("ca.pem"),
    );
    let coordinator = ServiceProcess::coordinator(
        &addrs,
        &[
            "--node-tls-cert",
            &cert,
            "--node-tls-key",
            &key,
            "--node-tls-ca",
            &ca,
        ],
    );

    let sql = "SELECT county_code, count(*) AS n FROM disbursements GROUP BY county_code ORDER BY county_code";
    let answered = sunlight(&[
        "sql",
        "--city",
        &coordinator.addr,
        "--token",
        TOKEN,
        "--format",
        "csv",
        sql,
    ]);
    let ctx = oracle::context(city.dir.path(), &codes.map(|c| c.parse().unwrap()));
    let expected = oracle::strings(&ctx, "SELECT county_code || ',' || CAST(count(*) AS VARCHAR) FROM disbursements GROUP BY county_code").await;
    for line in expected {
        assert!(answered.contains(&line), "{line} missing from {answered}");
    }

    // Plain HTTP/2 gets nowhere, nor does TLS without a client certificate.
    let err = sunlight_fails(&[
        "sql",
        "--node",
        &nodes[0].addr,
        "--token",
        TOKEN,
        "SELECT 1",
    ]);
    assert!(!err.is_empty());
    let anonymous = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(file("ca.pem")).unwrap(),
        ))
        .domain_name(sunlight_flightsql::NODE_TLS_NAME);
    let endpoint = Endpoint::from_shared(format!("https://{}", nodes[0].addr))
        .unwrap()
        .tls_config(anonymous)
        .unwrap();
    let refused = match SqlClient::connect_endpoint(&nodes[0].addr, endpoint, TOKEN).await {
        Ok(mut client) => client.query("SELECT 1").await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a client without a certificate reached the node");
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_and_replicas_reach_the_coordinator_over_tls() {
    let city = shared_city();
    let certs = certificates(&[]);
    let file = |name: &str| certs.path().join(name).display().to_string();
    let (cert, key, ca) = (
        file("coordinator.pem"),
        file("coordinator-key.pem"),
        file("ca.pem"),
    );
    let tls = ["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &ca];
    let code = "140215";
    let node = ServiceProcess::start(code, &node_root(city.dir.path(), code.parse().unwrap()));
    let first = ServiceProcess::coordinator(&[(code.to_string(), node.addr.clone())], &tls);
    let mut join = vec!["--join", first.addr.as_str()];
    join.extend_from_slice(&tls);
    let second = ServiceProcess::replica(2, tempfile::tempdir().unwrap(), "127.0.0.1:0", &join);

    // `head`, the CA and the token, then `tail`.
    let over_tls = |head: &[&str], tail: &[&str]| {
        let mut args = head.to_vec();
        args.extend_from_slice(&["--tls-ca", &ca, "--token", TOKEN]);
        args.extend_from_slice(tail);
        sunlight(&args)
    };
    // The second replica joined over TLS; a query there is audited through the leader.
    let status = over_tls(
        &["admin", "--coordinator", &first.addr],
        &["cluster", "status"],
    );
    assert!(status.contains(&second.addr), "{status}");
    let answered = over_tls(
        &["sql", "--city", &second.addr, "--format", "csv"],
        &["SELECT count(*) AS n FROM disbursements"],
    );
    let ctx = oracle::context(city.dir.path(), &[code.parse().unwrap()]);
    let expected =
        oracle::strings(&ctx, "SELECT CAST(count(*) AS VARCHAR) FROM disbursements").await;
    let expected = expected.first().unwrap();
    assert!(answered.contains(expected.as_str()), "{answered}");
    let audited = over_tls(
        &[
            "audit",
            "list",
            "--action",
            "query",
            "--coordinator",
            &second.addr,
        ],
        &[],
    );
    assert!(audited.contains("allowed: 1 rows"), "{audited}");
    let verified = over_tls(&["audit", "verify", "--coordinator", &first.addr], &[]);
    assert!(verified.contains("chain intact"), "{verified}");

    // Without TLS the coordinator is not reachable.
    let err = sunlight_fails(&[
        "sql",
        "--city",
        &first.addr,
        "--token",
        TOKEN,
        "SELECT count(*) FROM disbursements",
    ]);
    assert!(!err.is_empty());
}
