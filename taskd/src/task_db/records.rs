//! Task records in ZooKeeper through any session: the read and the fenced write that both the
//! dispatcher's `TaskDb` and a runner (writing progress with its own session) use.
//!
//! Every write is conditional on the znode version the writer last read: a `BadVersion` from
//! ZooKeeper becomes [`DbError::Fenced`], so a zombie runner or an old leader can never
//! overwrite newer state.

use quorum::{ZkError, ZkSession};

use super::error::{DbError, Result};
use super::layout::task_path;
use super::StoredRecord;
use crate::task::{RecordError, TaskId, TaskRecord};

/// Why a znode under the task directory could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    /// The znode's full path.
    pub path: String,
    /// What is wrong with it (bad JSON, a newer schema, a mismatched id, ...).
    pub reason: String,
}

/// Decodes the data of the znode of `task_id` (`path`): the record must decode and carry the
/// znode's own id.
pub fn decode_node(task_id: &TaskId, path: &str, data: &[u8], version: i32) -> Result<StoredRecord, CorruptRecord> {
    let corrupt = |reason: String| CorruptRecord { path: path.to_string(), reason };
    let record = TaskRecord::decode(data).map_err(|error: RecordError| corrupt(error.to_string()))?;
    if record.task_id != *task_id {
        return Err(corrupt(format!("the record names task {} but lives at {path}", record.task_id)));
    }
    Ok(StoredRecord { record, version })
}

/// Reads one task record. `Ok(None)` when the znode does not exist; a record that does not
/// decode is `Err(DbError::Record)` (the caller decides whether to report or skip it).
pub fn read_record(session: &ZkSession, task_id: &TaskId) -> Result<Option<StoredRecord>> {
    let path = task_path(task_id);
    let Some((data, stat)) = session.get_data(&path).map_err(DbError::zk("read a task record"))? else {
        return Ok(None);
    };
    decode_read(task_id, &data, stat.version).map(Some)
}

/// What `read_record` answers for the data of `task_id`'s znode at `version` (for reads made
/// in a pipelined batch).
pub fn decode_read(task_id: &TaskId, data: &[u8], version: i32) -> Result<StoredRecord> {
    let record = TaskRecord::decode(data).map_err(|source| DbError::Record {
        context: "decode the task record",
        task_id: task_id.to_string(),
        source,
    })?;
    if record.task_id != *task_id {
        return Err(DbError::Record {
            context: "decode the task record",
            task_id: task_id.to_string(),
            source: RecordError::Corrupt { reason: format!("it names task {}", record.task_id) },
        });
    }
    Ok(StoredRecord { record, version })
}

/// Writes `record` only if its znode is still at `expected_version`; returns it with the new
/// version. `Fenced` when someone wrote first, `NotFound` when the znode is gone.
pub fn write_record(session: &ZkSession, record: &TaskRecord, expected_version: i32) -> Result<StoredRecord> {
    let data = record.encode().map_err(|source| DbError::Record {
        context: "encode the task record",
        task_id: record.task_id.to_string(),
        source,
    })?;
    let path = task_path(&record.task_id);
    match session.set_data(&path, &data, Some(expected_version)) {
        Ok(stat) => Ok(StoredRecord { record: record.clone(), version: stat.version }),
        Err(ZkError::BadVersion { .. }) => {
            Err(DbError::Fenced { what: "task", id: record.task_id.to_string(), expected_version })
        }
        Err(ZkError::NoNode { .. }) => Err(DbError::NotFound { what: "task", id: record.task_id.to_string() }),
        Err(source) => Err(DbError::Zk { context: "write a task record", source }),
    }
}
