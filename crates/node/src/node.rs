//! A node: its code and the DataFusion context over its tables. Every query of the node,
//! whoever sends it, runs here.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::Statistics;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::prelude::{DataFrame, SQLOptions};
use object_store::ObjectMeta;
use sunlight_domain::{NodeCode, Table, standards_sha256};
use sunlight_policy::{Counted, NodePolicy};
use tokio::sync::OnceCell;

use sunlight_flightsql::{CATALOG, SCHEMA, Statement, StatementSchemas, TableInfo, require_values};

use crate::analysts::CityAnalysts;
use crate::audit::NodeAudit;
use crate::catalog::{CheckedFiles, NodeCatalog, TableState};
use crate::compute::Compute;
use crate::county_guard::proves_county;
use crate::once::OnceMap;
use crate::persons::PersonIndex;
use crate::shared::SharedSets;
use crate::{Error, Result};

/// A running node over its files as it last loaded them.
pub struct Node {
    code: NodeCode,
    catalog: NodeCatalog,
    state: SessionState,
    task: Arc<TaskContext>,
    privacy: Privacy,
    persons: PersonIndex,
    statistics: OnceMap<Table, Arc<Statistics>>,
    standards: OnceCell<String>,
    quality: OnceCell<Vec<String>>,
    shared: SharedSets,
    lasting: Arc<Lasting>,
}

/// What a node keeps when it loads its files again.
struct Lasting {
    audit: NodeAudit,
    analysts: CityAnalysts,
    compute: Compute,
}

/// Who may do what at the node, and the egress guard's policy.
#[derive(Debug, Clone)]
pub struct Privacy {
    /// The egress guard's policy.
    pub policy: NodePolicy,
    /// Users that are the city's coordinator, who may not run SQL here.
    pub city_users: BTreeSet<String>,
    /// Whether the node refuses the county analysts the city registers for it.
    pub local_analysts_only: bool,
}

impl Node {
    /// A node over an already loaded catalog, with the threads that compute its queries.
    pub fn new(
        code: NodeCode,
        catalog: NodeCatalog,
        privacy: Privacy,
        audit: NodeAudit,
    ) -> Result<Self> {
        let lasting = Lasting {
            audit,
            analysts: CityAnalysts::default(),
            compute: Compute::start().map_err(Error::Threads)?,
        };
        Ok(Self::over(code, catalog, privacy, Arc::new(lasting)))
    }

    /// This node over `catalog`, its files as loaded again: the same users, access log
    /// and query threads, with its persons numbered afresh.
    pub(crate) fn reloaded(&self, catalog: NodeCatalog) -> Self {
        let mut privacy = self.privacy.clone();
        privacy.policy.persons = Arc::new(self.privacy.policy.persons.emptied());
        Self::over(self.code, catalog, privacy, self.lasting.clone())
    }

    fn over(code: NodeCode, catalog: NodeCatalog, privacy: Privacy, lasting: Arc<Lasting>) -> Self {
        let state = catalog.context.state();
        Self {
            code,
            task: state.task_ctx(),
            state,
            catalog,
            persons: PersonIndex::new(privacy.policy.persons.clone()),
            privacy,
            statistics: OnceMap::default(),
            standards: OnceCell::new(),
            quality: OnceCell::new(),
            shared: SharedSets::default(),
            lasting,
        }
    }

    /// The runtime that computes the node's queries and fragments.
    pub(crate) fn compute(&self) -> &Compute {
        &self.lasting.compute
    }

    /// The county analysts of this node that the city registered.
    pub(crate) fn analysts(&self) -> &CityAnalysts {
        &self.lasting.analysts
    }

    /// Refuses `user` unless it is the city's coordinator, and records the refusal: the
    /// node's person tokens, model steps and case openings are the city's to ask for.
    pub(crate) fn city_only(&self, user: &str, action: &str) -> Result<()> {
        if self.privacy.city_users.contains(user) {
            return Ok(());
        }
        let reason = format!("{action} is for the city's coordinator; user {user} is not");
        self.audit()
            .record(user, action, "", &format!("refused: {reason}"));
        Err(Error::NotCity(reason))
    }

    /// The data-quality findings of the files as loaded, once worked out: they do not
    /// change while the node serves them.
    pub(crate) fn quality(&self) -> &OnceCell<Vec<String>> {
        &self.quality
    }

    /// Refuses unless this node's copy of `subsidy_standards` is `expected`, the city's.
    pub(crate) async fn hold_standards(&self, expected: &str) -> Result<()> {
        let found = self.standards_sha256().await?;
        if found != expected {
            return Err(Error::OtherStandards {
                expected: expected.to_string(),
                found: found.to_string(),
            });
        }
        Ok(())
    }

    /// The `standards_sha256` of this node's copy of `subsidy_standards`, read once.
    async fn standards_sha256(&self) -> Result<&str> {
        let sha256 = self
            .standards
            .get_or_try_init(|| async {
                let name = Table::SubsidyStandards.name();
                let copy = self.context().table(name).await?.collect().await?;
                Ok::<_, Error>(standards_sha256(&copy)?)
            })
            .await?;
        Ok(sha256)
    }

    /// The statistics of `table`'s files as their writer stored them, merged; read from
    /// the footers once.
    pub(crate) async fn statistics(&self, table: Table) -> Result<Arc<Statistics>> {
        self.statistics
            .get_or_try_init(table, || async {
                let store = self
                    .context()
                    .runtime_env()
                    .object_store(self.store_url())?;
                let mut files = Vec::new();
                for file in self.files_of(table)? {
                    let stats = ParquetFormat::default()
                        .infer_stats(self.state(), &store, table.schema(), file)
                        .await?;
                    files.push(stats);
                }
                let merged = Statistics::try_merge_iter(&files, &table.schema())?;
                Ok::<_, Error>(Arc::new(merged))
            })
            .await
    }

    /// Whether the statistics of `table`'s files prove that every row carries this
    /// node's code.
    pub(crate) async fn county_proven(&self, table: Table) -> Result<bool> {
        let column = table.schema().index_of("county_code")?;
        Ok(proves_county(
            &*self.statistics(table).await?,
            column,
            self.code,
        ))
    }

    /// The distinct persons of `table` and their sketch.
    pub async fn persons_of(&self, table: Table) -> Result<Counted> {
        self.persons.table(self, table).await
    }

    /// The person number of every row of the node's files.
    pub(crate) fn person_index(&self) -> &PersonIndex {
        &self.persons
    }

    /// The files of a served table; none for a table the node does not hold.
    pub(crate) fn files_of(&self, table: Table) -> Result<&[ObjectMeta]> {
        if let Some(refusal) = self.catalog.refusal(table.name()) {
            return Err(refusal);
        }
        Ok(self.files().of(table))
    }

    /// The URL under which the context knows the data root's store.
    pub(crate) fn store_url(&self) -> &ObjectStoreUrl {
        &self.catalog.store_url
    }

    /// The sets of the node's persons that other nodes hold too.
    pub(crate) fn shared(&self) -> &SharedSets {
        &self.shared
    }

    /// The node's access log.
    pub fn audit(&self) -> &NodeAudit {
        &self.lasting.audit
    }

    /// The egress guard's settings.
    pub fn privacy(&self) -> &Privacy {
        &self.privacy
    }

    /// The node's code.
    pub fn code(&self) -> NodeCode {
        self.code
    }

    /// State of each contract table.
    pub fn tables(&self) -> &[(sunlight_domain::Table, TableState)] {
        &self.catalog.tables
    }

    /// The contract tables the node serves from files.
    pub(crate) fn served(&self) -> impl Iterator<Item = sunlight_domain::Table> + '_ {
        let tables = self.tables().iter();
        tables
            .filter(|(_, state)| matches!(state, TableState::Served { .. }))
            .map(|(table, _)| *table)
    }

    /// The node's tables and files as it loaded them.
    pub(crate) fn catalog(&self) -> &NodeCatalog {
        &self.catalog
    }

    /// The served files as the node last checked them.
    pub(crate) fn files(&self) -> &CheckedFiles {
        &self.catalog.files
    }

    /// The context every query of the node runs in.
    pub fn context(&self) -> &datafusion::prelude::SessionContext {
        &self.catalog.context
    }

    /// The state of [`Self::context`], taken once: the context does not change while the
    /// node serves, and fragments need not copy its function registries each time.
    pub(crate) fn state(&self) -> &SessionState {
        &self.state
    }

    /// The task context fragments run in, made from [`Self::state`].
    pub(crate) fn task(&self) -> Arc<TaskContext> {
        self.task.clone()
    }

    /// The provider of a served table, or the reason it is not served.
    pub async fn table_provider(
        &self,
        table: sunlight_domain::Table,
    ) -> Result<Arc<dyn TableProvider>> {
        if let Some(refusal) = self.catalog.refusal(table.name()) {
            return Err(refusal);
        }
        Ok(self.catalog.context.table_provider(table.name()).await?)
    }

    /// Plans a read-only SQL query; statements that write or change the session are refused.
    async fn plan(&self, statement: &Statement) -> Result<DataFrame> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        statement
            .plan(&self.catalog.context, options)
            .await
            .map_err(|e| {
                let message = e.to_string();
                self.catalog
                    .tables
                    .iter()
                    .filter(|(table, _)| {
                        message
                            .contains(&format!("'{CATALOG}.{SCHEMA}.{}' not found", table.name()))
                    })
                    .find_map(|(table, _)| self.catalog.refusal(table.name()))
                    .unwrap_or(Error::Query(e))
            })
    }

    /// The schema a query would return.
    pub async fn query_schema(&self, statement: &Statement) -> Result<StatementSchemas> {
        Ok(StatementSchemas::of(&self.plan(statement).await?)?)
    }

    /// Runs a query on the query runtime and streams its result.
    pub async fn query(
        &self,
        statement: &Statement,
    ) -> Result<(SchemaRef, SendableRecordBatchStream)> {
        let frame = self.plan(statement).await?;
        require_values(&frame)?;
        let schema = frame.schema().inner().clone();
        let task = Arc::new(frame.task_ctx());
        let plan = frame.create_physical_plan().await?;
        Ok((schema, self.compute().execute(plan, task)?))
    }

    /// Every table a client may query, as the catalog calls describe it.
    pub async fn catalog_tables(&self) -> Result<Vec<TableInfo>> {
        let schema = self
            .catalog
            .context
            .catalog(CATALOG)
            .and_then(|c| c.schema(SCHEMA))
            .expect("the default schema exists");
        let mut names = schema.table_names();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if let Some(table) = schema.table(&name).await? {
                let key = name.parse::<Table>().map_or(&[][..], |t| t.primary_key());
                out.push(TableInfo::new(&name, table.schema(), key));
            }
        }
        Ok(out)
    }
}
