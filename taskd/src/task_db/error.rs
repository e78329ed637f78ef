//! `DbError`: every way the task database can fail, typed so that callers match on kinds
//! (`Fenced`, `Full`, `NotFound`, ...) and every wrapped ZooKeeper, record or LevelDB error keeps
//! the context of what the database was doing.

use quorum::ZkError;

use crate::task::{RecordError, RequestId, TaskId, TransitionError};

/// The task database's result type.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// What went wrong in the task database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A ZooKeeper request failed; `context` says what the database was doing.
    #[error("{context}: {source}")]
    Zk {
        context: &'static str,
        #[source]
        source: ZkError,
    },
    /// A task record could not be encoded (or a cached one decoded).
    #[error("{context} {task_id}: {source}")]
    Record {
        context: &'static str,
        task_id: String,
        #[source]
        source: RecordError,
    },
    /// The LevelDB cache failed.
    #[error("{context}: {source}")]
    Cache {
        context: &'static str,
        #[source]
        source: rusty_leveldb::Status,
    },
    /// The cache directory could not be removed or created.
    #[error("{context} {path}: {source}")]
    CacheDir {
        context: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A cached entry does not decode: the cache is damaged (reopen to rebuild it).
    #[error("the cache entry of {key} is damaged: {reason}")]
    CorruptCache { key: String, reason: String },
    /// A conditional write saw another znode version than `expected_version`: someone wrote
    /// newer state first (a zombie runner or an old leader must stop here).
    #[error("{what} {id}: fenced (its znode is no longer at version {expected_version})")]
    Fenced { what: &'static str, id: String, expected_version: i32 },
    /// `read_modify_write` lost the race `attempts` times in a row.
    #[error("task {task_id}: still conflicting after {attempts} attempts")]
    Conflict { task_id: TaskId, attempts: u32 },
    /// No such task (or runner) in ZooKeeper.
    #[error("{what} {id}: not found")]
    NotFound { what: &'static str, id: String },
    /// A task with this id exists already.
    #[error("task {task_id}: already exists")]
    Exists { task_id: TaskId },
    /// Another submit with this request id created its task first (see `requests`).
    #[error("request {request_id}: already used")]
    RequestTaken { request_id: RequestId },
    /// A request znode does not decode.
    #[error("request {request_id}: damaged request znode: {reason}")]
    BadRequestNode { request_id: RequestId, reason: String },
    /// The database holds as many records as it may; purge finished tasks first.
    #[error("the task database is full ({n_records} records, {reply_bytes} bytes of names; limits {max_records} records, {max_reply_bytes} bytes)")]
    Full { n_records: usize, reply_bytes: usize, max_records: usize, max_reply_bytes: usize },
    /// Another session owns the task (its ephemeral `owner` child exists).
    #[error("task {task_id}: already owned by session {owner_session:#x}")]
    AlreadyOwned { task_id: TaskId, owner_session: i64 },
    /// A `read_modify_write` change refused a state transition.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A `read_modify_write` change refused the record for another reason.
    #[error("task {task_id}: {reason}")]
    Rejected { task_id: TaskId, reason: String },
    /// A runner's registration is malformed (a bad node id, an oversized field, bad JSON).
    #[error("runner {node_id}: {reason}")]
    BadRunner { node_id: String, reason: String },
    /// The configuration is unusable.
    #[error("bad task database configuration: {0}")]
    BadConfig(String),
}

impl DbError {
    /// Wraps a ZooKeeper error with what the database was doing.
    pub(crate) fn zk(context: &'static str) -> impl FnOnce(ZkError) -> DbError {
        move |source| DbError::Zk { context, source }
    }

    /// Wraps a LevelDB error with what the cache was doing.
    pub(crate) fn cache(context: &'static str) -> impl FnOnce(rusty_leveldb::Status) -> DbError {
        move |source| DbError::Cache { context, source }
    }

    /// True for `Fenced`: someone else wrote the record since it was read.
    pub fn is_fenced(&self) -> bool {
        matches!(self, DbError::Fenced { .. })
    }

    /// True when the ZooKeeper session is gone for good (expired or closed).
    pub fn is_session_gone(&self) -> bool {
        matches!(self, DbError::Zk { source, .. } if source.is_session_gone())
    }
}
