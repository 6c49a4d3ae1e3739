//! Three coordinator replicas on loopback under leader loss, restarts, partitions, random
//! faults and bad input. Every wait is bounded.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sunlight_meta::{AdminClient, Error, Proposed, ReplicaId, Section, token_sha256};
use sunlight_proto::v1::admin_client::AdminClient as AdminRpc;
use sunlight_proto::v1::raft_client::RaftClient;
use sunlight_proto::v1::{ProposeRequest, RaftPayload};
use support::{ADMIN_TOKEN, SECRET, TestCluster, admin, marker, markers};

const ELECTION: Duration = Duration::from_secs(5);

/// Writes markers `prefix-0..n` through `client`, returning the acknowledged ones.
async fn write_markers(client: &mut AdminClient, prefix: &str, n: usize) -> Vec<String> {
    let mut acked = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        if let Ok(Proposed::Applied { .. }) = client.propose(&marker(&name)).await {
            acked.push(name);
        }
    }
    acked
}

fn assert_kept(state: &sunlight_meta::MetaState, acked: &[String]) {
    let stored: BTreeSet<_> = markers(state).into_iter().collect();
    let lost: Vec<_> = acked.iter().filter(|a| !stored.contains(*a)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start(3, true, 5_000).await;
    let leader = cluster.leader(&[1, 2, 3], ELECTION).await;
    let mut client = cluster.client();
    // Every write is tried until the replicas answer. One whose answer was lost with the
    // leader may already have committed: trying it again is then refused as a duplicate,
    // and it counts as acknowledged, so it too must be kept.
    let writer = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..60 {
            let name = format!("w-{i}");
            while client.propose(&marker(&name)).await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            acked.push(name);
        }
        acked
    });
    // Let some writes land, then kill the leader under load.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.stop(leader).await;
    let killed = Instant::now();
    let survivors: Vec<ReplicaId> = cluster.running_ids();
    let new_leader = cluster.leader(&survivors, ELECTION).await;
    let elected_in = killed.elapsed();
    assert_ne!(new_leader, leader);
    assert!(elected_in < ELECTION, "election took {elected_in:?}");
    let acked = tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("every write acknowledged within a minute")
        .unwrap();
    let state = cluster.converged(ELECTION).await;
    assert_kept(&state, &acked);
    cluster.restart(leader).await;
    let state = cluster.converged(ELECTION).await;
    assert_kept(&state, &acked);
    cluster.stop_all().await;
}

/// A replica shut down has let its file go, though a handle of it is still held (as by a
/// server that stops after it): it opens again at once, with what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_shut_down_opens_again_while_still_held() {
    let mut cluster = TestCluster::start(1, true, 1000).await;
    let mut client = cluster.client();
    let acked = write_markers(&mut client, "h", 3).await;
    let held = cluster.replica(1);
    cluster.stop(1).await;
    cluster.restart(1).await;
    assert!(
        held.audit_records().is_err(),
        "a replica shut down reads nothing"
    );
    let state = cluster.converged(ELECTION).await;
    assert_kept(&state, &acked);
    drop(held);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_replica_keeps_the_state() {
    // A small snapshot interval makes the restart load a snapshot and replay the log.
    let mut cluster = TestCluster::start(3, true, 20).await;
    let mut client = cluster.client();
    let acked = write_markers(&mut client, "r", 45).await;
    assert_eq!(acked.len(), 45);
    let before = cluster.converged(ELECTION).await;
    cluster.stop_all().await;
    for id in 1..=3 {
        cluster.restart(id).await;
    }
    cluster.leader(&[1, 2, 3], ELECTION).await;
    let after = cluster.converged(ELECTION).await;
    assert_eq!(after, before);
    // Still writable, and a fresh read through any replica sees the write.
    let mut client = cluster.client();
    assert!(matches!(
        client.propose(&marker("after")).await.unwrap(),
        Proposed::Applied { .. }
    ));
    let models = client.read(Section::Models).await.unwrap();
    assert!(models["models"].get("after").is_some(), "{models}");
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_cannot_commit() {
    let mut cluster = TestCluster::start(3, true, 5_000).await;
    let old = cluster.leader(&[1, 2, 3], ELECTION).await;
    let others: Vec<_> = (1..=3).filter(|&id| id != old).collect();
    cluster.faults.isolate(old, &others);
    // The cut-off leader cannot reach a majority: its write is never acknowledged.
    let stranded = cluster.replica(old);
    let attempt = tokio::time::timeout(
        Duration::from_secs(2),
        stranded.propose(admin(), marker("minority")),
    )
    .await;
    assert!(
        !matches!(attempt, Ok(Ok(sunlight_meta::Outcome::Applied { .. }))),
        "a minority committed: {attempt:?}"
    );
    // The majority elects a leader and commits.
    let new_leader = cluster.leader(&others, ELECTION).await;
    let outcome = cluster
        .replica(new_leader)
        .propose(admin(), marker("majority"))
        .await;
    assert!(
        matches!(outcome, Ok(sunlight_meta::Outcome::Applied { .. })),
        "{outcome:?}"
    );
    cluster.faults.heal();
    let state = cluster.converged(ELECTION).await;
    let written = markers(&state);
    assert!(written.contains(&"majority".to_string()));
    assert!(!written.contains(&"minority".to_string()), "{written:?}");
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_restarts_and_dropped_calls_lose_nothing() {
    let mut cluster = TestCluster::start(3, false, 30).await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let mut acked = Vec::new();
    let started = Instant::now();
    for step in 0..12 {
        if started.elapsed() > Duration::from_secs(40) {
            break;
        }
        let action = rng.random_range(0..3);
        eprintln!(
            "step {step}: action {action}, running {:?}",
            cluster.running_ids()
        );
        match action {
            0 => {
                let running = cluster.running_ids();
                if running.len() == 3 {
                    let victim = running[rng.random_range(0..running.len())];
                    cluster.stop(victim).await;
                }
            }
            1 => {
                let stopped: Vec<_> = (1..=3)
                    .filter(|id| !cluster.running_ids().contains(id))
                    .collect();
                if let Some(&id) = stopped.first() {
                    cluster.restart(id).await;
                }
            }
            _ => cluster.faults.drop_one_in(rng.random_range(3..8)),
        }
        let mut client = cluster.client();
        let batch = tokio::time::timeout(
            Duration::from_secs(15),
            write_markers(&mut client, &format!("s{step}"), 5),
        )
        .await
        .unwrap_or_default();
        acked.extend(batch);
    }
    cluster.faults.heal();
    for id in 1..=3 {
        if !cluster.running_ids().contains(&id) {
            cluster.restart(id).await;
        }
    }
    cluster.leader(&[1, 2, 3], ELECTION).await;
    let state = cluster.converged(Duration::from_secs(10)).await;
    assert!(!acked.is_empty());
    assert_kept(&state, &acked);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_replica_is_named_and_rebuilt_from_its_peers() {
    // Enough writes past a small snapshot interval that the log before the snapshot is
    // purged: the rebuilt replica can only catch up by installing a snapshot.
    let mut cluster = TestCluster::start(3, false, 20).await;
    let mut client = cluster.client();
    write_markers(&mut client, "c", 150).await;
    let leader = cluster.leader(&[1, 2, 3], ELECTION).await;
    let victim = (1..=3).find(|&id| id != leader).unwrap();
    cluster.stop(victim).await;
    let file = cluster.member(victim).dir.join("meta.redb");
    std::fs::write(&file, b"this is not a redb file at all, it is garbage").unwrap();
    let err = sunlight_meta::Replica::open(
        &support::config(victim, cluster.member(victim).dir.clone(), true, 5_000),
        cluster.faults.clone(),
    )
    .await
    .expect_err("a corrupt file must be refused");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("meta.redb") && message.contains("rebuild"),
        "{message}"
    );
    rebuild(&mut cluster, &mut client, victim).await;
    let state = cluster.converged(ELECTION).await;
    assert_eq!(markers(&state).len(), 150);
    cluster.stop_all().await;
}

/// Rebuilds replica `victim`: stops it, drops it from the group, wipes it, starts it empty
/// and adds it back, which returns once it holds what the group committed.
async fn rebuild(cluster: &mut TestCluster, client: &mut AdminClient, victim: ReplicaId) {
    cluster.stop(victim).await;
    client.remove_replica(victim).await.unwrap();
    std::fs::remove_dir_all(&cluster.member(victim).dir).unwrap();
    cluster.restart(victim).await;
    let addr = cluster.member(victim).addr.to_string();
    let status = client.add_replica(victim, &addr).await.unwrap();
    assert!(status.replicas.iter().any(|r| r.id == victim && r.voter));
}

/// Two replicas that join at once, as the README starts them, both become voters: raft
/// takes one change of the members at a time and refuses a second meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_join_at_once_both_become_voters() {
    let mut cluster = TestCluster::start(3, false, 5_000).await;
    let leader = cluster.leader(&[1, 2, 3], ELECTION).await;
    let joining: Vec<ReplicaId> = (1..=3).filter(|&id| id != leader).collect();
    let mut client = cluster.client();
    for &id in &joining {
        client.remove_replica(id).await.unwrap();
        cluster.stop(id).await;
        std::fs::remove_dir_all(&cluster.member(id).dir).unwrap();
        cluster.restart(id).await;
    }
    let joins = joining.iter().map(|&id| {
        let mut client = cluster.client();
        let addr = cluster.member(id).addr.to_string();
        async move { client.add_replica(id, &addr).await }
    });
    for joined in futures::future::join_all(joins).await {
        joined.unwrap();
    }
    let status = client.status().await.unwrap();
    assert!(status.replicas.iter().all(|r| r.voter), "{status:?}");
    assert_eq!(status.replicas.len(), 3);
    cluster.stop_all().await;
}

/// Writes `n` audit records of 1.5 MB each through `leader`.
async fn write_large_records(cluster: &TestCluster, leader: ReplicaId, n: usize) {
    let statement = "x".repeat(1_500_000);
    for i in 0..n {
        let audit = sunlight_meta::Command::Audit {
            subject: None,
            action: "query".into(),
            detail: format!("{i}:{statement}"),
            decision: "allowed".into(),
        };
        let written = cluster.replica(leader).propose(admin(), audit).await;
        assert!(
            matches!(written, Ok(sunlight_meta::Outcome::Applied { .. })),
            "{written:?}"
        );
    }
}

/// The audit records of more than a megabyte on each running replica of `cluster`.
fn large_records(cluster: &TestCluster) -> Vec<usize> {
    cluster
        .running_ids()
        .iter()
        .map(|&id| {
            let records = cluster.replica(id).audit_records().unwrap();
            assert_eq!(sunlight_meta::verify_chain(&records), Ok(records.len()));
            records
                .iter()
                .filter(|r| r.detail.len() > 1_000_000)
                .count()
        })
        .collect()
}

/// A follower that was away while a hundred megabytes of entries were written catches up:
/// a batch of them would not cross within the heartbeat interval, which openraft allows a
/// message, so each message carries a few megabytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catches_up_on_a_hundred_megabytes_of_entries() {
    let mut cluster = TestCluster::start(3, false, 5_000).await;
    let leader = cluster.leader(&[1, 2, 3], ELECTION).await;
    let away = (1..=3).find(|&id| id != leader).unwrap();
    cluster.stop(away).await;
    write_large_records(&cluster, leader, 70).await;
    cluster.restart(away).await;
    cluster.converged(Duration::from_secs(60)).await;
    assert_eq!(large_records(&cluster), [70; 3]);
    cluster.stop_all().await;
}

/// A replica is rebuilt from a snapshot of a hundred megabytes, far more than crosses
/// within a raft call's timeout: the audit log grows without end, so a snapshot must reach
/// a new replica whatever its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_rebuilt_from_a_snapshot_of_a_hundred_megabytes() {
    let mut cluster = TestCluster::start(3, false, 20).await;
    let leader = cluster.leader(&[1, 2, 3], ELECTION).await;
    write_large_records(&cluster, leader, 70).await;
    // Enough writes after them that the log holding them is purged.
    let mut client = cluster.client();
    write_markers(&mut client, "m", 150).await;
    let victim = (1..=3).find(|&id| id != leader).unwrap();
    rebuild(&mut cluster, &mut client, victim).await;
    let state = cluster.converged(Duration::from_secs(60)).await;
    assert_eq!(large_records(&cluster), [70; 3]);
    assert_eq!(markers(&state).len(), 150);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_redirects_writes_to_the_leader() {
    let mut cluster = TestCluster::start(3, true, 5_000).await;
    let leader = cluster.leader(&[1, 2, 3], ELECTION).await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let follower_addr = cluster.member(follower).addr.to_string();
    let mut raw = AdminRpc::connect(format!("http://{follower_addr}"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(ProposeRequest {
        command_json: serde_json::to_vec(&marker("x")).unwrap(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
    );
    let status = raw
        .propose(request)
        .await
        .expect_err("a follower must not accept writes");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let redirect = status.metadata().get(sunlight_meta::LEADER_HEADER).unwrap();
    assert_eq!(
        redirect.to_str().unwrap(),
        cluster.member(leader).addr.to_string()
    );
    assert!(
        status.message().contains("not the leader"),
        "{}",
        status.message()
    );
    // The client follows the redirect from the follower alone.
    let mut client = AdminClient::new(&[follower_addr], ADMIN_TOKEN).unwrap();
    assert!(matches!(
        client.propose(&marker("y")).await.unwrap(),
        Proposed::Applied { .. }
    ));
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_peers_and_bad_credentials_are_refused() {
    let mut cluster = TestCluster::start(3, true, 5_000).await;
    let addr = cluster.member(1).addr;
    let mut raft = RaftClient::connect(format!("http://{addr}")).await.unwrap();
    let call = |secret: &str, from: u64| {
        let mut request = tonic::Request::new(RaftPayload {
            from,
            json: b"{}".to_vec(),
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {secret}").parse().unwrap());
        request
    };
    let status = raft.vote(call(SECRET, 99)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status.message().contains("unknown peer 99"),
        "{}",
        status.message()
    );
    let status = raft.vote(call("wrong-secret", 2)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    // Admin calls need an administrator's token.
    let mut client = cluster.client();
    let proposed = client
        .propose(&sunlight_meta::Command::AddUser {
            name: "ana".into(),
            role: sunlight_meta::Role::CityAnalyst,
            node: None,
            token_sha256: token_sha256("ana-token"),
            expires_ms: None,
        })
        .await
        .unwrap();
    assert!(matches!(proposed, Proposed::Applied { .. }));
    let mut ana = AdminClient::new(&cluster.addrs(), "ana-token").unwrap();
    let err = ana.propose(&marker("z")).await.unwrap_err();
    assert!(err.to_string().contains("city_analyst"), "{err}");
    let mut nobody = AdminClient::new(&cluster.addrs(), "forged").unwrap();
    let err = nobody.read(Section::Nodes).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Remote {
                code: tonic::Code::Unauthenticated,
                ..
            }
        ),
        "{err}"
    );
    cluster.stop_all().await;
}

/// Entries of megabytes (an audit record holds a whole statement) replicate: a batch of
/// them is far more than gRPC's default 4 MiB message, which wedged the group, leader
/// elections churning, and stopped the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_megabytes_replicate() {
    let mut cluster = TestCluster::start(3, false, 5_000).await;
    let leader = cluster.leader(&[1, 2, 3], ELECTION).await;
    let statement = "x".repeat(1_500_000);
    // Proposed at once, so that the leader sends them in one batch, of several messages.
    let writes: Vec<_> = (0..6)
        .map(|i| {
            let replica = cluster.replica(leader);
            let audit = sunlight_meta::Command::Audit {
                subject: None,
                action: "query".into(),
                detail: format!("{i}:{statement}"),
                decision: "allowed".into(),
            };
            tokio::spawn(async move { replica.propose(admin(), audit).await })
        })
        .collect();
    for write in writes {
        let written = write.await.unwrap();
        assert!(
            matches!(written, Ok(sunlight_meta::Outcome::Applied { .. })),
            "{written:?}"
        );
    }
    cluster.converged(ELECTION).await;
    assert_eq!(large_records(&cluster), [6; 3]);
    cluster.stop_all().await;
}
