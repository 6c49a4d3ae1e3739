//! `sunlight demo`: a small synthetic city served by eleven real nodes and three
//! coordinator replicas on loopback; the seven problem models approved, rolled out and
//! run where the data lives; the city report.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use indicatif::ProgressBar;
use sunlight_client::SqlClient;
use sunlight_datagen::{CityConfig, JULE_TOWNSHIP, generate_city};
use sunlight_meta::RunModelsRequest;
use sunlight_node::data_quality;

use crate::local_city::{LOCAL_TOKEN, LocalCity};
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
    /// Keep the city running after the report, until Ctrl-C, so that it can be queried.
    #[arg(long)]
    serve: bool,
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

    let local = LocalCity::start(&city, 3).await?;
    let addrs = local.addrs().join(",");
    say(&format!(
        "\n11 nodes and 3 coordinator replicas are serving on loopback: {addrs}"
    ));
    let mut findings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for node in &local.nodes {
        let node = node.node();
        for finding in data_quality(&node).await? {
            findings
                .entry(finding.clone())
                .or_default()
                .push(node.code().to_string());
        }
    }
    say("data quality, as the nodes report it:");
    for (finding, nodes) in findings {
        say(&format!("  {}: {finding}", nodes.join(", ")));
    }
    say(
        "\nthe seven problem models: added by admin, approved by approver, rolled out to 140215 first, then everywhere",
    );
    local.deploy_builtin_models().await?;
    let mut admin = local.admin()?;
    say("\nrunning them where the data lives:");
    model::run_models(&mut admin, RunModelsRequest::default()).await?;
    say("\nthe city report:");
    model::print_report(&mut admin, Format::Table, None).await?;

    let mut client = SqlClient::connect(&local.addrs()[0], LOCAL_TOKEN).await?;
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
            "\nthe city is serving; try:\n  export SUNLIGHT_COORDINATOR={addrs} SUNLIGHT_TOKEN={LOCAL_TOKEN}\n  \
             sunlight report\n  sunlight model list\n  sunlight admin cluster status\n  \
             sunlight sql --city {} \"SELECT subsidy_type, sum(amount) FROM disbursements GROUP BY 1\"\n\
             press Ctrl-C to stop",
            local.addrs()[0]
        ));
        shutdown_signal().await;
    }
    local.stop().await
}
