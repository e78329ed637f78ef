//! `TaskDb`: the Task Center's storage. ZooKeeper is the truth — one persistent znode per task
//! (`/zbs/taskd/db/<task_id>`, a schema-versioned JSON `TaskRecord`), the running task's owner an
//! ephemeral child, runners registered as ephemeral nodes (see [`layout`]) — and the dispatcher
//! answers client queries from a LevelDB cache that it rebuilds from ZooKeeper at every `open`.
//!
//! # Ownership
//! A `TaskDb` has a single owner: the dispatcher, on its own context ("zbs-task-dispat"). It is
//! neither `Sync` nor `Send` (LevelDB's handle holds `Rc`s), so it is created on that context and
//! never leaves it; other threads reach it by scheduling work there. Its LevelDB calls block the
//! context's thread briefly, which only the dispatcher's own coroutines feel.
//!
//! # Fencing
//! Every write of a task record is conditional on the znode version the writer read
//! ([`TaskDb::update`], [`write_record`]); ZooKeeper's `BadVersion` becomes
//! [`DbError::Fenced`], so a zombie runner or an old leader can never overwrite newer state.
//! The dispatcher's own changes go through [`TaskDb::read_modify_write`], which re-reads from
//! ZooKeeper and retries a bounded number of times. Runners write progress with their own
//! session through [`write_record`]; their ownership is the ephemeral `owner` child
//! ([`claim`], [`release`], [`owner_of`], [`watch_owner`]).
//!
//! # Damaged data
//! A znode that does not decode, names another task, or was written by a newer schema is kept
//! in [`TaskDb::corrupt`] with its path and reason, logged once, and skipped: it never stops the
//! other tasks from loading and nothing here panics on it. It still counts towards the cap.
//!
//! # Limits
//! The cap ([`TaskDbConfig::max_records`], [`layout::MAX_CHILDREN_REPLY_BYTES`]) and the
//! arithmetic behind it are in [`layout`]'s `# Sizes`. The cache is a copy: records written by
//! runners reach it through [`TaskDb::refresh`] (the dispatcher calls it when a watch or a
//! runner report tells it a record changed) or the next `open`.

mod cache;
mod counts;
mod error;
mod filter;
mod keys;
pub mod layout;
mod owner;
mod purge;
mod records;
mod requests;
mod runners;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorum::zk::ZkOp;
use quorum::{ZkError, ZkSession};

use crate::task::{TaskId, TaskRecord, TaskState};
use cache::{Origin, RecordCache};
use layout::{child_reply_bytes, owner_path, request_path, task_path, DB_ROOT, REQUESTS_ROOT, RUNNERS_ROOT};

pub use counts::{CacheWatch, TaskCounts, TaskTally, TaskTransition};
pub use error::{DbError, Result};
pub use filter::ListFilter;
pub use owner::{
    claim, decode_owner_of, is_previous_incarnations, owner_match, owner_of, release, remove_owners_of_session,
    remove_stale_owners, watch_owner, watch_owner_presence, Owner, OwnerInfo, OwnerMatch,
};
pub use purge::{last_activity_ms, PurgeReport};
pub use records::{decode_read, read_record, write_record, CorruptRecord};
pub use requests::{create_task_with_request, read_request, RequestNode, SubmitBody};
pub use runners::{
    is_drained, list_runners, read_runners, register_runner, remove_registration_of_session, set_drained,
    unregister_runner, update_runner, watch_runners, RegisteredRunner, RunnerInfo, RunnerList, MAX_RUNNER_BYTES,
};

/// A task record with the znode version it was read or written at (for the next fenced write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub record: TaskRecord,
    pub version: i32,
}

/// How the task database is set up.
#[derive(Debug, Clone)]
pub struct TaskDbConfig {
    /// The LevelDB cache's directory. Whatever is there is deleted at `open`.
    pub cache_dir: PathBuf,
    /// The most task records (finished ones included) before `create` answers `Full`.
    pub max_records: usize,
    /// Reads in flight per round trip while rebuilding.
    pub read_batch: usize,
    /// How often `read_modify_write` tries before `Conflict`.
    pub max_write_attempts: u32,
    /// Deletes per multi-op when purging.
    pub purge_batch: usize,
    /// Told of the cache's counts and transitions (the leader's task metrics).
    pub watch: CacheWatch,
}

impl TaskDbConfig {
    /// The defaults with the cache at `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> TaskDbConfig {
        TaskDbConfig {
            cache_dir: cache_dir.into(),
            max_records: layout::DEFAULT_MAX_RECORDS,
            read_batch: layout::DEFAULT_READ_BATCH,
            max_write_attempts: 5,
            purge_batch: 100,
            watch: CacheWatch::default(),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |message: &str| Err(DbError::BadConfig(message.to_string()));
        if self.max_records == 0 {
            return bad("max_records must be at least 1");
        }
        if self.read_batch == 0 || self.purge_batch == 0 {
            return bad("read_batch and purge_batch must be at least 1");
        }
        if self.max_write_attempts == 0 {
            return bad("max_write_attempts must be at least 1");
        }
        if self.cache_dir.as_os_str().is_empty() || self.cache_dir.parent().is_none() {
            return bad("cache_dir must name a directory below the root (it is deleted at open)");
        }
        Ok(())
    }
}

/// What a rebuild found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Records now in the cache.
    pub n_loaded: usize,
    /// Children that could not be loaded (see `TaskDb::corrupt`).
    pub n_corrupt: usize,
    /// Children deleted between the listing and the read.
    pub n_vanished: usize,
    pub elapsed: Duration,
}

/// The dispatcher's task database (see the module's `# Ownership`).
pub struct TaskDb {
    session: Arc<ZkSession>,
    config: TaskDbConfig,
    cache: RecordCache,
    /// Children of `DB_ROOT` that could not be loaded, by path (logged when first seen).
    corrupt: Vec<CorruptRecord>,
    /// Children of `DB_ROOT`, corrupt ones included: what the cap counts.
    n_children: usize,
    /// What a `getChildren` of `DB_ROOT` returns now, in bytes (see `layout`).
    reply_bytes: usize,
    last_rebuild: RebuildReport,
}

impl TaskDb {
    /// Creates the ZooKeeper directories if needed, deletes the old cache, and rebuilds it from
    /// ZooKeeper.
    pub fn open(session: Arc<ZkSession>, config: TaskDbConfig) -> Result<TaskDb> {
        config.validate()?;
        session.ensure_path(DB_ROOT).map_err(DbError::zk("create the task directory"))?;
        session.ensure_path(RUNNERS_ROOT).map_err(DbError::zk("create the runners directory"))?;
        session.ensure_path(REQUESTS_ROOT).map_err(DbError::zk("create the requests directory"))?;
        let cache = RecordCache::create_empty(&config.cache_dir, config.watch.clone())?;
        let mut db = TaskDb {
            session,
            config,
            cache,
            corrupt: Vec::new(),
            n_children: 0,
            reply_bytes: 0,
            last_rebuild: RebuildReport::default(),
        };
        db.rebuild()?;
        Ok(db)
    }

    /// Reloads every record from ZooKeeper (pipelined reads, `read_batch` per round trip) and
    /// makes the cache equal to it. A connection failure fails the whole rebuild; a damaged
    /// record is only reported.
    pub fn rebuild(&mut self) -> Result<RebuildReport> {
        let started = Instant::now();
        let mut names = self.session.children(DB_ROOT).map_err(DbError::zk("list the task records"))?;
        names.sort();
        let mut corrupt = Vec::new();
        let mut report = RebuildReport::default();
        let mut ids = Vec::with_capacity(names.len());
        for name in &names {
            match TaskId::parse(name) {
                Ok(task_id) => ids.push(task_id),
                Err(error) => {
                    corrupt.push(CorruptRecord { path: format!("{DB_ROOT}/{name}"), reason: error.to_string() })
                }
            }
        }
        let mut loaded_ids = BTreeSet::new();
        let mut vanished_bytes = 0;
        for chunk in ids.chunks(self.config.read_batch) {
            let paths: Vec<String> = chunk.iter().map(task_path).collect();
            let replies = self.session.get_data_of_each(&paths).map_err(DbError::zk("read the task records"))?;
            let mut loaded = Vec::with_capacity(chunk.len());
            for ((task_id, path), reply) in chunk.iter().zip(&paths).zip(replies) {
                match reply {
                    Ok(Some((data, stat))) => match records::decode_node(task_id, path, &data, stat.version) {
                        Ok(stored) => loaded.push(stored),
                        Err(bad) => corrupt.push(bad),
                    },
                    Ok(None) => {
                        report.n_vanished += 1;
                        vanished_bytes += child_reply_bytes(task_id.as_str());
                    }
                    Err(source) if source.is_connection_loss() || source.is_session_gone() => {
                        return Err(DbError::Zk { context: "read the task records", source });
                    }
                    Err(source) => corrupt.push(CorruptRecord { path: path.clone(), reason: source.to_string() }),
                }
            }
            self.cache.put_all(&loaded, Origin::Read)?;
            loaded_ids.extend(loaded.into_iter().map(|stored| stored.record.task_id));
        }
        // Forget what the cache held that ZooKeeper no longer has (a rebuild of an open db).
        for cached in self.cache.ids()? {
            if !loaded_ids.contains(&cached) {
                self.cache.remove(&cached)?;
            }
        }
        self.report_corrupt(corrupt);
        self.n_children = names.len() - report.n_vanished;
        self.reply_bytes = names.iter().map(|name| child_reply_bytes(name)).sum::<usize>() - vanished_bytes;
        report.n_loaded = loaded_ids.len();
        report.n_corrupt = self.corrupt.len();
        report.elapsed = started.elapsed();
        tracing::info!(
            n_loaded = report.n_loaded,
            n_corrupt = report.n_corrupt,
            n_vanished = report.n_vanished,
            elapsed_ms = report.elapsed.as_millis() as u64,
            cache_dir = %self.cache.dir().display(),
            "task cache rebuilt from ZooKeeper"
        );
        self.last_rebuild = report.clone();
        Ok(report)
    }

    /// Replaces the corrupt list, logging each entry not reported before.
    fn report_corrupt(&mut self, corrupt: Vec<CorruptRecord>) {
        for entry in &corrupt {
            if !self.corrupt.iter().any(|known| known == entry) {
                tracing::warn!(path = %entry.path, reason = %entry.reason, "skipping a task record that cannot be loaded");
            }
        }
        self.corrupt = corrupt;
    }

    /// Records one damaged znode found outside a rebuild (logged once).
    fn add_corrupt(&mut self, entry: CorruptRecord) {
        self.corrupt.retain(|known| known.path != entry.path);
        let mut corrupt = self.corrupt.clone();
        corrupt.push(entry);
        self.report_corrupt(corrupt);
    }

    /// Persists a new task: its znode is created, then the cache updated. `Full` beyond the cap,
    /// `Exists` when the id is taken. Returns it at version 0.
    pub fn create(&mut self, record: &TaskRecord) -> Result<StoredRecord> {
        self.check_room(std::slice::from_ref(&record.task_id))?;
        create_node(&self.session, record)?;
        self.adopt_created(record)
    }

    /// `Full` when creating `task_ids` (besides the records counted already) would pass the
    /// cap. A caller that creates the znodes itself ([`create_node`], so that creates of many
    /// submitters are in flight at once) counts the ones it has not adopted yet here.
    pub fn check_room(&self, task_ids: &[TaskId]) -> Result<()> {
        let added_bytes: usize = task_ids.iter().map(|task_id| child_reply_bytes(task_id.as_str())).sum();
        if self.n_children + task_ids.len() > self.config.max_records
            || self.reply_bytes + added_bytes > layout::MAX_CHILDREN_REPLY_BYTES
        {
            return Err(DbError::Full {
                n_records: self.n_children,
                reply_bytes: self.reply_bytes,
                max_records: self.config.max_records,
                max_reply_bytes: layout::MAX_CHILDREN_REPLY_BYTES,
            });
        }
        Ok(())
    }

    /// Counts and caches a record whose znode [`create_node`] just created (version 0).
    pub fn adopt_created(&mut self, record: &TaskRecord) -> Result<StoredRecord> {
        self.count_child(&record.task_id);
        let stored = StoredRecord { record: record.clone(), version: 0 };
        self.cache.put(&stored, Origin::Created)?;
        Ok(stored)
    }

    /// `adopt_created` of many records, cached in one LevelDB write.
    pub fn adopt_all_created(&mut self, records: &[TaskRecord]) -> Result<()> {
        let stored: Vec<StoredRecord> =
            records.iter().map(|record| StoredRecord { record: record.clone(), version: 0 }).collect();
        self.cache.put_all(&stored, Origin::Created)?;
        for record in records {
            self.count_child(&record.task_id);
        }
        Ok(())
    }

    /// The cached records' counts by type and state, as the cache keeps them with every change
    /// (nothing is listed).
    pub fn counts(&self) -> TaskCounts {
        self.config.watch.tally.snapshot()
    }

    /// The cached record of `task_id`.
    pub fn get(&mut self, task_id: &TaskId) -> Result<Option<StoredRecord>> {
        self.cache.get(task_id)
    }

    /// The cached records that pass `filter`, in creation order, oldest first unless the filter
    /// asks for the newest first (one ordered scan either way).
    pub fn list(&mut self, filter: &ListFilter) -> Result<Vec<StoredRecord>> {
        self.cache.list(filter)
    }

    /// Writes `record` if its znode is still at `expected_version`, then caches it. `Fenced`
    /// (after refreshing the cached copy) when someone wrote first; `NotFound` when it is gone.
    pub fn update(&mut self, record: &TaskRecord, expected_version: i32) -> Result<StoredRecord> {
        match write_record(&self.session, record, expected_version) {
            Ok(stored) => {
                self.remember(&stored)?;
                Ok(stored)
            }
            Err(fenced @ DbError::Fenced { .. }) => {
                if let Err(error) = self.refresh(&record.task_id) {
                    tracing::debug!(task_id = %record.task_id, %error, "could not refresh a fenced record");
                }
                Err(fenced)
            }
            Err(not_found @ DbError::NotFound { .. }) => {
                self.forget(&record.task_id)?;
                Err(not_found)
            }
            Err(error) => Err(error),
        }
    }

    /// Re-reads `task_id` from ZooKeeper, lets `change` modify it, and writes it back fenced on
    /// the version just read; on `Fenced` it starts over, up to `max_write_attempts` times, then
    /// answers `Conflict`. An error from `change` aborts and is returned as is. When `change`
    /// leaves the record as it was, nothing is written.
    pub fn read_modify_write<F>(&mut self, task_id: &TaskId, change: F) -> Result<StoredRecord>
    where
        F: FnMut(&mut TaskRecord) -> Result<()>,
    {
        self.modify_write(task_id, None, change)
    }

    /// `read_modify_write` whose first attempt starts from `cached` (a record this database
    /// holds) instead of a fresh read: one ZooKeeper request instead of two when the cache is
    /// current. The write is still fenced on `cached.version`, so a stale copy only costs a
    /// `BadVersion`, after which it re-reads and starts over like `read_modify_write`.
    pub fn modify_write_cached<F>(&mut self, cached: StoredRecord, change: F) -> Result<StoredRecord>
    where
        F: FnMut(&mut TaskRecord) -> Result<()>,
    {
        let task_id = cached.record.task_id.clone();
        self.modify_write(&task_id, Some(cached), change)
    }

    fn modify_write<F>(
        &mut self,
        task_id: &TaskId,
        mut first: Option<StoredRecord>,
        mut change: F,
    ) -> Result<StoredRecord>
    where
        F: FnMut(&mut TaskRecord) -> Result<()>,
    {
        for _ in 0..self.config.max_write_attempts {
            let current = match first.take() {
                Some(cached) => cached,
                None => match self.refresh_checked(task_id)? {
                    Some(current) => current,
                    None => return Err(DbError::NotFound { what: "task", id: task_id.to_string() }),
                },
            };
            let mut record = current.record.clone();
            change(&mut record)?;
            if record == current.record {
                return Ok(current);
            }
            match self.update(&record, current.version) {
                Ok(stored) => return Ok(stored),
                Err(DbError::Fenced { .. }) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(DbError::Conflict { task_id: task_id.clone(), attempts: self.config.max_write_attempts })
    }

    /// Re-reads one record from ZooKeeper into the cache (after a runner wrote it). `None` when
    /// it is gone, or damaged (then listed in `corrupt()`).
    pub fn refresh(&mut self, task_id: &TaskId) -> Result<Option<StoredRecord>> {
        match self.refresh_checked(task_id) {
            Err(DbError::Record { .. }) => Ok(None),
            other => other,
        }
    }

    /// `refresh` with a read some other coroutine made (`read_record` through this database's
    /// session), so that the round trip does not hold up the database's owner. A read older
    /// than the cached copy (a lower version: the owner wrote since) is ignored and the cached
    /// copy returned.
    pub fn refresh_with(
        &mut self,
        task_id: &TaskId,
        read: Result<Option<StoredRecord>>,
    ) -> Result<Option<StoredRecord>> {
        if let Ok(Some(stored)) = &read {
            if let Some(cached) = self.cache.get(task_id)? {
                if cached.version > stored.version {
                    return Ok(Some(cached));
                }
            }
        }
        match self.absorb_read(task_id, read) {
            Err(DbError::Record { .. }) => Ok(None),
            other => other,
        }
    }

    /// Writes many records at once, each fenced on its own expected version, in one round trip
    /// (the dispatch pass's assignments). Each result is that record's own, as `update` would
    /// answer it: `Fenced` (the caller re-reads and tries again on its own), `NotFound`, ...
    pub fn update_each(&mut self, writes: &[(TaskRecord, i32)]) -> Result<Vec<Result<StoredRecord>>> {
        let mut encoded = Vec::with_capacity(writes.len());
        for (record, expected_version) in writes {
            let data = record.encode().map_err(|source| DbError::Record {
                context: "encode the task record",
                task_id: record.task_id.to_string(),
                source,
            })?;
            encoded.push((task_path(&record.task_id), data, Some(*expected_version)));
        }
        let replies = self.session.set_data_of_each(&encoded).map_err(DbError::zk("write task records"))?;
        let mut results = Vec::with_capacity(writes.len());
        for ((record, expected_version), reply) in writes.iter().zip(replies) {
            let result = match reply {
                Ok(stat) => {
                    let stored = StoredRecord { record: record.clone(), version: stat.version };
                    self.remember(&stored)?;
                    Ok(stored)
                }
                Err(ZkError::BadVersion { .. }) => Err(DbError::Fenced {
                    what: "task",
                    id: record.task_id.to_string(),
                    expected_version: *expected_version,
                }),
                Err(ZkError::NoNode { .. }) => {
                    self.forget(&record.task_id)?;
                    Err(DbError::NotFound { what: "task", id: record.task_id.to_string() })
                }
                Err(source) => Err(DbError::Zk { context: "write a task record", source }),
            };
            results.push(result);
        }
        Ok(results)
    }

    /// `refresh`, but a damaged record is an error (after being reported).
    fn refresh_checked(&mut self, task_id: &TaskId) -> Result<Option<StoredRecord>> {
        let read = read_record(&self.session, task_id);
        self.absorb_read(task_id, read)
    }

    /// Brings the cache in line with a read of `task_id`'s znode.
    fn absorb_read(&mut self, task_id: &TaskId, read: Result<Option<StoredRecord>>) -> Result<Option<StoredRecord>> {
        match read {
            Ok(Some(stored)) => {
                self.remember(&stored)?;
                Ok(Some(stored))
            }
            Ok(None) => {
                self.forget(task_id)?;
                Ok(None)
            }
            Err(DbError::Record { context, task_id: id, source }) => {
                let path = task_path(task_id);
                if !self.cache.contains(task_id) && !self.corrupt.iter().any(|known| known.path == path) {
                    self.count_child(task_id);
                }
                self.add_corrupt(CorruptRecord { path, reason: source.to_string() });
                self.cache.remove(task_id)?;
                Err(DbError::Record { context, task_id: id, source })
            }
            Err(error) => Err(error),
        }
    }

    /// Caches a record just read from or written to ZooKeeper, counting it when it is new to
    /// this database (written by another session) and clearing a report of it as damaged.
    fn remember(&mut self, stored: &StoredRecord) -> Result<()> {
        let task_id = &stored.record.task_id;
        let path = task_path(task_id);
        let was_corrupt = self.corrupt.iter().any(|known| known.path == path);
        self.corrupt.retain(|known| known.path != path);
        if !was_corrupt && !self.cache.contains(task_id) {
            self.count_child(task_id);
        }
        self.cache.put(stored, Origin::Read)
    }

    /// Drops a record that ZooKeeper no longer has from the cache, the reports and the counts.
    fn forget(&mut self, task_id: &TaskId) -> Result<()> {
        let path = task_path(task_id);
        let was_corrupt = self.corrupt.iter().any(|known| known.path == path);
        self.corrupt.retain(|known| known.path != path);
        if was_corrupt || self.cache.contains(task_id) {
            self.n_children = self.n_children.saturating_sub(1);
            self.reply_bytes = self.reply_bytes.saturating_sub(child_reply_bytes(task_id.as_str()));
        }
        self.cache.remove(task_id)
    }

    fn count_child(&mut self, task_id: &TaskId) {
        self.n_children += 1;
        self.reply_bytes += child_reply_bytes(task_id.as_str());
    }

    /// The znodes under the task directory that could not be loaded, with why.
    pub fn corrupt(&self) -> &[CorruptRecord] {
        &self.corrupt
    }

    /// How many task znodes exist (corrupt ones included): what the cap counts.
    pub fn len(&self) -> usize {
        self.n_children
    }

    /// What a `getChildren` of the task directory returns now, in bytes (the other cap).
    pub fn reply_bytes(&self) -> usize {
        self.reply_bytes
    }

    /// True when there is no task znode at all.
    pub fn is_empty(&self) -> bool {
        self.n_children == 0
    }

    /// The configured cap on records.
    pub fn max_records(&self) -> usize {
        self.config.max_records
    }

    /// What the last rebuild found.
    pub fn last_rebuild(&self) -> &RebuildReport {
        &self.last_rebuild
    }

    /// The session the database uses.
    pub fn session(&self) -> &Arc<ZkSession> {
        &self.session
    }

    /// Where the cache lives.
    pub fn cache_dir(&self) -> &Path {
        self.cache.dir()
    }

    /// Closes the cache (it stays on disk until the next `open` deletes it). The session is
    /// the caller's to close.
    pub fn close(self) -> Result<()> {
        self.cache.close()
    }
}

/// Creates the znode of a new task record through `session` (from any thread: it touches no
/// cache). `Exists` when the id is taken. The `TaskDb` then adopts it ([`TaskDb::adopt_created`]).
pub fn create_node(session: &ZkSession, record: &TaskRecord) -> Result<()> {
    let data = record.encode().map_err(|source| DbError::Record {
        context: "encode the new task",
        task_id: record.task_id.to_string(),
        source,
    })?;
    match session.create_persistent(&task_path(&record.task_id), &data) {
        Ok(_) => Ok(()),
        Err(ZkError::NodeExists { .. }) => Err(DbError::Exists { task_id: record.task_id.clone() }),
        Err(source) => Err(DbError::Zk { context: "create a task record", source }),
    }
}

#[cfg(test)]
mod tests;
