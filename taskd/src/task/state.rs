//! `TaskState`: the life cycle of a task and the one table of transitions every writer of a
//! task record checks before it changes the state.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a task is in its life. `Succeeded`, `Failed` and `Cancelled` are final.
/// The allowed changes are listed at [`TaskState::can_transition_to`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Accepted and persisted; waits for a runner (also after a retry back-off or a resume).
    Pending,
    /// A runner owns it and works on it.
    Running,
    /// Stopped on request or outside its runtime window; `resume` makes it `Pending` again.
    Paused,
    /// Finished its work.
    Succeeded,
    /// Failed for good: out of attempts, or an error that no retry can fix.
    Failed,
    /// Cancelled on request.
    Cancelled,
    /// Its runner died, was drained or lost its session; the dispatcher reschedules it.
    /// Not a failed attempt.
    Interrupted,
}

impl TaskState {
    /// Every state, in declaration order (for `list --state`, metrics and tests).
    pub const ALL: [TaskState; 7] = [
        TaskState::Pending,
        TaskState::Running,
        TaskState::Paused,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::Interrupted,
    ];

    /// True for the final states: nothing runs or will run again; the record may be purged.
    pub fn is_finished(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled)
    }

    /// True when the change `self → to` is allowed. Staying in the same state is not a
    /// transition (a progress write keeps `Running` and needs no check), so it returns false.
    ///
    /// * `Pending → Running` (dispatched), `→ Paused`, `→ Cancelled`, `→ Failed` (refused at
    ///   dispatch, e.g. its arguments no longer validate).
    /// * `Running → Succeeded | Failed | Cancelled | Paused | Interrupted`, and `→ Pending` for a
    ///   retry after an error (attempts left, back-off pending).
    /// * `Paused → Pending` (resume, or its window opened), `→ Cancelled`.
    /// * `Interrupted → Pending | Running` (rescheduled), `→ Paused`, `→ Cancelled`.
    /// * Nothing leaves a finished state.
    pub fn can_transition_to(self, to: TaskState) -> bool {
        use TaskState::*;
        match self {
            Pending => matches!(to, Running | Paused | Cancelled | Failed),
            Running => matches!(to, Pending | Succeeded | Failed | Cancelled | Paused | Interrupted),
            Paused => matches!(to, Pending | Cancelled),
            Interrupted => matches!(to, Pending | Running | Paused | Cancelled),
            Succeeded | Failed | Cancelled => false,
        }
    }

    /// The name used in JSON, on the command line and in logs (`"pending"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Paused => "paused",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of `TaskState::ALL`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown task state `{0}` (expected one of pending, running, paused, succeeded, failed, cancelled, interrupted)"
)]
pub struct UnknownState(pub String);

impl FromStr for TaskState {
    type Err = UnknownState;

    /// Parses a state name, ignoring ASCII case (`Running` and `running` both work).
    fn from_str(text: &str) -> Result<TaskState, UnknownState> {
        TaskState::ALL
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| UnknownState(text.to_string()))
    }
}

/// A refused state change, naming both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a task cannot go from {from} to {to}")]
pub struct TransitionError {
    pub from: TaskState,
    pub to: TaskState,
}
