//! The run log: every task run this node's runner made, as JSON lines in `<state_dir>/runs.jsonl`,
//! for operators ("which node copied this volume, when, and how far") and for the chaos harness's
//! checker (no task ran on two runners at once).
//!
//! A run writes two lines: `start` when the runner has claimed the task and begins it, `end` when
//! its final state was written (or refused). A run with a `start` and no `end` was cut short by
//! the process's death. Each line has wall-clock milliseconds and `CLOCK_MONOTONIC` nanoseconds
//! (one clock for every process of a host, so runs of different nodes on one machine compare
//! exactly), the node, its pid and ZooKeeper session, and on `end` the outcome and the bytes and
//! blocks the run read and wrote.
//!
//! The log is bounded: when it passes [`MAX_BYTES`] it is renamed to `runs.jsonl.1` (replacing the
//! previous one) and a new one begins, so at most twice that stays on disk.
//!
//! The log is process-wide (`install` once at start-up, from the supervisor, which owns the
//! state dir) so that the runner needs no more than a hook at the start and end of `run_task`.
//! Writing it is best effort: a failure is logged once and never stops a task.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::copy_volume::CopyStats;
use crate::task::TaskId;

/// The run log's file name in the state dir.
pub const FILE_NAME: &str = "runs.jsonl";

/// The size past which the log is rotated to `runs.jsonl.1`.
pub const MAX_BYTES: u64 = 8 << 20;

/// One line of the run log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEvent {
    /// `start` or `end`.
    pub event: String,
    pub task_id: String,
    pub node_id: String,
    pub pid: u32,
    /// The ZooKeeper session the run's writes were fenced by.
    pub session_id: i64,
    /// The run's start on the wall clock and on `CLOCK_MONOTONIC`; repeated on `end`.
    pub start_unix_ms: u64,
    pub start_mono_ns: u64,
    /// Set on `end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_mono_ns: Option<u64>,
    /// How the run ended (`succeeded`, `failed`, `cancelled`, `paused`, `window_closed`,
    /// `interrupted`, `lost`); set on `end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default)]
    pub bytes_read: u64,
    #[serde(default)]
    pub bytes_written: u64,
    /// Blocks of `block_size` read from the source (holes are never read); the unit of a
    /// copy's writes.
    #[serde(default)]
    pub blocks_read: u64,
    /// The `CLOCK_MONOTONIC` instant after which the run began no IO, when earlier than its end:
    /// its lease's end as of its last IO check (every write asks the lease first), or the lapsed
    /// lease's end for a run stopped by it (`lease_lapsed`). A process frozen mid-copy ends its
    /// run when it wakes, however long after it last wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_until_mono_ns: Option<u64>,
}

/// A run begun: what its `end` line needs.
#[derive(Debug, Clone)]
pub struct Run {
    task_id: String,
    node_id: String,
    session_id: i64,
    start_unix_ms: u64,
    start_mono_ns: u64,
}

struct RunLog {
    path: PathBuf,
    max_bytes: u64,
    lock: Mutex<()>,
    warned: AtomicBool,
}

static RUN_LOG: OnceLock<RunLog> = OnceLock::new();

/// Makes this process log its runs in `state_dir/runs.jsonl`. Called once, at start-up; later
/// calls are ignored.
pub fn install(state_dir: &Path) {
    let _ = RUN_LOG.set(RunLog {
        path: state_dir.join(FILE_NAME),
        max_bytes: MAX_BYTES,
        lock: Mutex::new(()),
        warned: AtomicBool::new(false),
    });
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock every process of the host shares.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(now.tv_nsec as u64)
}

/// Logs the start of a run and returns it for [`end`].
pub fn start(task_id: &TaskId, node_id: &str, session_id: i64) -> Run {
    let run = Run {
        task_id: task_id.to_string(),
        node_id: node_id.to_string(),
        session_id,
        start_unix_ms: crate::clock::now_ms(),
        start_mono_ns: monotonic_ns(),
    };
    append(&run.event("start", None, CopyStats::default(), 0));
    run
}

/// Logs the end of `run` with its outcome and what it read and wrote (`block_size` 0 for a
/// task that is not a copy).
pub fn end(run: &Run, outcome: &str, stats: CopyStats, block_size: u64, io_until: Option<std::time::Instant>) {
    let mut event = run.event("end", Some(outcome), stats, block_size);
    event.io_until_mono_ns = io_until.map(|until| {
        let now = std::time::Instant::now();
        let mono = monotonic_ns();
        // `Instant` is CLOCK_MONOTONIC on Linux: the same clock, read through std.
        match until.checked_duration_since(now) {
            Some(ahead) => mono.saturating_add(ahead.as_nanos() as u64),
            None => mono.saturating_sub(now.saturating_duration_since(until).as_nanos() as u64),
        }
    });
    append(&event);
}

impl Run {
    fn event(&self, event: &str, outcome: Option<&str>, stats: CopyStats, block_size: u64) -> RunEvent {
        let ended = outcome.is_some();
        RunEvent {
            event: event.to_string(),
            task_id: self.task_id.clone(),
            node_id: self.node_id.clone(),
            pid: std::process::id(),
            session_id: self.session_id,
            start_unix_ms: self.start_unix_ms,
            start_mono_ns: self.start_mono_ns,
            end_unix_ms: ended.then(crate::clock::now_ms),
            end_mono_ns: ended.then(monotonic_ns),
            outcome: outcome.map(str::to_string),
            bytes_read: stats.bytes_read,
            bytes_written: stats.bytes_written,
            blocks_read: if block_size == 0 { 0 } else { stats.bytes_read.div_ceil(block_size) },
            io_until_mono_ns: None,
        }
    }
}

fn append(event: &RunEvent) {
    let Some(log) = RUN_LOG.get() else { return };
    if let Err(error) = log.append(event) {
        if !log.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(path = %log.path.display(), %error, "cannot write the run log (said once)");
        }
    }
}

impl RunLog {
    fn append(&self, event: &RunEvent) -> std::io::Result<()> {
        let mut line = serde_json::to_string(event).map_err(std::io::Error::other)?;
        line.push('\n');
        let _guard = self.lock.lock();
        if fs::metadata(&self.path).is_ok_and(|metadata| metadata.len() >= self.max_bytes) {
            fs::rename(&self.path, self.path.with_extension("jsonl.1"))?;
        }
        // One write of the whole line, in append mode: lines of concurrent runs never interleave.
        OpenOptions::new().create(true).append(true).open(&self.path)?.write_all(line.as_bytes())
    }
}

/// Reads a run log (and its rotated predecessor first, when present), skipping lines that do
/// not parse (a line cut by a crash).
pub fn read(state_dir: &Path) -> Vec<RunEvent> {
    let path = state_dir.join(FILE_NAME);
    [path.with_extension("jsonl.1"), path]
        .iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .flat_map(|text| text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect::<Vec<RunEvent>>())
        .collect()
}

#[cfg(test)]
mod tests;
