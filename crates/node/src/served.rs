//! The node's files as it serves them. A node checks its files at start; while it serves,
//! it lists its table folders every few seconds, and when their Parquet files changed (a
//! file imported, replaced or removed), it checks them all again, numbers their persons
//! and serves them from then on. A call in flight ends on the files it started with.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

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
        let tables = describe(reloaded.tables());
        tracing::info!(node = %reloaded.code(), "serving the files as they are now: {tables}");
        reloaded
            .audit()
            .record("node", "files", "", &format!("loaded again: {tables}"));
        *self.node.write().expect("not poisoned") = reloaded;
        Ok(true)
    }
}

/// What the node serves of each table.
fn describe(tables: &[(sunlight_domain::Table, TableState)]) -> String {
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
