//! `sunlight model` (add, approve, roll out, roll back, list, run) and `sunlight report`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{Field, Schema};
use clap::{Args, Subcommand};
use serde_json::Value;
use sunlight_client::QueryResult;
use sunlight_meta::{
    AdminClient, CaseRequest, Command, HitsRequest, LinkRequest, NodeRun, Proposed,
    RunModelsRequest, RunRecord, Section, ShadowRequest,
};
use sunlight_models::{ModelPackage, validate};
use sunlight_proto::v1::Outcome;
use sunlight_proto::v1::node_service_client::NodeServiceClient;

use crate::admin::CoordinatorFlags;
use crate::output::{Format, write_result};
use crate::{Error, Result, say};

/// Flags of `sunlight model`.
#[derive(Debug, Args)]
pub struct ModelArgs {
    #[command(flatten)]
    coordinator: CoordinatorFlags,
    #[command(subcommand)]
    command: ModelCommand,
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Add a draft version from a package folder (model.toml, rule.sql), or the built-ins.
    Add {
        /// The package folder.
        #[arg(long, required_unless_present = "builtin")]
        package: Option<PathBuf>,
        /// Add the seven built-in models of the data contract.
        #[arg(long, conflicts_with = "package")]
        builtin: bool,
    },
    /// Approve a draft version (the approver must not be its author).
    Approve {
        /// Model id.
        #[arg(long)]
        id: String,
        /// Version.
        #[arg(long)]
        version: u32,
    },
    /// Assign an approved version to canary nodes, or to all nodes.
    Rollout(Assign),
    /// Pin nodes (or all) back to an earlier approved version.
    Rollback(Assign),
    /// Versions, their status, and which node runs which version.
    List,
    /// Per model and node: the assigned version and what its latest run found.
    Status,
    /// Run a candidate version beside each node's live version; record nothing, and
    /// compare both with the outcomes analysts recorded.
    Shadow {
        /// Model id.
        #[arg(long)]
        id: String,
        /// The candidate version.
        #[arg(long)]
        version: u32,
        /// Only these nodes.
        #[arg(long = "nodes", value_delimiter = ',')]
        nodes: Vec<String>,
    },
    /// Precision per model and node: hits analysts confirmed against those they dismissed.
    Outcomes {
        /// Only these models.
        #[arg(long = "model", value_delimiter = ',')]
        models: Vec<String>,
    },
    /// Run the assigned versions on the nodes now.
    Run {
        /// Only these models (repeat or separate with commas).
        #[arg(long = "model", value_delimiter = ',')]
        models: Vec<String>,
        /// Only these nodes.
        #[arg(long = "nodes", value_delimiter = ',')]
        nodes: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct Assign {
    /// Model id.
    #[arg(long)]
    id: String,
    /// Version.
    #[arg(long)]
    version: u32,
    /// Node codes (the canary), comma-separated.
    #[arg(long, value_delimiter = ',', required_unless_present = "all")]
    nodes: Vec<String>,
    /// Every registered node.
    #[arg(long, conflicts_with = "nodes")]
    all: bool,
}

/// Flags of `sunlight outcome`.
#[derive(Debug, Args)]
pub struct OutcomeArgs {
    /// Flight address of the county's node.
    #[arg(long)]
    node: String,
    /// The county analyst's token on that node.
    #[arg(long, env = "SUNLIGHT_TOKEN", hide_env_values = true)]
    token: String,
    /// Model id of the hit.
    #[arg(long)]
    model: String,
    /// payment_id of the hit.
    #[arg(long)]
    payment_id: String,
    /// confirmed or dismissed.
    #[arg(long)]
    status: String,
    /// Yuan recovered, e.g. 3000.00.
    #[arg(long, default_value = "")]
    recovered: String,
    /// A note for the file.
    #[arg(long, default_value = "")]
    note: String,
}

/// Records a county analyst's verdict on one hit, at the node that holds it.
pub async fn outcome(args: OutcomeArgs) -> Result<()> {
    let unreachable = |e: String| Error::Usage(format!("cannot reach node {}: {e}", args.node));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", args.node))
        .map_err(|e| unreachable(e.to_string()))?
        .connect()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut request = tonic::Request::new(Outcome {
        model_id: args.model.clone(),
        payment_id: args.payment_id.clone(),
        status: args.status.clone(),
        recovered: args.recovered.clone(),
        note: args.note.clone(),
    });
    let bearer = format!("Bearer {}", args.token)
        .parse()
        .map_err(|_| Error::Usage("the token is not printable ASCII".into()))?;
    request.metadata_mut().insert("authorization", bearer);
    NodeServiceClient::new(channel)
        .record_outcome(request)
        .await
        .map_err(|s| Error::Refused(s.message().to_string()))?;
    say(&format!(
        "{} of {} recorded as {}",
        args.payment_id, args.model, args.status
    ));
    Ok(())
}

/// Flags of `sunlight case`.
#[derive(Debug, Args)]
pub struct CaseArgs {
    #[command(subcommand)]
    command: CaseCommand,
}

#[derive(Debug, Subcommand)]
enum CaseCommand {
    /// Open named hits of a model for a case: audited, then shown in clear.
    Open {
        #[command(flatten)]
        coordinator: CoordinatorFlags,
        /// Model id of the hits.
        #[arg(long)]
        model: String,
        /// payment_ids of the hits, all on one node, comma-separated.
        #[arg(long = "payment-id", value_delimiter = ',', required = true)]
        payment_ids: Vec<String>,
        /// The case number.
        #[arg(long)]
        case_no: String,
        /// Why the rows are needed.
        #[arg(long)]
        reason: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// The hits of each node's latest run of a model, class-P columns only, to pick a
    /// case's hits from: audited.
    Hits {
        #[command(flatten)]
        coordinator: CoordinatorFlags,
        /// Model id.
        #[arg(long)]
        model: String,
        /// Node codes, comma-separated; without it, every node that ran the model.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

/// Opens a case and prints the rows the node disclosed, or lists the hits to open.
pub async fn case(args: CaseArgs) -> Result<()> {
    let (streams, format, audit_seq, what) = match args.command {
        CaseCommand::Open {
            coordinator,
            model,
            payment_ids,
            case_no,
            reason,
            format,
        } => {
            let request = CaseRequest {
                model_id: model,
                payment_ids,
                case_no,
                reason,
            };
            let reply = coordinator.client()?.open_case(request).await?;
            (
                vec![reply.arrow_ipc],
                format,
                reply.audit_seq,
                "case opening",
            )
        }
        CaseCommand::Hits {
            coordinator,
            model,
            nodes,
            format,
        } => {
            let request = HitsRequest {
                model_id: model,
                nodes,
            };
            let reply = coordinator.client()?.list_hits(request).await?;
            (reply.arrow_ipc, format, reply.audit_seq, "hit listing")
        }
    };
    write_result(&decoded(streams)?, format, None)?;
    if format == Format::Table {
        say(&format!("{what} recorded as audit #{audit_seq}"));
    }
    Ok(())
}

/// The rows of the nodes' Arrow IPC streams, one after another.
fn decoded(streams: Vec<Vec<u8>>) -> Result<QueryResult> {
    let undecodable =
        |e: arrow::error::ArrowError| Error::Usage(format!("the nodes' rows do not decode: {e}"));
    let mut schema = None;
    let mut batches = Vec::new();
    for stream in streams {
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(stream), None)
            .map_err(undecodable)?;
        schema.get_or_insert(reader.schema());
        for batch in reader {
            batches.push(batch.map_err(undecodable)?);
        }
    }
    let schema = schema.unwrap_or_else(|| Arc::new(Schema::empty()));
    Ok(QueryResult::new(schema, batches))
}

/// Flags of `sunlight linkage`.
#[derive(Debug, Args)]
pub struct LinkageArgs {
    #[command(subcommand)]
    command: LinkageCommand,
}

#[derive(Debug, Subcommand)]
enum LinkageCommand {
    /// Find rows whose key occurs twice or more across all nodes, without moving the key.
    Run {
        #[command(flatten)]
        coordinator: CoordinatorFlags,
        /// The table whose rows are linked.
        #[arg(long)]
        table: String,
        /// Key columns, comma-separated, e.g. person_id,subsidy_type,period.
        #[arg(long = "key", value_delimiter = ',', required = true)]
        keys: Vec<String>,
    },
}

/// Runs a linkage and prints, per node, its rows whose key occurs twice or more.
pub async fn linkage(args: LinkageArgs) -> Result<()> {
    let LinkageCommand::Run {
        coordinator,
        table,
        keys,
    } = args.command;
    let reply = coordinator
        .client()?
        .link(LinkRequest { table, keys })
        .await?;
    say(&format!(
        "{:<8} {:>12} {:>10} {:>16}",
        "node", "linked rows", "persons", "amount"
    ));
    for run in &reply.runs {
        match &run.summary {
            Some(s) if run.error.is_empty() => say(&format!(
                "{:<8} {:>12} {:>10} {:>16}",
                run.node, s.hits, s.persons, s.amount
            )),
            _ => say(&format!("{:<8} FAILED: {}", run.node, run.error)),
        }
    }
    say(&format!(
        "{} bytes of tokens and counts crossed to the coordinator; no identifier did",
        reply.bytes_received
    ));
    Ok(())
}

/// Flags of `sunlight report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    coordinator: CoordinatorFlags,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Write to this file instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
}

pub async fn run(args: ModelArgs) -> Result<()> {
    let mut client = args.coordinator.client()?;
    match args.command {
        ModelCommand::Add { package, builtin } => {
            let packages = match package {
                Some(dir) => vec![ModelPackage::load(&dir)?],
                None if builtin => ModelPackage::builtins(),
                None => unreachable!("clap requires one"),
            };
            add(&mut client, &packages).await
        }
        ModelCommand::Approve { id, version } => {
            let done = format!("model {id} version {version} approved");
            propose(&mut client, Command::ApproveModel { id, version }, &done).await
        }
        ModelCommand::Rollout(assign) => rollout(&mut client, assign, "rolled out").await,
        ModelCommand::Rollback(assign) => rollout(&mut client, assign, "rolled back").await,
        ModelCommand::List => list(&mut client).await,
        ModelCommand::Status => status(&mut client).await,
        ModelCommand::Shadow { id, version, nodes } => {
            let reply = client
                .shadow(ShadowRequest {
                    model_id: id,
                    version,
                    nodes,
                })
                .await?;
            say(&format!(
                "{:<8} {:>14} {:>14} {:>22} {:>22}",
                "node",
                "live hits",
                "candidate hits",
                "live confirmed/dism.",
                "cand. confirmed/dism."
            ));
            for (live, candidate) in reply.live.iter().zip(&reply.candidate) {
                let cell = |run: &NodeRun| match &run.summary {
                    Some(s) if run.error.is_empty() => (
                        format!("v{} {}", run.version, s.hits),
                        format!("{}/{}", s.confirmed, s.dismissed),
                    ),
                    _ => (format!("FAILED: {}", run.error), String::new()),
                };
                let ((lh, lo), (ch, co)) = (cell(live), cell(candidate));
                say(&format!(
                    "{:<8} {lh:>14} {ch:>14} {lo:>22} {co:>22}",
                    live.node
                ));
            }
            Ok(())
        }
        ModelCommand::Outcomes { models } => {
            let reply = client
                .outcomes(RunModelsRequest {
                    models,
                    nodes: Vec::new(),
                })
                .await?;
            say(&format!(
                "{:<28} {:<8} {:>10} {:>10} {:>10} {:>14}",
                "model", "node", "confirmed", "dismissed", "precision", "recovered"
            ));
            for run in &reply.runs {
                let Some(s) = run.summary.as_ref().filter(|_| run.error.is_empty()) else {
                    say(&format!(
                        "{:<28} {:<8} FAILED: {}",
                        run.model_id, run.node, run.error
                    ));
                    continue;
                };
                let judged = s.confirmed + s.dismissed;
                let precision = if judged == 0 {
                    "-".to_string()
                } else {
                    format!("{:.3}", s.confirmed as f64 / judged as f64)
                };
                say(&format!(
                    "{:<28} {:<8} {:>10} {:>10} {:>10} {:>14}",
                    run.model_id, run.node, s.confirmed, s.dismissed, precision, s.recovered
                ));
            }
            Ok(())
        }
        ModelCommand::Run { models, nodes } => {
            run_models(&mut client, RunModelsRequest { models, nodes }).await
        }
    }
}

async fn propose(client: &mut AdminClient, command: Command, done: &str) -> Result<()> {
    match client.propose(&command).await? {
        Proposed::Applied { audit_seq, .. } => {
            say(&format!("{done} (audit #{audit_seq})"));
            Ok(())
        }
        Proposed::Refused(reason) => Err(Error::Refused(reason)),
    }
}

/// Validates each package against the contract, then adds it as a draft.
pub async fn add(client: &mut AdminClient, packages: &[ModelPackage]) -> Result<()> {
    for package in packages {
        validate(package).await?;
        let command = Command::AddModel {
            id: package.id.clone(),
            version: package.version,
            package: serde_json::to_string(package).expect("packages serialize"),
        };
        let done = format!(
            "model {} version {} added as a draft: {}",
            package.id, package.version, package.title_zh
        );
        propose(client, command, &done).await?;
    }
    Ok(())
}

async fn rollout(client: &mut AdminClient, assign: Assign, verb: &str) -> Result<()> {
    let nodes = if assign.all {
        client
            .read(Section::Nodes)
            .await?
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["code"].as_str().map(str::to_string))
            .collect()
    } else {
        assign.nodes
    };
    let done = format!(
        "model {} version {} {verb} to {}",
        assign.id,
        assign.version,
        nodes.join(", ")
    );
    let command = Command::AssignModel {
        id: assign.id.clone(),
        version: assign.version,
        nodes: nodes.clone(),
    };
    propose(client, command, &done).await?;
    // The nodes install what is now assigned to them.
    let reply = client
        .install(RunModelsRequest {
            models: vec![assign.id],
            nodes,
        })
        .await?;
    for run in reply.runs.iter().filter(|r| !r.error.is_empty()) {
        say(&format!("  not installed on {}: {}", run.node, run.error));
    }
    let installed = reply.runs.iter().filter(|r| r.error.is_empty()).count();
    say(&format!("  installed on {installed} node(s)"));
    Ok(())
}

async fn list(client: &mut AdminClient) -> Result<()> {
    let value = client.read(Section::Models).await?;
    for versions in value["models"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for record in versions.as_object().into_iter().flat_map(|v| v.values()) {
            let package: Value = record["package"]
                .as_str()
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or_default();
            say(&format!(
                "{} v{} {} ({}) author {} approver {}",
                record["id"].as_str().unwrap_or("?"),
                record["version"],
                record["status"].as_str().unwrap_or("?"),
                package["title_zh"].as_str().unwrap_or(""),
                record["author"].as_str().unwrap_or("?"),
                record["approver"].as_str().unwrap_or("-"),
            ));
        }
    }
    for (id, nodes) in value["assignments"].as_object().into_iter().flatten() {
        let mut by_version: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (node, version) in nodes.as_object().into_iter().flatten() {
            by_version
                .entry(version.to_string())
                .or_default()
                .push(node);
        }
        for (version, nodes) in by_version {
            say(&format!("  {id} v{version} runs on {}", nodes.join(", ")));
        }
    }
    Ok(())
}

async fn status(client: &mut AdminClient) -> Result<()> {
    let models = client.read(Section::Models).await?;
    let runs: Vec<RunRecord> = serde_json::from_value(client.read(Section::Runs).await?)
        .map_err(|e| Error::Usage(format!("unexpected run records: {e}")))?;
    let mut latest: BTreeMap<(&str, &str), &RunRecord> = BTreeMap::new();
    for run in &runs {
        latest.insert((&run.model_id, &run.node), run);
    }
    say(&format!(
        "{:<28} {:<8} {:>8} {:>16} {:>8} {:>8}  {}",
        "model", "node", "assigned", "last run", "version", "hits", "at"
    ));
    for (id, nodes) in models["assignments"].as_object().into_iter().flatten() {
        for (node, version) in nodes.as_object().into_iter().flatten() {
            let (run, ran_version, hits, at) = match latest.get(&(id.as_str(), node.as_str())) {
                Some(r) => (
                    r.run_id.clone(),
                    format!("v{}", r.version),
                    r.total.hits.to_string(),
                    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(r.at_ms)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default(),
                ),
                None => ("never".into(), "-".into(), "-".into(), String::new()),
            };
            say(&format!(
                "{id:<28} {node:<8} {:>8} {run:>16} {ran_version:>8} {hits:>8}  {at}",
                format!("v{version}")
            ));
        }
    }
    Ok(())
}

/// Runs models and prints what each node found.
pub async fn run_models(client: &mut AdminClient, request: RunModelsRequest) -> Result<()> {
    let reply = client.run_models(request).await?;
    say(&format!("run {}", reply.run_id));
    let mut by_model: BTreeMap<(&str, u32), Vec<&NodeRun>> = BTreeMap::new();
    for run in &reply.runs {
        by_model
            .entry((&run.model_id, run.version))
            .or_default()
            .push(run);
    }
    for ((model, version), runs) in by_model {
        let done: Vec<_> = runs
            .iter()
            .filter_map(|r| r.summary.as_ref().filter(|_| r.error.is_empty()))
            .collect();
        let hits: u64 = done.iter().map(|s| s.hits).sum();
        let slowest = done.iter().map(|s| s.seconds).fold(0.0, f64::max);
        say(&format!(
            "  {model:<28} v{version} on {:>2} nodes: {hits:>7} hits, slowest node {slowest:.2}s",
            done.len()
        ));
        for failed in runs.iter().filter(|r| !r.error.is_empty()) {
            say(&format!("    FAILED on {}: {}", failed.node, failed.error));
        }
    }
    say(&format!(
        "{} bytes crossed from the nodes to the coordinator",
        reply.bytes_received
    ));
    Ok(())
}

pub async fn report(args: ReportArgs) -> Result<()> {
    let mut client = args.coordinator.client()?;
    print_report(&mut client, args.format, args.output.as_deref()).await
}

/// Hits, persons and cents of a model on a node, or summed.
type Counts = [u64; 3];

fn sum_into(total: &mut Counts, counts: &Counts) {
    for (t, c) in total.iter_mut().zip(counts) {
        *t += c;
    }
}

/// Prints the city report from the latest run of each model on each node: as a table, one
/// row per model with its hits per county and its totals; as CSV or JSON, one row per
/// model and county plus the totals (`county_code = "all"`).
pub async fn print_report(
    client: &mut AdminClient,
    format: Format,
    output: Option<&std::path::Path>,
) -> Result<()> {
    let runs: Vec<RunRecord> = serde_json::from_value(client.read(Section::Runs).await?)
        .map_err(|e| Error::Usage(format!("unexpected run records: {e}")))?;
    let titles: BTreeMap<String, String> = ModelPackage::builtins()
        .into_iter()
        .map(|p| (p.id, p.title_zh))
        .collect();
    // Model → node → counts of its latest run there.
    let mut cells: BTreeMap<String, BTreeMap<String, Counts>> = BTreeMap::new();
    for run in &runs {
        let counts = [run.total.hits, run.total.persons, cents(&run.total.amount)];
        cells
            .entry(run.model_id.clone())
            .or_default()
            .insert(run.node.clone(), counts);
    }
    let mut totals: BTreeMap<&str, Counts> = BTreeMap::new();
    let mut all = Counts::default();
    for (model, nodes) in &cells {
        let total = totals.entry(model).or_default();
        nodes.values().for_each(|c| sum_into(total, c));
        sum_into(&mut all, total);
    }
    let nodes: BTreeSet<&str> = cells
        .values()
        .flat_map(|n| n.keys().map(String::as_str))
        .collect();
    let title = |model: &str| titles.get(model).cloned().unwrap_or_default();
    let text = |values: Vec<String>| Arc::new(StringArray::from(values)) as ArrayRef;
    let count = |values: Vec<u64>| Arc::new(UInt64Array::from(values)) as ArrayRef;
    let (mut fields, mut columns) = (Vec::new(), Vec::new());
    let mut column = |name: &str, array: ArrayRef| {
        fields.push(Field::new(name, array.data_type().clone(), false));
        columns.push(array);
    };
    // Rows: (model, title, county, counts).
    let mut rows: Vec<(String, String, String, Counts)> = Vec::new();
    if format == Format::Table {
        for (model, total) in &totals {
            rows.push((model.to_string(), title(model), "all".into(), *total));
        }
        rows.push(("all".into(), "合计".into(), "all".into(), all));
        column("model_id", text(rows.iter().map(|r| r.0.clone()).collect()));
        column("title", text(rows.iter().map(|r| r.1.clone()).collect()));
        for node in &nodes {
            let hits = rows
                .iter()
                .map(|(model, ..)| match cells.get(model) {
                    Some(by_node) => by_node.get(*node).map_or(0, |c| c[0]),
                    None => cells
                        .values()
                        .filter_map(|n| n.get(*node))
                        .map(|c| c[0])
                        .sum(),
                })
                .collect();
            column(node, count(hits));
        }
    } else {
        for (model, by_node) in &cells {
            for (node, counts) in by_node {
                rows.push((model.clone(), title(model), node.clone(), *counts));
            }
        }
        for (model, total) in &totals {
            rows.push((model.to_string(), title(model), "all".into(), *total));
        }
        rows.push(("all".into(), "合计".into(), "all".into(), all));
        column("model_id", text(rows.iter().map(|r| r.0.clone()).collect()));
        column("title", text(rows.iter().map(|r| r.1.clone()).collect()));
        column(
            "county_code",
            text(rows.iter().map(|r| r.2.clone()).collect()),
        );
    }
    column("hits", count(rows.iter().map(|r| r.3[0]).collect()));
    column("persons", count(rows.iter().map(|r| r.3[1]).collect()));
    column("amount", text(rows.iter().map(|r| yuan(r.3[2])).collect()));
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("report columns match");
    let result = QueryResult::new(schema, vec![batch]);
    write_result(&result, format, output)?;
    if output.is_none() && format == Format::Table {
        say(&format!(
            "{} models, {} suspect records, {} recipients (a person counts once per model and county)",
            totals.len(),
            all[0],
            all[1]
        ));
    }
    Ok(())
}

/// Cents of a two-decimal yuan amount as the nodes report it.
fn cents(amount: &str) -> u64 {
    let (whole, fraction) = amount.split_once('.').unwrap_or((amount, "0"));
    let whole: u64 = whole.parse().unwrap_or(0);
    let fraction: u64 = format!("{fraction:0<2}")[..2].parse().unwrap_or(0);
    whole * 100 + fraction
}

fn yuan(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}
