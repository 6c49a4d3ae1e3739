//! [`CityEngine`]: the city's SQL engine. Plans with DataFusion over the global tables,
//! ships fragments to the nodes and merges what comes back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::optimizer::{Optimizer, OptimizerRule};
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::analyze::AnalyzeExec;
use datafusion::physical_plan::expressions::{Column, col};
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec, SymmetricHashJoinExec,
};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{DataFrame, SQLOptions, SessionContext};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use sunlight_domain::{ColumnClass, NodeCode, Table, column_class, standards_sha256};
use sunlight_flightsql::{
    Answer, AnswerNote, NoteKind, QueryRequest, SessionOption, SqlEngine, Statement,
    StatementSchemas, TableInfo, require_values,
};
use sunlight_fragment::{TableLeafExec, refusal, unmerged_partial_state};
use sunlight_policy::{
    AnswerHistory, DEFAULT_MIN_GROUP_SIZE, MAX_NAMED_GROUPS, Refusal, Rule, Tier, city_answer,
    too_few, trace, treatments,
};
use tokio::sync::RwLock;
use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::alike::AlikeFragmentsOnce;
use crate::approx_distinct::ApproxDistinctAsCount;
use crate::by_county::SingleDistinctByCounty;
use crate::class::UnionKeepsClass;
use crate::control::{
    Exclusion, MISSING_HEADER, MISSING_REASONS_HEADER, PARTIAL_HEADER, QueryControl,
    SUPPRESSED_HEADER, Transfer,
};
use crate::count_filter::CountOfCaseAsFilter;
use crate::distinct_rows::CountDistinctRows;
use crate::distinct_text::CountDistinctAsText;
use crate::distinct_values::DistinctValuesAsGroups;
use crate::error::{Error, Result, status_of};
use crate::fragment_exec::{Channels, NodeFragmentExec};
use crate::in_subquery::{AnyAsIn, InSubqueryAsList};
use crate::joined_groups::{
    GROUPS_AS_ROWS, JoinedGroupsAsRows, ListedTestedSideAsGroups, TestedSideAsGroups,
};
use crate::kept_reference::{KeptReferenceRows, SuppliedSideFirst};
use crate::prepared::{Prepared, PreparedStatements};
use crate::pushdown::{
    PushToNodes, held_back_where_tested, merged_fragments, merges_of_held_groups,
};
use crate::reference::{BuiltFromReference, ReferenceTable, SERIES_ROWS};
use crate::registry::{NodeEndpoint, NodeRegistry};
use crate::shared::{Renewal, SharedPersons};
use crate::table::GlobalTable;
use crate::window_groups::WindowAsJoinedGroups;

/// The session option (Flight SQL's `SetSessionOptions`) that asks for partial results,
/// as the partial-results header does for one call.
const PARTIAL_SESSION_OPTION: &str = "partial_results";

/// What the session keeps of its last answer (Flight SQL's `GetSessionOptions`), for
/// clients that do not read response headers: the nodes missing from a partial answer,
/// as [`MISSING_HEADER`] tells them, and the groups the nodes held back, as
/// [`SUPPRESSED_HEADER`] counts them.
const MISSING_NOTE: &str = "missing_nodes";
const SUPPRESSED_NOTE: &str = "suppressed_groups";

/// How long the city compares a user's answers for differencing.
const DIFFERENCING_WINDOW: Duration = Duration::from_secs(3600);

/// How long a plan made for a client's schema request waits for the run that follows.
const PREPARED_TTL: Duration = Duration::from_secs(30);

/// How the city runs federated queries.
#[derive(Debug, Clone)]
pub struct FederationConfig {
    /// Every node must have answered within this time.
    pub timeout: Duration,
    /// Attempts per fragment while a node is unavailable.
    pub attempts: u32,
    /// Mutual TLS towards the nodes; plain HTTP/2 without it.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// Memory in MiB the city's queries may hold at once, merging what the nodes send;
    /// unbounded where it is `None`.
    pub memory_limit_mb: Option<usize>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            attempts: 3,
            tls: None,
            memory_limit_mb: None,
        }
    }
}

/// What the check of the nodes' `subsidy_standards` copies found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StandardsCheck {
    /// Nodes whose copy is the one the city uses.
    pub agreeing: Vec<NodeCode>,
    /// Nodes whose copy differs from it.
    pub differing: Vec<NodeCode>,
    /// Nodes that could not be asked, with the reason.
    pub unreachable: BTreeMap<NodeCode, String>,
}

/// One query the city answered or refused, for the audit log.
#[derive(Debug, Clone)]
pub struct QueryEvent {
    /// Who asked.
    pub user: String,
    /// The statement as sent.
    pub sql: String,
    /// SHA-256 of the optimized logical plan, once the statement planned.
    pub plan_sha256: Option<String>,
    /// Rows and bytes that left each node touched.
    pub received: BTreeMap<NodeCode, Transfer>,
    /// Nodes left out of a partial answer, with the reason.
    pub missing: BTreeMap<NodeCode, String>,
    /// Groups the nodes held back for counting fewer than k persons.
    pub suppressed: u64,
    /// Rows answered, or why the query was refused.
    pub result: Result<usize, String>,
}

/// Where the city records every query before it answers.
#[tonic::async_trait]
pub trait QueryAudit: Send + Sync + std::fmt::Debug {
    /// Records `event`; an error withholds the answer.
    async fn record(&self, event: QueryEvent) -> std::result::Result<(), String>;
}

/// The city's federated SQL engine.
#[derive(Debug)]
pub struct CityEngine {
    registry: Arc<dyn NodeRegistry>,
    channels: Arc<Channels>,
    config: FederationConfig,
    standards: RwLock<Option<(Arc<ReferenceTable>, StandardsCheck)>>,
    /// Functions, rules and tables, built once; each query clones it and adds its control.
    base: RwLock<Option<SessionState>>,
    audit: std::sync::OnceLock<Arc<dyn QueryAudit>>,
    answers: AnswerHistory,
    /// Plans made for clients' schema requests, waiting for the runs that follow.
    prepared: PreparedStatements,
    /// The persons more than one node holds, with which the nodes count persons.
    shared: Arc<SharedPersons>,
}

impl CityEngine {
    /// An engine over `registry`'s nodes.
    pub fn new(registry: Arc<dyn NodeRegistry>, config: FederationConfig) -> Arc<Self> {
        let channels = Arc::new(Channels::new(config.tls.clone()));
        Arc::new(Self {
            shared: Arc::new(SharedPersons::new(registry.clone(), channels.clone())),
            registry,
            channels,
            config,
            standards: RwLock::new(None),
            base: RwLock::new(None),
            audit: std::sync::OnceLock::new(),
            answers: AnswerHistory::new(DIFFERENCING_WINDOW, 256),
            prepared: PreparedStatements::new(PREPARED_TTL, 64),
        })
    }

    /// Finds the persons more than one node holds from every node's tokens, and gives
    /// the nodes the new set: a distinct count of persons then moves the tokens of
    /// those persons only. The coordinator renews it as it starts, and again when a
    /// node it did not cover takes part in a query, or restarted.
    pub async fn share_persons(&self) -> Renewal {
        self.shared.renew().await
    }

    /// Records every query of Flight SQL clients in `audit` from now on; set once.
    pub fn set_audit(&self, audit: Arc<dyn QueryAudit>) {
        if self.audit.set(audit).is_err() {
            tracing::warn!("the city's query audit is already set");
        }
    }

    /// `node`'s copy of `subsidy_standards`, fetched as a fragment like any other read.
    async fn standards_copy(&self, node: &NodeEndpoint) -> Result<Vec<RecordBatch>> {
        let leaf = Arc::new(TableLeafExec::try_new(
            Table::SubsidyStandards,
            None,
            1,
            None,
        )?);
        let fragment = Arc::new(NodeFragmentExec::try_new(
            vec![node.clone()],
            leaf,
            self.channels.clone(),
        )?);
        let schema = fragment.schema();
        let keys = ["subsidy_type", "valid_from"]
            .map(|c| col(c, &schema).map(PhysicalSortExpr::new_default))
            .into_iter()
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let order = LexOrdering::new(keys).expect("two sort keys");
        let sorted = Arc::new(SortExec::new(order, fragment));
        Ok(collect(sorted, Arc::new(TaskContext::default())).await?)
    }

    /// Loads `subsidy_standards` from every node, keeps the copy most nodes hold and
    /// names the nodes whose copy differs. Run again, it follows a copy most nodes
    /// changed.
    pub async fn check_standards(&self) -> Result<StandardsCheck> {
        let nodes = self.registry.nodes();
        let answers = futures::future::join_all(nodes.iter().map(|n| self.standards_copy(n))).await;
        let mut check = StandardsCheck::default();
        let mut copies: Vec<(String, Vec<RecordBatch>, Vec<NodeCode>)> = Vec::new();
        let schema = Table::SubsidyStandards.schema();
        for (node, answer) in nodes.iter().zip(answers) {
            let copy = answer.and_then(|batches| {
                let unlike = |e: ArrowError| {
                    Error::Standards(format!(
                        "node {}'s copy does not match the contract: {e}",
                        node.code
                    ))
                };
                let batches = batches
                    .into_iter()
                    .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(unlike)?;
                Ok((standards_sha256(&batches).map_err(unlike)?, batches))
            });
            let (sha256, batches) = match copy {
                Ok(copy) => copy,
                Err(e) => {
                    check.unreachable.insert(node.code, e.to_string());
                    continue;
                }
            };
            match copies.iter_mut().find(|(s, _, _)| *s == sha256) {
                Some((_, _, holders)) => holders.push(node.code),
                None => copies.push((sha256, batches, vec![node.code])),
            }
        }
        copies.sort_by_key(|(_, _, holders)| std::cmp::Reverse(holders.len()));
        let mut copies = copies.into_iter();
        let (sha256, batches, agreeing) = copies.next().ok_or_else(|| {
            Error::Standards(format!("no node answered: {:?}", check.unreachable))
        })?;
        check.agreeing = agreeing;
        check.differing = copies.flat_map(|(_, _, holders)| holders).collect();
        check.differing.sort();
        let mut held = self.standards.write().await;
        let (changed, news) = match held.as_ref() {
            Some((table, before)) => (table.sha256() != sha256, *before != check),
            None => (false, true),
        };
        if news {
            for node in &check.differing {
                tracing::warn!(%node, "this node's subsidy_standards differs from the copy the city uses");
            }
        }
        *held = Some((
            Arc::new(ReferenceTable::new(batches, sha256)),
            check.clone(),
        ));
        drop(held);
        // Contexts hold the table they were built with: the next query builds anew.
        if changed {
            tracing::info!("most nodes hold another subsidy_standards now; the city reads it");
            *self.base.write().await = None;
        }
        Ok(check)
    }

    /// The `standards_sha256` of the copy of `subsidy_standards` the city reads.
    pub async fn standards_sha256(&self) -> Result<String> {
        Ok(self.reference().await?.sha256().to_string())
    }

    async fn reference(&self) -> Result<Arc<ReferenceTable>> {
        if let Some((table, _)) = self.standards.read().await.as_ref() {
            return Ok(table.clone());
        }
        self.check_standards().await?;
        Ok(self
            .standards
            .read()
            .await
            .as_ref()
            .expect("loaded above")
            .0
            .clone())
    }

    /// A context for one query, carrying its [`QueryControl`].
    pub async fn context(&self, control: Arc<QueryControl>) -> Result<SessionContext> {
        // The read guard must be gone before building, which takes the write lock.
        let cached = self.base.read().await.clone();
        let mut state = match cached {
            Some(state) => state,
            None => self.build_base().await?,
        };
        state.config_mut().set_extension(control);
        Ok(SessionContext::new_with_state(state))
    }

    async fn build_base(&self) -> Result<SessionState> {
        let mut config = sunlight_flightsql::session_config().with_round_robin_repartition(false);
        // Node fragments are the unit of parallelism; partitioned joins keep node partitions.
        config.options_mut().optimizer.repartition_joins = true;
        let mut rules = PhysicalOptimizer::new().rules;
        rules.insert(0, Arc::new(BuiltFromReference));
        rules.push(Arc::new(PushToNodes));
        rules.push(Arc::new(AlikeFragmentsOnce));
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(limit) = self.config.memory_limit_mb {
            runtime = runtime.with_memory_pool(sunlight_flightsql::memory_pool(limit));
        }
        let state: SessionState = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime.build_arc()?)
            .with_default_features()
            .with_optimizer_rules(logical_rules())
            .with_physical_optimizer_rules(rules)
            .build();
        let context = SessionContext::new_with_state(state);
        for rule in sunlight_flightsql::analyzer_rules() {
            context.add_analyzer_rule(rule);
        }
        let udfs = sunlight_fragment::masking_udfs().into_iter();
        for udf in udfs.chain(sunlight_fragment::bounded_list_udfs()) {
            context.register_udf(udf);
        }
        for table in Table::ALL {
            let provider: Arc<dyn datafusion::catalog::TableProvider> = match table {
                Table::SubsidyStandards => self.reference().await?,
                _ => Arc::new(GlobalTable::new(
                    table,
                    self.registry.clone(),
                    self.channels.clone(),
                )),
            };
            context.register_table(table.name(), provider)?;
        }
        let state = context.state();
        *self.base.write().await = Some(state.clone());
        Ok(state)
    }

    /// Plans `statement` as a read-only query.
    pub async fn plan(
        &self,
        statement: &Statement,
        control: Arc<QueryControl>,
    ) -> Result<DataFrame> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        Ok(statement
            .plan(&self.context(control).await?, options)
            .await?)
    }

    /// The physical plan of `frame`, checked against the city's disclosure rules before
    /// any node is asked.
    async fn checked(&self, frame: DataFrame) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = frame.create_physical_plan().await?;
        let fragments = |p: &dyn ExecutionPlan| {
            p.downcast_ref::<NodeFragmentExec>()
                .map(|f| f.fragment().clone())
        };
        // EXPLAIN ANALYZE runs the query it explains: that query must be answerable.
        let answer = plan
            .downcast_ref::<AnalyzeExec>()
            .map_or_else(|| plan.clone(), |a| a.input().clone());
        if let Some(refused) = refused_at_nodes(&answer)? {
            return Err(refused);
        }
        let traced = trace(&answer, Tier::City, &fragments)?;
        if let Err(mut refusal) = city_answer(&traced, answer.schema().fields()) {
            if refusal.rule == Rule::MinGroupSize && joins_at_city(&answer)? {
                refusal.message.push_str(&joined_at_city());
                if joins_on_identifier_at_city(&answer)? {
                    refusal.message.push_str(JOINED_ON_IDENTIFIER);
                }
            }
            if refusal.rule == Rule::MinGroupSize && windows_over_rows_at_city(&answer)? {
                refusal.message.push_str(WINDOW_AT_CITY);
            }
            return Err(Error::Refused(refusal));
        }
        // What the city's rules let through may still break the egress rules every node
        // holds, such as a distinct sum's state of amounts.
        let mut sent = vec![];
        answer.apply(|p| {
            sent.extend(fragments(p.as_ref()));
            Ok(TreeNodeRecursion::Continue)
        })?;
        for fragment in &sent {
            treatments(fragment)?;
        }
        Ok(plan)
    }

    fn control(&self, headers: &MetadataMap) -> Arc<QueryControl> {
        let partial = headers
            .get(PARTIAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "true");
        Arc::new(QueryControl::new(
            partial,
            self.config.timeout,
            self.config.attempts,
        ))
    }

    /// `e`, saying the city's limit where the city ran out of memory; a node's error says
    /// its own.
    fn with_memory_limit(&self, e: DataFusionError) -> DataFusionError {
        match (self.config.memory_limit_mb, e.find_root()) {
            (Some(limit), DataFusionError::ResourcesExhausted(_)) => e.context(format!(
                "the city's queries may hold {limit} MiB at once (memory_limit_mb)"
            )),
            _ => e,
        }
    }

    /// Records `event` if an audit is set; without a record there is no answer.
    async fn audit(&self, event: QueryEvent) -> Result<(), Status> {
        let Some(audit) = self.audit.get() else {
            return Ok(());
        };
        audit.record(event).await.map_err(|e| {
            Status::unavailable(format!(
                "the answer is withheld because the query could not be audited: {e}"
            ))
        })
    }

    /// Runs `statement` and collects the merged result; `control` sees it run.
    ///
    /// When the answer merges groups across nodes and some node held back one of them,
    /// the query runs again with every node leaving out the groups held back anywhere,
    /// so that no figure shown counts a group in part.
    pub async fn run(
        &self,
        statement: &Statement,
        control: Arc<QueryControl>,
    ) -> (Option<String>, Result<(SchemaRef, Vec<RecordBatch>)>) {
        let (plan_sha256, first) = self.run_once(statement, &control).await;
        (plan_sha256, self.complete(statement, &control, first).await)
    }

    /// Runs `prepared`, planned ahead for `statement`, as [`Self::run`] runs a statement.
    async fn run_prepared(
        &self,
        statement: &Statement,
        prepared: Prepared,
    ) -> (Option<String>, Result<Answered>) {
        let control = prepared.control.clone();
        let plan_sha256 = prepared.plan_sha256.clone();
        let first = answer(prepared, &self.shared).await;
        (
            Some(plan_sha256),
            self.complete(statement, &control, first).await,
        )
    }

    /// The answer of the first run, or, where it would show a group some node held back
    /// in part, the answer of a second run that leaves those groups out everywhere.
    async fn complete(
        &self,
        statement: &Statement,
        control: &Arc<QueryControl>,
        first: Result<(Arc<dyn ExecutionPlan>, Answered)>,
    ) -> Result<Answered> {
        let first = match first {
            Err(e) if e.is_stale_shared() => {
                tracing::info!("{e}");
                if let Some(epoch) = control.shared() {
                    self.shared.expire(epoch);
                }
                control.unshare();
                self.run_once(statement, control).await.1
            }
            first => first,
        };
        let (plan, answer) = self.untorn(statement, control, first).await?;
        let Some(exclusions) = whole_groups(&plan, control)? else {
            return Ok(answer);
        };
        control.exclude(exclusions);
        let again = self.run_once(statement, control).await.1;
        let (plan, answer) = self.untorn(statement, control, again).await?;
        match whole_groups(&plan, control)? {
            None => Ok(answer),
            Some(_) => Err(Error::Refused(held_back(control.suppressed(), HELD_AGAIN))),
        }
    }

    /// `run`, or, where it is a partial answer that a node failed in part, the answer of
    /// runs again without the nodes that failed, until no node fails after answering:
    /// each such run leaves out one node more.
    async fn untorn(
        &self,
        statement: &Statement,
        control: &Arc<QueryControl>,
        mut run: Result<(Arc<dyn ExecutionPlan>, Answered)>,
    ) -> Result<(Arc<dyn ExecutionPlan>, Answered)> {
        while run.is_ok() && control.torn() {
            tracing::info!(missing = ?control.missing(), "a node failed after answering; running again without it");
            run = self.run_once(statement, control).await.1;
        }
        run
    }

    /// Plans, checks and runs `statement` once: its plan's digest, and the plan it ran
    /// with what it answered.
    async fn run_once(
        &self,
        statement: &Statement,
        control: &Arc<QueryControl>,
    ) -> (Option<String>, Result<(Arc<dyn ExecutionPlan>, Answered)>) {
        control.start_run();
        let frame = match self.plan(statement, control.clone()).await {
            Ok(frame) => frame,
            Err(e) => return (None, Err(e)),
        };
        if let Err(e) = require_values(&frame) {
            return (None, Err(e.into()));
        }
        let (plan_sha256, prepared) = self.prepare(frame, control.clone()).await;
        let answer = match prepared {
            Ok(prepared) => answer(prepared, &self.shared).await,
            Err(e) => Err(e),
        };
        (Some(plan_sha256), answer)
    }

    /// Checks `frame`, planned with `control`, for running: its plan's digest, and the
    /// plan unless the city's disclosure rules refuse it.
    async fn prepare(
        &self,
        frame: DataFrame,
        control: Arc<QueryControl>,
    ) -> (String, Result<Prepared>) {
        let logical = frame.logical_plan().display_indent().to_string();
        let plan_sha256 = hex::encode(Sha256::digest(logical.as_bytes()));
        let schema = frame.schema().inner().clone();
        let task = Arc::new(frame.task_ctx());
        let prepared = self.checked(frame).await.map(|plan| Prepared {
            plan_sha256: plan_sha256.clone(),
            control,
            schema,
            task,
            plan,
        });
        (plan_sha256, prepared)
    }
}

/// Runs `prepared` once, the nodes counting persons with the `shared` set where the plan
/// has one fragment and every node it asks holds the set: the plan it ran with what it
/// answered. A node's own persons are counted once only where it sends one list of
/// persons a group; with two fragments, such as the sides of a union, it sends two.
async fn answer(
    prepared: Prepared,
    shared: &Arc<SharedPersons>,
) -> Result<(Arc<dyn ExecutionPlan>, Answered)> {
    let mut asked = Vec::new();
    prepared.plan.apply(|p| {
        if let Some(fragment) = p.downcast_ref::<NodeFragmentExec>() {
            asked.push(fragment.nodes().to_vec());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if !asked.is_empty() && !aggregates_over_fragments(&prepared.plan)? {
        let mut nodes: Vec<NodeEndpoint> = asked.concat();
        nodes.sort_by_key(|n| n.code);
        nodes.dedup_by_key(|n| n.code);
        prepared.control.share(shared.covering(&nodes));
    }
    let batches = collect(prepared.plan.clone(), prepared.task).await?;
    if prepared.control.all_suppressed() {
        let mut refusal = too_few(
            DEFAULT_MIN_GROUP_SIZE,
            "every group of the answer counts, at one node or more,",
        );
        if groups_by_identifier(&prepared.plan)? {
            refusal.message.push_str(
                ". The nodes group by an identifier, so that each group is one person: \
                 count persons with count(DISTINCT …); to count persons by what each county \
                 paid them, group by county_code as well (GROUP BY county_code, person_id), \
                 so that each node counts its own; or find persons paid in several \
                 counties with `sunlight linkage run`",
            );
        }
        return Err(Error::Refused(refusal));
    }
    Ok((prepared.plan, (prepared.schema, batches)))
}

/// Whether the city aggregates over what more than one fragment sent, as it merges the
/// partial aggregates of the sides of a union. Each fragment counts a node's own persons
/// apart, as a number ([`SharedPersons`]), so a distinct count over two fragments would
/// count such a person once for each: such a plan counts persons without a shared set.
fn aggregates_over_fragments(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    Ok(plan.exists(|p| {
        let Some(aggregate) = p.downcast_ref::<AggregateExec>() else {
            return Ok(false);
        };
        let mut fragments = 0;
        aggregate.input().apply(|q| {
            fragments += usize::from(q.is::<NodeFragmentExec>());
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(fragments > 1)
    })?)
}

/// Whether a node's share of `plan` sends a class-D column, which it can only as the key
/// of its groups.
fn groups_by_identifier(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    Ok(plan.exists(|p| {
        Ok(p.downcast_ref::<NodeFragmentExec>().is_some_and(|f| {
            f.schema()
                .fields()
                .iter()
                .any(|field| column_class(field) == ColumnClass::Direct)
        }))
    })?)
}

/// Why the nodes would refuse a fragment of `plan`, found before any node is asked: one
/// that sends the values themselves as an aggregate's partial state, or one with an
/// operator or function outside the nodes' allow-lists.
fn refused_at_nodes(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<Error>> {
    let mut refused = None;
    plan.apply(|p| {
        let Some(fragment) = p.downcast_ref::<NodeFragmentExec>() else {
            return Ok(TreeNodeRecursion::Continue);
        };
        refused = match unmerged_partial_state(fragment.fragment()) {
            Some(function) => Some(Error::Refused(Refusal::new(
                Rule::QuasiIdentifier,
                format!(
                    "{function} over groups that span counties would need the values \
                     themselves at the city: its partial state is the values. Group by \
                     county_code, in every grouping set, so that each node computes it whole"
                ),
            ))),
            None => match refusal(fragment.fragment())? {
                Some(why) if lists_values(fragment)? => {
                    Some(Error::NotAtNodes(format!("{why}{LISTS_AT_CITY}")))
                }
                why => why.map(Error::NotAtNodes),
            },
        };
        Ok(match refused {
            Some(_) => TreeNodeRecursion::Stop,
            None => TreeNodeRecursion::Continue,
        })
    })?;
    Ok(refused)
}

/// Whether `fragment` would list the values of its rows (`array_agg`, `string_agg`).
fn lists_values(fragment: &NodeFragmentExec) -> datafusion::error::Result<bool> {
    fragment.fragment().exists(|p| {
        Ok(p.downcast_ref::<AggregateExec>().is_some_and(|a| {
            a.aggr_expr()
                .iter()
                .any(|e| ["array_agg", "string_agg"].contains(&e.fun().name()))
        }))
    })
}

/// Which lists the city forms itself.
const LISTS_AT_CITY: &str = ". The city forms lists of distinct values itself \
     (array_agg(DISTINCT x), string_agg(DISTINCT x, ','), ordered by x if at all), beside \
     any aggregate the nodes compute";

/// Whether `plan` joins at the city, above the nodes' fragments.
fn joins_at_city(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    Ok(plan.exists(|p| {
        Ok(p.is::<HashJoinExec>()
            || p.is::<NestedLoopJoinExec>()
            || p.is::<CrossJoinExec>()
            || p.is::<SortMergeJoinExec>()
            || p.is::<SymmetricHashJoinExec>())
    })?)
}

/// Whether `plan` joins at the city on equal identifiers, as a join that matches persons
/// across counties does.
fn joins_on_identifier_at_city(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    Ok(plan.exists(|p| {
        let (left, on) = if let Some(join) = p.downcast_ref::<HashJoinExec>() {
            (join.left(), join.on())
        } else if let Some(join) = p.downcast_ref::<SortMergeJoinExec>() {
            (join.left(), join.on())
        } else {
            return Ok(false);
        };
        let schema = left.schema();
        Ok(on.iter().any(|(key, _)| {
            key.downcast_ref::<Column>()
                .is_some_and(|c| column_class(schema.field(c.index())) == ColumnClass::Direct)
        }))
    })?)
}

/// Why a join the nodes cannot run on their own leaves single rows to the city.
fn joined_at_city() -> String {
    format!(
        ". Here a join runs at the city, over single rows of the nodes: a node runs a join \
         itself only between its own tables on equal county_code (disability_certs has \
         none), or with subsidy_standards, rows the query writes or a series it generates of \
         up to {SERIES_ROWS} rows, or the groups of a subquery that aggregates node tables (by \
         no identifier), keeping their unmatched rows too, under a distinct count only of \
         the other table's columns as they are; to count distinct values of more for every \
         standard, join subsidy_standards to a subquery that aggregates the node table by \
         subsidy_type; to keep rows whose column is in a list, use IN (…)"
    )
}

/// Whether a window runs at the city over single rows the nodes sent, rather than over
/// their groups.
fn windows_over_rows_at_city(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    Ok(plan.exists(|p| {
        if !(p.is::<WindowAggExec>() || p.is::<BoundedWindowAggExec>()) {
            return Ok(false);
        }
        p.exists(|q| match q.downcast_ref::<NodeFragmentExec>() {
            Some(f) => Ok(!f.fragment().exists(|r| Ok(r.is::<AggregateExec>()))?),
            None => Ok(false),
        })
    })?)
}

/// How to compare rows with figures of their group instead of a window over them.
const WINDOW_AT_CITY: &str = ". Here a window runs at the city, over single rows of the \
     nodes: a node runs no windows itself. The city runs windows over groups (rank() OVER \
     (ORDER BY sum(amount))), and has the nodes run a window of aggregates over whole \
     partitions by county_code (avg(amount) OVER (PARTITION BY county_code, subsidy_type), \
     with no ORDER BY) as a join of the rows with their groups. To compare each row with a \
     figure of a group across counties, join it to a subquery that aggregates the table by \
     the window's PARTITION BY columns, on those columns (disbursements d JOIN (SELECT \
     subsidy_type, avg(amount) AS a FROM disbursements GROUP BY 1) g ON g.subsidy_type = \
     d.subsidy_type WHERE d.amount > 2 * g.a)";

/// Where to match persons across counties instead.
const JOINED_ON_IDENTIFIER: &str = ". This join matches persons by an identifier \
     across counties, which only tokens may do: the models match them so (`sunlight model \
     list`), and `sunlight linkage run` finds the rows whose key occurs at more than one \
     node";

/// A result: its schema and its batches.
type Answered = (SchemaRef, Vec<RecordBatch>);

/// Whether the answer of `plan` shows whole groups only: `None` when it does, and the
/// groups to leave out at every node when it would show one that some node held back
/// in part. A figure would then leave out the rows of the group one node held back and
/// still show the rest of it. Each merge of groups has its own groups left out, of the
/// fragments it merges alone: a fragment of another merge may have groups of other
/// meaning whose keys are the same. Refuses the answer when those groups cannot be left
/// out: a node could not name them, or the city merges them into more than groups by
/// keys. EXPLAIN ANALYZE shows no figures.
fn whole_groups(
    plan: &Arc<dyn ExecutionPlan>,
    control: &QueryControl,
) -> Result<Option<Vec<Exclusion>>> {
    let suppressed = control.suppressed();
    if suppressed == 0 || plan.is::<AnalyzeExec>() {
        return Ok(None);
    }
    let merges = merges_of_held_groups(plan)?;
    let refused = |why: &str| Err(Error::Refused(held_back(suppressed, why)));
    // Groups that rows are matched with are named first: rows left unmatched would
    // change the answer more than any figure.
    if merges.iter().any(lists_groups) {
        return refused(MATCHED_WITH_GROUPS);
    }
    if held_back_where_tested(plan)? {
        return Err(Error::Refused(kept_for_no_match(suppressed)));
    }
    let mut whole = Vec::new();
    let mut totals = Vec::new();
    for merge in &merges {
        match merged_fragments(merge) {
            Some(fragments) => whole.push(fragments),
            None if merge
                .downcast_ref::<AggregateExec>()
                .is_some_and(|a| a.group_expr().is_empty()) =>
            {
                totals.push(merge)
            }
            // Windows, and the city's own groups over the nodes' groups, as those of a
            // list of distinct values: more than a total over all rows.
            None => return refused(MERGED_INTO_MORE),
        }
    }
    if let Some(total) = totals.first() {
        return match named_under(total)? {
            true => refused(MERGED_INTO_MORE),
            false => refused(&could_not_name()),
        };
    }
    let mut exclusions = Vec::new();
    for fragments in whole {
        let held = fragments.iter().map(|f| f.held_groups());
        let Some(groups) = held.collect::<Option<Vec<_>>>() else {
            return refused(&could_not_name());
        };
        let groups: BTreeSet<u64> = groups.into_iter().flatten().collect();
        let left_out = fragments.iter().all(|f| {
            let excluded = control.excluded_in(f.identity());
            groups.iter().all(|g| excluded.contains(g))
        });
        if !left_out {
            let fragments = fragments.iter().map(|f| f.identity()).collect();
            exclusions.push(Exclusion { fragments, groups });
        }
    }
    Ok((!exclusions.is_empty()).then_some(exclusions))
}

/// Whether the nodes named every group they held back in the fragments under `plan`.
fn named_under(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    let unnamed = plan.exists(|p| {
        Ok(p.downcast_ref::<NodeFragmentExec>()
            .is_some_and(|f| f.held_groups().is_none()))
    })?;
    Ok(!unnamed)
}

/// Why groups held back cannot be left out: a node did not name them.
fn could_not_name() -> String {
    format!(
        "a node could not name them (its fragment is not the partial phase of an aggregate \
         by keys, it has no linkage key, or it held back more than {MAX_NAMED_GROUPS})"
    )
}

/// Why groups held back cannot be left out of figures the city forms from them.
const MERGED_INTO_MORE: &str = "the answer merges them into more than groups by plain keys \
     (groups of its own over the nodes' groups, as a list of distinct values has, a total \
     over groups, a window, or grouping sets formed at the nodes)";

/// Whether `merge` lists groups as the rows the city matches rows with
/// ([`crate::joined_groups`]).
fn lists_groups(merge: &Arc<dyn ExecutionPlan>) -> bool {
    merge
        .downcast_ref::<AggregateExec>()
        .is_some_and(|a| a.aggr_expr().iter().any(|e| e.name() == GROUPS_AS_ROWS))
}

/// Why groups held back cannot be left out of the groups rows are matched with.
const MATCHED_WITH_GROUPS: &str = "the city matches rows with those groups (the groups of a \
     subquery joined with rows, or the standards a join matched at any node), and a group \
     left out would leave the rows it matches unmatched";

/// Why groups held back in a second run cannot be left out.
const HELD_AGAIN: &str = "a node held back groups the first run did not name";

/// The refusal of an answer that would merge groups some node held back in part, and
/// `why` they cannot be left out whole.
fn held_back(suppressed: u64, why: &str) -> Refusal {
    Refusal::new(
        Rule::MinGroupSize,
        format!(
            "{suppressed} group(s) were held back at the nodes for counting too few persons \
             there, and the answer merges groups across nodes, or across the sides of a \
             union, but they cannot be left out at every node: {why}; so its figures would \
             leave their rows out. Group by county_code as well where the table has it, so \
             that a county's small groups are held back alone, or group by plain columns \
             without totals over them"
        ),
    )
}

/// The refusal of an answer that keeps rows for matching none of the groups on one side,
/// some of which the nodes held back: without them, it would keep the rows they match.
fn kept_for_no_match(suppressed: u64) -> Refusal {
    Refusal::new(
        Rule::MinGroupSize,
        format!(
            "{suppressed} group(s) were held back at the nodes for counting too few persons \
             there, and the answer keeps rows for matching none of the groups on one side \
             (EXCEPT, NOT EXISTS, an outer join's unmatched rows): without the groups held \
             back, it would keep the rows they match. Widen the side that is tested, so that \
             each of its groups counts at least 5 persons at every node, or ask for the rows \
             that match (INTERSECT, EXISTS), which leaves out those of the groups held back"
        ),
    )
}

#[tonic::async_trait]
impl SqlEngine for CityEngine {
    fn server_name(&self) -> String {
        "sunlight city".to_string()
    }

    async fn schema(
        &self,
        statement: &Statement,
        request: &QueryRequest,
    ) -> Result<StatementSchemas, Status> {
        let user = &request.caller.user;
        let control = self.control(&request.headers);
        if let Some(schemas) = self.prepared.schemas(user, statement, control.partial) {
            return Ok(schemas);
        }
        let (plan_sha256, checked) = match self.plan(statement, control.clone()).await {
            Ok(frame) => match StatementSchemas::of(&frame) {
                // Values not yet bound: the statement is checked when it runs.
                Ok(schemas) if schemas.has_parameters() && statement.parameters.is_none() => {
                    (None, Ok(schemas))
                }
                Ok(schemas) => {
                    let (plan_sha256, prepared) = self.prepare(frame, control).await;
                    let kept =
                        prepared.map(|p| self.prepared.keep(user, statement, schemas.clone(), p));
                    (Some(plan_sha256), kept.map(|()| schemas))
                }
                Err(e) => (None, Err(e.into())),
            },
            Err(e) => (None, Err(e)),
        };
        match checked {
            Ok(schemas) => Ok(schemas),
            // A statement refused here never reaches `execute`: audit the refusal now.
            Err(e) => {
                let status = Status::from(e);
                let event = QueryEvent {
                    user: user.clone(),
                    sql: statement.to_string(),
                    plan_sha256,
                    received: BTreeMap::new(),
                    missing: BTreeMap::new(),
                    suppressed: 0,
                    result: Err(status.message().to_string()),
                };
                self.audit(event).await?;
                Err(status)
            }
        }
    }

    async fn execute(
        &self,
        statement: &Statement,
        request: &QueryRequest,
    ) -> Result<Answer, Status> {
        let control = self.control(&request.headers);
        let user = &request.caller.user;
        let (control, (plan_sha256, outcome)) =
            match self.prepared.take(user, statement, control.partial) {
                Some(prepared) => (
                    prepared.control.clone(),
                    self.run_prepared(statement, prepared).await,
                ),
                None => (control.clone(), self.run(statement, control).await),
            };
        let sql = statement.to_string();
        let outcome = outcome.and_then(|answer| {
            self.answers
                .admit(user, &sql, control.sketches(), DEFAULT_MIN_GROUP_SIZE)?;
            Ok(answer)
        });
        let outcome = outcome.map_err(|e| match e {
            Error::Query(df) => status_of(&self.with_memory_limit(df)),
            other => Status::from(other),
        });
        self.audit(QueryEvent {
            user: user.clone(),
            sql,
            plan_sha256,
            received: control.received(),
            missing: control.missing(),
            suppressed: control.left_out(),
            result: match &outcome {
                Ok((_, batches)) => Ok(batches.iter().map(RecordBatch::num_rows).sum()),
                Err(status) => Err(status.message().to_string()),
            },
        })
        .await?;
        let (schema, batches) = outcome?;
        let mut headers = MetadataMap::new();
        let missing: Vec<String> = control.missing().keys().map(ToString::to_string).collect();
        headers.insert(
            MISSING_HEADER,
            missing.join(",").parse().expect("node codes are ASCII"),
        );
        let reasons = control.missing_reasons();
        if !reasons.is_empty() {
            headers.insert_bin(
                MISSING_REASONS_HEADER,
                MetadataValue::from_bytes(reasons.as_bytes()),
            );
        }
        headers.insert(
            SUPPRESSED_HEADER,
            control.left_out().to_string().parse().expect("digits"),
        );
        Ok(Answer {
            schema,
            batches: futures::stream::iter(batches.into_iter().map(Ok)).boxed(),
            headers,
        })
    }

    fn session_options(&self) -> &'static [SessionOption] {
        &[SessionOption {
            name: PARTIAL_SESSION_OPTION,
            header: PARTIAL_HEADER,
        }]
    }

    fn answer_notes(&self) -> &'static [AnswerNote] {
        &[
            AnswerNote {
                name: MISSING_NOTE,
                header: MISSING_HEADER,
                kind: NoteKind::List,
            },
            AnswerNote {
                name: SUPPRESSED_NOTE,
                header: SUPPRESSED_HEADER,
                kind: NoteKind::Number,
            },
        ]
    }

    async fn tables(&self) -> Result<Vec<TableInfo>, Status> {
        Ok(Table::ALL
            .iter()
            .map(|t| TableInfo::new(t.name(), t.schema(), t.primary_key()))
            .collect())
    }
}

/// The city's logical optimizer rules: DataFusion's, and around them the rewrites that
/// keep work at the nodes.
///
/// `= ANY` and `<> ALL` over a subquery read as the IN they are. An IN subquery that
/// aggregates becomes a list the fragments carry, before it could become a join at the
/// city. COUNT(DISTINCT) across counties stays one aggregate, so that nodes send its
/// state (tokens of the distinct values, counted there) rather than one group per
/// identifier; by county and person, it runs whole in the nodes as DataFusion plans it.
/// A count of an identifier some rows give, written as a `CASE`, counts it over those
/// rows, and an estimate of distinct values that nodes protect is their count.
/// A count of distinct rows across counties becomes one, once DISTINCT is an aggregate;
/// and one of protected numbers or dates counts their texts, which nodes send as tokens,
/// a union's columns being of the most protected class of its sides.
/// A join that keeps or tests the reference rows becomes the inner join, which the nodes
/// run, and the reference rows it matched anywhere. The side a semi-join or anti-join
/// only tests (`INTERSECT`, `EXCEPT`, `EXISTS`) is grouped by the columns it is tested
/// on, and groups joined with rows that drive the join travel to the nodes as rows of
/// their own.
/// Common subexpressions are not made columns: the list a `NOT IN` reads in several
/// places would become a column at the nodes, with a copy of the list in every row.
pub(crate) fn logical_rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    // Each would undo one of the rewrites above.
    const LEFT_OUT: [&str; 2] = [
        "single_distinct_aggregation_to_group_by",
        "common_sub_expression_eliminate",
    ];
    [
        Arc::new(AnyAsIn) as Arc<dyn OptimizerRule + Send + Sync>,
        Arc::new(InSubqueryAsList),
        Arc::new(CountOfCaseAsFilter),
        Arc::new(WindowAsJoinedGroups),
    ]
    .into_iter()
    .chain(
        Optimizer::new()
            .rules
            .into_iter()
            .filter(|r| !LEFT_OUT.contains(&r.name())),
    )
    .chain([
        Arc::new(SuppliedSideFirst) as _,
        Arc::new(KeptReferenceRows) as _,
        Arc::new(TestedSideAsGroups) as _,
        Arc::new(ListedTestedSideAsGroups) as _,
        Arc::new(JoinedGroupsAsRows) as _,
        Arc::new(DistinctValuesAsGroups) as _,
        Arc::new(UnionKeepsClass) as _,
        Arc::new(ApproxDistinctAsCount) as _,
        Arc::new(CountDistinctRows) as _,
        Arc::new(SingleDistinctByCounty) as _,
        Arc::new(CountDistinctAsText) as _,
    ])
    .collect()
}
