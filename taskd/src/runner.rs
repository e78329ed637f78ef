//! `TaskRunner`: every node's executor of tasks. It registers itself under
//! `/zbs/taskd/runners/<node_id>` (slots, free slots, draining, health) with the quorum's session,
//! answers the runner RPC (`execute`, `cancel`, `pause`, `drain`, `undrain`), and runs each task
//! it accepted as a coroutine on its own `ThreadContext` ("zbs-task-runner").
//!
//! # A task's run
//! `execute` reads the record, checks that the dispatcher assigned it here (`Running`, our
//! address), claims it (the ephemeral owner child, atomic with a check of the record's version),
//! and answers at once. The coroutine then runs the task — a Sleep sleeps in short steps, a
//! CopyVolume runs `copy_volume` and writes the progress once per extent — every record write
//! fenced on the version the runner last wrote. A fenced write means someone else owns the
//! task now: the run stops and writes nothing more. Otherwise the final state is written
//! (`Succeeded`; `Pending` with the error for a retry, `Failed` once out of attempts;
//! `Cancelled`; `Paused` when asked to pause, `Pending` when its runtime window closed, so the
//! dispatcher hands it out again once the window opens; `Interrupted`) and the owner child is
//! released.
//!
//! # Lease
//! A runner writes only while it holds its lease (`lease.rs`): a probe coroutine confirms
//! contact with ZooKeeper every quarter of the lease, and every block a copy writes (every step
//! a sleep takes) first asks whether the contact of the session that claimed the task is younger
//! than the lease. Once it is not, the run is interrupted at once and writes no more blocks; it
//! records `Interrupted` only if its record write still passes the fence (so it still owns the
//! task), and IO on that task resumes only through a new claim. The timer rule that orders the
//! lease before the owner node's expiry is checked with the configuration (`TimerRule`).
//!
//! # Release
//! A run's end frees its slot and publishes it in the registration, then releases its owner
//! node, retried until it succeeds or the session ends (then the server deletes the node
//! itself): a node left behind would keep the task looking owned. The slot goes first because
//! the owner's deletion is what tells the dispatcher the task ended: its next `execute` here
//! must find the slot free (a "no free slot" refusal, 429, is the dispatcher's over-commit).
//!
//! # Failures
//! A failed run records its error and its class (`FailureClass`, from `CopyError::class`): a
//! permanent one (source missing, permission denied, path refused, destination too small,
//! invalid arguments) ends the task `Failed` at once; a transient one leaves it `Pending` for
//! the dispatcher's retry back-off while attempts are left (`task::after_failure`).
//!
//! # Drain
//! A drain is kept in ZooKeeper twice: the registration's `draining` flag (what the dispatcher
//! schedules by; it dies with the session) and a persistent marker per node
//! (`task_db::set_drained`), which the runner reads before it first registers, so a drained
//! node stays drained across a restart until someone undrains it. Until that read succeeds the
//! runner neither registers nor accepts a task. Drain and undrain write the marker under a
//! coroutine mutex, so two requests can never leave it different from the flag. The latest
//! request wins: each one is counted (`DrainFlag`), and the start-up read of the marker takes
//! effect only if no request came while it was in flight (a request is newer than anything
//! the marker holds; the marker is then written with the request's value). A request is
//! answered `persisted` only once the marker holds its own value, written for it or a later
//! request of the same value.
//!
//! # Restart
//! A node restarted after a crash finds its previous incarnation's owner nodes still there (their
//! session lives until it expires, a whole session timeout), so its tasks would look owned that
//! long. With the state directory's lock (`RunnerConfig::sole_incarnation`), the runner deletes
//! every owner node that names its node id under another session before it registers with a new
//! session (`task_db::remove_stale_owners`): the dispatcher's owner watches fire, and the tasks
//! are `Interrupted` and handed out again at once. The registration of the old session is
//! replaced the same way (`task_db::register_runner`).
//!
//! # Stop
//! `stop` (stage 6 of the server's shutdown) interrupts every task at its next safe point
//! (a block of a copy, a step of a sleep), waits for them up to the drain deadline — each
//! records `Interrupted` — then unregisters the runner and joins its context.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quorum::{QuorumHandle, ZkSession};
use runtime::{CoMutex, SyncPoint, ThreadContext, TimerHandle};
use serde::{Deserialize, Serialize};

pub mod lease;
mod registration;
mod run;

use self::registration::{DrainFlag, DrainMarker};
use self::run::run_task;

use self::lease::RunnerLease;
use crate::clock::now_ms;
use crate::copy_volume::{copy_volume, AllowedRoots, CopyControl, CopyOutcome, CopySettings, CopySpec};
use crate::task::{after_failure, FailureClass, TaskId, TaskKind, TaskRecord, TaskState};
use crate::task_db::{self, DbError, OwnerInfo, RunnerInfo, StoredRecord};

/// The runner's thread name (at most 15 bytes).
pub const RUNNER_THREAD_NAME: &str = "zbs-task-runner";

/// How often the runner checks its registration (re-registers after a new session, publishes
/// changed free slots).
const REGISTRATION_INTERVAL: Duration = Duration::from_millis(500);

/// How long a drain or undrain request waits for its marker to be written before it answers
/// `persisted: false` (the write goes on): under the dispatcher's runner RPC timeout.
const DRAIN_PERSIST_WAIT: Duration = Duration::from_secs(2);

/// The refusal of an `execute` when every slot is taken.
pub const NO_FREE_SLOT: &str = "no free slot";

/// The step of a Sleep task: how soon it sees a cancel, pause or interrupt.
const SLEEP_STEP: Duration = Duration::from_millis(50);

/// The first pause between two attempts to release an owner node; each further one doubles, up
/// to `RELEASE_RETRY_MAX`.
const RELEASE_RETRY_FIRST: Duration = Duration::from_millis(100);
const RELEASE_RETRY_MAX: Duration = Duration::from_secs(2);

/// The stack of the runner's coroutines: a copy's caller side and ZooKeeper calls run there.
const RUNNER_STACK_SIZE: usize = 1 << 20;

/// The body of every runner RPC about one task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRequest {
    pub task_id: String,
}

/// Why the runner refused a request; `status` is the HTTP status to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerRefusal {
    pub status: u16,
    pub message: String,
}

impl RunnerRefusal {
    fn new(status: u16, message: impl Into<String>) -> RunnerRefusal {
        RunnerRefusal { status, message: message.into() }
    }
}

/// One task this runner works on.
struct RunningTask {
    control: CopyControl,
    finished: SyncPoint,
}

/// What the runner's settings are.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub node_id: String,
    /// The runner RPC address, as the dispatcher writes it in `runner_addr`.
    pub address: String,
    pub slots: u32,
    pub allowed_roots: Vec<std::path::PathBuf>,
    /// The block devices copies may use, by exact path (`allowed_devices`).
    pub allowed_devices: Vec<std::path::PathBuf>,
    /// Copies may use files with more than one hard link (`allow_hard_links`).
    pub allow_hard_links: bool,
    pub drain_deadline: Duration,
    /// Failed runs after which a task stays `Failed` (the first run counts).
    pub max_attempts: u32,
    /// Extent and block sizes and the rate limit of new copies.
    pub copy: CopySettings,
    /// F: no task IO after this long without confirmed contact with ZooKeeper (`lease.rs`).
    pub lease: Duration,
    /// Where runs are counted (`None` in tests that need no metrics).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// With the proof that this process is its node's only live incarnation, owner nodes of
    /// this node id held by another session are deleted before each registration (`# Restart`).
    pub sole_incarnation: Option<crate::state_lock::SoleIncarnation>,
}

impl RunnerConfig {
    /// The runner's view of the daemon's configuration; `metrics` and `sole_incarnation` come
    /// from the process, not the file.
    pub fn from_daemon(
        config: &crate::config::Config,
        metrics: Option<Arc<crate::metrics::Metrics>>,
        sole_incarnation: Option<crate::state_lock::SoleIncarnation>,
    ) -> RunnerConfig {
        RunnerConfig {
            node_id: config.node_id.clone(),
            address: config.runner_address().to_string(),
            slots: config.runner_slots,
            allowed_roots: config.allowed_roots.clone(),
            allowed_devices: config.allowed_devices.clone(),
            allow_hard_links: config.allow_hard_links,
            drain_deadline: config.drain_deadline,
            max_attempts: config.tasks.max_attempts,
            copy: CopySettings {
                extent_size: config.tasks.copy_extent_bytes,
                block_size: config.tasks.copy_block_bytes,
                max_bytes_per_s: config.tasks.copy_max_bytes_per_s,
            },
            lease: config.runner_lease(),
            metrics,
            sole_incarnation,
        }
    }
}

struct Inner {
    config: RunnerConfig,
    /// `None` when a configured root is unusable: every copy is then refused with that reason.
    roots: Result<AllowedRoots, String>,
    quorum: QuorumHandle,
    /// The latest confirmed contact with ZooKeeper, asked before every task write.
    lease: Arc<RunnerLease>,
    healthy: Arc<dyn Fn() -> bool + Send + Sync>,
    running: Mutex<HashMap<TaskId, RunningTask>>,
    /// Tasks whose `execute` is between its checks and its run (reading the record, claiming):
    /// they hold a slot, and a second `execute` of one of them is answered "already running"
    /// instead of starting a second run of the same task (seen in a chaos run, when the
    /// dispatcher repeated an execute across a reconnect). Locked after `running`, never before.
    starting: Mutex<std::collections::HashSet<TaskId>>,
    /// `drain_flag.draining`, for the readers that need no count; written only under `drain_flag`.
    draining: AtomicBool,
    /// The drain flag with its request count; a thread mutex never held across a park.
    drain_flag: Mutex<DrainFlag>,
    /// What the marker holds since this runner last wrote it.
    marker_written: Mutex<DrainFlag>,
    drain_marker: CoMutex<DrainMarker>,
    stopping: AtomicBool,
    /// The session and node version of the current registration, and what it published.
    registration: Mutex<Option<(i64, i32, RunnerInfo)>>,
    /// A coroutine is rewriting the registration (see `keep_registered`).
    registering: AtomicBool,
    /// The registration should be looked at again once the running rewrite is done.
    register_again: AtomicBool,
}

/// Every node's task executor (see the module documentation).
pub struct TaskRunner {
    inner: Arc<Inner>,
    context: ThreadContext,
    registration_timer: Mutex<Option<TimerHandle>>,
}

impl TaskRunner {
    /// Starts the runner's context and its registration timer. `healthy` reports this node's
    /// data-network health for the registration.
    pub fn start(
        config: RunnerConfig,
        quorum: QuorumHandle,
        healthy: impl Fn() -> bool + Send + Sync + 'static,
    ) -> std::io::Result<TaskRunner> {
        // The roots' descriptors are opened here, once: every copy opens its files beneath them.
        let roots = AllowedRoots::with_rules(&config.allowed_roots, &config.allowed_devices, config.allow_hard_links)
            .map_err(|error| error.to_string());
        if let Err(reason) = &roots {
            tracing::error!(%reason, "allowed_roots unusable: every copy will be refused");
        }
        let context = ThreadContext::with_stack_size(RUNNER_THREAD_NAME, RUNNER_STACK_SIZE)?;
        let inner = Arc::new(Inner {
            roots,
            quorum,
            lease: Arc::new(RunnerLease::new(config.lease)),
            healthy: Arc::new(healthy),
            running: Mutex::new(HashMap::new()),
            starting: Mutex::new(std::collections::HashSet::new()),
            draining: AtomicBool::new(false),
            drain_flag: Mutex::new(DrainFlag::default()),
            marker_written: Mutex::new(DrainFlag::default()),
            drain_marker: CoMutex::new(DrainMarker::Unknown),
            stopping: AtomicBool::new(false),
            registration: Mutex::new(None),
            registering: AtomicBool::new(false),
            register_again: AtomicBool::new(false),
            config,
        });
        // The probe runs on the runner's context, which `stop` joins.
        let probing = inner.clone();
        context.sched(move || probing.keep_lease()).map_err(|error| std::io::Error::other(error.to_string()))?;
        let registering = inner.clone();
        let timer = TimerHandle::new(&context, move || registering.keep_registered(), REGISTRATION_INTERVAL, true)
            .map_err(|error| std::io::Error::other(error.to_string()))?;
        tracing::info!(node_id = %inner.config.node_id, slots = inner.config.slots, "runner started");
        Ok(TaskRunner { inner, context, registration_timer: Mutex::new(Some(timer)) })
    }

    /// The runner's lease: its latest confirmed contact with ZooKeeper, which the leader's VIP
    /// fence also counts from.
    pub fn lease(&self) -> Arc<RunnerLease> {
        self.inner.lease.clone()
    }

    /// `POST /api/v1/runner/execute`: claims the task and starts it; answers at once.
    pub fn execute(&self, task_id: &str) -> Result<serde_json::Value, RunnerRefusal> {
        let inner = &self.inner;
        let task_id = TaskId::parse(task_id).map_err(|error| RunnerRefusal::new(400, error.to_string()))?;
        if inner.stopping.load(Ordering::Acquire) {
            return Err(RunnerRefusal::new(503, "the runner is stopping"));
        }
        if *inner.drain_marker.lock() == DrainMarker::Unknown {
            return Err(RunnerRefusal::new(503, "the runner is starting (its drain state is not read yet)"));
        }
        if inner.draining.load(Ordering::Acquire) {
            return Err(RunnerRefusal::new(503, "the runner is draining"));
        }
        // Checked and reserved in one step, so two executes of one task never both get past here.
        let _starting = {
            let running = inner.running.lock();
            let mut starting = inner.starting.lock();
            if running.contains_key(&task_id) || starting.contains(&task_id) {
                return Ok(serde_json::json!({ "task_id": task_id, "accepted": true, "already_running": true }));
            }
            if running.len() + starting.len() >= inner.config.slots as usize {
                // 429, not 503: the dispatcher tells a runner that is full (its registration was
                // behind) from one that is unavailable, and holds off only the latter.
                return Err(RunnerRefusal::new(429, NO_FREE_SLOT));
            }
            starting.insert(task_id.clone());
            Starting { starting: &inner.starting, task_id: task_id.clone() }
        };
        let session = inner.session().ok_or_else(|| RunnerRefusal::new(503, "no ZooKeeper session"))?;
        let stored = match task_db::read_record(&session, &task_id) {
            Ok(Some(stored)) => stored,
            Ok(None) => return Err(RunnerRefusal::new(404, format!("task {task_id} not found"))),
            Err(error) => return Err(RunnerRefusal::new(502, format!("cannot read task {task_id}: {error}"))),
        };
        if stored.record.state != TaskState::Running
            || stored.record.runner_addr.as_deref() != Some(inner.config.address.as_str())
        {
            return Err(RunnerRefusal::new(
                409,
                format!(
                    "task {task_id} is {} and assigned to {:?}, not to this runner",
                    stored.record.state, stored.record.runner_addr
                ),
            ));
        }
        let owner = OwnerInfo {
            runner_id: inner.config.node_id.clone(),
            address: inner.config.address.clone(),
            session_id: Some(session.session_id()),
            epoch: stored.record.schedule_time_ms,
        };
        let claim_sent = Instant::now();
        match task_db::claim(&session, &task_id, &owner, Some(stored.version)) {
            // An answered claim is a confirmed contact, too.
            Ok(()) => inner.lease.confirm(session.session_id(), claim_sent),
            Err(error @ (DbError::Fenced { .. } | DbError::AlreadyOwned { .. } | DbError::Conflict { .. })) => {
                return Err(RunnerRefusal::new(409, error.to_string()))
            }
            Err(error @ DbError::NotFound { .. }) => return Err(RunnerRefusal::new(404, error.to_string())),
            Err(error) => return Err(RunnerRefusal::new(502, error.to_string())),
        }
        let control = CopyControl::with_runtime_window(stored.record.runtime_window);
        let (lease, session_id, session_timeout) =
            (inner.lease.clone(), session.session_id(), session.session_timeout());
        // Until when IO was allowed (the run log's `io_until_mono_ns`): every IO asks the permit
        // first, so none began after the lease's end as of the last grant — or, once refused, after
        // the lapsed lease's end (the refusal itself when the latest contact is already another
        // session's). A run frozen mid-copy that wakes to a refused progress write never asks
        // again: the last grant still bounds what it did.
        let io_until: Arc<Mutex<Option<Instant>>> = Arc::default();
        let permit_until = io_until.clone();
        control.set_write_permit(move || {
            // Once refused, the permit is not asked again (`CopyControl::may_write`).
            let check = lease.check_io(session_id, session_timeout);
            *permit_until.lock() = Some(check.until);
            check.allowed
        });
        let finished = SyncPoint::new();
        // The slot was reserved above: the task moves from `starting` to `running` (the
        // reservation's guard lets go of it when this function returns).
        inner
            .running
            .lock()
            .insert(task_id.clone(), RunningTask { control: control.clone(), finished: finished.clone() });
        let runner = inner.clone();
        let started_id = task_id.clone();
        let session_for_release = session.clone();
        let scheduled = self.context.sched(move || {
            let task_id = stored.record.task_id.clone();
            run_task(&runner, &session, stored, &control, &io_until);
            // The slot is free, and published, before the owner node goes: the dispatcher learns
            // of the end from the owner's deletion and may hand this runner its next task at
            // once, which must find the slot free (see `# Release`).
            runner.running.lock().remove(&task_id);
            runner.keep_registered();
            runner.release_until_done(&session, &task_id);
            finished.done();
        });
        if let Err(error) = scheduled {
            inner.running.lock().remove(&started_id);
            inner.release_until_done(&session_for_release, &started_id);
            return Err(RunnerRefusal::new(503, format!("cannot start the task: {error}")));
        }
        tracing::info!(task_id = %started_id, "task started");
        Ok(serde_json::json!({ "task_id": started_id, "accepted": true }))
    }

    /// `POST /api/v1/runner/cancel`: the task stops at its next block and ends `Cancelled`.
    pub fn cancel(&self, task_id: &str) -> Result<serde_json::Value, RunnerRefusal> {
        self.with_task(task_id, |control| control.cancel())
    }

    /// `POST /api/v1/runner/pause`: the task stops at its next extent boundary, `Paused`.
    pub fn pause(&self, task_id: &str) -> Result<serde_json::Value, RunnerRefusal> {
        self.with_task(task_id, |control| control.pause())
    }

    /// Applies a new runtime window to a running task (set_runtime).
    pub fn set_runtime_window(
        &self,
        task_id: &str,
        window: Option<crate::task::RuntimeWindow>,
    ) -> Result<serde_json::Value, RunnerRefusal> {
        self.with_task(task_id, |control| control.set_runtime_window(window))
    }

    fn with_task(&self, task_id: &str, act: impl FnOnce(&CopyControl)) -> Result<serde_json::Value, RunnerRefusal> {
        let task_id = TaskId::parse(task_id).map_err(|error| RunnerRefusal::new(400, error.to_string()))?;
        let running = self.inner.running.lock();
        let task = running
            .get(&task_id)
            .ok_or_else(|| RunnerRefusal::new(404, format!("task {task_id} is not running here")))?;
        act(&task.control);
        Ok(serde_json::json!({ "task_id": task_id, "ok": true }))
    }

    /// Drain (no new tasks; running ones finish) or undrain: refused tasks at once, persisted in
    /// the node's drain marker (`persisted` when that was done within `DRAIN_PERSIST_WAIT`;
    /// otherwise it is written as soon as ZooKeeper answers) and published in the registration.
    /// The marker is written on the runner's context, so a slow ZooKeeper never holds the API
    /// request past the wait.
    pub fn set_draining(&self, draining: bool) -> serde_json::Value {
        let request = {
            let mut flag = self.inner.drain_flag.lock();
            let request = flag.request(draining);
            self.inner.draining.store(draining, Ordering::Release);
            request
        };
        let persisted = SyncPoint::<bool>::new();
        let (inner, persisted_now) = (self.inner.clone(), persisted.clone());
        let scheduled = self.context.sched(move || {
            let synced = {
                let mut marker = inner.drain_marker.lock();
                *marker = DrainMarker::Dirty;
                inner.sync_drain_marker(&mut marker)
            };
            let written = *inner.marker_written.lock();
            persisted_now.done_with(synced && DrainFlag::persists(written, request, draining));
            inner.keep_registered();
        });
        let persisted =
            scheduled.is_ok() && persisted.wait_timeout(DRAIN_PERSIST_WAIT) && persisted.take().unwrap_or(false);
        tracing::info!(node_id = %self.inner.config.node_id, draining, persisted, "runner drain changed");
        serde_json::json!({ "node_id": self.inner.config.node_id, "draining": draining, "persisted": persisted })
    }

    /// The runner's state for `GET /api/v1/runner`.
    pub fn status(&self) -> serde_json::Value {
        let running: Vec<String> = self.inner.running.lock().keys().map(|id| id.to_string()).collect();
        serde_json::json!({
            "node_id": self.inner.config.node_id,
            "address": self.inner.config.address,
            "slots": self.inner.config.slots,
            "draining": self.inner.draining.load(Ordering::Acquire),
            "running": running,
        })
    }

    /// Stage 6 of the server's shutdown (see `# Stop`). Idempotent.
    pub fn stop(&self) -> usize {
        if self.inner.stopping.swap(true, Ordering::AcqRel) {
            return 0;
        }
        if let Some(timer) = self.registration_timer.lock().take() {
            timer.cancel();
        }
        let waits: Vec<(TaskId, SyncPoint)> = {
            let running = self.inner.running.lock();
            running
                .iter()
                .map(|(task_id, task)| {
                    task.control.interrupt();
                    (task_id.clone(), task.finished.clone())
                })
                .collect()
        };
        let deadline = Instant::now() + self.inner.config.drain_deadline;
        for (task_id, finished) in &waits {
            let left = deadline.saturating_duration_since(Instant::now());
            if !finished.wait_timeout(left) {
                tracing::warn!(%task_id, "task did not stop within the drain deadline");
            }
        }
        if let Some(session) = self.inner.session() {
            if let Err(error) = task_db::unregister_runner(&session, &self.inner.config.node_id) {
                tracing::warn!(%error, "cannot unregister the runner");
            }
        }
        self.context.stop();
        if let Err(error) = self.context.join() {
            tracing::error!(%error, "runner context did not join");
        }
        waits.len()
    }
}

impl Drop for TaskRunner {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn session(&self) -> Option<Arc<ZkSession>> {
        self.quorum.session().filter(|session| session.is_open())
    }

    fn info(&self) -> RunnerInfo {
        let n_running = self.running.lock().len() as u32;
        RunnerInfo {
            node_id: self.config.node_id.clone(),
            address: self.config.address.clone(),
            slots: self.config.slots,
            free_slots: self.config.slots.saturating_sub(n_running),
            draining: self.draining.load(Ordering::Acquire),
            healthy: (self.healthy)(),
        }
    }

    /// The probe of `# Lease`: an `exists` every `probe_interval`; an answered one confirms
    /// contact as of when it was sent. Ends when the runner stops (or its context does).
    fn keep_lease(&self) {
        let interval = self.lease.probe_interval();
        while !self.stopping.load(Ordering::Acquire) {
            if let Some(session) = self.session() {
                let sent = Instant::now();
                match session.exists(task_db::layout::DB_ROOT) {
                    // The session times it (`zookeeper_operation_seconds{operation="exists"}`).
                    Ok(_) => self.lease.confirm(session.session_id(), sent),
                    Err(error) => tracing::debug!(%error, "lease probe unanswered"),
                }
                // A probe that waited (a disconnection) is not followed by another at once.
                runtime::sleep(interval.saturating_sub(sent.elapsed()).max(interval / 4));
            } else {
                runtime::sleep(interval);
            }
        }
    }

    /// Releases this session's owner node of `task_id`, retried with back-off until it is done or
    /// the session can no longer hold the node (see `# Release`).
    fn release_until_done(&self, session: &ZkSession, task_id: &TaskId) {
        let mut pause = RELEASE_RETRY_FIRST;
        loop {
            match task_db::release(session, task_id) {
                Ok(_) => return,
                Err(error) => {
                    if !session.is_open() || session.state().is_final() {
                        tracing::info!(%task_id, %error, "owner node not released; it ends with its session");
                        return;
                    }
                    if self.stopping.load(Ordering::Acquire) {
                        tracing::warn!(%task_id, %error, "owner node not released; the session closes at stop");
                        return;
                    }
                    tracing::warn!(%task_id, %error, retry_ms = pause.as_millis() as u64, "cannot release the task; retrying");
                    runtime::sleep(pause);
                    pause = (pause * 2).min(RELEASE_RETRY_MAX);
                }
            }
        }
    }
}

/// A task's place in `Inner::starting`, given back when `execute` returns, however it returns.
struct Starting<'a> {
    starting: &'a Mutex<std::collections::HashSet<TaskId>>,
    task_id: TaskId,
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.starting.lock().remove(&self.task_id);
    }
}

#[cfg(test)]
mod tests;
