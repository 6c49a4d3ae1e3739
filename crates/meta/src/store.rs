//! Raft log, vote, snapshots and the audit log's records in one redb file per replica; the
//! rest of the state machine in memory, rebuilt at start from the last snapshot and the
//! committed log.

// openraft's storage traits fix the error type; boxing it here would only add copies.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{RangeBounds, RangeInclusive};
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
use crate::state::{AuditHead, ChainCheck, MetaState};
use crate::types::{AuditRecord, LogId, Outcome, ReplicaId, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_keys");
/// The audit log's records as JSON, by their number. The state machine writes them a batch
/// at a time as it applies the entries that add them, so the log, which grows with every
/// query, is neither held in memory nor copied into every snapshot.
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_log");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";
/// The snapshot's meta, as JSON, and its state, as JSON without the audit log's records:
/// those are the first `audit.len` records of [`AUDIT`]. Both are written in one
/// transaction.
const SNAPSHOT_META: &str = "snapshot_meta";
const SNAPSHOT_STATE: &str = "snapshot_state";
/// Where earlier versions kept a snapshot's data: the state's JSON with every audit record
/// in it. Moved to [`SNAPSHOT_STATE`] and [`AUDIT`] when the replica opens.
const EARLIER_SNAPSHOT_DATA: &str = "snapshot_data";
/// Where the first versions kept a snapshot: meta and data in one JSON value, the data as
/// an array of numbers. Moved like [`EARLIER_SNAPSHOT_DATA`].
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

    /// A write of a snapshot's meta and state in place of the last one, to commit.
    fn snapshot_txn(
        &self,
        meta: &SnapshotMeta<ReplicaId, BasicNode>,
        state: &[u8],
    ) -> StorageResult<redb::WriteTransaction> {
        let meta = serde_json::to_vec(meta).map_err(write_error)?;
        let mut txn = self.db.begin_write().map_err(write_error)?;
        txn.set_durability(self.durability);
        {
            let mut table = txn.open_table(KEYS).map_err(write_error)?;
            table
                .insert(SNAPSHOT_META, meta.as_slice())
                .map_err(write_error)?;
            table.insert(SNAPSHOT_STATE, state).map_err(write_error)?;
            table.remove(EARLIER_SNAPSHOT_DATA).map_err(write_error)?;
            table.remove(LEGACY_SNAPSHOT).map_err(write_error)?;
        }
        Ok(txn)
    }

    /// Stores a snapshot's meta and state in place of the last one; its audit records are
    /// the first ones of the store.
    fn put_snapshot(
        &self,
        meta: &SnapshotMeta<ReplicaId, BasicNode>,
        state: &[u8],
    ) -> StorageResult<()> {
        self.snapshot_txn(meta, state)?
            .commit()
            .map_err(write_error)
    }

    /// Stores the snapshot of `lines` (see [`SnapshotData`]) in place of the last one, its
    /// audit records in place of the store's, and returns its state. Refused, and nothing
    /// stored, unless the records are the whole, unaltered chain the state names.
    fn put_snapshot_lines(
        &self,
        meta: &SnapshotMeta<ReplicaId, BasicNode>,
        mut lines: impl Iterator<Item = StorageResult<Vec<u8>>>,
    ) -> StorageResult<MetaState> {
        let invalid = |reason: String| read_error(std::io::Error::other(reason));
        let broken = |e: String| invalid(format!("a snapshot's audit log is broken: {e}"));
        let first = lines
            .next()
            .unwrap_or_else(|| Err(invalid("a snapshot without its state".into())))?;
        let mut state: serde_json::Value = serde_json::from_slice(&first).map_err(read_error)?;
        let earlier: Option<Vec<AuditRecord>> = state
            .as_object_mut()
            .and_then(|s| s.remove("audit"))
            .map(serde_json::from_value)
            .transpose()
            .map_err(read_error)?;
        let mut state: MetaState = serde_json::from_value(state).map_err(read_error)?;
        if let Some(records) = &earlier {
            state.audit = AuditHead::of(records).map_err(broken)?;
        }
        let json = serde_json::to_vec(&state).map_err(write_error)?;
        let txn = self.snapshot_txn(meta, &json)?;
        txn.delete_table(AUDIT).map_err(write_error)?;
        let mut check = ChainCheck::default();
        {
            let mut table = txn.open_table(AUDIT).map_err(write_error)?;
            let mut put = |record: AuditRecord| {
                check.take(&record).map_err(broken)?;
                insert_record(&mut table, &record)
            };
            match earlier {
                Some(records) => records.into_iter().try_for_each(&mut put)?,
                None => {
                    for line in lines {
                        let line = line?;
                        if !line.is_empty() {
                            put(serde_json::from_slice(&line).map_err(read_error)?)?;
                        }
                    }
                }
            }
        }
        let head = check.head();
        if head.len != state.audit.len {
            return Err(invalid(format!(
                "a snapshot's audit log holds {} records, its state names {}",
                head.len, state.audit.len
            )));
        }
        if head != state.audit {
            return Err(invalid(
                "a snapshot's audit log ends in another record than its state names".into(),
            ));
        }
        txn.commit().map_err(write_error)?;
        Ok(state)
    }

    /// A file of its own beside the store, deleted once closed, to receive a snapshot in.
    pub(crate) fn spool(&self) -> std::io::Result<std::fs::File> {
        tempfile::tempfile_in(self.path.parent().unwrap_or(Path::new(".")))
    }

    /// Adds audit records, or writes them again as they were when the log is re-applied
    /// after a restart. Not synced on its own: the log entries they come from are, and
    /// a snapshot, which covers them, is stored synced after them.
    fn put_records(&self, records: &[AuditRecord]) -> StorageResult<()> {
        let mut txn = self.db.begin_write().map_err(write_error)?;
        txn.set_durability(Durability::None);
        {
            let mut table = txn.open_table(AUDIT).map_err(write_error)?;
            for record in records {
                insert_record(&mut table, record)?;
            }
        }
        txn.commit().map_err(write_error)
    }

    /// The stored JSON of the audit records numbered in `seqs`, read as they are taken.
    pub(crate) fn audit_json(&self, seqs: RangeInclusive<u64>) -> StorageResult<AuditJson> {
        let txn = self.db.begin_read().map_err(read_error)?;
        match txn.open_table(AUDIT) {
            Ok(_) if seqs.is_empty() => Ok(AuditJson(None)),
            Ok(table) => Ok(AuditJson(Some(table.range(seqs).map_err(read_error)?))),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(AuditJson(None)),
            Err(e) => Err(read_error(e)),
        }
    }

    /// The error of an audit log that cannot be read.
    pub(crate) fn unreadable_audit(&self, e: StorageError<ReplicaId>) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            reason: format!("its audit log does not read: {e}"),
        }
    }

    /// Bytes of the store's file: more than its audit records take, read without them.
    fn file_bytes(&self) -> StorageResult<u64> {
        Ok(std::fs::metadata(&self.path).map_err(read_error)?.len())
    }

    /// The last stored snapshot, if any: its meta and state read in one transaction. One
    /// stored by an earlier version, with the audit records inside, is moved to where
    /// this one keeps them first.
    fn snapshot(&self) -> StorageResult<Option<StoredSnapshot>> {
        let (meta, state, earlier) = {
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
            let meta = |bytes: Vec<u8>| serde_json::from_slice(&bytes).map_err(read_error);
            match (value(SNAPSHOT_META)?, value(SNAPSHOT_STATE)?) {
                (Some(bytes), Some(state)) => (meta(bytes)?, state, false),
                (Some(bytes), None) => match value(EARLIER_SNAPSHOT_DATA)? {
                    Some(data) => (meta(bytes)?, data, true),
                    None => {
                        return Err(read_error(std::io::Error::other(
                            "a snapshot's meta without its state",
                        )));
                    }
                },
                _ => match value(LEGACY_SNAPSHOT)? {
                    Some(bytes) => {
                        let legacy: LegacySnapshot =
                            serde_json::from_slice(&bytes).map_err(read_error)?;
                        (legacy.meta, legacy.data, true)
                    }
                    None => return Ok(None),
                },
            }
        };
        if !earlier {
            let state = serde_json::from_slice(&state).map_err(read_error)?;
            return Ok(Some(StoredSnapshot { meta, state }));
        }
        let state = self.put_snapshot_lines(&meta, std::iter::once(Ok(state)))?;
        Ok(Some(StoredSnapshot { meta, state }))
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

/// Audit records applied but not stored yet, at the most: they are stored a batch at a
/// time, not each in a write of its own, which would wait for the raft log's writes.
const UNSTORED_RECORDS: usize = 256;
/// Bytes of statements in the audit records not stored yet, at the most.
const UNSTORED_BYTES: usize = 4 << 20;

/// What the state machine has applied.
#[derive(Debug, Default)]
pub struct Applied {
    /// The last applied log id.
    pub last: Option<LogId>,
    /// The membership as of `last`.
    pub membership: StoredMembership<ReplicaId, BasicNode>,
    /// The metadata.
    pub state: MetaState,
    /// The last audit records applied, oldest first, if they are not stored yet. After a
    /// restart the log that holds their entries is applied again.
    unstored: Vec<AuditRecord>,
}

impl Applied {
    /// The JSON of the audit records numbered in `seqs`, up to the state's head, read
    /// from `store` or, for the last ones, from those not stored yet.
    pub(crate) fn audit_json(
        &self,
        store: &MetaStore,
        seqs: RangeInclusive<u64>,
    ) -> StorageResult<impl Iterator<Item = StorageResult<Vec<u8>>>> {
        let (start, end) = (*seqs.start(), (*seqs.end()).min(self.state.audit.len));
        let stored = self.state.audit.len - self.unstored.len() as u64;
        let unstored = self
            .unstored
            .iter()
            .filter(move |r| (start..=end).contains(&r.seq))
            .map(|r| serde_json::to_vec(r).map_err(read_error));
        Ok(store.audit_json(start..=end.min(stored))?.chain(unstored))
    }

    /// Every audit record, oldest first.
    pub(crate) fn audit_records(&self, store: &MetaStore) -> Result<Vec<AuditRecord>> {
        self.audit_json(store, 1..=self.state.audit.len)
            .and_then(|records| {
                records
                    .map(|json| serde_json::from_slice(&json?).map_err(read_error))
                    .collect()
            })
            .map_err(|e| store.unreadable_audit(e))
    }

    /// Stores the audit records not stored yet.
    fn store_records(&mut self, store: &MetaStore) -> StorageResult<()> {
        if !self.unstored.is_empty() {
            store.put_records(&self.unstored)?;
            self.unstored.clear();
        }
        Ok(())
    }
}

/// A stored snapshot: its meta and state; the state's audit records are in [`AUDIT`].
struct StoredSnapshot {
    meta: SnapshotMeta<ReplicaId, BasicNode>,
    state: MetaState,
}

/// A snapshot as the first versions stored it.
#[derive(serde::Deserialize)]
struct LegacySnapshot {
    meta: SnapshotMeta<ReplicaId, BasicNode>,
    data: Vec<u8>,
}

fn insert_record(table: &mut redb::Table<u64, &[u8]>, record: &AuditRecord) -> StorageResult<()> {
    let json = serde_json::to_vec(record).map_err(write_error)?;
    table
        .insert(record.seq, json.as_slice())
        .map_err(write_error)?;
    Ok(())
}

/// The stored JSON of audit records, read as they are taken.
pub(crate) struct AuditJson(Option<redb::Range<'static, u64, &'static [u8]>>);

impl Iterator for AuditJson {
    type Item = StorageResult<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.0.as_mut()?.next()?;
        Some(
            item.map(|(_, json)| json.value().to_vec())
                .map_err(read_error),
        )
    }
}

/// A snapshot's lines, read as they are taken: its state's JSON, then an audit record's
/// each (see [`SnapshotData`]).
pub(crate) enum Lines {
    /// Of a stored snapshot.
    Stored(Box<std::iter::Chain<std::iter::Once<StorageResult<Vec<u8>>>, AuditJson>>),
    /// Of a received snapshot's file.
    Received(std::io::Split<std::io::BufReader<std::fs::File>>),
}

impl Iterator for Lines {
    type Item = StorageResult<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Stored(lines) => lines.next(),
            Self::Received(lines) => lines.next().map(|line| line.map_err(read_error)),
        }
    }
}

/// The pieces a snapshot is sent in, of `piece` bytes (or of one record, if larger), made
/// as they are taken: the snapshot is not copied whole. One piece at the least.
pub(crate) struct Pieces {
    lines: Lines,
    piece: usize,
    first: bool,
}

impl Iterator for Pieces {
    type Item = StorageResult<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut buffer = Vec::new();
        for line in self.lines.by_ref() {
            match line {
                Ok(line) => buffer.extend(line),
                Err(e) => return Some(Err(e)),
            }
            buffer.push(b'\n');
            if buffer.len() >= self.piece {
                break;
            }
        }
        let first = std::mem::take(&mut self.first);
        (first || !buffer.is_empty()).then_some(Ok(buffer))
    }
}

/// A snapshot as it crosses between replicas: the state's JSON on the first line, then the
/// audit log's records, a JSON document a line. A snapshot of an earlier version, the
/// state's JSON with the records inside, is read too.
#[derive(Debug)]
pub enum SnapshotData {
    /// The snapshot this replica stores: its state's JSON, and the first `records` audit
    /// records of the store, read as the snapshot is sent.
    Stored {
        /// The state's JSON.
        state: Vec<u8>,
        /// How many audit records it holds.
        records: u64,
        /// Where they are.
        store: MetaStore,
    },
    /// A snapshot as a peer sent it, in a file of its own from its start.
    Received(std::fs::File),
}

impl SnapshotData {
    /// Its size in bytes, or more: enough to bound how long sending it may take.
    pub(crate) fn size(&self) -> StorageResult<u64> {
        match self {
            Self::Stored {
                state,
                records,
                store,
            } => Ok(state.len() as u64 + 1 + records + store.file_bytes()?),
            Self::Received(file) => Ok(file.metadata().map_err(read_error)?.len()),
        }
    }

    /// Its lines.
    fn lines(self) -> StorageResult<Lines> {
        Ok(match self {
            Self::Stored {
                state,
                records,
                store,
            } => Lines::Stored(Box::new(
                std::iter::once(Ok(state)).chain(store.audit_json(1..=records)?),
            )),
            Self::Received(file) => Lines::Received(std::io::BufRead::split(
                std::io::BufReader::new(file),
                b'\n',
            )),
        })
    }

    /// Its bytes, in pieces of `piece` bytes.
    pub(crate) fn pieces(self, piece: usize) -> StorageResult<Pieces> {
        Ok(Pieces {
            lines: self.lines()?,
            piece,
            first: true,
        })
    }
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
        let snapshot = store
            .snapshot()
            .map_err(|e| corrupt(format!("its snapshot does not load: {e}")))?;
        if let Some(snapshot) = snapshot {
            let head = &snapshot.state.audit;
            let last = store
                .audit_json(head.len..=head.len)
                .and_then(|mut last| last.next().transpose())
                .map_err(|e| corrupt(e.to_string()))?
                .map(|json| serde_json::from_slice::<AuditRecord>(&json));
            match last {
                _ if head.len == 0 => {}
                Some(Ok(record)) if record.sha256 == head.last_sha256 => {}
                _ => {
                    return Err(corrupt(format!(
                        "its audit log lacks record {} of its snapshot, or holds another",
                        head.len
                    )));
                }
            }
            applied.state = snapshot.state;
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
        let (meta, state, records) = {
            let mut applied = self.applied.write().expect("state lock");
            applied.store_records(&self.store)?;
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
            let state = serde_json::to_vec(&applied.state).map_err(write_error)?;
            (meta, state, applied.state.audit.len)
        };
        self.store.put_snapshot(&meta, &state)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotData::Stored {
                state,
                records,
                store: self.store.clone(),
            }),
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
                EntryPayload::Normal(proposal) => {
                    let (outcome, record) = applied.state.apply(&proposal);
                    applied.unstored.push(record);
                    outcome
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Outcome::Internal
                }
            });
        }
        let statements: usize = applied.unstored.iter().map(|r| r.detail.len()).sum();
        if applied.unstored.len() >= UNSTORED_RECORDS || statements >= UNSTORED_BYTES {
            applied.store_records(&self.store)?;
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<SnapshotData>> {
        let file = self.store.spool().map_err(write_error)?;
        Ok(Box::new(SnapshotData::Received(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<ReplicaId, BasicNode>,
        snapshot: Box<SnapshotData>,
    ) -> StorageResult<()> {
        // Stored before the state is swapped in: the records the state names now are the
        // first of the snapshot's, the same committed history.
        let state = self.store.put_snapshot_lines(meta, snapshot.lines()?)?;
        let mut applied = self.applied.write().expect("state lock");
        applied.unstored.clear();
        applied.state = state;
        applied.last = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let Some(stored) = self.store.snapshot()? else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(SnapshotData::Stored {
                state: serde_json::to_vec(&stored.state).map_err(write_error)?,
                records: stored.state.audit.len,
                store: self.store.clone(),
            }),
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

    /// Log entries `indexes`, each proposing an audit record.
    fn audit_entries(indexes: RangeInclusive<u64>) -> Vec<Entry<TypeConfig>> {
        indexes
            .map(|i| Entry {
                log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), i),
                payload: EntryPayload::Normal(Proposal {
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
                }),
            })
            .collect()
    }

    /// The audit records `machine` has applied.
    fn records(machine: &MetaStateMachine) -> Vec<AuditRecord> {
        let applied = machine.applied.read().unwrap();
        applied.audit_records(&machine.store).unwrap()
    }

    fn state(machine: &MetaStateMachine) -> MetaState {
        machine.applied.read().unwrap().state.clone()
    }

    /// A state machine over a new store in `dir` with `records` audit records applied,
    /// and the snapshot it built.
    async fn snapshotted(dir: &Path, records: u64) -> (MetaStateMachine, Snapshot<TypeConfig>) {
        let (_, mut machine) = opened(dir);
        machine.apply(audit_entries(1..=records)).await.unwrap();
        let snapshot = machine.build_snapshot().await.unwrap();
        (machine, snapshot)
    }

    /// A snapshot received as `bytes`.
    fn received(bytes: &[u8]) -> Box<SnapshotData> {
        use std::io::{Seek, Write};
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file.rewind().unwrap();
        Box::new(SnapshotData::Received(file))
    }

    /// A snapshot's bytes as they are sent, in pieces of `piece` bytes.
    fn sent(snapshot: Snapshot<TypeConfig>, piece: usize) -> Vec<Vec<u8>> {
        snapshot
            .snapshot
            .pieces(piece)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[tokio::test]
    async fn audit_records_are_stored_in_batches_and_a_snapshot_leaves_them_out() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut machine) = opened(dir.path());
        machine.apply(audit_entries(1..=256)).await.unwrap();
        machine.apply(audit_entries(257..=300)).await.unwrap();
        let stored = || store.audit_json(1..=u64::MAX).unwrap().count();
        assert_eq!(stored(), UNSTORED_RECORDS);
        let all = records(&machine);
        assert_eq!(AuditHead::of(&all), Ok(state(&machine).audit));
        let seqs: Vec<u64> = {
            let applied = machine.applied.read().unwrap();
            applied
                .audit_json(&store, 250..=u64::MAX)
                .unwrap()
                .map(|json| {
                    serde_json::from_slice::<AuditRecord>(&json.unwrap())
                        .unwrap()
                        .seq
                })
                .collect()
        };
        assert_eq!(seqs, (250..=300).collect::<Vec<_>>());

        machine.build_snapshot().await.unwrap();
        assert_eq!(stored(), 300);
        let snapshot_state = store.get::<serde_json::Value>(SNAPSHOT_STATE).unwrap();
        assert!(!snapshot_state.unwrap().to_string().contains("SELECT"));
        let state = state(&machine);
        drop((store, machine));

        let (_, reopened) = opened(dir.path());
        assert_eq!(self::state(&reopened), state);
        assert_eq!(reopened.applied.read().unwrap().last.unwrap().index, 300);
        assert_eq!(records(&reopened), all);
    }

    #[tokio::test]
    async fn re_applying_the_log_after_a_restart_writes_the_same_records_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut built, _) = snapshotted(dir.path(), 3).await;
        built.apply(audit_entries(4..=5)).await.unwrap();
        let (before, state) = (records(&built), state(&built));
        drop(built);

        let (_, mut reopened) = opened(dir.path());
        assert_eq!(records(&reopened).len(), 3);
        reopened.apply(audit_entries(4..=5)).await.unwrap();
        assert_eq!(self::state(&reopened), state);
        assert_eq!(records(&reopened), before);
    }

    #[tokio::test]
    async fn a_snapshot_crosses_in_pieces_with_its_audit_records() {
        let dir = tempfile::tempdir().unwrap();
        let (built, snapshot) = snapshotted(&dir.path().join("a"), 300).await;
        let meta = snapshot.meta.clone();
        let size = snapshot.snapshot.size().unwrap();
        let pieces = sent(snapshot, 4096);
        let bytes = pieces.concat();
        assert!(pieces.len() > 10, "{} pieces", pieces.len());
        assert!(pieces.iter().all(|p| p.len() < 4096 + 1024));
        assert!(bytes.len() as u64 <= size, "{} > {size}", bytes.len());

        let (_, mut peer) = opened(&dir.path().join("b"));
        peer.apply(audit_entries(1..=2)).await.unwrap();
        let received = received(&bytes);
        assert_eq!(received.size().unwrap(), bytes.len() as u64);
        assert_eq!(
            sent(
                Snapshot {
                    meta: meta.clone(),
                    snapshot: received
                },
                4096
            ),
            pieces
        );
        peer.install_snapshot(&meta, self::received(&bytes))
            .await
            .unwrap();
        assert_eq!(state(&peer), state(&built));
        assert_eq!(records(&peer), records(&built));
        let current = peer.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, meta);
    }

    #[tokio::test]
    async fn a_snapshot_whose_audit_log_is_broken_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, snapshot) = snapshotted(&dir.path().join("a"), 5).await;
        let meta = snapshot.meta.clone();
        let bytes = sent(snapshot, usize::MAX).concat();
        let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        let altered = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("-- 3", "-- 9");
        for (broken, says) in [
            ([&lines[..3], &lines[4..]].concat().join(&b'\n'), "missing"),
            (
                lines[..5].join(&b'\n'),
                "holds 4 records, its state names 5",
            ),
            (altered.into_bytes(), "record 3 was altered"),
        ] {
            let (_, mut peer) = opened(tempfile::tempdir().unwrap().path());
            peer.apply(audit_entries(1..=2)).await.unwrap();
            let err = peer
                .install_snapshot(&meta, received(&broken))
                .await
                .unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
            assert_eq!(state(&peer).audit.len, 2);
            assert_eq!(records(&peer).len(), 2);
        }
    }

    #[tokio::test]
    async fn snapshots_of_earlier_versions_load_and_move_their_records_to_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (built, snapshot) = snapshotted(dir.path(), 4).await;
        let (state, stored) = (state(&built), records(&built));
        // As earlier versions serialized the state: every record inside, no head.
        let mut earlier = serde_json::to_value(&state).unwrap();
        let fields = earlier.as_object_mut().unwrap();
        fields.remove("audit_head");
        fields.insert("audit".into(), serde_json::to_value(&stored).unwrap());
        let earlier = serde_json::to_vec(&earlier).unwrap();
        let legacy = serde_json::json!({"meta": snapshot.meta, "data": earlier});
        let store = built.store.clone();
        drop((built, snapshot));

        for (key, value) in [
            (EARLIER_SNAPSHOT_DATA, earlier),
            (LEGACY_SNAPSHOT, serde_json::to_vec(&legacy).unwrap()),
        ] {
            let txn = store.db.begin_write().unwrap();
            txn.delete_table(AUDIT).unwrap();
            {
                let mut table = txn.open_table(KEYS).unwrap();
                table.remove(SNAPSHOT_STATE).unwrap();
                if key == LEGACY_SNAPSHOT {
                    table.remove(SNAPSHOT_META).unwrap();
                }
                table.insert(key, value.as_slice()).unwrap();
            }
            txn.commit().unwrap();

            let reopened = MetaStateMachine::open(store.clone()).unwrap();
            assert_eq!(self::state(&reopened), state, "{key}");
            assert_eq!(records(&reopened), stored, "{key}");
            assert!(store.get::<serde_json::Value>(key).unwrap().is_none());
            assert!(
                store
                    .get::<serde_json::Value>(SNAPSHOT_STATE)
                    .unwrap()
                    .is_some()
            );
        }
    }

    #[tokio::test]
    async fn a_store_missing_the_records_of_its_snapshot_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let (built, _) = snapshotted(dir.path(), 3).await;
        let store = built.store.clone();
        drop(built);
        let txn = store.db.begin_write().unwrap();
        txn.open_table(AUDIT).unwrap().remove(3).unwrap();
        txn.commit().unwrap();
        let err = MetaStateMachine::open(store).unwrap_err();
        assert!(err.to_string().contains("lacks record 3"), "{err}");
    }
}
