//! `sunlight admin`: raft membership, the node registry and users, through any
//! coordinator replica (writes find the leader).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use rand::RngCore;
use sunlight_flightsql::{COORDINATOR_TLS_NAME, trust};
use sunlight_meta::{AdminClient, Command, NodeRecord, Proposed, Role, Section, token_sha256};

use tonic::transport::ClientTlsConfig;

use crate::{Error, Result, say};

/// Where the coordinator is and who asks.
#[derive(Debug, Args)]
pub struct CoordinatorFlags {
    /// Address of a coordinator replica; repeat or separate with commas (the leader is
    /// found).
    #[arg(
        long = "coordinator",
        required = true,
        env = "SUNLIGHT_COORDINATOR",
        value_delimiter = ','
    )]
    coordinators: Vec<String>,
    /// API token.
    #[arg(long, env = "SUNLIGHT_TOKEN", hide_env_values = true)]
    token: String,
    /// Reach the coordinator over TLS, checking its certificate chains to this CA (PEM).
    #[arg(long, env = "SUNLIGHT_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

impl CoordinatorFlags {
    /// A client of the replicas.
    pub fn client(&self) -> Result<AdminClient> {
        Ok(AdminClient::new(&self.coordinators, &self.token)?
            .with_tls(coordinator_tls(self.tls_ca.as_deref())?))
    }
}

/// Client TLS towards the coordinator, when a CA is given.
pub fn coordinator_tls(ca: Option<&Path>) -> Result<Option<ClientTlsConfig>> {
    ca.map(|ca| trust(ca, COORDINATOR_TLS_NAME))
        .transpose()
        .map_err(|e| Error::Usage(e.to_string()))
}

/// Flags of `sunlight admin`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    coordinator: CoordinatorFlags,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// The coordinator's raft group.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// The registry of nodes the city federates over.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Users and their API tokens.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Leader, term, log position and the replicas.
    Status,
    /// Add a replica (started with its own --replica-id and --data) to the group.
    AddReplica {
        /// Its replica id.
        #[arg(long)]
        id: u64,
        /// The address its peers reach it at.
        #[arg(long)]
        addr: String,
    },
    /// Remove a replica from the group.
    RemoveReplica {
        /// Its replica id.
        #[arg(long)]
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Register a node, or change its address or token.
    Add {
        /// Node code, e.g. 140215.
        #[arg(long)]
        code: String,
        /// Its Flight address.
        #[arg(long)]
        addr: String,
        /// The token the coordinator presents to it.
        #[arg(long, env = "SUNLIGHT_NODE_TOKEN", hide_env_values = true)]
        node_token: String,
    },
    /// Remove a node from the registry.
    Remove {
        /// Node code.
        #[arg(long)]
        code: String,
    },
    /// List the registered nodes.
    List,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user; prints the new API token once.
    Add {
        /// Login name.
        #[arg(long)]
        name: String,
        /// city_analyst, investigator, county_analyst, administrator or auditor.
        #[arg(long)]
        role: String,
        /// The node of a county analyst.
        #[arg(long)]
        node: Option<String>,
        /// How long the token works, e.g. 90d, 12h, 30m or 45s; without it, until revoked.
        #[arg(long)]
        valid_for: Option<String>,
    },
    /// List users (never their tokens).
    List,
    /// Revoke a user's token.
    Revoke {
        /// Login name.
        #[arg(long)]
        name: String,
    },
    /// Give a user a new token in place of the old one, revoked or expired as it may be;
    /// prints it once.
    Renew {
        /// Login name.
        #[arg(long)]
        name: String,
        /// How long the token works, e.g. 90d, 12h, 30m or 45s; without it, until revoked.
        #[arg(long)]
        valid_for: Option<String>,
    },
}

pub async fn run(args: AdminArgs) -> Result<()> {
    let mut client = args.coordinator.client()?;
    match args.command {
        AdminCommand::Cluster(command) => cluster(&mut client, command).await,
        AdminCommand::Node(NodeCommand::Add {
            code,
            addr,
            node_token,
        }) => {
            let command = Command::AddNode(NodeRecord {
                code: code.clone(),
                addr: addr.clone(),
                token: node_token,
            });
            propose(
                &mut client,
                &command,
                &format!("node {code} registered at {addr}"),
            )
            .await
        }
        AdminCommand::Node(NodeCommand::Remove { code }) => {
            let command = Command::RemoveNode { code: code.clone() };
            propose(&mut client, &command, &format!("node {code} removed")).await
        }
        AdminCommand::Node(NodeCommand::List) => list(&mut client, Section::Nodes).await,
        AdminCommand::User(UserCommand::Add {
            name,
            role,
            node,
            valid_for,
        }) => {
            let role: Role = role.parse().map_err(Error::Usage)?;
            let (token, expires_ms) = new_token(valid_for.as_deref())?;
            let command = Command::AddUser {
                name: name.clone(),
                role,
                node,
                token_sha256: token_sha256(&token),
                expires_ms,
            };
            propose(
                &mut client,
                &command,
                &format!("user {name} added as {role}"),
            )
            .await?;
            say(&format!("token (shown once, store it now): {token}"));
            Ok(())
        }
        AdminCommand::User(UserCommand::List) => list(&mut client, Section::Users).await,
        AdminCommand::User(UserCommand::Revoke { name }) => {
            let command = Command::RevokeUser { name: name.clone() };
            propose(&mut client, &command, &format!("user {name} revoked")).await
        }
        AdminCommand::User(UserCommand::Renew { name, valid_for }) => {
            let (token, expires_ms) = new_token(valid_for.as_deref())?;
            let command = Command::RenewToken {
                name: name.clone(),
                token_sha256: token_sha256(&token),
                expires_ms,
            };
            let done = format!("user {name} has a new token; the old one no longer works");
            propose(&mut client, &command, &done).await?;
            say(&format!("token (shown once, store it now): {token}"));
            Ok(())
        }
    }
}

/// A new random API token, and when it expires if it is `valid_for` a while.
fn new_token(valid_for: Option<&str>) -> Result<(String, Option<i64>)> {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let expires_ms = valid_for
        .map(duration_ms)
        .transpose()?
        .map(|ms| chrono::Utc::now().timestamp_millis() + ms);
    Ok((format!("sl_{}", hex::encode(bytes)), expires_ms))
}

/// Milliseconds of a duration written as a number and a unit: s, m, h or d.
fn duration_ms(text: &str) -> Result<i64> {
    let bad = || {
        Error::Usage(format!(
            "--valid-for {text:?}: write a number and a unit (s, m, h or d), e.g. 90d"
        ))
    };
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let number: i64 = number.parse().map_err(|_| bad())?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    number
        .checked_mul(unit_ms)
        .filter(|ms| *ms > 0)
        .ok_or_else(bad)
}

async fn propose(client: &mut AdminClient, command: &Command, done: &str) -> Result<()> {
    match client.propose(command).await? {
        Proposed::Applied { audit_seq, .. } => {
            say(&format!("{done} (audit #{audit_seq})"));
            Ok(())
        }
        Proposed::Refused(reason) => Err(Error::Refused(reason)),
    }
}

async fn list(client: &mut AdminClient, section: Section) -> Result<()> {
    let value = client.read(section).await?;
    for row in value.as_array().into_iter().flatten() {
        say(&row.to_string());
    }
    Ok(())
}

async fn cluster(client: &mut AdminClient, command: ClusterCommand) -> Result<()> {
    let status = match command {
        ClusterCommand::Status => client.status().await?,
        ClusterCommand::AddReplica { id, addr } => client.add_replica(id, &addr).await?,
        ClusterCommand::RemoveReplica { id } => client.remove_replica(id).await?,
    };
    let leader = status
        .leader
        .map_or_else(|| "none".to_string(), |l| format!("replica {l}"));
    say(&format!(
        "answered by replica {}: leader {leader}, term {}, log {}, applied {}",
        status.id, status.term, status.last_log_index, status.applied_index
    ));
    for replica in &status.replicas {
        let kind = if replica.voter { "voter" } else { "learner" };
        say(&format!(
            "  replica {} at {} ({kind})",
            replica.id, replica.addr
        ));
    }
    Ok(())
}
