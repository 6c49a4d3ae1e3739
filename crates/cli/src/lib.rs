//! The `sunlight` command line: generate a synthetic city, import CSV files, run county
//! nodes and city coordinator replicas, query them, administer nodes, users and models,
//! open cases, read the audit log and run the demo.
#![warn(missing_docs)]

mod admin;
mod audit;
mod demo;
mod error;
mod import;
mod interrupt;
pub mod local_city;
mod model;
mod output;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sunlight_client::SqlClient;
use sunlight_coordinator::{Bootstrap, CoordinatorConfig, NodeEntry, start_coordinator};
use sunlight_datagen::{CityConfig, generate_city};
use sunlight_domain::Table;
use sunlight_flightsql::TlsFiles;
use sunlight_node::{NodeConfig, S3Config, TableState, start_node};

use crate::interrupt::Interrupt;

pub use error::{Error, Result};
pub use output::Format;

/// Every program built on the command line, the nodes and the coordinator among them,
/// allocates through mimalloc: a query's many small, short-lived buffers cost less there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sunlight: federated supervision of "one card" subsidy payments.
#[derive(Debug, Parser)]
#[command(name = "sunlight", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// What the command logs unless `SUNLIGHT_LOG` says otherwise: warnings, but only the
    /// errors of openraft, which warns of ordinary protocol races. The demo's servers run
    /// in its process, and it tells what they would warn of (data quality) in its own
    /// words, so it logs errors only.
    pub fn default_log(&self) -> &'static str {
        match self.command {
            Command::Demo(_) => "error",
            _ => "warn,openraft=error",
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a deterministic synthetic city: 11 node folders of Parquet tables and truth.json.
    Datagen(DatagenArgs),
    /// Run a node over its data root, serving Flight SQL until SIGTERM or Ctrl-C.
    Node(NodeArgs),
    /// Run a replica of the city coordinator, federating SQL over the nodes, until SIGTERM
    /// or Ctrl-C.
    Coordinator(CoordinatorArgs),
    /// Administer the coordinator: its replicas, the node registry and users.
    Admin(admin::AdminArgs),
    /// Problem models: add, approve, roll out, roll back, list and run them.
    Model(model::ModelArgs),
    /// The city report: hits, persons and amount per model and county.
    Report(model::ReportArgs),
    /// Record a county analyst's verdict on a hit: confirmed or dismissed, and recovered.
    Outcome(model::OutcomeArgs),
    /// The audit log: list, export and verify its hash chain.
    Audit(audit::AuditArgs),
    /// Privacy-preserving linkage across nodes on keyed tokens.
    Linkage(model::LinkageArgs),
    /// Investigators: open named model hits for a case, audited.
    Case(model::CaseArgs),
    /// Run a SQL query against a node or the city and print the result.
    Sql(SqlArgs),
    /// Import CSV files (with a header row) or Parquet files into a table of a node's data
    /// root, converted to the contract's types.
    Import(ImportArgs),
    /// Generate a small city, start its nodes on loopback, query them and print the answers.
    Demo(demo::DemoArgs),
}

#[derive(Debug, Args)]
struct DatagenArgs {
    /// Output folder; created if missing.
    #[arg(long)]
    out: PathBuf,
    /// Ordinary people per county (planted cases come on top).
    #[arg(long, default_value_t = 10_000)]
    persons_per_county: usize,
    /// Seed: the same seed writes the same files.
    #[arg(long, default_value_t = 2021)]
    seed: u64,
}

/// Flags of `sunlight node`; unset ones leave the config file's values alone.
#[derive(Debug, Args, Serialize)]
struct NodeArgs {
    /// TOML config file (see deploy/config/node.example.toml).
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Node code, e.g. 140215.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    /// Data root: file:///path, s3://bucket/prefix or a local path.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    /// Listen address; port 0 picks a free port.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// An API token accepted from the user `cli` (adds to the config file's tokens).
    #[arg(long, env = "SUNLIGHT_TOKEN")]
    #[serde(skip)]
    token: Option<String>,
    /// The token of the city's coordinator, user `city`: it may send fragments and model
    /// steps but not run SQL (adds to the config file's tokens).
    #[arg(long, env = "SUNLIGHT_CITY_TOKEN", hide_env_values = true)]
    #[serde(skip)]
    city_token: Option<String>,
    /// Take no county analysts from the city: only the config's users, `--token`'s
    /// included, run SQL here.
    #[arg(long)]
    #[serde(skip)]
    local_analysts_only: bool,
    /// The linkage key shared by the nodes (at least 32 characters).
    #[arg(long, env = "SUNLIGHT_LINKAGE_KEY", hide_env_values = true)]
    #[serde(skip)]
    linkage_key: Option<String>,
    /// Append every SQL statement, fragment and refused call to this JSON lines file.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_log: Option<PathBuf>,
    /// Partitions a query runs over at the node (default: one per core).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    partitions: Option<usize>,
    /// Memory in MiB the node's queries may hold at once (default: no limit).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_limit_mb: Option<usize>,
    /// Seconds between two listings of the data root; changed files are served after
    /// the next one (default: 5).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    rescan_seconds: Option<u64>,
    /// A node serves over mutual TLS and admits only clients (the coordinator) whose
    /// certificate chains to the CA.
    #[command(flatten)]
    #[serde(skip)]
    tls: ServeTlsFlags,
}

/// `--tls-cert/--tls-key/--tls-ca`: serve over TLS (see deploy/certs.sh).
#[derive(Debug, Args)]
struct ServeTlsFlags {
    /// This service's certificate (PEM).
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA the other side's certificates chain to (PEM): a node's clients', or the
    /// other coordinator replicas'.
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
}

impl ServeTlsFlags {
    fn files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            _ => None,
        }
    }
}

/// Flags of `sunlight coordinator`; unset ones leave the config file's values alone.
#[derive(Debug, Args, Serialize)]
struct CoordinatorArgs {
    /// TOML config file (see deploy/config/coordinator.example.toml).
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Listen address; port 0 picks a free port.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// Address the other replicas reach this one at (default: the bound address).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise: Option<String>,
    /// Create a new coordinator group of this replica, with the bootstrap nodes and
    /// administrators; ignored once the group exists.
    #[arg(long, conflicts_with = "join")]
    #[serde(skip)]
    init: bool,
    /// Join the group through the replica at this address.
    #[arg(long, value_name = "ADDR")]
    #[serde(skip)]
    join: Option<String>,
    #[command(flatten)]
    replica: ReplicaFlags,
    /// Run every assigned model this often, in seconds (0: only `sunlight model run`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    model_schedule_secs: Option<u64>,
    /// Read the nodes' subsidy_standards again this often, in seconds (0: only at start).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    standards_check_secs: Option<u64>,
    /// Every node must have answered a query within this many milliseconds, counted anew
    /// when the city runs it again (groups held back, a node that failed in part).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    fragment_timeout_ms: Option<u64>,
    /// Memory in MiB this replica's queries may hold at once (default: no limit).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_limit_mb: Option<usize>,
    /// Reach the nodes over mutual TLS: this coordinator's certificate (PEM).
    #[arg(long, requires_all = ["node_tls_key", "node_tls_ca"])]
    #[serde(skip)]
    node_tls_cert: Option<PathBuf>,
    /// The coordinator certificate's private key (PEM).
    #[arg(long, requires = "node_tls_cert")]
    #[serde(skip)]
    node_tls_key: Option<PathBuf>,
    /// The CA the nodes' certificates chain to (PEM).
    #[arg(long, requires = "node_tls_cert")]
    #[serde(skip)]
    node_tls_ca: Option<PathBuf>,
    /// A coordinator serves clients and the other replicas over TLS; its certificate
    /// names `sunlight-coordinator`.
    #[command(flatten)]
    #[serde(skip)]
    tls: ServeTlsFlags,
    /// Bootstrap administrator token, user `cli` (adds to the config file's tokens).
    #[arg(long, env = "SUNLIGHT_TOKEN", hide_env_values = true)]
    #[serde(skip)]
    token: Option<String>,
    /// A bootstrap node as CODE=ADDR, e.g. 140215=127.0.0.1:50051 (adds to the config file's nodes).
    #[arg(long = "node", value_name = "CODE=ADDR")]
    #[serde(skip)]
    nodes: Vec<String>,
    /// Token the coordinator presents to the nodes given with --node.
    #[arg(long, env = "SUNLIGHT_NODE_TOKEN", hide_env_values = true)]
    #[serde(skip)]
    node_token: Option<String>,
}

/// The `[replica]` section from flags.
#[derive(Debug, Args, Serialize)]
struct ReplicaFlags {
    /// This replica's id in the coordinator group.
    #[arg(long = "replica-id")]
    #[serde(rename = "id", skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    /// Directory of this replica's metadata.
    #[arg(long = "data")]
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<PathBuf>,
    /// Secret shared by the replicas (at least 16 characters).
    #[arg(
        long = "cluster-secret",
        env = "SUNLIGHT_CLUSTER_SECRET",
        hide_env_values = true
    )]
    #[serde(rename = "secret", skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["node", "city"])))]
struct SqlArgs {
    /// Flight SQL address of a node, e.g. 127.0.0.1:50051.
    #[arg(long)]
    node: Option<String>,
    /// Flight SQL address of the city coordinator, e.g. 127.0.0.1:50050.
    #[arg(long)]
    city: Option<String>,
    /// At the city: answer without the nodes that fail, and list them.
    #[arg(long)]
    partial: bool,
    /// API token.
    #[arg(long, env = "SUNLIGHT_TOKEN", hide_env_values = true)]
    token: String,
    /// Reach the city over TLS, checking its certificate chains to this CA (PEM).
    #[arg(long, env = "SUNLIGHT_TLS_CA", requires = "city")]
    tls_ca: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Write to this file instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Read the query from this file instead; `-` reads standard input.
    #[arg(long, short = 'f', conflicts_with = "query")]
    file: Option<PathBuf>,
    /// The query. It may begin with a `--` comment.
    #[arg(allow_hyphen_values = true, required_unless_present = "file")]
    query: Option<String>,
}

impl SqlArgs {
    /// The query: given as an argument, or read from `--file`.
    fn query(&self) -> Result<String> {
        let Some(path) = &self.file else {
            return Ok(self.query.clone().expect("clap requires a query or a file"));
        };
        let read = |source| Error::Read {
            path: path.clone(),
            source,
        };
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).map_err(read)?
        } else {
            std::fs::read_to_string(path).map_err(read)?
        };
        if text.trim().is_empty() {
            return Err(Error::Usage(format!("{} holds no query", path.display())));
        }
        Ok(text)
    }
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// Data root of the node: file:///path, s3://bucket/prefix or a local path.
    #[arg(long)]
    data: String,
    /// Contract table the files belong to.
    #[arg(long)]
    table: String,
    /// Text encoding of the CSV files: utf-8, or a label such as gbk or gb18030 (Excel's
    /// "CSV" on Chinese Windows is GBK).
    #[arg(long, default_value = "utf-8")]
    encoding: String,
    /// CSV files with a header row naming the contract's columns, or Parquet files with
    /// those columns.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Parses the command line and runs it.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Datagen(args) => datagen(args),
        Command::Node(args) => node(args).await,
        Command::Coordinator(args) => coordinator(args).await,
        Command::Admin(args) => admin::run(args).await,
        Command::Model(args) => model::run(args).await,
        Command::Report(args) => model::report(args).await,
        Command::Outcome(args) => model::outcome(args).await,
        Command::Audit(args) => audit::run(args).await,
        Command::Linkage(args) => model::linkage(args).await,
        Command::Case(args) => model::case(args).await,
        Command::Sql(args) => sql(args).await,
        Command::Import(args) => import(args).await,
        Command::Demo(args) => demo::run(args).await,
    }
}

fn datagen(args: DatagenArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out).map_err(|source| Error::Write {
        path: args.out.clone(),
        source,
    })?;
    let progress = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} {bar:40} {pos}/{len} people  {per_sec}  eta {eta}")
            .expect("valid template"),
    );
    let started = Instant::now();
    let config = CityConfig {
        persons_per_county: args.persons_per_county,
        seed: args.seed,
    };
    let report = generate_city(&args.out, &config, &progress)?;
    let seconds = started.elapsed().as_secs_f64();
    let payments = report.total(Table::Disbursements);
    say(&format!(
        "wrote {} to {}: {} persons, {payments} disbursements, {} payroll, {} certificates in {seconds:.1}s ({:.0} disbursement rows/s)",
        "11 nodes",
        args.out.display(),
        report.total(Table::Persons),
        report.total(Table::Payroll),
        report.total(Table::DisabilityCerts),
        payments as f64 / seconds.max(1e-9),
    ));
    for (model, hits) in &report.truth.hits {
        say(&format!("  planted {:>6} hits of {model}", hits.len()));
    }
    Ok(())
}

async fn node(args: NodeArgs) -> Result<()> {
    let mut config = NodeConfig::load(args.config.as_deref(), &args)?;
    if let Some(token) = &args.token {
        config.auth.tokens.insert("cli".into(), token.clone());
    }
    if let Some(token) = &args.city_token {
        config.auth.tokens.insert("city".into(), token.clone());
        config.auth.city.insert("city".into());
    }
    config.auth.local_analysts_only |= args.local_analysts_only;
    if let Some(key) = &args.linkage_key {
        config.linkage.key = Some(key.clone());
    }
    if let Some(tls) = args.tls.files() {
        config.tls = Some(tls);
    }
    let running = start_node(config).await?;
    let node = running.node();
    for (table, state) in node.tables() {
        match state {
            TableState::Served { files } => say(&format!("  {table}: {} file(s)", files.len())),
            TableState::Missing => say(&format!("  {table}: no files, served empty")),
            TableState::Refused(problems) => {
                for p in problems {
                    say(&format!("  {table}: REFUSED, {p}"));
                }
            }
        }
    }
    say(&format!(
        "node {} listening on {}",
        node.code(),
        running.addr
    ));
    shutdown_signal().await;
    running.stop().await?;
    Ok(())
}

async fn coordinator(args: CoordinatorArgs) -> Result<()> {
    let mut config = CoordinatorConfig::load(args.config.as_deref(), &args)?;
    if let Some(token) = &args.token {
        config.auth.tokens.insert("cli".into(), token.clone());
    }
    for node in &args.nodes {
        let (code, addr) = node
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("--node {node}: expected CODE=ADDR")))?;
        let token = args
            .node_token
            .clone()
            .or_else(|| args.token.clone())
            .ok_or_else(|| {
                Error::Usage("--node needs --node-token (or --token) for the nodes".into())
            })?;
        config.nodes.push(NodeEntry {
            code: code.into(),
            addr: addr.into(),
            token,
        });
    }
    if let Some(tls) = args.tls.files() {
        config.replica.tls = Some(tls);
    }
    if let (Some(cert), Some(key), Some(ca)) =
        (&args.node_tls_cert, &args.node_tls_key, &args.node_tls_ca)
    {
        config.node_tls = Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        });
    }
    let bootstrap = match (&args.join, args.init) {
        (Some(peer), _) => Bootstrap::Join(peer.clone()),
        (None, true) => Bootstrap::Init,
        (None, false) => Bootstrap::Restart,
    };
    let running = start_coordinator(config, bootstrap).await?;
    match &running.standards {
        Ok(check) if check.differing.is_empty() && check.unreachable.is_empty() => {
            say(&format!(
                "  subsidy_standards: identical on {} nodes",
                check.agreeing.len()
            ));
        }
        Ok(check) => {
            for node in &check.differing {
                say(&format!(
                    "  subsidy_standards: node {node} holds a DIFFERENT copy; the city uses the majority copy"
                ));
            }
            for (node, reason) in &check.unreachable {
                say(&format!(
                    "  subsidy_standards: node {node} not checked: {reason}"
                ));
            }
        }
        Err(reason) => say(&format!("  subsidy_standards: not loaded yet: {reason}")),
    }
    say(&format!(
        "city coordinator replica {} listening on {}",
        running.replica.id(),
        running.addr
    ));
    shutdown_signal().await;
    running.stop().await?;
    Ok(())
}

async fn sql(args: SqlArgs) -> Result<()> {
    let query = args.query()?;
    // Before the query runs, and is audited, for nothing.
    args.format.check_output(args.output.as_deref())?;
    let addr = args
        .city
        .as_deref()
        .or(args.node.as_deref())
        .expect("clap requires one");
    let mut client = match admin::coordinator_tls(args.tls_ca.as_deref())? {
        Some(tls) => {
            let endpoint = sunlight_flightsql::endpoint(addr, Some(&tls))
                .map_err(|e| Error::Usage(format!("--city {addr}: {e}")))?;
            SqlClient::connect_endpoint(addr, endpoint, &args.token).await?
        }
        None => SqlClient::connect(addr, &args.token).await?,
    };
    if args.partial {
        client.allow_partial_results();
    }
    let mut answer = client.answer(&query).await?;
    // From the output file's start: it is written beside its path until whole.
    let interrupt = Interrupt::on_signal();
    let mut writer =
        output::ResultWriter::create(answer.schema.clone(), args.format, args.output.as_deref())?;
    let left = match args.output {
        Some(_) => "the output file was not written",
        None => "the answer was cut short",
    };
    let streamed = async {
        while let Some(batch) = answer.next().await? {
            // Batches may arrive faster than they are written, with no wait between.
            interrupt.check(left)?;
            writer.write(&batch)?;
        }
        writer.finish()
    };
    interrupt.unless(left, streamed).await?;
    if !answer.missing_nodes.is_empty() {
        eprintln!(
            "partial result: no answer from node(s) {}",
            answer.missing_nodes.join(", ")
        );
        for reason in answer.missing_reasons.values() {
            eprintln!("  {reason}");
        }
    }
    if answer.suppressed_groups > 0 {
        eprintln!(
            "{} group(s) held back by the nodes: each counts fewer than the minimum number \
             of persons at its node, and its group is left out of the answer above",
            answer.suppressed_groups
        );
    }
    Ok(())
}

async fn import(args: ImportArgs) -> Result<()> {
    let table: Table = args.table.parse()?;
    let interrupt = Interrupt::on_signal();
    let mut import = import::Import::new(table, import::encoding(&args.encoding)?, interrupt)?;
    for file in &args.files {
        import.add(file)?;
    }
    for file in import.write(&args.data, &S3Config::default()).await? {
        say(&format!(
            "imported {} rows of {} into {}",
            file.rows,
            file.path.display(),
            file.location
        ));
        if file.doubtful_ids > 0 {
            eprintln!(
                "warning: {} doubt(s) about the person_id values of {}, which were imported \
                 as they are; the node reports them too:",
                file.doubtful_ids,
                file.path.display()
            );
            for doubt in &file.doubts {
                eprintln!("  {doubt}");
            }
        }
    }
    say(
        "a node of this data root serves the new files from its next listing of them (every rescan_seconds, 5 by default)",
    );
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// User-facing output of the CLI. A reader that went away (`sunlight … | head`) ends
/// the command quietly, as for any Unix tool.
fn say(line: &str) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        tracing::warn!("cannot write to standard output: {e}");
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn a_query_may_begin_with_a_comment() {
        let query = "-- persons alive\nSELECT count(*) FROM persons WHERE death_date IS NULL";
        assert_eq!(sql_args(&[query]).unwrap().query().unwrap(), query);
    }

    fn sql_args(extra: &[&str]) -> Result<SqlArgs, clap::Error> {
        let base = ["sunlight", "sql", "--node", "127.0.0.1:1", "--token", "t"];
        let cli = Cli::try_parse_from(base.iter().chain(extra))?;
        match cli.command {
            Command::Sql(args) => Ok(args),
            _ => unreachable!("parsed as sql"),
        }
    }

    /// Refused before anything is asked of the node at 127.0.0.1:1, where nothing listens.
    #[tokio::test]
    async fn parquet_without_a_file_is_refused_before_the_query_runs() {
        let args = sql_args(&["--format", "parquet", "SELECT 1"]).unwrap();
        let refused = sql(args).await;
        assert!(
            matches!(&refused, Err(Error::Usage(m)) if m.contains("--output")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_query_may_come_from_a_file_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alive.sql");
        let query = "-- persons alive\nSELECT count(*)\nFROM persons\nWHERE death_date IS NULL;\n";
        std::fs::write(&path, query).unwrap();
        let file = path.to_str().unwrap();
        assert_eq!(sql_args(&["--file", file]).unwrap().query().unwrap(), query);

        let missing = dir.path().join("missing.sql");
        let err = sql_args(&["-f", missing.to_str().unwrap()])
            .unwrap()
            .query()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("cannot read {}: ", missing.display())),
            "{err}"
        );

        std::fs::write(&path, "  \n").unwrap();
        let err = sql_args(&["-f", file]).unwrap().query().unwrap_err();
        assert_eq!(err.to_string(), format!("{file} holds no query"));

        // A query and a file, or neither, is a usage error.
        assert!(sql_args(&["-f", file, "SELECT 1"]).is_err());
        assert!(sql_args(&[]).is_err());
    }
}
