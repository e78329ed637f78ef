//! `FailureClass`: whether a failed attempt may succeed if tried again, and `after_failure`, the
//! state a failed run leaves its task in. The runner records the class of its run's error in the
//! task's final state; the dispatcher's placement rules retry only a transient failure.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use super::TaskState;

/// The class of a failed attempt's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// May pass on a retry (an IO error, a runner lost mid-task): retried with back-off while
    /// attempts are left.
    Transient,
    /// No retry can fix it (source missing, permission denied, path refused, destination too
    /// small, invalid arguments): the task fails at once.
    Permanent,
}

impl FailureClass {
    /// The name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Transient => "transient",
            FailureClass::Permanent => "permanent",
        }
    }

    /// Reads a stored class defensively: only `"permanent"` is permanent; anything else a
    /// record may hold (absent, `null`, an unknown name or type from another version) counts as
    /// transient, so that an odd value never makes the record unreadable and never stops a
    /// retry that an older daemon would have made.
    pub(crate) fn deserialize_lenient<'de, D>(deserializer: D) -> Result<Option<FailureClass>, D::Error>
    where
        D: Deserializer<'de>,
    {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(match value {
            serde_json::Value::Null => None,
            serde_json::Value::String(name) if name == "permanent" => Some(FailureClass::Permanent),
            _ => Some(FailureClass::Transient),
        })
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state a run's failure leaves its task in (the runner writes it): `Failed` at once for a
/// permanent failure or once `max_attempts` failed runs are spent (`attempts` counts this one),
/// `Pending` for a retry otherwise.
pub fn after_failure(class: FailureClass, attempts: u32, max_attempts: u32) -> TaskState {
    match class {
        FailureClass::Permanent => TaskState::Failed,
        FailureClass::Transient if attempts >= max_attempts => TaskState::Failed,
        FailureClass::Transient => TaskState::Pending,
    }
}
