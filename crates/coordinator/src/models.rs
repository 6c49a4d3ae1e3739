//! Running problem models from the city: each node runs the version assigned to it, and
//! for rules that span nodes the coordinator is the linkage unit. It matches keyed tokens
//! from the nodes, never holds the key, and returns to each node only its own tokens.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use prost::Message;
use sunlight_federation::CityEngine;
use sunlight_meta::{Actor, Command, Replica, Role, RunCounts, RunRecord};
use sunlight_models::{Linkage, ModelPackage};
use sunlight_proto::v1::model_step::Phase;
use sunlight_proto::v1::models_server::Models;
use sunlight_proto::v1::{
    CaseOpening, CaseReply, CaseRequest, HitsReply, HitsRequest, LinkRequest, ModelStep,
    ModelStepReply, NodeRun, RunHits, RunModelsReply, RunModelsRequest, RunSummary, ShadowReply,
    ShadowRequest,
};
use tonic::transport::ClientTlsConfig;
use tonic::{Request, Response, Status};

use crate::nodes::{Target, node_call, targets};

/// The model runs of a coordinator replica, reaching nodes over `tls` when given.
pub fn model_runs(
    replica: Arc<Replica>,
    city: Arc<CityEngine>,
    tls: Option<ClientTlsConfig>,
) -> Arc<ModelRuns> {
    Arc::new(ModelRuns { replica, city, tls })
}

/// Runs models for administrators.
#[derive(Debug)]
pub struct ModelRuns {
    replica: Arc<Replica>,
    /// Whose copy of `subsidy_standards` the nodes' rules must read.
    city: Arc<CityEngine>,
    tls: Option<ClientTlsConfig>,
}

/// One node's answer to one step, with the bytes it sent.
type StepResult = Result<(ModelStepReply, u64), String>;

async fn call(target: &Target, step: ModelStep) -> StepResult {
    let (mut client, request) = node_call(target, step)
        .await
        .map_err(|s| s.message().to_string())?;
    let reply = client
        .run_model(request)
        .await
        .map_err(|s| format!("node {}: {}", target.code, s.message()))?
        .into_inner();
    let bytes = reply.encoded_len() as u64;
    Ok((reply, bytes))
}

/// Asks `target` for the rows of an audited case opening.
async fn open_on_node(target: &Target, opening: CaseOpening) -> Result<Vec<u8>, Status> {
    let (mut client, request) = node_call(target, opening).await?;
    Ok(client.open_case(request).await?.into_inner().arrow_ipc)
}

/// Sends `step(target)` to every target at once.
async fn each(targets: &[Target], step: impl Fn(&Target) -> ModelStep) -> Vec<StepResult> {
    join_all(targets.iter().map(|t| call(t, step(t)))).await
}

impl ModelRuns {
    fn admin(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Actor, Status> {
        Ok(self.replica.authorize(metadata, &[Role::Administrator])?)
    }

    /// Writes the audit record `audit` as this replica; its sequence number.
    async fn audited(&self, audit: Command) -> Result<u64, Status> {
        match self.replica.propose(self.replica.actor(), audit).await? {
            sunlight_meta::Outcome::Applied { audit_seq, .. } => Ok(audit_seq),
            other => Err(Status::internal(format!(
                "the audit record was not written: {other:?}"
            ))),
        }
    }

    /// Every registered node by code.
    fn targets(&self) -> BTreeMap<String, Target> {
        targets(&self.replica, self.tls.as_ref())
    }

    /// The (package, assigned targets) of each selected model version.
    fn plan(&self, request: &RunModelsRequest) -> Result<Vec<(ModelPackage, Vec<Target>)>, Status> {
        let targets = self.targets();
        self.replica.read(|state| {
            if let Some(unknown) = request
                .models
                .iter()
                .find(|m| !state.models.contains_key(*m))
            {
                return Err(Status::not_found(format!(
                    "no model {unknown} in the registry"
                )));
            }
            if let Some(unknown) = request.nodes.iter().find(|n| !targets.contains_key(*n)) {
                return Err(Status::not_found(format!(
                    "no node {unknown} is registered"
                )));
            }
            let mut plan = Vec::new();
            for (id, assigned) in &state.assignments {
                if !request.models.is_empty() && !request.models.contains(id) {
                    continue;
                }
                let mut by_version: BTreeMap<u32, Vec<Target>> = BTreeMap::new();
                for (node, version) in assigned {
                    let selected = request.nodes.is_empty() || request.nodes.contains(node);
                    if let (true, Some(target)) = (selected, targets.get(node)) {
                        by_version.entry(*version).or_default().push(target.clone());
                    }
                }
                for (version, nodes) in by_version {
                    let record = &state.models[id][&version];
                    let package: ModelPackage =
                        serde_json::from_str(&record.package).map_err(|e| {
                            Status::internal(format!("stored package {id} v{version}: {e}"))
                        })?;
                    plan.push((package, nodes));
                }
            }
            Ok(plan)
        })
    }

    /// Runs one model version; returns each assigned node's result and the bytes received.
    async fn run_version(
        &self,
        run_id: &str,
        package: &ModelPackage,
        assigned: &[Target],
        everyone: &[Target],
        shadow: bool,
    ) -> (Vec<(Target, StepResult)>, u64) {
        let package_json = serde_json::to_vec(package).expect("packages serialize");
        // Without a copy no node answered for, there is none to hold the nodes to; the
        // steps then reach no node either.
        let standards_sha256 = self.city.standards_sha256().await.ok();
        let step = |phase: Phase, periods: Vec<i32>, tokens: Vec<Vec<u8>>| ModelStep {
            run_id: run_id.to_string(),
            package_json: package_json.clone(),
            phase: phase as i32,
            periods,
            tokens,
            shadow,
            standards_sha256: standards_sha256.clone(),
        };
        let mut bytes = 0;
        let results = match &package.linkage {
            None => each(assigned, |_| step(Phase::Local, vec![], vec![])).await,
            Some(linkage) => {
                // Tokens of every node that holds the rows, for a duplicate; of the
                // assigned nodes for a covered-by rule.
                let sources = match linkage {
                    Linkage::Duplicate => everyone,
                    Linkage::CoveredBy { .. } => assigned,
                };
                let tokens: HashMap<String, StepResult> = sources
                    .iter()
                    .map(|t| t.code.clone())
                    .zip(each(sources, |_| step(Phase::Tokens, vec![], vec![])).await)
                    .collect();
                bytes += tokens.values().flatten().map(|(_, b)| b).sum::<u64>();
                let matched = match linkage {
                    Linkage::Duplicate => duplicates(&tokens),
                    Linkage::CoveredBy { .. } => {
                        let periods: BTreeSet<i32> = tokens
                            .values()
                            .flatten()
                            .flat_map(|(r, _)| r.periods.iter().copied())
                            .collect();
                        let covers = each(everyone, |_| {
                            step(Phase::Cover, periods.iter().copied().collect(), vec![])
                        })
                        .await;
                        bytes += covers.iter().flatten().map(|(_, b)| b).sum::<u64>();
                        covered(&tokens, &covers)
                    }
                };
                let epochs: BTreeSet<u32> = tokens
                    .values()
                    .flatten()
                    .map(|(r, _)| r.linkage_epoch)
                    .collect();
                if epochs.len() > 1 {
                    let error = format!(
                        "nodes hold different linkage key epochs {epochs:?}; rotate every node to one epoch"
                    );
                    return (
                        assigned
                            .iter()
                            .map(|t| (t.clone(), Err(error.clone())))
                            .collect(),
                        bytes,
                    );
                }
                join_all(assigned.iter().map(|t| async {
                    match tokens.get(&t.code) {
                        Some(Err(e)) => Err(e.clone()),
                        _ => {
                            let mine = matched.get(&t.code).cloned().unwrap_or_default();
                            call(t, step(Phase::Apply, vec![], mine)).await
                        }
                    }
                }))
                .await
            }
        };
        bytes += results.iter().flatten().map(|(_, b)| b).sum::<u64>();
        (assigned.iter().cloned().zip(results).collect(), bytes)
    }
}

/// Per node, its tokens that occur in two or more rows city-wide.
fn duplicates(tokens: &HashMap<String, StepResult>) -> HashMap<String, Vec<Vec<u8>>> {
    let mut total: HashMap<&[u8], u64> = HashMap::new();
    for (reply, _) in tokens.values().flatten() {
        for (token, count) in reply.tokens.iter().zip(&reply.counts) {
            *total.entry(token).or_default() += u64::from(*count);
        }
    }
    tokens
        .iter()
        .filter_map(|(node, r)| Some((node, &r.as_ref().ok()?.0)))
        .map(|(node, reply)| {
            let mine = reply
                .tokens
                .iter()
                .filter(|t| total[t.as_slice()] >= 2)
                .cloned()
                .collect();
            (node.clone(), mine)
        })
        .collect()
}

/// Per node, its tokens that some node's cover intervals also produced.
fn covered(
    tokens: &HashMap<String, StepResult>,
    covers: &[StepResult],
) -> HashMap<String, Vec<Vec<u8>>> {
    let cover: HashSet<&[u8]> = covers
        .iter()
        .flatten()
        .flat_map(|(r, _)| r.tokens.iter().map(Vec::as_slice))
        .collect();
    tokens
        .iter()
        .filter_map(|(node, r)| Some((node, &r.as_ref().ok()?.0)))
        .map(|(node, reply)| {
            let mine = reply
                .tokens
                .iter()
                .filter(|t| cover.contains(t.as_slice()))
                .cloned()
                .collect();
            (node.clone(), mine)
        })
        .collect()
}

fn counts(hits: u64, persons: u64, amount: &str) -> RunCounts {
    RunCounts {
        hits,
        persons,
        amount: amount.to_string(),
    }
}

fn record(run_id: &str, package: &ModelPackage, node: &str, summary: &RunSummary) -> RunRecord {
    RunRecord {
        run_id: run_id.to_string(),
        model_id: package.id.clone(),
        version: package.version,
        node: node.to_string(),
        at_ms: 0,
        total: counts(summary.hits, summary.persons, &summary.amount),
        townships: summary
            .townships
            .iter()
            .map(|t| (t.township.clone(), counts(t.hits, t.persons, &t.amount)))
            .collect(),
        elapsed_ms: (summary.seconds * 1e3) as u64,
    }
}

impl ModelRuns {
    /// Runs the selected models as `actor` and records every node's summary of each, in
    /// one entry once all have run.
    pub async fn run_all(
        &self,
        actor: Actor,
        request: &RunModelsRequest,
    ) -> Result<RunModelsReply, Status> {
        // Runs are recorded through raft: only the leader runs them.
        self.replica.read_fresh(|_| ()).await?;
        let plan = self.plan(request)?;
        let everyone: Vec<Target> = self.targets().into_values().collect();
        let mut reply = RunModelsReply {
            run_id: run_id(),
            ..Default::default()
        };
        let mut records = Vec::new();
        for (package, assigned) in &plan {
            let (results, bytes) = self
                .run_version(&reply.run_id, package, assigned, &everyone, false)
                .await;
            reply.bytes_received += bytes;
            for (target, result) in results {
                let run = node_run(package, &target, result);
                if let Some(summary) = &run.summary {
                    records.push(record(&reply.run_id, package, &target.code, summary));
                }
                reply.runs.push(run);
            }
        }
        // The report goes from the last run to this one whole, once every model has run.
        if !records.is_empty() {
            self.replica
                .propose(actor, Command::RecordRuns { runs: records })
                .await?;
        }
        Ok(reply)
    }
}

impl ModelRuns {
    /// Sends one `phase` step of each selected model's assigned version to its nodes.
    async fn each_assigned(
        &self,
        request: &RunModelsRequest,
        phase: Phase,
    ) -> Result<RunModelsReply, Status> {
        let mut reply = RunModelsReply::default();
        for (package, assigned) in self.plan(request)? {
            let step = ModelStep {
                package_json: serde_json::to_vec(&package).expect("packages serialize"),
                phase: phase as i32,
                ..Default::default()
            };
            let results = each(&assigned, |_| step.clone()).await;
            reply.bytes_received += results.iter().flatten().map(|(_, b)| b).sum::<u64>();
            for (target, result) in assigned.iter().zip(results) {
                reply.runs.push(node_run(&package, target, result));
            }
        }
        Ok(reply)
    }
}

/// Runs every assigned model every `every` on whichever replica leads at the time.
pub fn spawn_schedule(runs: Arc<ModelRuns>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            if runs.replica.status().leader != Some(runs.replica.id()) {
                continue;
            }
            let actor = Actor {
                user: format!("replica-{} (schedule)", runs.replica.id()),
                role: Some(Role::Administrator),
            };
            match runs.run_all(actor, &RunModelsRequest::default()).await {
                Ok(reply) => {
                    tracing::info!(run = %reply.run_id, nodes = reply.runs.len(), "scheduled model run")
                }
                Err(status) => tracing::warn!("scheduled model run failed: {}", status.message()),
            }
        }
    })
}

fn node_run(package: &ModelPackage, target: &Target, result: StepResult) -> NodeRun {
    let mut run = NodeRun {
        model_id: package.id.clone(),
        version: package.version,
        node: target.code.clone(),
        ..Default::default()
    };
    match result {
        Ok((step, _)) => run.summary = Some(step.summary.unwrap_or_default()),
        Err(error) => run.error = error,
    }
    run
}

/// An ad-hoc duplicate-linkage package over `table` keyed on `keys`.
fn link_package(table: &str, keys: &[String]) -> Result<ModelPackage, Status> {
    if table != "disbursements" {
        return Err(Status::invalid_argument(format!(
            "linkage runs over disbursements, whose rows a node can name by payment_id; not over {table}"
        )));
    }
    if keys.is_empty() {
        return Err(Status::invalid_argument("give at least one key column"));
    }
    let schema = sunlight_domain::Table::Disbursements.schema();
    let mut parts = Vec::new();
    for key in keys {
        if schema.field_with_name(key).is_err() {
            return Err(Status::invalid_argument(format!(
                "disbursements has no column {key:?}"
            )));
        }
        parts.push(format!("upper(trim(CAST(\"{key}\" AS VARCHAR)))"));
    }
    Ok(ModelPackage {
        id: "linkage".into(),
        version: 1,
        title_zh: "关联".into(),
        title_en: "linkage".into(),
        description: format!(
            "rows of {table} sharing ({}) across the city",
            keys.join(", ")
        ),
        severity: sunlight_models::Severity::Low,
        parameters: Default::default(),
        rule: format!(
            "SELECT payment_id, concat_ws('|', {}) AS link_key FROM disbursements",
            parts.join(", ")
        ),
        linkage: Some(Linkage::Duplicate),
    })
}

/// A new run id: the time and a random suffix.
fn run_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    )
}

#[tonic::async_trait]
impl Models for ModelRuns {
    async fn run(
        &self,
        request: Request<RunModelsRequest>,
    ) -> Result<Response<RunModelsReply>, Status> {
        let actor = self.admin(request.metadata())?;
        Ok(Response::new(self.run_all(actor, request.get_ref()).await?))
    }

    async fn shadow(
        &self,
        request: Request<ShadowRequest>,
    ) -> Result<Response<ShadowReply>, Status> {
        self.admin(request.metadata())?;
        let request = request.into_inner();
        let candidate: ModelPackage = self.replica.read(|state| {
            let record = state
                .models
                .get(&request.model_id)
                .and_then(|v| v.get(&request.version))
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "no model {} version {}",
                        request.model_id, request.version
                    ))
                })?;
            serde_json::from_str(&record.package)
                .map_err(|e| Status::internal(format!("stored package: {e}")))
        })?;
        let plan = self.plan(&RunModelsRequest {
            models: vec![request.model_id.clone()],
            nodes: request.nodes,
        })?;
        if plan.is_empty() {
            return Err(Status::failed_precondition(format!(
                "model {} runs live nowhere; roll a version out before shadowing another",
                request.model_id
            )));
        }
        let everyone: Vec<Target> = self.targets().into_values().collect();
        let run_id = run_id();
        let mut reply = ShadowReply::default();
        for (live, assigned) in &plan {
            for (package, out) in [(live, &mut reply.live), (&candidate, &mut reply.candidate)] {
                let (results, bytes) = self
                    .run_version(&run_id, package, assigned, &everyone, true)
                    .await;
                reply.bytes_received += bytes;
                out.extend(results.into_iter().map(|(t, r)| node_run(package, &t, r)));
            }
        }
        Ok(Response::new(reply))
    }

    async fn outcomes(
        &self,
        request: Request<RunModelsRequest>,
    ) -> Result<Response<RunModelsReply>, Status> {
        self.admin(request.metadata())?;
        Ok(Response::new(
            self.each_assigned(request.get_ref(), Phase::Outcomes)
                .await?,
        ))
    }

    async fn install(
        &self,
        request: Request<RunModelsRequest>,
    ) -> Result<Response<RunModelsReply>, Status> {
        self.admin(request.metadata())?;
        Ok(Response::new(
            self.each_assigned(request.get_ref(), Phase::Install)
                .await?,
        ))
    }

    async fn open_case(
        &self,
        request: Request<CaseRequest>,
    ) -> Result<Response<CaseReply>, Status> {
        let investigator = self
            .replica
            .authorize(request.metadata(), &[Role::Investigator])?;
        let case = request.into_inner();
        let nodes: BTreeSet<&str> = case
            .payment_ids
            .iter()
            .map(|p| p.split('-').next().unwrap_or_default())
            .collect();
        let [node] = nodes.into_iter().collect::<Vec<_>>()[..] else {
            return Err(Status::invalid_argument(
                "name one or more hits of one node per case opening (payment_ids start with the node code)",
            ));
        };
        let target = self
            .targets()
            .remove(node)
            .ok_or_else(|| Status::not_found(format!("no node {node} is registered")))?;
        if case.case_no.trim().is_empty() || case.reason.trim().is_empty() {
            return Err(Status::invalid_argument(
                "a case opening needs a case number and a reason",
            ));
        }
        // The opening is on the record before a single row is disclosed.
        self.replica.read_fresh(|_| ()).await?;
        let detail = serde_json::json!({
            "case_no": case.case_no,
            "reason": case.reason,
            "model_id": case.model_id,
            "node": node,
            "payment_ids": case.payment_ids,
        })
        .to_string();
        let audit = |decision: String| Command::Audit {
            subject: Some(investigator.clone()),
            action: "case.open".into(),
            detail: detail.clone(),
            decision,
        };
        let audit_seq = self.audited(audit("allowed".into())).await?;
        let opening = CaseOpening {
            model_id: case.model_id.clone(),
            payment_ids: case.payment_ids.clone(),
            case_no: case.case_no.clone(),
            reason: case.reason.clone(),
            investigator: investigator.user.clone(),
        };
        match open_on_node(&target, opening).await {
            Ok(arrow_ipc) => Ok(Response::new(CaseReply {
                arrow_ipc,
                audit_seq,
            })),
            Err(status) => {
                let refused = audit(format!("refused by node {node}: {}", status.message()));
                self.audited(refused).await?;
                Err(status)
            }
        }
    }

    async fn list_hits(
        &self,
        request: Request<HitsRequest>,
    ) -> Result<Response<HitsReply>, Status> {
        let investigator = self
            .replica
            .authorize(request.metadata(), &[Role::Investigator])?;
        let HitsRequest { model_id, nodes } = request.into_inner();
        // Each node's latest run of the model: the run the city report counts.
        let latest: BTreeMap<String, String> = self.replica.read(|state| {
            state
                .runs
                .iter()
                .filter(|r| r.model_id == model_id)
                .map(|r| (r.node.clone(), r.run_id.clone()))
                .collect()
        });
        if latest.is_empty() {
            return Err(Status::not_found(format!(
                "model {model_id:?} has not run on any node; run it first (sunlight model run)"
            )));
        }
        if let Some(unknown) = nodes.iter().find(|n| !latest.contains_key(*n)) {
            return Err(Status::invalid_argument(format!(
                "model {model_id} has not run on node {unknown}; it ran on {}",
                latest.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let mut targets = self.targets();
        let listed: Vec<(Target, RunHits)> = latest
            .into_iter()
            .filter(|(node, _)| nodes.is_empty() || nodes.contains(node))
            .filter_map(|(node, run_id)| {
                let hits = RunHits {
                    model_id: model_id.clone(),
                    run_id,
                };
                Some((targets.remove(&node)?, hits))
            })
            .collect();
        let detail = serde_json::json!({
            "model_id": model_id,
            "nodes": listed.iter().map(|(t, _)| &t.code).collect::<Vec<_>>(),
        })
        .to_string();
        let audit = Command::Audit {
            subject: Some(investigator),
            action: "case.hits".into(),
            detail,
            decision: "allowed".into(),
        };
        let audit_seq = self.audited(audit).await?;
        let answers = join_all(listed.into_iter().map(|(target, hits)| async move {
            let (mut client, request) = node_call(&target, hits).await?;
            match client.list_hits(request).await {
                Ok(rows) => Ok(rows.into_inner().arrow_ipc),
                Err(status) => Err(Status::new(
                    status.code(),
                    format!("node {}: {}", target.code, status.message()),
                )),
            }
        }))
        .await;
        Ok(Response::new(HitsReply {
            arrow_ipc: answers.into_iter().collect::<Result<_, _>>()?,
            audit_seq,
        }))
    }

    async fn link(
        &self,
        request: Request<LinkRequest>,
    ) -> Result<Response<RunModelsReply>, Status> {
        self.admin(request.metadata())?;
        let LinkRequest { table, keys } = request.into_inner();
        let package = link_package(&table, &keys)?;
        let everyone: Vec<Target> = self.targets().into_values().collect();
        let (results, bytes) = self
            .run_version(&run_id(), &package, &everyone, &everyone, true)
            .await;
        Ok(Response::new(RunModelsReply {
            run_id: String::new(),
            runs: results
                .into_iter()
                .map(|(t, r)| node_run(&package, &t, r))
                .collect(),
            bytes_received: bytes,
        }))
    }
}
