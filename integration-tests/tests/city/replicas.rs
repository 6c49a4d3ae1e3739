//! Three coordinator processes as one replicated group, administered with `sunlight admin`
//! and queried with `sunlight sql`, through the loss and return of the leader.

use std::process::Command;
use std::time::{Duration, Instant};

use sunlight_domain::NodeCode;

use crate::oracle;
use crate::support::{
    CITY_TOKEN, ServiceProcess, TOKEN, admin, new_user, shared_city, sunlight, sunlight_bin,
    sunlight_fails,
};

fn city_count(addr: &str, token: &str) -> String {
    sunlight(&[
        "sql",
        "--city",
        addr,
        "--token",
        token,
        "--format",
        "csv",
        "SELECT county_code, count(*) AS n FROM disbursements GROUP BY county_code ORDER BY county_code",
    ])
}

/// Retries `check` every 100 ms for up to `within`.
fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn three_replicas_share_the_registry_and_users_and_survive_the_leader() {
    let city = shared_city();
    let codes = [
        NodeCode::all().next().unwrap(),
        NodeCode::all().nth(1).unwrap(),
    ];
    let nodes: Vec<ServiceProcess> = codes
        .iter()
        .map(|c| {
            ServiceProcess::start(
                c.as_str(),
                &sunlight_datagen::node_root(city.dir.path(), *c),
            )
        })
        .collect();
    let fresh = || tempfile::tempdir().unwrap();
    let first = ServiceProcess::replica(1, fresh(), "127.0.0.1:0", &["--init"]);
    let mut replicas = vec![Some(first)];
    for id in 2..=3 {
        let join = replicas[0].as_ref().unwrap().addr.clone();
        let replica = ServiceProcess::replica(id, fresh(), "127.0.0.1:0", &["--join", &join]);
        replicas.push(Some(replica));
    }
    let addrs: Vec<String> = replicas
        .iter()
        .map(|r| r.as_ref().unwrap().addr.clone())
        .collect();
    let all = addrs.join(",");

    // Registered through a follower: the write is redirected to the leader.
    for (code, node) in codes.iter().zip(&nodes) {
        let out = admin(
            &addrs[2],
            TOKEN,
            &[
                "node",
                "add",
                "--code",
                code.as_str(),
                "--addr",
                &node.addr,
                "--node-token",
                CITY_TOKEN,
            ],
        );
        assert!(out.contains("registered"), "{out}");
    }
    let listed = admin(&all, TOKEN, &["node", "list"]);
    for code in &codes {
        assert!(listed.contains(code.as_str()), "{listed}");
    }
    assert!(
        !listed.contains(TOKEN),
        "node tokens must not be listed: {listed}"
    );

    // Every replica answers city SQL over the replicated registry, equal to the oracle.
    let ctx = oracle::context(city.dir.path(), &codes);
    let expected: String = {
        let batches = ctx
            .sql("SELECT county_code, count(*) AS n FROM disbursements GROUP BY county_code ORDER BY county_code")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut out = Vec::new();
        arrow::csv::Writer::new(&mut out)
            .write(&batches[0])
            .unwrap();
        String::from_utf8(out).unwrap()
    };
    for addr in &addrs {
        eventually(
            Duration::from_secs(5),
            "every replica has the nodes",
            || city_count(addr, TOKEN) == expected,
        );
    }

    // A user added once works everywhere; revoked, nowhere.
    let token = new_user(&all, "ana", "city_analyst", &[]);
    assert!(!admin(&all, TOKEN, &["user", "list"]).contains(&token));
    eventually(
        Duration::from_secs(5),
        "ana's token works on replica 3",
        || {
            Command::new(sunlight_bin())
                .args(["sql", "--city", &addrs[2], "--token", &token, "SELECT 1"])
                .output()
                .unwrap()
                .status
                .success()
        },
    );
    let refused = sunlight_fails(&[
        "admin",
        "--coordinator",
        &all,
        "--token",
        &token,
        "node",
        "list",
    ]);
    assert!(refused.contains("city_analyst"), "{refused}");
    admin(&all, TOKEN, &["user", "revoke", "--name", "ana"]);
    eventually(
        Duration::from_secs(5),
        "ana's token is refused on replica 2",
        || {
            let err = Command::new(sunlight_bin())
                .args(["sql", "--city", &addrs[1], "--token", &token, "SELECT 1"])
                .output()
                .unwrap();
            !err.status.success() && String::from_utf8_lossy(&err.stderr).contains("revoked")
        },
    );
    let bad = sunlight_fails(&[
        "admin",
        "--coordinator",
        &all,
        "--token",
        TOKEN,
        "user",
        "add",
        "--name",
        "bo",
        "--role",
        "mayor",
    ]);
    assert!(bad.contains("unknown role \"mayor\""), "{bad}");

    // Kill the leader outright: the others elect a new one and keep serving.
    let status = admin(&all, TOKEN, &["cluster", "status"]);
    assert_eq!(status.matches("(voter)").count(), 3, "{status}");
    let leader: u64 = status
        .split("leader replica ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no leader in {status}"));
    let dir = replicas[leader as usize - 1]
        .take()
        .unwrap()
        .kill()
        .unwrap();
    let survivor = &addrs[leader as usize % 3];
    assert_eq!(city_count(survivor, TOKEN), expected);
    let cy = new_user(&all, "cy", "city_analyst", &[]);
    // The new leader sends the nodes the county analysts registered after the election.
    let li = new_user(&all, "li", "county_analyst", &["--node", codes[0].as_str()]);
    eventually(
        Duration::from_secs(10),
        "li's token works at li's node",
        || {
            Command::new(sunlight_bin())
                .args(["sql", "--node", &nodes[0].addr, "--token", &li, "SELECT 1"])
                .output()
                .unwrap()
                .status
                .success()
        },
    );

    // The killed replica restarts from its own disk at its address and catches up: it
    // authenticates the user added while it was down.
    let back = ServiceProcess::replica(leader, dir, &addrs[leader as usize - 1], &[]);
    eventually(
        Duration::from_secs(10),
        "the restarted replica knows user cy",
        || {
            Command::new(sunlight_bin())
                .args(["sql", "--city", &back.addr, "--token", &cy, "SELECT 1"])
                .output()
                .unwrap()
                .status
                .success()
        },
    );
}
