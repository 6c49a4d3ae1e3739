//! The node's files as it serves them. A node checks its files at start; while it serves,
//! it lists its table folders every few seconds, and when their Parquet files changed (a
//! file imported, replaced or removed), it checks them all again, numbers their persons
//! and serves them from then on. A call in flight ends on the files it started with.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use sunlight_domain::Table;
use tokio::sync::Mutex;
use tokio::time::MissedTickBehavior;

use crate::Result;
use crate::catalog::{DataRoot, TableState};
use crate::node::Node;
use crate::persons::number_persons;

/// The node that serves calls, over its files as last loaded.
pub struct Served {
    node: RwLock<Arc<Node>>,
    root: DataRoot,
    loading: Mutex<()>,
}

impl Served {
    /// Serves `node`, whose files are those of `root`.
    pub fn new(node: Node, root: DataRoot) -> Self {
        Self {
            node: RwLock::new(Arc::new(node)),
            root,
            loading: Mutex::new(()),
        }
    }

    /// The node as it serves calls now.
    pub fn node(&self) -> Arc<Node> {
        self.node.read().expect("not poisoned").clone()
    }

    /// The node's data root.
    pub(crate) fn root(&self) -> &DataRoot {
        &self.root
    }

    /// Loads the node's files again where they changed since it last did; whether they
    /// had. The node serves its files as they were until the new ones are checked and
    /// their persons numbered.
    pub async fn refresh(&self) -> Result<bool> {
        let _loading = self.loading.lock().await;
        let node = self.node();
        if node.catalog().is_current(&self.root).await? {
            return Ok(false);
        }
        let reloaded = Arc::new(node.reloaded(node.catalog().reload(&self.root).await?));
        number_persons(reloaded.clone()).await;
        let tables = summary(reloaded.tables());
        tracing::info!(node = %reloaded.code(), "serving the files as they are now: {tables}");
        reloaded
            .audit()
            .record("node", "files", "", &format!("loaded again: {tables}"));
        *self.node.write().expect("not poisoned") = reloaded;
        Ok(true)
    }
}

/// What the node serves of each table, in a line.
fn summary(tables: &[(Table, TableState)]) -> String {
    let states: Vec<String> = tables
        .iter()
        .map(|(table, state)| match state {
            TableState::Served { files } => format!("{table} {} file(s)", files.len()),
            TableState::Missing => format!("{table} no files"),
            TableState::Refused(problems) => {
                format!("{table} refused ({} file(s))", problems.len())
            }
        })
        .collect();
    states.join(", ")
}

/// Refreshes `served` every `every`, for as long as it is served.
pub async fn watch(served: Weak<Served>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(served) = served.upgrade() else {
            return;
        };
        if let Err(e) = served.refresh().await {
            tracing::warn!(error = %e, "cannot check the node's files again");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use arrow::array::{AsArray, RecordBatch};
    use arrow::datatypes::Int64Type;
    use futures::TryStreamExt;
    use indicatif::ProgressBar;
    use sunlight_datagen::{CityConfig, generate_city, node_root};
    use sunlight_domain::NodeCode;
    use sunlight_flightsql::Statement;
    use sunlight_policy::{DEFAULT_MIN_GROUP_SIZE, NodePolicy, PersonDirectory};

    use super::*;
    use crate::audit::NodeAudit;
    use crate::catalog::NodeCatalog;
    use crate::config::S3Config;
    use crate::node::Privacy;

    async fn payroll_rows(node: &Node) -> i64 {
        let sql = Statement::new("SELECT count(*) FROM payroll");
        let (_, stream) = node.query(&sql).await.unwrap();
        let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
        batches[0].column(0).as_primitive::<Int64Type>().value(0)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn changed_files_are_served_once_listed_and_a_call_in_flight_keeps_its_own() {
        let city = tempfile::tempdir().unwrap();
        let config = CityConfig {
            persons_per_county: 50,
            seed: 3,
        };
        generate_city(city.path(), &config, &ProgressBar::hidden()).unwrap();
        let code: NodeCode = "140222".parse().unwrap();
        let folder = node_root(city.path(), code);
        let root = DataRoot::open(folder.to_str().unwrap(), &S3Config::default()).unwrap();
        let privacy = Privacy {
            policy: NodePolicy {
                min_group_size: DEFAULT_MIN_GROUP_SIZE,
                persons: Arc::new(PersonDirectory::new(None)),
            },
            city_users: BTreeSet::new(),
            local_analysts_only: false,
        };
        let catalog = NodeCatalog::load(&root, Some(1), None).await.unwrap();
        let node = Node::new(code, catalog, privacy, NodeAudit::open(None).unwrap()).unwrap();
        let served = Served::new(node, root);
        assert!(!served.refresh().await.unwrap());

        let before = served.node();
        let rows = payroll_rows(&before).await;
        let payroll = folder.join("payroll");
        std::fs::copy(
            payroll.join("part-0.parquet"),
            payroll.join("part-1.parquet"),
        )
        .unwrap();
        assert!(served.refresh().await.unwrap());
        assert!(!served.refresh().await.unwrap());
        assert_eq!(payroll_rows(&served.node()).await, 2 * rows);
        // A call that took the node before ends on the files it started with.
        assert_eq!(payroll_rows(&before).await, rows);

        std::fs::remove_file(payroll.join("part-1.parquet")).unwrap();
        assert!(served.refresh().await.unwrap());
        assert_eq!(payroll_rows(&served.node()).await, rows);
    }
}
