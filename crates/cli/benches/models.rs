//! Benchmark of the seven built-in models over the benchmark city (default 10 counties ×
//! about one million disbursement rows): wall time of one `sunlight model run`, each
//! node's time per model, and the bytes that crossed from the nodes to the coordinator.
//! Also checks every model's hits against the generator's ground truth.
#![allow(clippy::print_stdout)]

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use sunlight_cli::local_city::LocalCity;
use sunlight_datagen::GroundTruth;
use sunlight_meta::RunModelsRequest;

#[tokio::main]
async fn main() {
    let dir = common::bench_city();
    let truth = GroundTruth::read(&dir).expect("truth.json");
    let local = LocalCity::start(&dir, 1).await.expect("city starts");
    local
        .deploy_builtin_models()
        .await
        .expect("models deployed");
    let started = Instant::now();
    let reply = local
        .admin()
        .expect("client")
        .run_models(RunModelsRequest::default())
        .await
        .expect("run");
    let wall = started.elapsed().as_secs_f64();

    let mut per_model: BTreeMap<&str, (u64, f64, f64)> = BTreeMap::new();
    let mut per_node: BTreeMap<&str, f64> = BTreeMap::new();
    for run in &reply.runs {
        assert!(
            run.error.is_empty(),
            "{} on {}: {}",
            run.model_id,
            run.node,
            run.error
        );
        let summary = run.summary.as_ref().expect("summary");
        let entry = per_model.entry(&run.model_id).or_default();
        entry.0 += summary.hits;
        entry.1 = entry.1.max(summary.seconds);
        entry.2 += summary.seconds;
        *per_node.entry(&run.node).or_default() += summary.seconds;
    }
    println!(
        "all seven models, one run: {wall:.2} s wall, {} bytes from the nodes",
        reply.bytes_received
    );
    println!(
        "{:<28} {:>8} {:>8} {:>12} {:>12}",
        "model", "hits", "truth", "slowest s", "sum nodes s"
    );
    for (model, (hits, slowest, sum)) in &per_model {
        let planted = truth.hits.get(*model).map_or(0, |h| h.len());
        println!("{model:<28} {hits:>8} {planted:>8} {slowest:>12.2} {sum:>12.2}");
        assert_eq!(
            *hits as usize, planted,
            "{model}: hits differ from the ground truth"
        );
    }
    println!("{:<8} {:>14}", "node", "seconds (all models)");
    for (node, seconds) in &per_node {
        println!("{node:<8} {seconds:>14.2}");
    }
    local.stop().await.expect("stop");
}
