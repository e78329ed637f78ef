//! The dispatcher's scheduling: one worker coroutine on the dispatcher's context owns the
//! `TaskDb` (it is not `Send`) and runs, one at a time, the jobs other threads post through a
//! `SchedulerHandle` (API requests, owner and runner watches, answers of runner RPCs), the
//! periodic check (every 2 s) and dispatch passes (at once when a submit, an owner change or a
//! runner change asks for one, after at most `JOBS_BEFORE_PASS` queued jobs).
//!
//! # The check
//! Re-reads the `Running` records and their owner children (runners write progress and ends
//! with their own sessions; pipelined batches); makes sure every `Running` task's owner child is
//! watched, and marks `Interrupted` (with `last_failed_ms`, not a failed attempt) a `Running`
//! task whose owner vanished or never appeared within the claim grace (`[tasks]
//! claim_grace_ms`); re-reads the runners; then runs a dispatch pass. Finished tasks are purged
//! `[tasks] retention_sec` after their last activity, checked every 10 minutes (or a quarter of
//! the retention, if shorter).
//!
//! # The dispatch pass
//! Reads nothing from ZooKeeper but the runners, and those only when its view of them is missing
//! or older than `RUNNER_VIEW_TTL`. The decisions are `placement::plan`'s (pure, see
//! `placement.rs` for the rules): due tasks (`Interrupted`, and `Pending` ones whose retry
//! back-off has passed), oldest first, to the least-loaded healthy, non-draining runner with a
//! free slot, counting against each runner the tasks this dispatcher shows `Running` on it
//! (`assigned`), which a registration read before them does not show. The pass executes them
//! in the original's `ExecuteTask` order: set `runner_addr` and
//! `schedule_time` → write the record (fenced on the cached version, all of the pass's writes
//! in one pipelined round trip; a fenced one is re-read and retried alone) → watch the owner
//! child → call the runner's execute RPC on a "zbs-task-call" context, whose answer comes back
//! as a job.
//!
//! # Submits
//! `SchedulerHandle::submit` creates the task's znode on the submitter's own coroutine, so that
//! concurrent submits' creates are in flight together on the session; the worker only caches
//! the record afterwards. Room under the cap is reserved against the counts the worker publishes.
//! A submit with a request id first reads its request znode (a retry answers with the original
//! task), and creates the task's znode and the request znode in one multi-op, whose `NodeExists`
//! on the request znode settles a race of duplicates. A copy is checked by the worker against the
//! other unfinished copies (`volumes::find_conflict`) and reserved there until it is cached, so
//! that no two accepted copies write one volume or one writes what another reads.
//!
//! # What metrics read
//! The handle shares, without a trip to the worker, the cache's counts by type and state (kept
//! by the cache with every change it applies, `task_db::TaskTally`) and the runners up and
//! draining as the dispatch pass last read them (at most `CHECK_INTERVAL` old). A scrape reads
//! those; it never lists tasks or runners.
//!
//! # Where each part lives
//! `worker.rs` is the worker coroutine and its loop; `handle.rs` the `SchedulerHandle` (jobs,
//! calls with their deadlines, a submit's create) and what it shares with the worker, with
//! `room.rs` the room under the database's caps; `reservations.rs` a submit's steps on the
//! worker; `check.rs` the periodic check; `owners.rs` the owner watches and interrupts;
//! `pass.rs` the dispatch pass and `execution.rs` its assignments (`ExecuteTask`);
//! `runner_view.rs` the runners as the pass sees them; `operations.rs` what the API's jobs run.
//! Each extends `Scheduler`, whose state is defined here; imports between them point one way
//! (`handle` → `room`; `worker`, `runner_view` → `handle`; `check`, `execution` → `owners`).

mod check;
mod execution;
mod handle;
mod operations;
mod owners;
mod pass;
mod reservations;
mod room;
mod runner_view;
mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorum::{QuorumHandle, ZkSession};
use runtime::ContextHandle;

use super::placement::RetryPolicy;
use super::volumes::VolumeUse;
use crate::runner_client::RunnerClient;
use crate::task::{TaskId, TaskRecord, TaskState};
use crate::task_db::{TaskDb, TaskTransition};
use reservations::ReservedCopy;
use runner_view::RunnerView;

pub use handle::{CallError, RunnerCounts, SchedulerHandle, MAX_QUEUED_CALLS};
pub use operations::{DispatchError, TaskAction};
pub use worker::{start, OPEN_GIVE_UP};

/// How often the dispatcher looks for waiting tasks (the original: every 2 s).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// What the dispatcher's scheduling needs from the server.
pub struct SchedulerSetup {
    pub quorum: QuorumHandle,
    pub cache_dir: PathBuf,
    /// How long a runner has to claim a task it was handed before the task is interrupted.
    pub claim_grace: Duration,
    /// Finished tasks are purged this long after their last activity.
    pub retention: Duration,
    /// The back-off between a transient failure and the next attempt (`[tasks] retry_*`).
    pub retry: RetryPolicy,
    /// How the dispatcher calls the runners (with the cluster's token).
    pub runner_client: RunnerClient,
    /// Told (once, from the worker) that the task database could not be opened for
    /// [`OPEN_GIVE_UP`]: a leader without a working dispatcher must hand leadership over.
    pub on_unusable: Arc<dyn Fn(String) + Send + Sync>,
    /// Told of each task state change the cache applies (on the worker: it must be quick).
    pub on_transition: Option<Arc<dyn Fn(TaskTransition) + Send + Sync>>,
}

impl SchedulerSetup {
    /// The scheduler's view of the daemon's configuration (its cache dir, claim grace, retention
    /// and retry back-off), with what the process hands it.
    pub fn from_daemon(
        config: &crate::config::Config,
        quorum: QuorumHandle,
        runner_client: RunnerClient,
        on_unusable: Arc<dyn Fn(String) + Send + Sync>,
        on_transition: Option<Arc<dyn Fn(TaskTransition) + Send + Sync>>,
    ) -> SchedulerSetup {
        SchedulerSetup {
            quorum,
            cache_dir: config.state_dir.join("task-cache"),
            claim_grace: config.tasks.claim_grace,
            retention: config.tasks.retention,
            retry: config.tasks.retry,
            runner_client,
            on_unusable,
            on_transition,
        }
    }
}

/// The dispatcher's scheduling state, owned by its worker coroutine.
pub struct Scheduler {
    db: TaskDb,
    session: Arc<ZkSession>,
    handle: SchedulerHandle,
    context: ContextHandle,
    /// The contexts of the blocking runner RPCs (each call blocks its thread), used in turn so
    /// that the calls of one dispatch pass overlap.
    callers: Vec<ContextHandle>,
    next_caller: usize,
    /// Tasks whose owner child has a watch armed.
    watched: HashSet<TaskId>,
    /// Runners held off until then, ms since the epoch (refused or did not answer; drained).
    held_off: HashMap<String, u64>,
    /// The tasks this dispatcher's state shows `Running`, by runner: its own assignments not yet
    /// seen to end, which `placement::free_slots` counts against a runner's slots whatever its
    /// registration (read before them) says. Rebuilt by every check, kept by every write.
    assigned: HashMap<TaskId, String>,
    /// The runners' registrations as last read (see `RunnerView`).
    runner_view: Option<RunnerView>,
    retry: RetryPolicy,
    /// The earliest retry back-off to end (ms since the epoch): a pass runs then.
    retry_wake: Option<u64>,
    last_purge: Instant,
    claim_grace: Duration,
    retention: Duration,
    runner_client: RunnerClient,
    /// Copies accepted by the volume rule whose znodes their submitters are creating: held
    /// until the record is adopted (or its create failed), so that concurrent submits see them.
    reserved_copies: HashMap<TaskId, ReservedCopy>,
    /// The resolved paths of unfinished copies, so that each is resolved once per leadership.
    resolved_copies: HashMap<TaskId, VolumeUse>,
}

impl Scheduler {
    /// Follows a record this dispatcher wrote or re-read: a `Running` one counts against its
    /// runner's slots until it is seen to end (`assigned`).
    fn track(&mut self, record: &TaskRecord) {
        match (&record.state, &record.runner_addr) {
            (TaskState::Running, Some(runner_addr)) => {
                self.assigned.insert(record.task_id.clone(), runner_addr.clone());
            }
            _ => {
                self.assigned.remove(&record.task_id);
            }
        }
    }
}

#[cfg(test)]
mod tests;
