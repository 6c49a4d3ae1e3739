//! `sunlight audit`: list the replicated audit log with filters, export it, and verify
//! its hash chain, live or from an exported file.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand};
use sunlight_client::QueryResult;
use sunlight_meta::{AdminClient, AuditRecord, Role, Section, verify_chain};
use sunlight_node::verify_access_log;

use crate::admin::{CoordinatorFlags, coordinator_tls};
use crate::output::{Format, write_result};
use crate::{Error, Result, say};

/// Flags of `sunlight audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Records of the log, oldest first, filtered.
    List {
        #[command(flatten)]
        coordinator: CoordinatorFlags,
        /// Only this user's records.
        #[arg(long)]
        user: Option<String>,
        /// Only records of users with this role: city_analyst, investigator,
        /// county_analyst, administrator or auditor.
        #[arg(long)]
        role: Option<Role>,
        /// Only this action, e.g. query, user.add, model.run.
        #[arg(long)]
        action: Option<String>,
        /// From this day (YYYY-MM-DD, UTC) on.
        #[arg(long)]
        since: Option<NaiveDate>,
        /// Before this day (YYYY-MM-DD, UTC).
        #[arg(long)]
        until: Option<NaiveDate>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Write the whole log, with its hashes, as JSON.
    Export {
        #[command(flatten)]
        coordinator: CoordinatorFlags,
        /// The file to write.
        #[arg(long)]
        output: PathBuf,
    },
    /// Check the hash chain: no record altered, reordered or removed.
    Verify {
        /// Address of a coordinator replica (the live log).
        #[arg(
            long = "coordinator",
            env = "SUNLIGHT_COORDINATOR",
            value_delimiter = ','
        )]
        coordinators: Vec<String>,
        /// An auditor's or administrator's API token.
        #[arg(long, env = "SUNLIGHT_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Verify an exported file instead of the live log.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Verify a node's access log (its --audit-log file) instead.
        #[arg(long, conflicts_with = "file")]
        node_log: Option<PathBuf>,
        /// Reach the coordinator over TLS, checking its certificate chains to this CA.
        #[arg(long, env = "SUNLIGHT_TLS_CA")]
        tls_ca: Option<PathBuf>,
    },
}

async fn fetch(mut client: AdminClient) -> Result<Vec<AuditRecord>> {
    let value = client.read(Section::Audit).await?;
    serde_json::from_value(value)
        .map_err(|e| Error::Usage(format!("unexpected audit records: {e}")))
}

fn day_start(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp_millis()
}

pub async fn run(args: AuditArgs) -> Result<()> {
    match args.command {
        AuditCommand::List {
            coordinator,
            user,
            role,
            action,
            since,
            until,
            format,
        } => {
            if let (Some(since), Some(until)) = (since, until)
                && since >= until
            {
                return Err(Error::Usage(format!(
                    "--since {since} is not before --until {until}: no record is from both"
                )));
            }
            let records: Vec<AuditRecord> = fetch(coordinator.client()?)
                .await?
                .into_iter()
                .filter(|r| user.as_ref().is_none_or(|u| &r.user == u))
                .filter(|r| role.is_none_or(|x| r.role == Some(x)))
                .filter(|r| action.as_ref().is_none_or(|a| &r.action == a))
                .filter(|r| since.is_none_or(|d| r.at_ms >= day_start(d)))
                .filter(|r| until.is_none_or(|d| r.at_ms < day_start(d)))
                .collect();
            write_result(&table(&records), format, None)
        }
        AuditCommand::Export {
            coordinator,
            output,
        } => {
            let records = fetch(coordinator.client()?).await?;
            let text = serde_json::to_string_pretty(&records).expect("records serialize");
            std::fs::write(&output, text).map_err(|source| Error::Write {
                path: output.clone(),
                source,
            })?;
            say(&format!(
                "{} records written to {}",
                records.len(),
                output.display()
            ));
            Ok(())
        }
        AuditCommand::Verify {
            node_log: Some(path),
            ..
        } => match verify_access_log(&path)? {
            None => {
                say(&format!(
                    "the access log {} verifies: chain intact",
                    path.display()
                ));
                Ok(())
            }
            Some(line) => Err(Error::Refused(format!(
                "the access log {} is broken at line {line}: a line was altered, reordered \
                 or removed",
                path.display()
            ))),
        },
        AuditCommand::Verify {
            coordinators,
            token,
            file,
            node_log: None,
            tls_ca,
        } => {
            let records: Vec<AuditRecord> = match (file, token) {
                (Some(path), _) => {
                    let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
                        path: path.clone(),
                        source,
                    })?;
                    serde_json::from_str(&text).map_err(|e| {
                        Error::Usage(format!(
                            "{} is not an exported audit log: {e}",
                            path.display()
                        ))
                    })?
                }
                (None, Some(token)) => {
                    let client = AdminClient::new(&coordinators, &token)?
                        .with_tls(coordinator_tls(tls_ca.as_deref())?);
                    fetch(client).await?
                }
                (None, None) => {
                    return Err(Error::Usage(
                        "give --coordinator and --token, or --file".into(),
                    ));
                }
            };
            let checked = verify_chain(&records)
                .map_err(|e| Error::Refused(format!("the audit log is broken: {e}")))?;
            say(&format!(
                "the audit log verifies: {checked} records, chain intact"
            ));
            Ok(())
        }
    }
}

fn table(records: &[AuditRecord]) -> QueryResult {
    let text = |f: &dyn Fn(&AuditRecord) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(records.iter().map(f)))
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("seq", DataType::UInt64, false),
        Field::new("at", DataType::Utf8, false),
        Field::new("user", DataType::Utf8, false),
        Field::new("role", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
        Field::new("decision", DataType::Utf8, false),
    ]));
    let columns = vec![
        Arc::new(UInt64Array::from_iter_values(records.iter().map(|r| r.seq))) as ArrayRef,
        text(&|r| {
            DateTime::<Utc>::from_timestamp_millis(r.at_ms)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        }),
        text(&|r| r.user.clone()),
        text(&|r| r.role.map(|x| x.name().to_string()).unwrap_or_default()),
        text(&|r| r.action.clone()),
        text(&|r| r.detail.clone()),
        text(&|r| r.decision.clone()),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("audit columns match");
    QueryResult::new(schema, vec![batch])
}
