//! The task model: what a task is (`TaskId`, `TaskKind` and its arguments), where it is in its
//! life (`TaskState`), when it may run (`RuntimeWindow`), how far it got (`Progress`), and the
//! `TaskRecord` that `TaskDb` stores in ZooKeeper as a small, versioned JSON document.
//!
//! # The stored record
//! `TaskRecord::encode` writes JSON with a `schema_version` field (now
//! [`SCHEMA_VERSION`]); `TaskRecord::decode` reads it back and reports a record written by a
//! newer daemon ([`RecordError::UnsupportedVersion`]) or a damaged one
//! ([`RecordError::Corrupt`]) as an error value, never a panic, so one bad znode cannot stop
//! the other tasks. Every record fits in [`MAX_RECORD_BYTES`]: paths and the kept error
//! message are bounded, and `encode` refuses anything larger.

mod failure;
mod request_id;
mod state;
mod window;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use failure::{after_failure, FailureClass};
pub use request_id::{RequestId, RequestIdError};
pub use state::{TaskState, TransitionError, UnknownState};
pub use window::{RuntimeWindow, WindowError};

/// The version of the record layout this build writes, and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// No encoded record is larger than this (ZooKeeper's limit is ~1 MB; records stay tiny so
/// that a `getChildren` plus reads of thousands of them stay cheap).
pub const MAX_RECORD_BYTES: usize = 4096;

/// The longest source or destination path a CopyVolume task accepts, in bytes.
pub const MAX_PATH_BYTES: usize = 512;

/// The longest `runner_addr` a record keeps, in bytes (`[IPv6]:port` needs 47).
pub const MAX_ADDR_BYTES: usize = 128;

/// The longest error message a record keeps, in bytes; longer ones are cut at a char boundary.
pub const MAX_ERROR_BYTES: usize = 512;

/// How many failed attempts' errors a record keeps in `attempt_errors` (the latest ones): few
/// and short, so that the largest record stays under 2.5 KiB (`last_error` keeps the last in full).
pub const MAX_ATTEMPT_ERRORS: usize = 2;

/// The longest error message `attempt_errors` keeps per attempt, in bytes.
pub const MAX_ATTEMPT_ERROR_BYTES: usize = 64;

/// The most concurrent block copies one CopyVolume task may ask for.
pub const MAX_IO_DEPTH: u32 = 64;

/// The longest Sleep task: one day.
pub const MAX_SLEEP_MS: u64 = 24 * 60 * 60 * 1000;

/// A task's identity, also its znode name under `/zbs/taskd/db/`.
///
/// New ids are random UUIDs (`TaskId::generate`): unique across leaders without a ZooKeeper
/// round trip. Any id of 1 to 64 characters from `[A-Za-z0-9_-]` that starts with a letter or
/// digit is accepted, so ids are always safe znode names (no `/`, never `.` or `..`) and safe
/// in file names, URLs and shells.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

/// A string that cannot be a task id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskIdError {
    #[error("a task id cannot be empty")]
    Empty,
    #[error("a task id has at most {max} characters, got {len}", max = TaskId::MAX_LEN)]
    TooLong { len: usize },
    #[error("a task id starts with a letter or digit and holds only letters, digits, `-` and `_`: `{0}`")]
    BadCharacter(String),
}

impl TaskId {
    /// The longest id, in characters (all ASCII).
    pub const MAX_LEN: usize = 64;

    /// A new random id: a lowercase hyphenated UUID v4.
    pub fn generate() -> TaskId {
        TaskId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// Validates `text` as a task id.
    pub fn parse(text: &str) -> Result<TaskId, TaskIdError> {
        if text.is_empty() {
            return Err(TaskIdError::Empty);
        }
        if text.len() > TaskId::MAX_LEN {
            return Err(TaskIdError::TooLong { len: text.len() });
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        let starts_well = text.as_bytes()[0].is_ascii_alphanumeric();
        if !starts_well || !text.bytes().all(allowed) {
            return Err(TaskIdError::BadCharacter(text.to_string()));
        }
        Ok(TaskId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TaskId {
    type Err = TaskIdError;

    fn from_str(text: &str) -> Result<TaskId, TaskIdError> {
        TaskId::parse(text)
    }
}

impl TryFrom<String> for TaskId {
    type Error = TaskIdError;

    fn try_from(text: String) -> Result<TaskId, TaskIdError> {
        TaskId::parse(&text)
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> String {
        id.0
    }
}

/// Arguments of a CopyVolume task: copy a regular file or block device to a destination.
/// The paths are checked against the runner's allowed roots when the copy starts
/// (`copy_volume::AllowedRoots`); `TaskKind::validate` checks only their shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyVolumeArgs {
    pub source: PathBuf,
    pub destination: PathBuf,
    /// Concurrent block copies, 1..=`MAX_IO_DEPTH`.
    #[serde(default = "CopyVolumeArgs::default_io_depth")]
    pub io_depth: u32,
}

impl CopyVolumeArgs {
    /// The io depth when a request names none.
    pub const DEFAULT_IO_DEPTH: u32 = 4;

    fn default_io_depth() -> u32 {
        CopyVolumeArgs::DEFAULT_IO_DEPTH
    }
}

/// Arguments of a Sleep task, the trivial type for tests: sleep, then succeed or fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleepArgs {
    pub duration_ms: u64,
    /// Fail (with a task error, so the retry path runs) instead of succeeding.
    #[serde(default)]
    pub fail: bool,
    /// Fail the first `fail_first` attempts, then succeed: a task that fails once and then
    /// succeeds (`fail_first: 1`), for tests of the retry path. Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fail_first: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl SleepArgs {
    /// Whether the run after `attempts` failed ones fails.
    pub fn fails_after(&self, attempts: u32) -> bool {
        self.fail || attempts < self.fail_first
    }
}

/// A task's type and arguments; JSON `{"type": "copy_volume", "args": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "args", rename_all = "snake_case")]
pub enum TaskKind {
    CopyVolume(CopyVolumeArgs),
    Sleep(SleepArgs),
}

/// Arguments that no runner should try: the message says which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {message}")]
pub struct InvalidArgs {
    pub field: &'static str,
    pub message: String,
}

impl TaskKind {
    /// Every type's name (`type_name`), for the metrics that export each type at zero too.
    pub const TYPE_NAMES: [&'static str; 2] = ["copy_volume", "sleep"];

    /// The type's name as in JSON and on the command line (`copy_volume`, `sleep`).
    pub fn type_name(&self) -> &'static str {
        match self {
            TaskKind::CopyVolume(_) => "copy_volume",
            TaskKind::Sleep(_) => "sleep",
        }
    }

    /// Checks the arguments' shape (ranges, lengths, absolute UTF-8 paths), not the file system.
    pub fn validate(&self) -> Result<(), InvalidArgs> {
        let invalid = |field, message: String| Err(InvalidArgs { field, message });
        match self {
            TaskKind::CopyVolume(args) => {
                check_path("source", &args.source)?;
                check_path("destination", &args.destination)?;
                if !(1..=MAX_IO_DEPTH).contains(&args.io_depth) {
                    return invalid("io_depth", format!("must be 1..={MAX_IO_DEPTH}, got {}", args.io_depth));
                }
                Ok(())
            }
            TaskKind::Sleep(args) => {
                if args.duration_ms > MAX_SLEEP_MS {
                    return invalid("duration_ms", format!("must be at most {MAX_SLEEP_MS}, got {}", args.duration_ms));
                }
                Ok(())
            }
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends at a char boundary.
fn cut_at_char(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn check_path(field: &'static str, path: &Path) -> Result<(), InvalidArgs> {
    let invalid = |message: &str| Err(InvalidArgs { field, message: format!("{message}: {}", path.display()) });
    let Some(text) = path.to_str() else {
        return invalid("the path is not valid UTF-8");
    };
    if text.len() > MAX_PATH_BYTES {
        return Err(InvalidArgs { field, message: format!("at most {MAX_PATH_BYTES} bytes, got {}", text.len()) });
    }
    if !path.is_absolute() {
        return invalid("the path must be absolute");
    }
    if text.contains('\0') {
        return invalid("the path contains a NUL byte");
    }
    Ok(())
}

/// How far a task got. For CopyVolume, extents `0..cur_extent` are copied (and synced), so a
/// rescheduled copy resumes at `cur_extent`. A Sleep task leaves it at zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// The next extent to copy: the number of finished extents.
    pub cur_extent: u64,
    pub n_extents: u64,
    /// The bytes per extent the copy was started with, so a resumed copy (perhaps on a runner
    /// configured otherwise) uses the same extents; 0 in records written before it was kept,
    /// which used 256 MiB.
    pub extent_size: u64,
    /// Bytes of the volume behind `cur_extent` (copied or skipped as holes / zeros).
    pub bytes_done: u64,
    /// The volume's length.
    pub bytes_total: u64,
    /// `bytes_done` gained per second since the current run started.
    pub speed_bytes_per_s: u64,
}

/// One task as stored at `/zbs/taskd/db/<task_id>`. Times are milliseconds since the Unix
/// epoch. Change `state` through `transition_to`, which refuses what `can_transition_to` does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task_id: TaskId,
    pub kind: TaskKind,
    pub state: TaskState,
    /// The runner working on it (`Running`) or the last one that did.
    pub runner_addr: Option<String>,
    /// When the dispatcher last handed it to a runner.
    pub schedule_time_ms: Option<u64>,
    pub created_ms: u64,
    /// When it last failed or was interrupted; the retry back-off counts from here.
    pub last_failed_ms: Option<u64>,
    /// When it reached a final state (`Succeeded`, `Failed`, `Cancelled`): the retention before
    /// a purge counts from here. Absent in records written before it was kept.
    #[serde(default)]
    pub finished_ms: Option<u64>,
    /// Failed runs so far (an interruption is not a failed attempt).
    pub attempts: u32,
    /// The error of the last failed attempt, cut to `MAX_ERROR_BYTES`, while the task has not
    /// succeeded: a success clears it (the earlier attempts' errors stay in `attempt_errors`).
    pub last_error: Option<String>,
    /// The errors of earlier failed attempts, those `last_error` no longer shows (at most
    /// `MAX_ATTEMPT_ERRORS`, the latest, oldest first, each cut to `MAX_ATTEMPT_ERROR_BYTES`).
    /// Absent when empty, and in records written before it was kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempt_errors: Vec<String>,
    /// The class of the last failed attempt's error, as its runner reported it: a `permanent`
    /// one is never retried. Absent when no attempt failed, and in records written before it
    /// was kept; absent or unknown counts as `transient` (`FailureClass::deserialize_lenient`).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "FailureClass::deserialize_lenient")]
    pub error_class: Option<FailureClass>,
    pub progress: Progress,
    /// When set, the task runs only inside this daily window.
    pub runtime_window: Option<RuntimeWindow>,
    /// The client's idempotency key the task was submitted with; its znode
    /// (`/zbs/taskd/requests/<request_id>`) is created with the task's and purged with it.
    /// Absent when the client sent none, and in records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
}

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the task record was written by a newer version (schema {found}; this build reads up to {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("corrupt task record: {reason}")]
    Corrupt { reason: String },
    #[error("the task record is {len} bytes, more than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("invalid task record: {0}")]
    Invalid(#[from] InvalidArgs),
}

impl RecordError {
    fn corrupt(reason: impl fmt::Display) -> RecordError {
        RecordError::Corrupt { reason: reason.to_string() }
    }
}

/// The record on the wire: the schema version next to the record's own fields.
#[derive(Serialize)]
struct Versioned<'a> {
    schema_version: u32,
    #[serde(flatten)]
    record: &'a TaskRecord,
}

/// What `decode` reads first, ignoring every other field, to choose how to read the rest.
#[derive(Deserialize)]
struct VersionOnly {
    schema_version: Option<u32>,
}

impl TaskRecord {
    /// A new `Pending` task with no progress.
    pub fn new(task_id: TaskId, kind: TaskKind, created_ms: u64) -> TaskRecord {
        TaskRecord {
            task_id,
            kind,
            state: TaskState::Pending,
            runner_addr: None,
            schedule_time_ms: None,
            created_ms,
            last_failed_ms: None,
            finished_ms: None,
            attempts: 0,
            last_error: None,
            attempt_errors: Vec::new(),
            error_class: None,
            progress: Progress::default(),
            runtime_window: None,
            request_id: None,
        }
    }

    /// Moves to `to` if `can_transition_to` allows it; otherwise changes nothing.
    pub fn transition_to(&mut self, to: TaskState) -> Result<(), TransitionError> {
        if !self.state.can_transition_to(to) {
            return Err(TransitionError { from: self.state, to });
        }
        self.state = to;
        // A success ends the story of the failed attempts: `last_error` would otherwise tell a
        // reader of a succeeded task about a failure that no longer matters.
        if to == TaskState::Succeeded {
            self.retire_last_error();
        }
        if to.is_finished() {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            self.finished_ms = Some(now.as_millis() as u64);
        }
        Ok(())
    }

    /// Keeps `message` as `last_error`, cut to `MAX_ERROR_BYTES` at a char boundary, with its
    /// class; the error it replaces goes to `attempt_errors`.
    pub fn set_last_error(&mut self, message: &str, class: FailureClass) {
        self.retire_last_error();
        self.last_error = Some(cut_at_char(message, MAX_ERROR_BYTES).to_string());
        self.error_class = Some(class);
    }

    /// The class of the last failed attempt: transient unless its runner said permanent (old
    /// records, and records with no failure, count as transient).
    pub fn last_error_class(&self) -> FailureClass {
        self.error_class.unwrap_or(FailureClass::Transient)
    }

    /// Moves `last_error` (cut to `MAX_ATTEMPT_ERROR_BYTES`) to the end of `attempt_errors`,
    /// dropping the oldest beyond `MAX_ATTEMPT_ERRORS`.
    fn retire_last_error(&mut self) {
        let Some(error) = self.last_error.take() else { return };
        self.attempt_errors.push(cut_at_char(&error, MAX_ATTEMPT_ERROR_BYTES).to_string());
        let excess = self.attempt_errors.len().saturating_sub(MAX_ATTEMPT_ERRORS);
        self.attempt_errors.drain(..excess);
    }

    /// Checks what bounds the record's size and what a runner would refuse: the arguments,
    /// the runner address and the error message lengths.
    pub fn validate(&self) -> Result<(), InvalidArgs> {
        self.kind.validate()?;
        let too_long = |field, len: usize, max: usize| {
            Err(InvalidArgs { field, message: format!("at most {max} bytes, got {len}") })
        };
        if let Some(addr) = self.runner_addr.as_ref().filter(|addr| addr.len() > MAX_ADDR_BYTES) {
            return too_long("runner_addr", addr.len(), MAX_ADDR_BYTES);
        }
        if let Some(error) = self.last_error.as_ref().filter(|error| error.len() > MAX_ERROR_BYTES) {
            return too_long("last_error", error.len(), MAX_ERROR_BYTES);
        }
        if self.attempt_errors.len() > MAX_ATTEMPT_ERRORS {
            return Err(InvalidArgs {
                field: "attempt_errors",
                message: format!("at most {MAX_ATTEMPT_ERRORS} entries, got {}", self.attempt_errors.len()),
            });
        }
        if let Some(error) = self.attempt_errors.iter().find(|error| error.len() > MAX_ATTEMPT_ERROR_BYTES) {
            return too_long("attempt_errors", error.len(), MAX_ATTEMPT_ERROR_BYTES);
        }
        Ok(())
    }

    /// The record as stored: compact JSON with `schema_version`, at most `MAX_RECORD_BYTES`.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        self.validate()?;
        let json = serde_json::to_vec(&Versioned { schema_version: SCHEMA_VERSION, record: self })
            .map_err(|error| RecordError::corrupt(format!("cannot encode: {error}")))?;
        if json.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge { len: json.len(), max: MAX_RECORD_BYTES });
        }
        Ok(json)
    }

    /// Reads a stored record. A newer schema, bad JSON, a missing or invalid field, or an
    /// oversized record is an error value; nothing here panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<TaskRecord, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge { len: bytes.len(), max: MAX_RECORD_BYTES });
        }
        let version = serde_json::from_slice::<VersionOnly>(bytes)
            .map_err(|error| RecordError::corrupt(format!("not a JSON object: {error}")))?
            .schema_version
            .ok_or_else(|| RecordError::corrupt("no `schema_version`"))?;
        match version {
            0 => Err(RecordError::corrupt("`schema_version` 0 was never written")),
            SCHEMA_VERSION => {
                let record: TaskRecord = serde_json::from_slice(bytes).map_err(RecordError::corrupt)?;
                record.validate()?;
                Ok(record)
            }
            found => Err(RecordError::UnsupportedVersion { found, supported: SCHEMA_VERSION }),
        }
    }
}

#[cfg(test)]
mod tests;
