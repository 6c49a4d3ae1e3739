//! Acknowledged metadata writes per second and commit latency of three replicas on
//! loopback, fsync on. Each write is an admin proposal through the gRPC admin service,
//! acknowledged once a majority has it on disk and the leader applied it.
//!
//! `SUNLIGHT_BENCH_WRITES` (default 2000) writes per run; runs with 1, 4 and 16 clients.

#[path = "../tests/cluster/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use sunlight_meta::{Proposed, ReplicaId};
use support::{TestCluster, marker};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let writes: usize = std::env::var("SUNLIGHT_BENCH_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut cluster = TestCluster::start(3, true, 5_000).await;
    let ids: Vec<ReplicaId> = cluster.running_ids();
    cluster.leader(&ids, Duration::from_secs(5)).await;
    #[allow(clippy::print_stdout)]
    {
        println!("3 replicas on loopback, fsync on, {writes} acknowledged writes per run");
        println!(
            "{:>8} {:>12} {:>10} {:>10}",
            "clients", "writes/s", "p50 ms", "p99 ms"
        );
    }
    for clients in [1usize, 4, 16] {
        let per_client = writes / clients;
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let mut client = cluster.client();
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(per_client);
                    for i in 0..per_client {
                        let t = Instant::now();
                        let proposed = client
                            .propose(&marker(&format!("b{clients}-{c}-{i}")))
                            .await;
                        assert!(
                            matches!(proposed, Ok(Proposed::Applied { .. })),
                            "{proposed:?}"
                        );
                        latencies.push(t.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.expect("bench client"));
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort();
        #[allow(clippy::print_stdout)]
        {
            println!(
                "{clients:>8} {:>12.0} {:>10.2} {:>10.2}",
                latencies.len() as f64 / elapsed,
                percentile(&latencies, 0.50).as_secs_f64() * 1e3,
                percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            );
        }
    }
    cluster.stop_all().await;
}
