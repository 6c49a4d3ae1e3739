//! Raft log, vote and snapshots in one redb file per replica; the state machine in memory,
//! rebuilt at start from the last snapshot and the committed log.

// openraft's storage traits fix the error type; boxing it here would only add copies.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::state::MetaState;
use crate::types::{LogId, Outcome, ReplicaId, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_keys");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";
/// The snapshot's meta, as JSON; its data, the state's JSON, is stored as it is under
/// [`SNAPSHOT_DATA`], in the same transaction.
const SNAPSHOT_META: &str = "snapshot_meta";
const SNAPSHOT_DATA: &str = "snapshot_data";
/// Where earlier versions kept a snapshot: meta and data in one JSON value, the data as an
/// array of numbers. Read when the replica has written no snapshot since.
const LEGACY_SNAPSHOT: &str = "snapshot";
const REPLICA: &str = "replica_id";

type StorageResult<T> = std::result::Result<T, StorageError<ReplicaId>>;

fn read_error(e: impl std::error::Error + 'static) -> StorageError<ReplicaId> {
    StorageIOError::read(&e).into()
}

fn write_error(e: impl std::error::Error + 'static) -> StorageError<ReplicaId> {
    StorageIOError::write(&e).into()
}

/// The open file; `closed` is dropped after `db`, telling watchers the lock is released.
#[derive(Debug)]
struct StoreFile {
    db: Database,
    _closed: tokio::sync::watch::Sender<()>,
}

impl std::ops::Deref for StoreFile {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.db
    }
}

/// The replica's redb file, shared by its log store and its state machine.
#[derive(Debug, Clone)]
pub struct MetaStore {
    db: Arc<StoreFile>,
    path: PathBuf,
    durability: Durability,
}

impl MetaStore {
    /// Opens (or creates) `dir/meta.redb` for replica `id`. A file written by another
    /// replica, or one redb cannot read, is refused with the path and what to do.
    pub fn open(
        dir: &Path,
        id: ReplicaId,
        fsync: bool,
    ) -> Result<(Self, tokio::sync::watch::Receiver<()>)> {
        std::fs::create_dir_all(dir).map_err(|source| Error::DataDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("meta.redb");
        let corrupt = |reason: String| Error::Corrupt {
            path: path.clone(),
            reason,
        };
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::InUse { path: path.clone() },
            other => corrupt(other.to_string()),
        })?;
        let (closed, watch) = tokio::sync::watch::channel(());
        let store = Self {
            db: Arc::new(StoreFile {
                db,
                _closed: closed,
            }),
            path: path.clone(),
            durability: if fsync {
                Durability::Immediate
            } else {
                Durability::None
            },
        };
        match store
            .get::<ReplicaId>(REPLICA)
            .map_err(|e| corrupt(e.to_string()))?
        {
            Some(found) if found != id => {
                return Err(corrupt(format!(
                    "it belongs to replica {found}, not replica {id}"
                )));
            }
            Some(_) => {}
            None => store
                .put(REPLICA, &id)
                .map_err(|e| corrupt(e.to_string()))?,
        }
        // Every stored entry must decode, or the replica would fail later mid-election.
        store
            .entries(0..)
            .map_err(|e| corrupt(format!("its raft log does not decode: {e}")))?;
        Ok((store, watch))
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> StorageResult<Option<T>> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = match txn.open_table(KEYS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(read_error(e)),
        };
        let Some(value) = table.get(key).map_err(read_error)? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(read_error)
    }

    fn put<T: Serialize>(&self, key: &str, value: &T) -> StorageResult<()> {
        self.put_with(key, value, self.durability)
    }

    fn put_with<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        durability: Durability,
    ) -> StorageResult<()> {
        let bytes = serde_json::to_vec(value).map_err(write_error)?;
        let mut txn = self.db.begin_write().map_err(write_error)?;
        txn.set_durability(durability);
        txn.open_table(KEYS)
            .map_err(write_error)?
            .insert(key, bytes.as_slice())
            .map_err(write_error)?;
        txn.commit().map_err(write_error)
    }

    /// Stores a snapshot, its data as it is, in place of the last one.
    fn put_snapshot(
        &self,
        meta: &SnapshotMeta<ReplicaId, BasicNode>,
        data: &[u8],
    ) -> StorageResult<()> {
        let meta = serde_json::to_vec(meta).map_err(write_error)?;
        let mut txn = self.db.begin_write().map_err(write_error)?;
        txn.set_durability(self.durability);
        {
            let mut table = txn.open_table(KEYS).map_err(write_error)?;
            table
                .insert(SNAPSHOT_META, meta.as_slice())
                .map_err(write_error)?;
            table.insert(SNAPSHOT_DATA, data).map_err(write_error)?;
            table.remove(LEGACY_SNAPSHOT).map_err(write_error)?;
        }
        txn.commit().map_err(write_error)
    }

    /// The last stored snapshot, if any: its meta and data read in one transaction.
    fn snapshot(&self) -> StorageResult<Option<StoredSnapshot>> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = match txn.open_table(KEYS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(read_error(e)),
        };
        let value = |key| -> StorageResult<Option<Vec<u8>>> {
            Ok(table
                .get(key)
                .map_err(read_error)?
                .map(|v| v.value().to_vec()))
        };
        match (value(SNAPSHOT_META)?, value(SNAPSHOT_DATA)?) {
            (Some(meta), Some(data)) => Ok(Some(StoredSnapshot {
                meta: serde_json::from_slice(&meta).map_err(read_error)?,
                data,
            })),
            (Some(_), None) => Err(read_error(std::io::Error::other(
                "a snapshot's meta without its data",
            ))),
            _ => value(LEGACY_SNAPSHOT)?
                .map(|legacy| serde_json::from_slice(&legacy).map_err(read_error))
                .transpose(),
        }
    }

    fn entries(&self, range: impl RangeBounds<u64>) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = match txn.open_table(LOG) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(read_error(e)),
        };
        table
            .range(range)
            .map_err(read_error)?
            .map(|item| {
                let (_, value) = item.map_err(read_error)?;
                serde_json::from_slice(value.value()).map_err(read_error)
            })
            .collect()
    }

    /// Deletes log entries in `range` in one transaction.
    fn delete(&self, range: impl RangeBounds<u64>, purged: Option<LogId>) -> StorageResult<()> {
        let mut txn = self.db.begin_write().map_err(write_error)?;
        txn.set_durability(self.durability);
        {
            let mut table = txn.open_table(LOG).map_err(write_error)?;
            table.retain_in(range, |_, _| false).map_err(write_error)?;
            if let Some(purged) = purged {
                let bytes = serde_json::to_vec(&purged).map_err(write_error)?;
                txn.open_table(KEYS)
                    .map_err(write_error)?
                    .insert(PURGED, bytes.as_slice())
                    .map_err(write_error)?;
            }
        }
        txn.commit().map_err(write_error)
    }
}

impl RaftLogReader<TypeConfig> for MetaStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        self.entries(range)
    }
}

impl RaftLogStorage<TypeConfig> for MetaStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id = self.get::<LogId>(PURGED)?;
        let txn = self.db.begin_read().map_err(read_error)?;
        let last = match txn.open_table(LOG) {
            Ok(table) => match table.last().map_err(read_error)? {
                Some((_, value)) => {
                    let entry: Entry<TypeConfig> =
                        serde_json::from_slice(value.value()).map_err(read_error)?;
                    Some(entry.log_id)
                }
                None => None,
            },
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(read_error(e)),
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<ReplicaId>) -> StorageResult<()> {
        self.put(VOTE, vote)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<ReplicaId>>> {
        self.get(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> StorageResult<()> {
        // Not synced on its own: the next append's sync writes it too. After a crash
        // the state machine may then re-apply up to an older committed id, and the
        // leader's next commit brings it level; the log itself is always synced.
        self.put_with(COMMITTED, &committed, Durability::None)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId>> {
        Ok(self.get::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut txn = self.db.begin_write().map_err(write_error)?;
        txn.set_durability(self.durability);
        {
            let mut table = txn.open_table(LOG).map_err(write_error)?;
            for entry in entries {
                let bytes = serde_json::to_vec(&entry).map_err(write_error)?;
                table
                    .insert(entry.log_id.index, bytes.as_slice())
                    .map_err(write_error)?;
            }
        }
        let result = txn.commit().map_err(std::io::Error::other);
        let failed = result
            .as_ref()
            .err()
            .map(|e| write_error(std::io::Error::other(e.to_string())));
        callback.log_io_completed(result);
        failed.map_or(Ok(()), Err)
    }

    async fn truncate(&mut self, log_id: LogId) -> StorageResult<()> {
        self.delete(log_id.index.., None)
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        self.delete(..=log_id.index, Some(log_id))
    }
}

/// What the state machine has applied.
#[derive(Debug, Default)]
pub struct Applied {
    /// The last applied log id.
    pub last: Option<LogId>,
    /// The membership as of `last`.
    pub membership: StoredMembership<ReplicaId, BasicNode>,
    /// The metadata.
    pub state: MetaState,
}

/// A stored snapshot: its meta and the serialized [`MetaState`].
#[derive(serde::Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<ReplicaId, BasicNode>,
    data: Vec<u8>,
}

/// The in-memory state machine; readers share [`MetaStateMachine::applied`].
#[derive(Debug, Clone)]
pub struct MetaStateMachine {
    applied: Arc<RwLock<Applied>>,
    store: MetaStore,
}

impl MetaStateMachine {
    /// Loads the last stored snapshot; the log after it is re-applied by raft at start.
    pub fn open(store: MetaStore) -> Result<Self> {
        let corrupt = |reason: String| Error::Corrupt {
            path: store.path.clone(),
            reason,
        };
        let mut applied = Applied::default();
        if let Some(snapshot) = store.snapshot().map_err(|e| corrupt(e.to_string()))? {
            applied.state = serde_json::from_slice(&snapshot.data)
                .map_err(|e| corrupt(format!("its snapshot does not decode: {e}")))?;
            applied.last = snapshot.meta.last_log_id;
            applied.membership = snapshot.meta.last_membership;
        }
        Ok(Self {
            applied: Arc::new(RwLock::new(applied)),
            store,
        })
    }

    /// The applied state, shared with readers.
    pub fn applied(&self) -> Arc<RwLock<Applied>> {
        self.applied.clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MetaStateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (meta, data) = {
            let applied = self.applied.read().expect("state lock");
            let data = serde_json::to_vec(&applied.state).map_err(write_error)?;
            let last = applied.last;
            let id = last.map_or_else(
                || "empty".to_string(),
                |l| format!("{}-{}", l.leader_id, l.index),
            );
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: applied.membership.clone(),
                snapshot_id: id,
            };
            (meta, data)
        };
        self.store.put_snapshot(&meta, &data)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MetaStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId>, StoredMembership<ReplicaId, BasicNode>)> {
        let applied = self.applied.read().expect("state lock");
        Ok((applied.last, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.applied.write().expect("state lock");
        let mut outcomes = Vec::new();
        for entry in entries {
            applied.last = Some(entry.log_id);
            outcomes.push(match entry.payload {
                EntryPayload::Blank => Outcome::Internal,
                EntryPayload::Normal(proposal) => applied.state.apply(&proposal),
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Outcome::Internal
                }
            });
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Vec<u8>>> {
        Ok(Box::default())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<ReplicaId, BasicNode>,
        snapshot: Box<Vec<u8>>,
    ) -> StorageResult<()> {
        let state: MetaState = serde_json::from_slice(&snapshot).map_err(read_error)?;
        self.store.put_snapshot(meta, &snapshot)?;
        let mut applied = self.applied.write().expect("state lock");
        applied.state = state;
        applied.last = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self.store.snapshot()?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(s.data),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Actor, Command, Proposal};

    /// The store in `dir` and a state machine over it.
    fn opened(dir: &Path) -> (MetaStore, MetaStateMachine) {
        let (store, _) = MetaStore::open(dir, 1, false).unwrap();
        (store.clone(), MetaStateMachine::open(store).unwrap())
    }

    /// A state machine over a new store in `dir` with `records` audit records applied,
    /// the snapshot it built and the state it holds.
    async fn snapshotted(
        dir: &Path,
        records: usize,
    ) -> (MetaStateMachine, Snapshot<TypeConfig>, MetaState) {
        let (_, mut machine) = opened(dir);
        {
            let mut applied = machine.applied.write().unwrap();
            for i in 0..records {
                applied.state.apply(&Proposal {
                    actor: Actor {
                        user: "ana".into(),
                        role: None,
                    },
                    at_ms: 1_700_000_000_000,
                    command: Command::Audit {
                        subject: None,
                        action: "query".into(),
                        detail: format!("SELECT count(*) FROM disbursements -- {i}"),
                        decision: "allowed".into(),
                    },
                });
            }
            applied.last = Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 9));
        }
        let snapshot = machine.build_snapshot().await.unwrap();
        let state = machine.applied.read().unwrap().state.clone();
        (machine, snapshot, state)
    }

    #[tokio::test]
    async fn a_snapshot_is_stored_as_serialized_and_loaded_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let (built, snapshot, state) = snapshotted(dir.path(), 3).await;
        assert_eq!(
            serde_json::from_slice::<MetaState>(&snapshot.snapshot).unwrap(),
            state
        );
        let stored = built.store.snapshot().unwrap().unwrap();
        assert_eq!(stored.data, *snapshot.snapshot, "stored byte for byte");
        drop(built);

        let (_, reopened) = opened(dir.path());
        let applied = reopened.applied.read().unwrap();
        assert_eq!(applied.state, state);
        assert_eq!(applied.last.map(|l| l.index), Some(9));
    }

    #[tokio::test]
    async fn a_snapshot_of_an_earlier_version_is_loaded_and_then_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (built, snapshot, state) = snapshotted(dir.path(), 2).await;
        // As earlier versions stored it: one JSON value, the data as numbers.
        let legacy = serde_json::json!({"meta": snapshot.meta, "data": *snapshot.snapshot});
        let store = built.store.clone();
        let mut txn = store.db.begin_write().unwrap();
        {
            let mut table = txn.open_table(KEYS).unwrap();
            table.remove(SNAPSHOT_META).unwrap();
            table.remove(SNAPSHOT_DATA).unwrap();
        }
        txn.set_durability(Durability::Immediate);
        txn.commit().unwrap();
        store.put(LEGACY_SNAPSHOT, &legacy).unwrap();
        drop((built, store));

        let (store, mut reopened) = opened(dir.path());
        assert_eq!(reopened.applied.read().unwrap().state, state);
        reopened.build_snapshot().await.unwrap();
        assert!(
            store
                .get::<serde_json::Value>(LEGACY_SNAPSHOT)
                .unwrap()
                .is_none()
        );
        assert_eq!(store.snapshot().unwrap().unwrap().data, *snapshot.snapshot);
    }
}
