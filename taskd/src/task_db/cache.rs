//! `RecordCache`: the dispatcher's LevelDB copy of every task record, laid out by `keys` so that
//! listings are ordered scans. It is never the truth: it is wiped and rebuilt from ZooKeeper at
//! every open, and written without fsync.
//!
//! LevelDB calls block the thread (a compaction can take milliseconds), which is acceptable on
//! the dispatcher's own context; nothing else runs there that a short stall would hurt.
//!
//! The state index (which tasks are Pending, Running, ...) is kept in memory, not in LevelDB:
//! every state change deletes an index key, and LevelDB keeps the tombstone until a compaction,
//! so scanning the nearly empty Pending or Running range walked over every task that had passed
//! through it (71% of the dispatcher's CPU in `bench tasks` after a few thousand tasks).
//!
//! Each index entry carries its record's type and state, so the counts by type and state
//! (`CacheWatch::tally`) follow every change of the index exactly: an entry added counts one up,
//! one removed one down, and each record whose state changes is reported once as a transition.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusty_leveldb::{LdbIterator, Options, WriteBatch, DB};

use super::counts::{CacheWatch, TaskCounts, TaskKey, TaskTransition};
use super::error::{DbError, Result};
use super::filter::ListFilter;
use super::keys;
use super::StoredRecord;
use crate::task::{TaskId, TaskRecord, TaskState};

/// The LevelDB cache of task records. Not `Send`: LevelDB's handle holds `Rc`s.
pub(super) struct RecordCache {
    db: DB,
    dir: PathBuf,
    /// `keys::state_key` of every cached record, with its type and state: the listings by
    /// state scan this, the counts follow it.
    state_index: BTreeMap<Vec<u8>, TaskKey>,
    /// Told of every change of the index.
    watch: CacheWatch,
}

/// One write to the cache: the LevelDB batch and the state-index changes applied with it, once
/// LevelDB has taken the batch, with the transitions they make.
#[derive(Default)]
struct Staged {
    batch: WriteBatch,
    index_removals: Vec<Vec<u8>>,
    index_additions: Vec<(Vec<u8>, TaskKey)>,
    transitions: Vec<TaskTransition>,
}

/// Where a put's record comes from: a record the database created is a transition from
/// nothing; one first seen by a rebuild is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Created,
    Read,
}

impl RecordCache {
    /// Removes whatever is at `dir` and opens an empty cache there; `watch`'s tally starts at
    /// zero.
    pub(super) fn create_empty(dir: &Path, watch: CacheWatch) -> Result<RecordCache> {
        let display = dir.display().to_string();
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(DbError::CacheDir { context: "remove the old cache", path: display, source }),
        }
        std::fs::create_dir_all(dir).map_err(|source| DbError::CacheDir {
            context: "create the cache directory",
            path: display.clone(),
            source,
        })?;
        let options = Options { create_if_missing: true, error_if_exists: false, ..Options::default() };
        let mut db = DB::open(dir, options).map_err(DbError::cache("open the LevelDB cache"))?;
        db.put(keys::SENTINEL_KEY, &[]).map_err(DbError::cache("write the cache's sentinel"))?;
        watch.tally.update(|counts| *counts = TaskCounts::default());
        Ok(RecordCache { db, dir: dir.to_path_buf(), state_index: BTreeMap::new(), watch })
    }

    /// Where the cache lives.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds `stored` to `staged`, replacing its previous entries (if cached).
    fn stage_put(&mut self, staged: &mut Staged, stored: &StoredRecord, origin: Origin) -> Result<()> {
        let record = &stored.record;
        let json = record.encode().map_err(|source| DbError::Record {
            context: "encode for the cache",
            task_id: record.task_id.to_string(),
            source,
        })?;
        let from = self.stage_delete(staged, &record.task_id)?;
        let batch = &mut staged.batch;
        batch.put(&keys::date_key(record.created_ms, &record.task_id), &keys::record_value(stored.version, &json));
        batch.put(&keys::id_key(&record.task_id), &keys::id_value(record.created_ms, record.state));
        let task_type = record.kind.type_name();
        staged
            .index_additions
            .push((keys::state_key(record.state, record.created_ms, &record.task_id), (task_type, record.state)));
        let changed = match from {
            Some(from) => from != record.state,
            None => origin == Origin::Created,
        };
        if changed {
            staged.transitions.push(TaskTransition { task_type, from, to: record.state });
        }
        Ok(())
    }

    /// Adds the removal of `task_id`'s entries to `staged`; nothing when it is not cached.
    /// Returns the state it was cached in.
    fn stage_delete(&mut self, staged: &mut Staged, task_id: &TaskId) -> Result<Option<TaskState>> {
        let id_key = keys::id_key(task_id);
        let Some(value) = self.db.get(&id_key) else {
            return Ok(None);
        };
        let (created_ms, state) = keys::parse_id_value(&value).ok_or_else(|| DbError::CorruptCache {
            key: format!("id {task_id}"),
            reason: format!("{} bytes instead of 9", value.len()),
        })?;
        staged.batch.delete(&keys::date_key(created_ms, task_id));
        staged.batch.delete(&id_key);
        staged.index_removals.push(keys::state_key(state, created_ms, task_id));
        Ok(Some(state))
    }

    /// Writes `staged` to LevelDB, then applies its state-index changes (removals first: a put
    /// removes the record's old key and adds its new one) to the index and the tally together,
    /// then reports its transitions.
    fn commit(&mut self, staged: Staged, context: &'static str) -> Result<()> {
        self.db.write(staged.batch, false).map_err(DbError::cache(context))?;
        let state_index = &mut self.state_index;
        self.watch.tally.update(|counts| {
            for key in &staged.index_removals {
                if let Some(removed) = state_index.remove(key) {
                    counts.remove(removed);
                }
            }
            for (key, added) in staged.index_additions {
                if state_index.insert(key, added).is_none() {
                    counts.add(added);
                }
            }
        });
        for transition in staged.transitions {
            self.watch.transition(transition);
        }
        Ok(())
    }

    /// Stores (or replaces) one record.
    pub(super) fn put(&mut self, stored: &StoredRecord, origin: Origin) -> Result<()> {
        let mut staged = Staged::default();
        self.stage_put(&mut staged, stored, origin)?;
        self.commit(staged, "write to the cache")
    }

    /// Stores many records in one batch (the rebuild).
    pub(super) fn put_all<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a StoredRecord>,
        origin: Origin,
    ) -> Result<()> {
        let mut staged = Staged::default();
        for stored in records {
            self.stage_put(&mut staged, stored, origin)?;
        }
        self.commit(staged, "write a batch to the cache")
    }

    /// Forgets one record; nothing when it is not cached.
    pub(super) fn remove(&mut self, task_id: &TaskId) -> Result<()> {
        let mut staged = Staged::default();
        self.stage_delete(&mut staged, task_id)?;
        self.commit(staged, "delete from the cache")
    }

    /// True when `task_id` is cached.
    pub(super) fn contains(&mut self, task_id: &TaskId) -> bool {
        self.db.get(&keys::id_key(task_id)).is_some()
    }

    /// The cached record of `task_id`.
    pub(super) fn get(&mut self, task_id: &TaskId) -> Result<Option<StoredRecord>> {
        let Some(value) = self.db.get(&keys::id_key(task_id)) else {
            return Ok(None);
        };
        let (created_ms, _state) = keys::parse_id_value(&value).ok_or_else(|| DbError::CorruptCache {
            key: format!("id {task_id}"),
            reason: format!("{} bytes instead of 9", value.len()),
        })?;
        let date_key = keys::date_key(created_ms, task_id);
        match self.db.get(&date_key) {
            Some(value) => decode_value(task_id, &value).map(Some),
            None => Err(DbError::CorruptCache { key: format!("date {task_id}"), reason: "missing".to_string() }),
        }
    }

    /// The id of every cached record, in id order (no record is decoded).
    pub(super) fn ids(&mut self) -> Result<Vec<TaskId>> {
        let mut ids = Vec::new();
        let mut iter = self.db.new_iter().map_err(DbError::cache("scan the cache"))?;
        iter.seek(&keys::id_key_prefix());
        while iter.valid() {
            let Some((key, _)) = iter.current() else { break };
            let Some(task_id) = keys::parse_id_key(&key) else { break };
            ids.push(task_id);
            iter.advance();
        }
        Ok(ids)
    }

    /// The cached records that pass `filter`, in creation order (newest first if it asks).
    pub(super) fn list(&mut self, filter: &ListFilter) -> Result<Vec<StoredRecord>> {
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut found = Vec::new();
        match filter.state {
            None => {
                let (low, high) = keys::date_range(filter.created_from_ms, filter.created_before_ms);
                for (key, value) in self.range(&low, &high, filter.newest_first, limit)? {
                    let listed = keys::parse_date_key(&key).ok_or_else(|| damaged_key(&key))?;
                    found.push(decode_value(&listed.task_id, &value)?);
                }
            }
            Some(state) => {
                let (low, high) = keys::state_range(state, filter.created_from_ms, filter.created_before_ms);
                let in_range = self.state_index.range(low..high).map(|(key, _)| key);
                let keys: Vec<Vec<u8>> = if filter.newest_first {
                    in_range.rev().take(limit).cloned().collect()
                } else {
                    in_range.take(limit).cloned().collect()
                };
                for key in keys {
                    let listed = keys::parse_state_key(&key, state).ok_or_else(|| damaged_key(&key))?;
                    let value = self.db.get(&keys::date_key(listed.created_ms, &listed.task_id)).ok_or_else(|| {
                        DbError::CorruptCache {
                            key: format!("date {}", listed.task_id),
                            reason: "in the state index but missing".to_string(),
                        }
                    })?;
                    found.push(decode_value(&listed.task_id, &value)?);
                }
            }
        }
        // The keys bound the range; this only guards against a cache that disagrees with itself.
        found.retain(|stored| filter.matches(&stored.record));
        Ok(found)
    }

    /// Up to `limit` entries with keys in `[low, high)`, ascending or descending.
    fn range(&mut self, low: &[u8], high: &[u8], descending: bool, limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut entries = Vec::new();
        let mut iter = self.db.new_iter().map_err(DbError::cache("scan the cache"))?;
        if descending {
            // The sentinel (above every other key) makes this seek always land; step back into range.
            iter.seek(high);
            if !iter.valid() {
                return Err(DbError::CorruptCache { key: "sentinel".to_string(), reason: "missing".to_string() });
            }
            iter.prev();
        } else {
            iter.seek(low);
        }
        while iter.valid() && entries.len() < limit {
            let Some((key, value)) = iter.current() else { break };
            if key.as_ref() < low || key.as_ref() >= high {
                break;
            }
            entries.push((key.to_vec(), value.to_vec()));
            if descending {
                iter.prev();
            } else {
                iter.advance();
            }
        }
        Ok(entries)
    }

    /// Flushes and closes the LevelDB handle (no fsync: the cache is never the truth).
    pub(super) fn close(mut self) -> Result<()> {
        self.db.close().map_err(DbError::cache("close the cache"))
    }
}

fn damaged_key(key: &[u8]) -> DbError {
    DbError::CorruptCache { key: String::from_utf8_lossy(key).into_owned(), reason: "not a listing key".to_string() }
}

/// Decodes a cached value; a damaged one is a `CorruptCache` error, never a panic.
fn decode_value(task_id: &TaskId, value: &[u8]) -> Result<StoredRecord> {
    let (version, json) = keys::parse_record_value(value)
        .ok_or_else(|| DbError::CorruptCache { key: format!("date {task_id}"), reason: "too short".to_string() })?;
    let record = TaskRecord::decode(json)
        .map_err(|error| DbError::CorruptCache { key: format!("date {task_id}"), reason: error.to_string() })?;
    Ok(StoredRecord { record, version })
}
