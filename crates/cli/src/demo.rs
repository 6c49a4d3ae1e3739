//! `sunlight demo`: a small synthetic city served by eleven real nodes on loopback.

use std::path::PathBuf;

use clap::Args;
use indicatif::ProgressBar;
use sunlight_client::SqlClient;
use sunlight_coordinator::{
    Bootstrap, CoordinatorConfig, NodeEntry, RunningCoordinator, start_coordinator,
};
use sunlight_datagen::{CityConfig, JULE_TOWNSHIP, generate_city, node_root};
use sunlight_domain::NodeCode;
use sunlight_meta::{AdminClient, Command, Proposed, ReplicaConfig, RunModelsRequest};
use sunlight_models::ModelPackage;
use sunlight_node::{NodeConfig, RunningNode, start_node};

use crate::model;
use crate::output::{Format, write_result};
use crate::{Error, Result, say, shutdown_signal};

/// Flags of `sunlight demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the generated city in this folder instead of a temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Ordinary people per county.
    #[arg(long, default_value_t = 2_000)]
    persons_per_county: usize,
    /// Seed of the synthetic city.
    #[arg(long, default_value_t = 2021)]
    seed: u64,
    /// Keep the nodes running after the report, until Ctrl-C, so that they can be queried.
    #[arg(long)]
    serve: bool,
}

/// Token of the demo's nodes and administrator; the demo serves loopback only.
const DEMO_TOKEN: &str = "demo-token-not-secret";
/// Token of the demo's second administrator, who approves the models.
const APPROVER_TOKEN: &str = "demo-approver-token-not-secret";
/// Secret shared by the demo's coordinator replicas.
const DEMO_SECRET: &str = "demo-cluster-secret-not-secret";
/// Linkage key shared by the demo's nodes, never by the coordinator.
const DEMO_LINKAGE_KEY: &str = "demo-linkage-key-not-secret-0123456789";

/// Three coordinator replicas: the first creates the group with the nodes, the others join.
async fn start_replicas(
    city: &std::path::Path,
    nodes: Vec<NodeEntry>,
) -> Result<Vec<RunningCoordinator>> {
    let mut replicas: Vec<RunningCoordinator> = Vec::new();
    for id in 1..=3u64 {
        let mut config = CoordinatorConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            nodes: nodes.clone(),
            replica: ReplicaConfig {
                id,
                data: city.join(format!("coordinator-{id}")),
                secret: DEMO_SECRET.into(),
                ..ReplicaConfig::default()
            },
            ..Default::default()
        };
        config.auth.tokens.insert("demo".into(), DEMO_TOKEN.into());
        config
            .auth
            .tokens
            .insert("approver".into(), APPROVER_TOKEN.into());
        let bootstrap = match replicas.first() {
            None => Bootstrap::Init,
            Some(first) => Bootstrap::Join(first.addr.to_string()),
        };
        replicas.push(start_coordinator(config, bootstrap).await?);
    }
    Ok(replicas)
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let temp = tempfile::tempdir().map_err(|source| Error::Write {
        path: std::env::temp_dir(),
        source,
    })?;
    let city = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&city).map_err(|source| Error::Write {
        path: city.clone(),
        source,
    })?;
    say(&format!(
        "generating a city of {} people per county in {}",
        args.persons_per_county,
        city.display()
    ));
    let config = CityConfig {
        persons_per_county: args.persons_per_county,
        seed: args.seed,
    };
    generate_city(&city, &config, &ProgressBar::hidden())?;

    let mut nodes: Vec<RunningNode> = Vec::new();
    for code in NodeCode::all() {
        let mut config = NodeConfig {
            code: code.to_string(),
            data: node_root(&city, code).display().to_string(),
            listen: ([127, 0, 0, 1], 0).into(),
            ..NodeConfig::default()
        };
        config.auth.tokens.insert("demo".into(), DEMO_TOKEN.into());
        config.linkage.key = Some(DEMO_LINKAGE_KEY.into());
        nodes.push(start_node(config).await?);
    }
    let entries = nodes
        .iter()
        .map(|n| NodeEntry {
            code: n.node.code().to_string(),
            addr: n.addr.to_string(),
            token: DEMO_TOKEN.into(),
        })
        .collect();
    // Fresh metadata each run: the nodes listen on new ports every time.
    let replicas = start_replicas(temp.path(), entries).await?;
    let coordinator = &replicas[0];
    say(&format!(
        "\n11 nodes and 3 coordinator replicas are serving on loopback; the city is at {}",
        replicas
            .iter()
            .map(|r| r.addr.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let addrs: Vec<String> = replicas.iter().map(|r| r.addr.to_string()).collect();
    let mut author = AdminClient::new(&addrs, DEMO_TOKEN)?;
    let mut approver = AdminClient::new(&addrs, APPROVER_TOKEN)?;
    say(
        "\nthe seven problem models: added by demo, approved by approver, rolled out to 140215 first, then everywhere",
    );
    let packages = ModelPackage::builtins();
    model::add(&mut author, &packages).await?;
    let canary = NodeCode::all()
        .find(|c| c.as_str() == "140215")
        .expect("140215 is a node");
    for package in &packages {
        let (id, version) = (package.id.clone(), package.version);
        for command in [
            Command::ApproveModel {
                id: id.clone(),
                version,
            },
            Command::AssignModel {
                id: id.clone(),
                version,
                nodes: vec![canary.to_string()],
            },
            Command::AssignModel {
                id,
                version,
                nodes: NodeCode::all().map(|c| c.to_string()).collect(),
            },
        ] {
            if let Proposed::Refused(reason) = approver.propose(&command).await? {
                return Err(Error::Refused(reason));
            }
        }
    }
    say("\nrunning them where the data lives:");
    model::run_models(&mut author, RunModelsRequest::default()).await?;
    say("\nthe city report:");
    model::print_report(&mut author, Format::Table, None).await?;

    let mut client = SqlClient::connect(&coordinator.addr.to_string(), DEMO_TOKEN).await?;
    let story = format!(
        "SELECT count(*) AS people, sum(records) AS records, sum(amount) AS amount FROM (\
           SELECT person_id, count(*) AS records, sum(amount) AS amount FROM disbursements \
           WHERE county_code = '140215' AND township = '{JULE_TOWNSHIP}' AND subsidy_type = 'YULU' \
             AND period = DATE '2021-09-01' \
           GROUP BY person_id HAVING count(DISTINCT village) > 1)"
    );
    say(&format!(
        "\n云州区 {JULE_TOWNSHIP}, 雨露计划 2021: students paid in two villages at once"
    ));
    write_result(&client.query(&story).await?, Format::Table, None)?;

    if args.serve {
        say(&format!(
            "\nthe city is serving; try:\n  sunlight sql --city {} --token {DEMO_TOKEN} \"SELECT subsidy_type, sum(amount) FROM disbursements GROUP BY 1\"\npress Ctrl-C to stop",
            coordinator.addr
        ));
        shutdown_signal().await;
    }
    for replica in replicas {
        replica.stop().await?;
    }
    for node in nodes {
        node.stop().await?;
    }
    Ok(())
}
