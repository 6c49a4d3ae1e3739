//! The node's tables: finds each contract table's files under the data root, checks
//! every file against the contract, and registers the good tables with DataFusion.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::compute::can_cast_types;
use arrow::datatypes::{DataType, Field, Int64Type, SchemaRef};
use datafusion::catalog::MemTable;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::Constraints;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::functions_aggregate::count::count_all;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Case, Expr, try_cast};
use datafusion::logical_expr::{TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{ParquetReadOptions, SessionContext, cast, ident, lit};
use futures::TryStreamExt;
use futures::future::join_all;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use sunlight_domain::Table;
use url::Url;

use crate::config::S3Config;
use crate::date_difference::DateDifferenceAsDays;
use crate::hits::{
    MODEL_HITS, MODEL_OUTCOMES, MODEL_VERSIONS, hits_schema, outcomes_schema, versions_schema,
};
use crate::{Error, Result};

/// The first bytes of a Parquet file.
pub const PARQUET_MAGIC: &[u8; 4] = b"PAR1";

/// Why a file of a table was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableProblem {
    /// URL of the file, as `file:///…` or `s3://…`.
    pub file: String,
    /// What is wrong, naming the column where there is one.
    pub problem: String,
}

impl fmt::Display for TableProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.problem)
    }
}

/// The state of one contract table on this node.
#[derive(Debug, Clone)]
pub enum TableState {
    /// Served from these Parquet files.
    Served {
        /// The files, as the store lists them.
        files: Vec<ObjectMeta>,
    },
    /// The node holds no files of this table; it is served empty.
    Missing,
    /// At least one file breaks the contract; the table is not served.
    Refused(Vec<TableProblem>),
}

/// The data root as an object store and the URL of its root folder.
#[derive(Clone)]
pub struct DataRoot {
    store: Arc<dyn ObjectStore>,
    url: Url,
    prefix: ObjectPath,
    /// The file system, when the root is a local folder.
    local: Option<LocalFileSystem>,
}

impl DataRoot {
    /// Opens `data`, an object store URL or a local path.
    pub fn open(data: &str, s3: &S3Config) -> Result<Self> {
        let root_error = |reason: String| Error::DataRoot {
            url: data.to_string(),
            reason,
        };
        let mut url = match Url::parse(data) {
            Ok(url) if url.scheme().len() > 1 => url,
            _ => {
                let path = std::path::absolute(data).map_err(|e| root_error(e.to_string()))?;
                Url::from_directory_path(&path)
                    .map_err(|_| root_error("not an absolute path".into()))?
            }
        };
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let options = s3_options(s3);
        let (store, prefix) =
            object_store::parse_url_opts(&url, options).map_err(|e| root_error(e.to_string()))?;
        if url.scheme() == "file" && !std::path::Path::new(url.path()).is_dir() {
            return Err(root_error("no such directory".into()));
        }
        Ok(Self {
            store: Arc::from(store),
            local: (url.scheme() == "file").then(LocalFileSystem::new),
            url,
            prefix,
        })
    }

    /// The root URL, ending in `/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The object store behind the root.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The prefix of `table`'s folder in the store.
    pub fn table_prefix(&self, table: Table) -> ObjectPath {
        self.folder(table.name())
    }

    /// The files of `table`'s folder, in the order of their names: the Parquet files, and
    /// the others (a CSV not yet imported, say). A file is Parquet by its name (`.parquet`)
    /// or, named as Hive's `000000_0` and Impala's `….parq` are, by its first bytes.
    pub async fn table_files(&self, table: Table) -> Result<(Vec<ObjectMeta>, Vec<ObjectMeta>)> {
        self.sort_out(self.listed(table).await?).await
    }

    /// `objects` of a table's folder, as [`Self::table_files`] sorts them out.
    async fn sort_out(
        &self,
        objects: Vec<ObjectMeta>,
    ) -> Result<(Vec<ObjectMeta>, Vec<ObjectMeta>)> {
        let (mut parquet, mut others) = (Vec::new(), Vec::new());
        for object in objects {
            match self.is_parquet(&object).await? {
                true => parquet.push(object),
                false => others.push(object),
            }
        }
        Ok((parquet, others))
    }

    /// Every file of `table`'s folder and the folders below it, in the order of their
    /// names. Files below a hidden name (`.`) or a writer's own (`_`), such as Spark's
    /// `_temporary` folder and `_SUCCESS` marker, are not: writers keep there what is not,
    /// or not yet, part of the table.
    async fn listed(&self, table: Table) -> Result<Vec<ObjectMeta>> {
        let prefix = self.table_prefix(table);
        let mut objects: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_filter(|object| std::future::ready(!is_writers_own(&prefix, &object.location)))
            .try_collect()
            .await
            .map_err(|source| Error::Store {
                location: self.object_url(&prefix).to_string(),
                source,
            })?;
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(objects)
    }

    /// `files` of `table` as they are now, less those that are gone. On a local disk
    /// each file's own metadata tells, a look each, which costs less than a listing of
    /// the folder. In an object store one listing tells in one request, and gives times
    /// as precise as the listing that found the files, which an object's own HEAD may
    /// round to the second.
    async fn now(&self, table: Table, files: &[ObjectMeta]) -> Result<Vec<ObjectMeta>> {
        match &self.local {
            Some(local) => files
                .iter()
                .filter_map(|file| self.stat(local, &file.location).transpose())
                .collect(),
            None => self.listed(table).await,
        }
    }

    /// The local file at `location` as it is now; none if it is gone. The look is made
    /// here, where the store would hand it to a thread of the blocking pool and open the
    /// file: a stat of a local file takes microseconds, less than that hand-off, and every
    /// read of a table makes one a file.
    fn stat(&self, local: &LocalFileSystem, location: &ObjectPath) -> Result<Option<ObjectMeta>> {
        let failed = |source| Error::Store {
            location: self.object_url(location).to_string(),
            source,
        };
        let path = local.path_to_filesystem(location).map_err(failed)?;
        let now = std::fs::metadata(&path).and_then(|metadata| {
            Ok(ObjectMeta {
                location: location.clone(),
                size: metadata.len(),
                last_modified: metadata.modified()?.into(),
                e_tag: None,
                version: None,
            })
        });
        match now {
            Ok(now) => Ok(Some(now)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            })),
        }
    }

    /// Whether `object` is named as a Parquet file, or is named as Hive and Impala name
    /// theirs (no extension, or `.parq` or `.pq`) and starts as one. A copy kept beside a
    /// table's file (`part-0.parquet.bak`) is neither, and is not read.
    async fn is_parquet(&self, object: &ObjectMeta) -> Result<bool> {
        let name = object.location.filename().unwrap_or_default();
        let may_be = match name.rsplit_once('.') {
            None => true,
            Some((_, "parquet")) => return Ok(true),
            Some((_, extension)) => matches!(extension, "parq" | "pq"),
        };
        if !may_be || object.size < PARQUET_MAGIC.len() as u64 {
            return Ok(false);
        }
        let start = self
            .store
            .get_range(&object.location, 0..PARQUET_MAGIC.len() as u64)
            .await
            .map_err(|source| Error::Store {
                location: self.object_url(&object.location).to_string(),
                source,
            })?;
        Ok(start.as_ref() == PARQUET_MAGIC)
    }

    /// The prefix of the folder `name` in the store.
    pub fn folder(&self, name: &str) -> ObjectPath {
        self.prefix.clone().join(name)
    }

    /// The URL of the folder `name`, for a listing table.
    pub fn folder_url(&self, name: &str) -> String {
        format!("{}/", self.object_url(&self.folder(name)))
    }

    /// The URL of an object of the store.
    pub fn object_url(&self, location: &ObjectPath) -> Url {
        let mut url = self.url.clone();
        url.set_path(&format!("/{location}"));
        url
    }
}

/// The options of an S3 store: the usual `AWS_*` environment variables, then `s3`'s
/// settings, which override them.
fn s3_options(s3: &S3Config) -> Vec<(String, String)> {
    let mut options: Vec<(String, String)> = std::env::vars()
        .filter(|(key, _)| key.starts_with("AWS_"))
        .map(|(key, value)| (key.to_ascii_lowercase(), value))
        .collect();
    let mut set = |key: &str, value: &Option<String>| {
        if let Some(v) = value {
            options.push((key.to_string(), v.clone()));
        }
    };
    set("aws_endpoint", &s3.endpoint);
    set("aws_region", &s3.region);
    set("aws_access_key_id", &s3.access_key_id);
    set("aws_secret_access_key", &s3.secret_access_key);
    if s3.allow_http {
        options.push(("aws_allow_http".into(), "true".into()));
    }
    options
}

/// The tables of a node registered in a DataFusion context, and their states.
pub struct NodeCatalog {
    /// Context in which every query of the node runs.
    pub context: SessionContext,
    /// State of each contract table, in [`Table::ALL`] order.
    pub tables: Arc<[(Table, TableState)]>,
    /// The URL under which the context knows the data root's store.
    pub store_url: ObjectStoreUrl,
    /// The served files as the node checked them.
    pub files: CheckedFiles,
    /// Every file of each table's folder as the node listed them, in [`Table::ALL`]
    /// order. Whether one is Parquet is read once, as the catalog is loaded.
    listed: Vec<Vec<ObjectMeta>>,
}

impl NodeCatalog {
    /// Checks every table folder of `root` and registers the good tables. Queries run
    /// over `partitions`, one per core where it is `None`, and hold at most
    /// `memory_limit_mb` MiB between them, unbounded where it is `None`.
    pub async fn load(
        root: &DataRoot,
        partitions: Option<usize>,
        memory_limit_mb: Option<usize>,
    ) -> Result<Self> {
        let mut config = sunlight_flightsql::session_config();
        if let Some(partitions) = partitions {
            config = config.with_target_partitions(partitions);
        }
        // model_hits and model_outcomes grow while the node serves: list their folders
        // on every scan rather than caching the first listing.
        let mut runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0));
        if let Some(limit) = memory_limit_mb {
            runtime = runtime.with_memory_pool(sunlight_flightsql::memory_pool(limit));
        }
        let context = SessionContext::new_with_config_rt(config, runtime.build_arc()?);
        Self::over(context, root).await
    }

    /// The tables of `root` as they are now, every file checked again, in a context with
    /// this catalog's settings, memory pool and caches.
    pub async fn reload(&self, root: &DataRoot) -> Result<Self> {
        let context = SessionContext::new_with_config_rt(
            self.context.copied_config(),
            self.context.runtime_env(),
        );
        Self::over(context, root).await
    }

    /// Whether every table folder of `root` holds the files the catalog was loaded from,
    /// each of the same size and date, and no other.
    pub async fn is_current(&self, root: &DataRoot) -> Result<bool> {
        for (table, listed) in Table::ALL.into_iter().zip(&self.listed) {
            if root.listed(table).await? != *listed {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Registers the tables of `root` in `context`.
    async fn over(context: SessionContext, root: &DataRoot) -> Result<Self> {
        let udfs = sunlight_fragment::masking_udfs().into_iter();
        for udf in udfs.chain(sunlight_fragment::bounded_list_udfs()) {
            context.register_udf(udf);
        }
        context.add_optimizer_rule(Arc::new(DateDifferenceAsDays));
        for rule in sunlight_flightsql::analyzer_rules() {
            context.add_analyzer_rule(rule);
        }
        let store_url =
            ObjectStoreUrl::parse(format!("{}://{}", root.url.scheme(), root.url.authority()))?;
        context.register_object_store(store_url.as_ref(), root.store());
        let mut tables = Vec::new();
        let mut listed = Vec::new();
        for table in Table::ALL {
            let all = root.listed(table).await?;
            let (files, others) = root.sort_out(all.clone()).await?;
            for other in others {
                let url = root.object_url(&other.location);
                tracing::warn!(file = %url, "ignoring a file that is not Parquet; use `sunlight import` for CSV");
            }
            tables.push((table, register(&context, root, table, &files).await?));
            listed.push(all);
        }
        for (name, schema) in [
            (MODEL_HITS, hits_schema()),
            (MODEL_OUTCOMES, outcomes_schema()),
            (MODEL_VERSIONS, versions_schema()),
        ] {
            let config = ListingTableConfig::new(ListingTableUrl::parse(root.folder_url(name))?)
                .with_listing_options(
                    ListingOptions::new(Arc::new(ParquetFormat::default()))
                        .with_file_extension(".parquet"),
                )
                .with_schema(schema);
            context.register_table(name, listing_table(&context, config)?)?;
        }
        let tables: Arc<[(Table, TableState)]> = tables.into();
        let files = CheckedFiles {
            root: root.clone(),
            tables: Arc::clone(&tables),
        };
        for (table, state) in tables.iter() {
            if let TableState::Served {
                files: served_files,
            } = state
            {
                let checked = CheckedTable {
                    table: *table,
                    listing: served(&context, root, *table, served_files)?,
                    files: files.clone(),
                };
                context.register_table(table.name(), Arc::new(checked))?;
            }
        }
        Ok(Self {
            files,
            context,
            tables,
            store_url,
            listed,
        })
    }

    /// The problems of `table` if it was refused.
    pub fn refusal(&self, name: &str) -> Option<Error> {
        self.tables.iter().find_map(|(table, state)| match state {
            TableState::Refused(problems) if table.name() == name => Some(Error::TableRefused {
                table: *table,
                problems: problems.clone(),
            }),
            _ => None,
        })
    }
}

/// The files a node serves, as it last checked them. A scan makes sure first that its
/// table's files are still as they were: a listing would leave a file that is gone out
/// of the answer, and the footers the node read no longer fit a changed file.
#[derive(Clone)]
pub struct CheckedFiles {
    root: DataRoot,
    tables: Arc<[(Table, TableState)]>,
}

impl fmt::Debug for CheckedFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckedFiles").finish_non_exhaustive()
    }
}

impl CheckedFiles {
    /// The files `table` is served from; none for a table not served from files.
    pub fn of(&self, table: Table) -> &[ObjectMeta] {
        self.tables
            .iter()
            .find_map(|(t, state)| match state {
                TableState::Served { files } if *t == table => Some(files.as_slice()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Fails, naming each file of `table` that is gone or changed since the node checked
    /// it, with what is wrong with it now ([`DataRoot::now`] tells).
    pub async fn unchanged(&self, table: Table) -> Result<()> {
        let checked = self.of(table);
        if checked.is_empty() {
            return Ok(());
        }
        let found = self.root.now(table, checked).await?;
        let now: HashMap<&ObjectPath, &ObjectMeta> =
            found.iter().map(|file| (&file.location, file)).collect();
        let changed = checked
            .iter()
            .map(|file| self.changed(table, file, now.get(&file.location).copied()));
        let changed: Vec<TableProblem> = join_all(changed).await.into_iter().flatten().collect();
        match changed.is_empty() {
            true => Ok(()),
            false => Err(Error::FilesChanged(changed)),
        }
    }

    async fn changed(
        &self,
        table: Table,
        checked: &ObjectMeta,
        now: Option<&ObjectMeta>,
    ) -> Option<TableProblem> {
        let problem = match now {
            Some(now) if now.size == checked.size && now.last_modified == checked.last_modified => {
                return None;
            }
            Some(now) => {
                // A context of its own: the node's caches the footers it read before.
                let context = SessionContext::new();
                context.register_object_store(self.root.url(), self.root.store());
                let found = check_file(&context, &self.root, now, table)
                    .await
                    .err()
                    .unwrap_or_else(|| {
                        "it keeps the contract, but the node serves it as it was".into()
                    });
                format!(
                    "has changed since the node checked it ({} bytes then, {} now): {found}",
                    checked.size, now.size
                )
            }
            None => "is gone since the node checked it".to_string(),
        };
        Some(TableProblem {
            file: self.root.object_url(&checked.location).to_string(),
            problem,
        })
    }
}

/// A contract table served from its files as the node checked them ([`CheckedFiles`]).
#[derive(Debug)]
struct CheckedTable {
    table: Table,
    listing: Arc<ListingTable>,
    files: CheckedFiles,
}

#[tonic::async_trait]
impl TableProvider for CheckedTable {
    fn schema(&self) -> SchemaRef {
        self.listing.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.listing.constraints()
    }

    fn table_type(&self) -> TableType {
        self.listing.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let args = ScanArgs::default()
            .with_projection(projection.map(Vec::as_slice))
            .with_filters(Some(filters))
            .with_limit(limit);
        Ok(self.scan_with_args(state, args).await?.into_inner())
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> datafusion::error::Result<ScanResult> {
        self.files
            .unchanged(self.table)
            .await
            .map_err(Error::into_datafusion)?;
        self.listing.scan_with_args(state, args).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        self.listing.supports_filters_pushdown(filters)
    }
}

/// Whether a name of `location` below `folder` starts with `.` or `_`.
fn is_writers_own(folder: &ObjectPath, location: &ObjectPath) -> bool {
    location
        .prefix_match(folder)
        .into_iter()
        .flatten()
        .any(|part| part.as_ref().starts_with(['.', '_']))
}

/// Checks `objects`, the Parquet files of `table`, and registers the table where it holds
/// none; its state either way.
async fn register(
    context: &SessionContext,
    root: &DataRoot,
    table: Table,
    objects: &[ObjectMeta],
) -> Result<TableState> {
    let mut files: Vec<ObjectMeta> = Vec::new();
    let mut problems = Vec::new();
    for object in objects {
        match check_file(context, root, object, table).await {
            Ok(()) => files.push(object.clone()),
            Err(problem) => problems.push(TableProblem {
                file: root.object_url(&object.location).to_string(),
                problem,
            }),
        }
    }
    let state = if !problems.is_empty() {
        for p in &problems {
            tracing::error!(table = table.name(), "refusing table: {p}");
        }
        return Ok(TableState::Refused(problems));
    } else if files.is_empty() {
        context.register_table(
            table.name(),
            Arc::new(MemTable::try_new(table.schema(), vec![vec![]])?),
        )?;
        TableState::Missing
    } else {
        TableState::Served { files }
    };
    Ok(state)
}

/// A listing table over `table`'s `files`.
fn served(
    context: &SessionContext,
    root: &DataRoot,
    table: Table,
    files: &[ObjectMeta],
) -> Result<Arc<ListingTable>> {
    let urls = files
        .iter()
        .map(|f| ListingTableUrl::parse(root.object_url(&f.location).as_str()))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    // The files are Parquet by name or by content; their names need not say so.
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension("");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(table.schema());
    listing_table(context, config)
}

/// A table over `config`'s files whose statistics are read once per file version, in
/// the context's cache, rather than at every scan.
fn listing_table(
    context: &SessionContext,
    config: ListingTableConfig,
) -> Result<Arc<ListingTable>> {
    let cache = context
        .runtime_env()
        .cache_manager
        .get_file_statistic_cache();
    Ok(Arc::new(ListingTable::try_new(config)?.with_cache(cache)))
}

/// Reads the footer of one Parquet file and compares its columns with the contract; where
/// the file's types promise less than the contract's, its values must keep the promise.
async fn check_file(
    context: &SessionContext,
    root: &DataRoot,
    object: &ObjectMeta,
    table: Table,
) -> Result<(), String> {
    let unreadable = |e: DataFusionError| {
        let cause = match e.find_root() {
            DataFusionError::ParquetError(e) => e.to_string(),
            other => other.to_string(),
        };
        format!("not a readable Parquet file ({cause})")
    };
    let found = ParquetFormat::default()
        .infer_schema(&context.state(), &root.store, std::slice::from_ref(object))
        .await
        .map_err(unreadable)?;
    let contract = table.schema();
    // The columns a folder of the file's path names, as Hive writes a partition of a table.
    let parts: Vec<_> = object.location.parts().collect();
    let partitions: Vec<&str> = parts
        .iter()
        .filter_map(|part| Some(part.as_ref().split_once('=')?.0))
        .collect();
    compare_schema(&found, &contract, &partitions)?;
    let unread: Vec<&String> = found
        .fields()
        .iter()
        .map(|f| f.name())
        .filter(|name| contract.field_with_name(name).is_err())
        .collect();
    if !unread.is_empty() {
        tracing::warn!(file = %object.location, columns = ?unread, "not serving columns the contract does not name");
    }
    let checks: Vec<ValueCheck> = contract
        .fields()
        .iter()
        .filter_map(|expected| Some((expected, found.field_with_name(expected.name()).ok()?)))
        .flat_map(|(expected, actual)| ValueCheck::of(expected, actual))
        .collect();
    let problems: Vec<String> = breaking_rows(context, root, object, &found, &checks)
        .await
        .map_err(unreadable)?
        .into_iter()
        .zip(&checks)
        .filter(|(rows, _)| *rows > 0)
        .map(|(rows, check)| check.problem(rows))
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join(", "))
    }
}

/// A promise of the contract about a column's values that the file's type does not make.
enum ValueCheck<'a> {
    /// The contract requires a value in every row; the file lets the column be null.
    NoNulls(&'a str),
    /// The file's numbers, of a type that could hold others ([`holds_only`]), must each be
    /// a value of the contract's type: whole and within `Int32`, or with no more decimals
    /// or digits than the contract's decimal.
    Exact {
        column: &'a str,
        file: DataType,
        contract: DataType,
    },
    /// The contract's type is `Date32`; the file holds timestamps, which must be midnights.
    AtMidnight(&'a str, DataType),
    /// The contract holds text; the file holds bytes, which must be UTF-8.
    Utf8(&'a str),
}

impl<'a> ValueCheck<'a> {
    /// The checks a file's column `actual` needs to be read as the contract's `expected`.
    fn of(expected: &'a Field, actual: &Field) -> Vec<Self> {
        let name = expected.name().as_str();
        let mut checks = Vec::new();
        if !expected.is_nullable() && actual.is_nullable() {
            checks.push(Self::NoNulls(name));
        }
        if actual.data_type().is_numeric() && !holds_only(actual.data_type(), expected.data_type())
        {
            checks.push(Self::Exact {
                column: name,
                file: actual.data_type().clone(),
                contract: expected.data_type().clone(),
            });
        }
        if let DataType::Timestamp(..) = actual.data_type() {
            checks.push(Self::AtMidnight(name, actual.data_type().clone()));
        }
        if is_bytes(actual.data_type()) {
            checks.push(Self::Utf8(name));
        }
        checks
    }

    /// Two counts of rows whose difference is the number of rows that break the promise.
    fn counts(&self) -> (Expr, Expr) {
        // The rows whose value `same` finds again from the value it is read as.
        let kept = |column: &str, same: Expr| {
            let case = Case::new(None, vec![(Box::new(same), Box::new(lit(1)))], None);
            (count(ident(column)), count(Expr::Case(case)))
        };
        match self {
            Self::NoNulls(column) => (count_all(), count(ident(*column))),
            Self::Exact {
                column,
                file,
                contract,
            } => {
                let read = try_cast(ident(*column), contract.clone());
                kept(column, cast(read, file.clone()).eq(ident(*column)))
            }
            Self::AtMidnight(column, timestamp) => {
                let midnight = cast(cast(ident(*column), DataType::Date32), timestamp.clone());
                kept(column, midnight.eq(ident(*column)))
            }
            Self::Utf8(column) => (
                count(ident(*column)),
                count(try_cast(ident(*column), DataType::Utf8)),
            ),
        }
    }

    fn problem(&self, rows: i64) -> String {
        match self {
            Self::NoNulls(column) => format!(
                "column {column} holds {rows} null value(s), where the contract requires one \
                 in every row"
            ),
            Self::Exact {
                column, contract, ..
            } => format!(
                "column {column} holds {rows} value(s) the contract's {contract} cannot hold \
                 exactly"
            ),
            Self::AtMidnight(column, _) => format!(
                "column {column} holds {rows} timestamp(s) with a time of day, where the \
                 contract holds dates"
            ),
            Self::Utf8(column) => {
                format!("column {column} holds {rows} value(s) that are not UTF-8 text")
            }
        }
    }
}

/// The rows of `object`, whose schema is `found`, that break each of `checks`, which
/// DataFusion counts from the footer's statistics where they hold the count, else by
/// reading the column.
async fn breaking_rows(
    context: &SessionContext,
    root: &DataRoot,
    object: &ObjectMeta,
    found: &SchemaRef,
    checks: &[ValueCheck<'_>],
) -> datafusion::error::Result<Vec<i64>> {
    if checks.is_empty() {
        return Ok(Vec::new());
    }
    // One aggregate per distinct count: a column may need two checks.
    let mut counts: Vec<Expr> = Vec::new();
    let mut index = |count: Expr| match counts.iter().position(|c| *c == count) {
        Some(i) => i,
        None => {
            counts.push(count);
            counts.len() - 1
        }
    };
    let differences: Vec<(usize, usize)> = checks
        .iter()
        .map(|check| {
            let (all, kept) = check.counts();
            (index(all), index(kept))
        })
        .collect();
    let aliased = counts
        .into_iter()
        .enumerate()
        .map(|(i, count)| count.alias(format!("count_{i}")))
        .collect();
    let url = root.object_url(&object.location);
    let batches = context
        .read_parquet(
            url.as_str(),
            ParquetReadOptions::default()
                .schema(found)
                .file_extension(""),
        )
        .await?
        .aggregate(vec![], aliased)?
        .collect()
        .await?;
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches)?;
    let value = |i: usize| batch.column(i).as_primitive::<Int64Type>().value(0);
    Ok(differences
        .into_iter()
        .map(|(all, kept)| value(all) - value(kept))
        .collect())
}

/// Names every column that is missing or of another type than the contract's. Columns
/// the contract does not name, such as optional columns of a later contract, are never
/// read. A missing column that one of `partitions`, the columns the file's folders name,
/// is, is said to be there.
fn compare_schema(
    found: &SchemaRef,
    contract: &SchemaRef,
    partitions: &[&str],
) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut retyped = false;
    for expected in contract.fields() {
        let name = expected.name();
        match found.field_with_name(name) {
            Err(_) if partitions.contains(&name.as_str()) => problems.push(format!(
                "column {name} is missing (its folder {name}=… holds it, as Hive and Spark \
                 write a partition; `sunlight import` reads it from there)"
            )),
            Err(_) => problems.push(format!("column {name} is missing")),
            Ok(actual) if !same_type(actual, expected) => {
                retyped = true;
                // Text by the name its writer knows, whichever layout DataFusion reads it in.
                let found = match is_text(actual.data_type()) {
                    true => "holds text".to_string(),
                    false => format!("has type {}", actual.data_type()),
                };
                problems.push(format!(
                    "column {} {found}, the contract says {}",
                    expected.name(),
                    expected.data_type()
                ))
            }
            Ok(_) => {}
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut problems = problems.join(", ");
    if retyped {
        // Dates or money stored as text, say, which a node does not read as the contract's.
        problems.push_str(
            "; `sunlight import` converts a file's values to the contract's types, or names \
             those it cannot",
        );
    }
    Err(problems)
}

/// Whether a file's column `actual` reads as the contract's `expected` without losing a
/// value: text in any layout, and bytes that are UTF-8 text; for the contract's numbers,
/// integers, floating point and decimals of any size (checked to be values of the
/// contract's type, where they could hold others: [`holds_only`]); dates in milliseconds
/// or as timestamps (checked to be midnights, in their time zone where they have one); and
/// a column of nulls alone.
fn same_type(actual: &Field, expected: &Field) -> bool {
    use DataType::{Date32, Date64, Decimal128, Int32, Null, Timestamp};
    match (actual.data_type(), expected.data_type()) {
        (a, e) if a == e => true,
        (a, e) if is_text(a) && is_text(e) => true,
        // Hive and Impala write text as bytes without saying they are UTF-8.
        (a, e) if is_bytes(a) && is_text(e) => true,
        (a, e @ (Int32 | Decimal128(..))) => a.is_numeric() && can_cast_types(a, e),
        (Date64 | Timestamp(..), Date32) => true,
        // A column no row of the file has a value in, as pandas writes one.
        (Null, _) => true,
        _ => false,
    }
}

/// Whether every value of the number type `actual` is a value of `expected`, the
/// contract's: narrower integers, and decimals (or integers) with no more digits on either
/// side of the point. Wider integers, floating point and longer decimals, as Oracle's
/// `NUMBER` comes out of an export, may hold the contract's values, but must be checked to.
fn holds_only(actual: &DataType, expected: &DataType) -> bool {
    use DataType::{
        Decimal32, Decimal64, Decimal128, Decimal256, Int8, Int16, Int32, UInt8, UInt16, UInt32,
    };
    // The digits before the point of the contract's decimal, and of a type's values.
    let whole_digits = |p: &u8, s: &i8| i16::from(*p) - i16::from(*s);
    match (actual, expected) {
        (a, e) if a == e => true,
        (Int8 | Int16 | UInt8 | UInt16, Int32) => true,
        (Int8 | Int16 | Int32 | UInt8 | UInt16 | UInt32, Decimal128(p, s)) => {
            whole_digits(p, s) >= 10
        }
        (
            Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) | Decimal256(p, s),
            Decimal128(contract_p, contract_s),
        ) => {
            *s >= 0 && s <= contract_s && whole_digits(p, s) <= whole_digits(contract_p, contract_s)
        }
        _ => false,
    }
}

/// Bytes in any of Arrow's layouts, which may be text.
fn is_bytes(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

/// Text in any of Arrow's layouts, dictionary-encoded or not.
fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => is_text(values),
        _ => false,
    }
}
