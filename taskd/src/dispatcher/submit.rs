//! What a submit asks (`Submit`), what it did (`Submitted`), and every way it is refused
//! (`SubmitError`): domain values that only `api.rs` turns into HTTP statuses and JSON.

use std::path::PathBuf;

use crate::task::{InvalidArgs, RequestId, RuntimeWindow, TaskId, TaskKind, TaskRecord};
use crate::task_db::{DbError, SubmitBody};

use super::volumes::VolumeConflict;

/// A new task as a client asked for it.
#[derive(Debug, Clone)]
pub struct Submit {
    pub kind: TaskKind,
    pub runtime_window: Option<RuntimeWindow>,
    /// The client's idempotency key: a submit with a known one returns the task it created.
    pub request_id: Option<RequestId>,
    /// A copy may write over a destination that holds data.
    pub overwrite: bool,
}

impl Submit {
    /// What a retry with the same request id must ask for again.
    pub fn body(&self) -> SubmitBody {
        SubmitBody { kind: self.kind.clone(), runtime_window: self.runtime_window, overwrite: self.overwrite }
    }
}

/// What a submit did: created the task now, or found the one its request id created before.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub record: TaskRecord,
    /// False for a retry answered with the original task (nothing was created).
    pub created: bool,
}

/// Why a submit created nothing.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Invalid(#[from] InvalidArgs),
    /// The request id was used before with another body.
    #[error("request id {request_id} was used for task {task_id} with a different request")]
    RequestIdReused { request_id: RequestId, task_id: TaskId },
    /// The request id's task was purged; the request znode outlived it only by a moment.
    #[error("request id {request_id} was used for task {task_id}, which no longer exists")]
    RequestIdSpent { request_id: RequestId, task_id: TaskId },
    /// Another unfinished copy writes or reads one of the new copy's volumes.
    #[error("the volume is busy: {}", conflict.describe())]
    VolumeBusy { conflict: VolumeConflict },
    /// The destination exists and holds data, and the client did not ask for `overwrite`.
    #[error("the destination {} holds data; ask for `overwrite` to copy over it", destination.display())]
    DestinationHoldsData { destination: PathBuf },
    /// The destination could not be inspected.
    #[error("cannot inspect the destination {}: {reason}", destination.display())]
    DestinationUnreadable { destination: PathBuf, reason: String },
    #[error(transparent)]
    Db(#[from] DbError),
    /// The dispatcher's database is not open, or the dispatcher did not answer in time.
    #[error("the dispatcher did not answer in time")]
    Unavailable,
}

impl SubmitError {
    /// The existing task the refusal is about, if any (the original of a reused request id,
    /// the copy holding a busy volume).
    pub fn task_id(&self) -> Option<&TaskId> {
        match self {
            SubmitError::RequestIdReused { task_id, .. } | SubmitError::RequestIdSpent { task_id, .. } => Some(task_id),
            SubmitError::VolumeBusy { conflict } => Some(conflict.task_id()),
            _ => None,
        }
    }
}
