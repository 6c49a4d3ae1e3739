//! Benchmark of federated SQL: for each query of the federated suite, the time at the
//! city over 11 node servers on loopback against one DataFusion context over the same
//! files, and the bytes that crossed from the nodes against the bytes the central scans
//! read from Parquet and against the raw columns the query reads (their size in Arrow,
//! over every node: what a central copy of them would move). Also the latency of a
//! trivial `SELECT count(*)` through the city's Flight SQL. A query whose answer at the
//! city is not the central one's is marked `DIFFERS`.
//!
//! A last line counts the queries within the targets: 1.5× the central time, and
//! node→city bytes of 0.1% of the raw columns.
//!
//! `SUNLIGHT_BENCH_PERSONS` sets ordinary people per county (default 190000, about one
//! million disbursement rows per county); `SUNLIGHT_BENCH_DIR` keeps the generated city;
//! `SUNLIGHT_BENCH_QUERIES` (such as `2,10`) runs only those queries of the suite, and
//! `SUNLIGHT_BENCH_RUNS` (default 3) times each that many times (a central run over 10 s
//! once).
#![allow(clippy::print_stdout)]

mod common;

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;
use sunlight_cli::local_city::{LOCAL_TOKEN, LocalCity};
use sunlight_client::SqlClient;
use sunlight_datagen::node_root;
use sunlight_domain::{NodeCode, Table};
use sunlight_federation::{QueryControl, Renewal};
use sunlight_flightsql::Statement;

/// A central run slower than this is not repeated: one such run times it well enough,
/// where DataFusion joins every row of a large table by nested loops or long hash chains.
const SLOW_CENTRAL: Duration = Duration::from_secs(10);

const SUITE: &str = include_str!("../../../integration-tests/queries/federated.sql");

fn central_context(city: &std::path::Path) -> SessionContext {
    let ctx = SessionContext::new();
    for udf in sunlight_fragment::masking_udfs() {
        ctx.register_udf(udf);
    }
    for table in Table::ALL {
        let nodes: Vec<NodeCode> = match table {
            Table::SubsidyStandards => vec![NodeCode::CITY],
            _ => NodeCode::all().collect(),
        };
        let urls: Vec<ListingTableUrl> = nodes
            .iter()
            .map(|n| node_root(city, *n).join(table.name()))
            .filter(|p| p.is_dir())
            .map(|p| ListingTableUrl::parse(format!("{}/", p.display())).expect("path URL"))
            .collect();
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(table.schema());
        ctx.register_table(
            table.name(),
            // As `register_parquet` does: file statistics are read once, as at the nodes.
            Arc::new(
                ListingTable::try_new(config)
                    .expect("table")
                    .with_cache(ctx.runtime_env().cache_manager.get_file_statistic_cache()),
            ),
        )
        .expect("register");
    }
    ctx
}

fn bytes_scanned(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let own = plan
        .metrics()
        .and_then(|m| m.sum_by_name("bytes_scanned"))
        .map_or(0, |v| v.as_usize());
    own + plan
        .children()
        .iter()
        .map(|c| bytes_scanned(c))
        .sum::<usize>()
}

/// Arrow size of each (table, column) over every node, measured once.
type RawSizes = HashMap<(String, String), usize>;

/// The raw size of the columns `sql` reads.
async fn raw_bytes(central: &SessionContext, sql: &str, sizes: &mut RawSizes) -> usize {
    let plan = central
        .sql(sql)
        .await
        .expect(sql)
        .into_optimized_plan()
        .expect(sql);
    let mut columns = BTreeSet::new();
    plan.apply_with_subqueries(|node| {
        // A series the query generates is no table of the nodes.
        if let LogicalPlan::TableScan(scan) = node
            && scan.table_name.table().parse::<Table>().is_ok()
        {
            for field in scan.projected_schema.fields() {
                columns.insert((scan.table_name.table().to_string(), field.name().clone()));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .expect("plan walk");
    let mut total = 0;
    for (table, column) in columns {
        let sql = format!("SELECT \"{column}\" FROM {table}");
        let size = match sizes.entry((table, column)) {
            Entry::Occupied(known) => *known.get(),
            Entry::Vacant(unknown) => {
                let batches = central
                    .sql(&sql)
                    .await
                    .expect(&sql)
                    .collect()
                    .await
                    .expect(&sql);
                let size = batches
                    .iter()
                    .map(|b| b.column(0).to_data().get_slice_memory_size().expect("size"))
                    .sum();
                *unknown.insert(size)
            }
        };
        total += size;
    }
    total
}

/// The rows of `batches` as text, in order.
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let text = pretty_format_batches(batches)
        .expect("printable")
        .to_string();
    let mut rows: Vec<String> = text.lines().skip(3).map(str::to_string).collect();
    rows.sort();
    rows
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("SUNLIGHT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let only: Option<Vec<usize>> = std::env::var("SUNLIGHT_BENCH_QUERIES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let dir = common::bench_city();
    let (local, renewal) = started(&dir, 1).await;
    let city = &local.replicas[0];
    let central = central_context(&dir);
    println!(
        "shared persons: {} of {} persons ({} nodes) held at two nodes or more; the nodes \
         sent {} B of tokens once, as the coordinator started",
        renewal.shared,
        renewal.persons,
        renewal.nodes.len(),
        renewal.bytes,
    );

    println!(
        "{:<4} {:>9} {:>10} {:>6} {:>10} {:>11} {:>11} {:>8}  query",
        "#", "city ms", "central ms", "ratio", "moved B", "read B", "raw B", "moved %"
    );
    let mut sizes = RawSizes::new();
    // Queries run, within 1.5× of central, reading columns, moving at most 0.1% of them.
    let (mut timed, mut fast, mut reading, mut small) = (0, 0, 0, 0);
    let queries: Vec<String> = SUITE
        .split("\n;\n")
        .map(|q| {
            q.lines()
                .filter(|l| !l.starts_with("--"))
                .collect::<Vec<_>>()
                .join(" ")
                .trim()
                .to_string()
        })
        .filter(|q| !q.is_empty())
        .collect();
    for (i, sql) in queries.iter().enumerate() {
        if only.as_ref().is_some_and(|o| !o.contains(&(i + 1))) {
            continue;
        }
        // City and central runs take turns, so that a slow spell of the machine falls on
        // both sides alike.
        let (mut city_times, mut central_times) = (Vec::new(), Vec::new());
        let (mut moved, mut scanned) = (0, 0);
        let mut same = true;
        for _ in 0..runs {
            let started = Instant::now();
            let control = Arc::new(QueryControl::new(false, Duration::from_secs(600), 1));
            let (_, answer) = city.engine.run(&Statement::new(sql), control.clone()).await;
            let (_, at_city) = answer.expect(sql);
            city_times.push(started.elapsed());
            moved = control.received().values().map(|t| t.bytes).sum::<u64>();
            if central_times.first().is_some_and(|t| *t > SLOW_CENTRAL) {
                continue;
            }

            let started = Instant::now();
            let plan = central
                .sql(sql)
                .await
                .expect(sql)
                .create_physical_plan()
                .await
                .expect(sql);
            let centrally = collect(plan.clone(), central.task_ctx()).await.expect(sql);
            central_times.push(started.elapsed());
            scanned = bytes_scanned(&plan);
            same &= rows(&at_city) == rows(&centrally);
        }
        let (c, d) = (median(city_times), median(central_times));
        let raw = raw_bytes(&central, sql, &mut sizes).await;
        let share = match raw {
            0 => "-".to_string(),
            raw => format!("{:.4}", 100.0 * moved as f64 / raw as f64),
        };
        timed += 1;
        fast += usize::from(c.as_secs_f64() <= 1.5 * d.as_secs_f64());
        reading += usize::from(raw > 0);
        small += usize::from(raw > 0 && moved as f64 <= 0.001 * raw as f64);
        println!(
            "{:<4} {:>9.1} {:>10.1} {:>6.2} {:>10} {:>11} {:>11} {:>8}  {}{}",
            i + 1,
            c.as_secs_f64() * 1e3,
            d.as_secs_f64() * 1e3,
            c.as_secs_f64() / d.as_secs_f64(),
            moved,
            scanned,
            raw,
            share,
            if same { "" } else { "DIFFERS " },
            sql.chars().take(80).collect::<String>()
        );
    }

    println!(
        "within 1.5x of central: {fast} of {timed} queries; node->city bytes within 0.1% of the \
         raw columns: {small} of the {reading} that read columns"
    );
    let (p50, p99) = trivial_latency(&city.addr.to_string()).await;
    println!(
        "trivial SELECT count(*) FROM disbursements at the city over 11 nodes: p50 {p50:.2} ms, p99 {p99:.2} ms"
    );
    // Three replicas commit each query's audit record through raft before answering.
    drop(local);
    let (replicated, _) = started(&dir, 3).await;
    let (p50, p99) = trivial_latency(&replicated.replicas[0].addr.to_string()).await;
    println!("the same with three coordinator replicas: p50 {p50:.2} ms, p99 {p99:.2} ms");
}

/// The city of `dir` with `replicas` coordinator replicas, once its nodes have numbered
/// their persons and every replica has found the persons nodes share, which they do as
/// they start: the figures are of a city at work, not of one starting. What the first
/// replica found comes with the city.
async fn started(dir: &std::path::Path, replicas: u64) -> (LocalCity, Renewal) {
    let mut city = LocalCity::start(dir, replicas).await.expect("city starts");
    for node in &city.nodes {
        node.persons_numbered().await;
    }
    let mut first = None;
    for replica in &mut city.replicas {
        let found = replica
            .persons_shared()
            .await
            .expect("the persons were shared");
        first.get_or_insert(found);
    }
    (city, first.expect("a replica"))
}

/// The p50 and p99 in milliseconds of 200 runs of the trivial query at `addr`, through
/// the Flight SQL client, audit included.
async fn trivial_latency(addr: &str) -> (f64, f64) {
    let mut client = SqlClient::connect(addr, LOCAL_TOKEN).await.expect("client");
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        client
            .query("SELECT count(*) FROM disbursements")
            .await
            .expect("trivial query");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    (
        latencies[100].as_secs_f64() * 1e3,
        latencies[197].as_secs_f64() * 1e3,
    )
}
