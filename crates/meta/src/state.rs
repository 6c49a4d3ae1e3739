//! The replicated metadata itself and the deterministic function that applies a command.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::types::{
    Actor, AuditRecord, Command, ModelRecord, ModelStatus, NodeRecord, Outcome, Proposal, Role,
    RunRecord, UserRecord,
};

/// Nodes, users, models, rollouts and where the audit log stands, as every replica holds
/// them. The audit log's records, which grow with every query, are stored, not held here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    /// Registered nodes by code.
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Users by name.
    pub users: BTreeMap<String, UserRecord>,
    /// Model versions by id, then version.
    pub models: BTreeMap<String, BTreeMap<u32, ModelRecord>>,
    /// Model id → node code → assigned version.
    pub assignments: BTreeMap<String, BTreeMap<String, u32>>,
    /// Model runs by node, oldest first.
    pub runs: Vec<RunRecord>,
    /// Where the audit log stands.
    #[serde(rename = "audit_head", default)]
    pub audit: AuditHead,
}

/// How far the hash-chained audit log reaches: as many records as [`AuditHead::len`],
/// numbered from 1, the first and the last known by their hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// How many records the log holds.
    pub len: u64,
    /// The first record's hash, which names the log; empty while it is empty.
    pub first_sha256: String,
    /// The last record's hash, which the next record chains to; empty while it is empty.
    pub last_sha256: String,
}

impl AuditHead {
    /// The head of the log whose records are `records`, if they are a whole, unaltered
    /// chain from the first record; otherwise its first break.
    pub fn of(records: &[AuditRecord]) -> Result<Self, String> {
        let mut check = ChainCheck::default();
        for record in records {
            check.take(record)?;
        }
        Ok(check.head())
    }

    /// Moves the head past `record`, the next record of the log.
    fn advance(&mut self, record: &AuditRecord) {
        self.len = record.seq;
        self.last_sha256.clone_from(&record.sha256);
        if record.seq == 1 {
            self.first_sha256.clone_from(&record.sha256);
        }
    }
}

/// Hex SHA-256 of an API token, the only form in which tokens are stored.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl MetaState {
    /// The user holding `token`, if the token is neither revoked nor expired at `now_ms`;
    /// otherwise why not.
    pub fn authenticate(&self, token: &str, now_ms: i64) -> Result<&UserRecord, String> {
        let user = self
            .holder(token)
            .ok_or_else(|| "unknown token".to_string())?;
        if user.revoked_ms.is_some() {
            return Err(format!("the token of {} was revoked", user.name));
        }
        if let Some(expired) = user.expires_ms.filter(|e| *e <= now_ms) {
            let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(expired)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            return Err(format!("the token of {} expired at {at}", user.name));
        }
        Ok(user)
    }

    /// The user the token was issued to, whether or not it still works.
    pub fn holder(&self, token: &str) -> Option<&UserRecord> {
        let hash = token_sha256(token);
        self.users.values().find(|u| u.token_sha256 == hash)
    }

    /// [`MetaState::authenticate`] at the current time.
    pub fn user_by_token(&self, token: &str) -> Result<&UserRecord, String> {
        self.authenticate(token, chrono::Utc::now().timestamp_millis())
    }

    /// Refuses a token for `name` whose hash another token has, or that would be
    /// expired at `now_ms` already.
    fn check_token(
        &self,
        name: &str,
        token_sha256: &str,
        expires_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<(), String> {
        if expires_ms.is_some_and(|e| e <= now_ms) {
            return Err(format!("the token of {name} would be expired already"));
        }
        if self.users.values().any(|u| u.token_sha256 == token_sha256) {
            return Err("that token is already in use".into());
        }
        Ok(())
    }

    /// Applies one committed proposal. Every proposal, applied or refused, is audited: the
    /// record it adds to the log comes back with its outcome, for the caller to store.
    pub fn apply(&mut self, proposal: &Proposal) -> (Outcome, AuditRecord) {
        let result = self.change(proposal);
        let decision = match &result {
            Ok(_) => "applied".to_string(),
            Err(reason) => format!("refused: {reason}"),
        };
        let detail = match &proposal.command {
            Command::Audit { detail, .. } => detail.clone(),
            // Token hashes and node tokens stay out of the log.
            Command::AddNode(node) => format!("{} at {}", node.code, node.addr),
            Command::AddUser {
                name, role, node, ..
            } => match node {
                Some(node) => format!("{name} as {role} of {node}"),
                None => format!("{name} as {role}"),
            },
            Command::RenewToken { name, .. } => name.clone(),
            Command::AddModel { id, version, .. } => format!("{id} version {version}"),
            Command::RecordRun(run) => format!("{}, run {}", found(run), run.run_id),
            Command::RecordRuns { runs } => {
                let found: Vec<String> = runs.iter().map(found).collect();
                let run = runs.first().map_or("", |r| r.run_id.as_str());
                format!("run {run}: {}", found.join("; "))
            }
            other => serde_json::to_string(other).unwrap_or_default(),
        };
        let decision = match &proposal.command {
            Command::Audit { decision, .. } => decision.clone(),
            _ => decision,
        };
        let actor = match &proposal.command {
            Command::Audit {
                subject: Some(subject),
                ..
            } => subject,
            _ => &proposal.actor,
        };
        let record = self.append_audit(
            actor,
            proposal.at_ms,
            proposal.command.action(),
            detail,
            decision,
        );
        let outcome = match result {
            Ok(detail) => Outcome::Applied {
                audit_seq: record.seq,
                detail,
            },
            Err(reason) => Outcome::Refused(reason),
        };
        (outcome, record)
    }

    fn change(&mut self, proposal: &Proposal) -> Result<String, String> {
        match &proposal.command {
            Command::AddNode(node) => {
                node.code
                    .parse::<sunlight_domain::NodeCode>()
                    .map_err(|e| e.to_string())?;
                self.nodes.insert(node.code.clone(), node.clone());
                Ok(node.code.clone())
            }
            Command::RemoveNode { code } => self
                .nodes
                .remove(code)
                .map(|_| code.clone())
                .ok_or_else(|| format!("no node {code} is registered")),
            Command::AddUser {
                name,
                role,
                node,
                token_sha256,
                expires_ms,
            } => {
                if self.users.contains_key(name) {
                    return Err(format!("user {name} already exists"));
                }
                if name.is_empty() {
                    return Err("a user needs a name".into());
                }
                if name.starts_with("replica-") {
                    return Err(format!(
                        "user name {name:?} is reserved: names beginning with replica- are the coordinator replicas'"
                    ));
                }
                match (role, node) {
                    (Role::CountyAnalyst, None) => {
                        return Err(format!("county analyst {name} needs a node"));
                    }
                    (Role::CountyAnalyst, Some(code)) => {
                        code.parse::<sunlight_domain::NodeCode>()
                            .map_err(|e| e.to_string())?;
                    }
                    (_, Some(_)) => {
                        return Err(format!(
                            "only a county analyst is bound to a node, not {role}"
                        ));
                    }
                    (_, None) => {}
                }
                self.check_token(name, token_sha256, *expires_ms, proposal.at_ms)?;
                self.users.insert(
                    name.clone(),
                    UserRecord {
                        name: name.clone(),
                        role: *role,
                        node: node.clone(),
                        token_sha256: token_sha256.clone(),
                        created_ms: proposal.at_ms,
                        revoked_ms: None,
                        expires_ms: *expires_ms,
                    },
                );
                Ok(name.clone())
            }
            Command::RenewToken {
                name,
                token_sha256,
                expires_ms,
            } => {
                self.check_token(name, token_sha256, *expires_ms, proposal.at_ms)?;
                let user = self
                    .users
                    .get_mut(name)
                    .ok_or_else(|| format!("no user {name}"))?;
                user.token_sha256 = token_sha256.clone();
                user.expires_ms = *expires_ms;
                user.revoked_ms = None;
                Ok(name.clone())
            }
            Command::RevokeUser { name } => {
                let user = self
                    .users
                    .get_mut(name)
                    .ok_or_else(|| format!("no user {name}"))?;
                if user.revoked_ms.is_some() {
                    return Err(format!("user {name} is already revoked"));
                }
                user.revoked_ms = Some(proposal.at_ms);
                Ok(name.clone())
            }
            Command::AddModel {
                id,
                version,
                package,
            } => {
                let versions = self.models.entry(id.clone()).or_default();
                if let Some(latest) = versions.keys().next_back()
                    && latest >= version
                {
                    return Err(format!(
                        "model {id} already has version {latest}; give the new package a higher version"
                    ));
                }
                let version = *version;
                versions.insert(
                    version,
                    ModelRecord {
                        id: id.clone(),
                        version,
                        package: package.clone(),
                        author: proposal.actor.user.clone(),
                        approver: None,
                        status: ModelStatus::Draft,
                    },
                );
                Ok(version.to_string())
            }
            Command::ApproveModel { id, version } => {
                let model = self
                    .models
                    .get_mut(id)
                    .and_then(|v| v.get_mut(version))
                    .ok_or_else(|| format!("no model {id} version {version}"))?;
                if model.status == ModelStatus::Approved {
                    return Err(format!("model {id} version {version} is already approved"));
                }
                if model.author == proposal.actor.user {
                    return Err(format!(
                        "{} wrote model {id} version {version} and cannot approve it",
                        model.author
                    ));
                }
                model.status = ModelStatus::Approved;
                model.approver = Some(proposal.actor.user.clone());
                Ok(version.to_string())
            }
            Command::AssignModel { id, version, nodes } => {
                let model = self
                    .models
                    .get(id)
                    .and_then(|v| v.get(version))
                    .ok_or_else(|| format!("no model {id} version {version}"))?;
                if model.status != ModelStatus::Approved {
                    return Err(format!(
                        "model {id} version {version} is not approved; approve it before rolling it out"
                    ));
                }
                if let Some(unknown) = nodes.iter().find(|n| !self.nodes.contains_key(*n)) {
                    return Err(format!("no node {unknown} is registered"));
                }
                let assigned = self.assignments.entry(id.clone()).or_default();
                for node in nodes {
                    assigned.insert(node.clone(), *version);
                }
                Ok(version.to_string())
            }
            Command::RecordRun(run) => {
                self.record_runs(std::slice::from_ref(run), proposal.at_ms);
                Ok(run.run_id.clone())
            }
            Command::RecordRuns { runs } => {
                self.record_runs(runs, proposal.at_ms);
                Ok(runs.first().map(|r| r.run_id.clone()).unwrap_or_default())
            }
            Command::Audit { .. } => Ok(String::new()),
        }
    }

    /// Adds `runs`, recorded at `at_ms`.
    fn record_runs(&mut self, runs: &[RunRecord], at_ms: i64) {
        self.runs.extend(runs.iter().map(|run| RunRecord {
            at_ms,
            ..run.clone()
        }));
    }

    fn append_audit(
        &mut self,
        actor: &Actor,
        at_ms: i64,
        action: &str,
        detail: String,
        decision: String,
    ) -> AuditRecord {
        let mut record = AuditRecord {
            seq: self.audit.len + 1,
            at_ms,
            user: actor.user.clone(),
            role: actor.role,
            action: action.to_string(),
            detail,
            decision,
            prev_sha256: self.audit.last_sha256.clone(),
            sha256: String::new(),
        };
        record.sha256 = audit_sha256(&record);
        self.audit.advance(&record);
        record
    }
}

/// The chain hash of `record`: SHA-256 over the previous hash and every other field.
pub fn audit_sha256(record: &AuditRecord) -> String {
    let mut hasher = Sha256::new();
    for field in [
        record.prev_sha256.as_str(),
        &record.seq.to_string(),
        &record.at_ms.to_string(),
        &record.user,
        record.role.map(Role::name).unwrap_or(""),
        &record.action,
        &record.detail,
        &record.decision,
    ] {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Checks that `records` are a whole, unaltered chain from the first record; returns how
/// many were checked, or the first break.
pub fn verify_chain(records: &[AuditRecord]) -> Result<usize, String> {
    AuditHead::of(records).map(|_| records.len())
}

/// Checks audit records one at a time, as they are read, as a whole, unaltered chain from
/// the first record.
#[derive(Debug, Default)]
pub(crate) struct ChainCheck(AuditHead);

impl ChainCheck {
    /// Takes the next record, or names the first break.
    pub(crate) fn take(&mut self, record: &AuditRecord) -> Result<(), String> {
        let expected = self.0.len + 1;
        if record.seq != expected {
            return Err(format!(
                "record {expected} is missing: found record {} in its place (removed or reordered)",
                record.seq
            ));
        }
        if record.prev_sha256 != self.0.last_sha256 {
            return Err(format!(
                "record {} does not follow record {} (removed, reordered or altered)",
                record.seq,
                expected - 1
            ));
        }
        if audit_sha256(record) != record.sha256 {
            return Err(format!(
                "record {} was altered: its hash does not match its fields",
                record.seq
            ));
        }
        self.0.advance(record);
        Ok(())
    }

    /// The head of the log of the records taken.
    pub(crate) fn head(self) -> AuditHead {
        self.0
    }
}

/// What a node found in a run of a model, as the audit log tells it.
fn found(run: &RunRecord) -> String {
    format!(
        "{} version {} on {}: {} hits",
        run.model_id, run.version, run.node, run.total.hits
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::RunCounts;

    /// A state and the records its audit log holds.
    #[derive(Default)]
    struct Logged {
        state: MetaState,
        log: Vec<AuditRecord>,
    }

    impl Logged {
        fn apply(&mut self, proposal: &Proposal) -> Outcome {
            let (outcome, record) = self.state.apply(proposal);
            self.log.push(record);
            outcome
        }
    }

    impl std::ops::Deref for Logged {
        type Target = MetaState;

        fn deref(&self) -> &MetaState {
            &self.state
        }
    }

    fn by(user: &str, command: Command) -> Proposal {
        Proposal {
            actor: Actor {
                user: user.into(),
                role: Some(Role::Administrator),
            },
            at_ms: 1_700_000_000_000,
            command,
        }
    }

    fn add_user(name: &str, role: Role, node: Option<&str>, token: &str) -> Command {
        Command::AddUser {
            name: name.into(),
            role,
            node: node.map(Into::into),
            token_sha256: token_sha256(token),
            expires_ms: None,
        }
    }

    #[test]
    fn users_authenticate_by_token_until_revoked() {
        let mut state = Logged::default();
        let outcome = state.apply(&by("root", add_user("ana", Role::CityAnalyst, None, "t1")));
        assert!(matches!(outcome, Outcome::Applied { audit_seq: 1, .. }));
        assert_eq!(state.user_by_token("t1").unwrap().name, "ana");
        assert_eq!(state.user_by_token("t2").unwrap_err(), "unknown token");
        state.apply(&by("root", Command::RevokeUser { name: "ana".into() }));
        assert!(
            state
                .user_by_token("t1")
                .unwrap_err()
                .contains("ana was revoked")
        );
        let at = 1_700_000_000_000;
        state.apply(&by(
            "root",
            Command::AddUser {
                name: "bo".into(),
                role: Role::Auditor,
                node: None,
                token_sha256: token_sha256("t3"),
                expires_ms: Some(at + 1_000),
            },
        ));
        assert_eq!(state.authenticate("t3", at + 999).unwrap().name, "bo");
        assert!(
            state
                .authenticate("t3", at + 1_000)
                .unwrap_err()
                .contains("bo expired at")
        );
        assert!(!serde_json::to_string(&state.log).unwrap().contains("t1"));
    }

    #[test]
    fn a_renewed_token_replaces_the_old_one_revoked_or_not() {
        let mut state = Logged::default();
        state.apply(&by("root", add_user("ana", Role::CityAnalyst, None, "t1")));
        state.apply(&by("root", Command::RevokeUser { name: "ana".into() }));
        let renew = |name: &str, token: &str| Command::RenewToken {
            name: name.into(),
            token_sha256: token_sha256(token),
            expires_ms: None,
        };
        let outcome = state.apply(&by("root", renew("ana", "t2")));
        assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
        let ana = state.user_by_token("t2").unwrap();
        assert_eq!((ana.name.as_str(), ana.role), ("ana", Role::CityAnalyst));
        assert_eq!(state.user_by_token("t1").unwrap_err(), "unknown token");
        for (command, expected) in [
            (renew("bo", "t3"), "no user bo"),
            (renew("ana", "t2"), "already in use"),
        ] {
            match state.apply(&by("root", command)) {
                Outcome::Refused(reason) => assert!(reason.contains(expected), "{reason}"),
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        let audit = serde_json::to_string(&state.log).unwrap();
        assert!(!audit.contains(&token_sha256("t2")), "{audit}");
    }

    #[test]
    fn refusals_name_the_problem_and_change_nothing() {
        let mut state = Logged::default();
        state.apply(&by("root", add_user("ana", Role::CityAnalyst, None, "t1")));
        let before = state.users.clone();
        for (command, expected) in [
            (add_user("ana", Role::Auditor, None, "t9"), "already exists"),
            (
                add_user("bo", Role::CountyAnalyst, None, "t2"),
                "needs a node",
            ),
            (
                add_user("bo", Role::Auditor, Some("140215"), "t2"),
                "only a county analyst",
            ),
            (
                add_user("bo", Role::CountyAnalyst, Some("999999"), "t2"),
                "999999",
            ),
            (add_user("bo", Role::Auditor, None, "t1"), "already in use"),
            (
                add_user("", Role::Auditor, None, "t2"),
                "a user needs a name",
            ),
            (
                add_user("replica-2", Role::Auditor, None, "t2"),
                "names beginning with replica- are the coordinator replicas'",
            ),
            (Command::RevokeUser { name: "zed".into() }, "no user zed"),
        ] {
            match state.apply(&by("root", command)) {
                Outcome::Refused(reason) => assert!(reason.contains(expected), "{reason}"),
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        assert_eq!(state.users, before);
        assert!(state.log.last().unwrap().decision.starts_with("refused"));
    }

    #[test]
    fn model_lifecycle_needs_a_second_person_and_approval() {
        let mut state = Logged::default();
        state.apply(&by(
            "root",
            Command::AddNode(NodeRecord {
                code: "140215".into(),
                addr: "127.0.0.1:1".into(),
                token: "n".into(),
            }),
        ));
        let add = Command::AddModel {
            id: "dibao_payroll".into(),
            version: 1,
            package: "rule".into(),
        };
        assert!(
            matches!(state.apply(&by("wang", add)), Outcome::Applied { ref detail, .. } if detail == "1")
        );
        let assign = Command::AssignModel {
            id: "dibao_payroll".into(),
            version: 1,
            nodes: vec!["140215".into()],
        };
        assert!(
            matches!(state.apply(&by("li", assign.clone())), Outcome::Refused(r) if r.contains("not approved"))
        );
        let approve = Command::ApproveModel {
            id: "dibao_payroll".into(),
            version: 1,
        };
        assert!(
            matches!(state.apply(&by("wang", approve.clone())), Outcome::Refused(r) if r.contains("cannot approve"))
        );
        assert!(matches!(
            state.apply(&by("li", approve)),
            Outcome::Applied { .. }
        ));
        assert!(matches!(
            state.apply(&by("li", assign)),
            Outcome::Applied { .. }
        ));
        assert_eq!(state.assignments["dibao_payroll"]["140215"], 1);
    }

    #[test]
    fn a_run_is_recorded_whole_and_old_single_records_still_apply() {
        let run = |node: &str, hits| RunRecord {
            run_id: "r2".into(),
            model_id: "duplicate_payment".into(),
            version: 1,
            node: node.into(),
            at_ms: 0,
            total: RunCounts {
                hits,
                persons: hits,
                amount: "0.00".into(),
            },
            townships: BTreeMap::new(),
            elapsed_ms: 5,
        };
        let mut state = Logged::default();
        let old = RunRecord {
            run_id: "r1".into(),
            ..run("140215", 1)
        };
        state.apply(&by("root", Command::RecordRun(old)));
        let whole = Command::RecordRuns {
            runs: vec![run("140215", 3), run("140221", 4)],
        };
        // As the log stores it.
        let stored = serde_json::to_string(&whole).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&stored).unwrap(), whole);
        let outcome = state.apply(&by("root", whole));
        assert!(matches!(outcome, Outcome::Applied { audit_seq: 2, .. }));
        let recorded: Vec<(&str, &str, u64, i64)> = state
            .runs
            .iter()
            .map(|r| (r.run_id.as_str(), r.node.as_str(), r.total.hits, r.at_ms))
            .collect();
        let at = 1_700_000_000_000;
        assert_eq!(
            recorded,
            [
                ("r1", "140215", 1, at),
                ("r2", "140215", 3, at),
                ("r2", "140221", 4, at)
            ]
        );
        assert_eq!(state.log[0].action, "model.run");
        assert_eq!(
            state.log[0].detail,
            "duplicate_payment version 1 on 140215: 1 hits, run r1"
        );
        assert_eq!(
            state.log[1].detail,
            "run r2: duplicate_payment version 1 on 140215: 3 hits; \
             duplicate_payment version 1 on 140221: 4 hits"
        );
    }

    #[test]
    fn audit_records_chain() {
        let mut state = Logged::default();
        for i in 0..3 {
            state.apply(&by(
                "root",
                Command::Audit {
                    subject: None,
                    action: "query".into(),
                    detail: format!("SELECT {i}"),
                    decision: "allowed".into(),
                },
            ));
        }
        for pair in state.log.windows(2) {
            assert_eq!(pair[1].prev_sha256, pair[0].sha256);
        }
        for record in &state.log {
            assert_eq!(audit_sha256(record), record.sha256);
        }
        assert_eq!(verify_chain(&state.log), Ok(3));
        let head = AuditHead::of(&state.log).unwrap();
        assert_eq!(head, state.audit);
        assert_eq!(
            (
                head.len,
                head.first_sha256.as_str(),
                head.last_sha256.as_str()
            ),
            (
                3,
                state.log[0].sha256.as_str(),
                state.log[2].sha256.as_str()
            )
        );
        let mut altered = state.log.clone();
        altered[1].detail = "SELECT 42".into();
        assert!(
            verify_chain(&altered)
                .unwrap_err()
                .contains("record 2 was altered")
        );
        let mut reordered = state.log.clone();
        reordered.swap(0, 1);
        assert!(
            verify_chain(&reordered)
                .unwrap_err()
                .contains("record 1 is missing")
        );
        let mut removed = state.log.clone();
        removed.remove(1);
        assert!(
            verify_chain(&removed)
                .unwrap_err()
                .contains("record 2 is missing")
        );
        let mut truncated_head = state.log.clone();
        truncated_head.remove(0);
        assert!(verify_chain(&truncated_head).is_err());
    }
}
