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

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quorum::{QuorumHandle, ZkSession};
use runtime::{ContextHandle, SyncPoint};

use super::placement::{self, Candidate, Command, RetryPolicy, RunnerSlots, RunningVerdict};
use super::submit::{Submit, SubmitError, Submitted};
use super::volumes::{self, VolumeUse};
use crate::clock::now_ms;
use crate::runner_client::{paths as runner_paths, RunnerCallError, RunnerClient};
use crate::task::{RequestId, TaskId, TaskKind, TaskRecord, TaskState};
use crate::task_db::{
    self, CacheWatch, DbError, ListFilter, StoredRecord, SubmitBody, TaskCounts, TaskDb, TaskDbConfig, TaskTally,
    TaskTransition,
};

/// How often the dispatcher looks for waiting tasks (the original: every 2 s).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// How often the purge runs at most; a shorter retention purges more often (a quarter of it).
const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// How long the dispatch pass trusts the runners' free slots it read (less the tasks it handed
/// out since) before reading them again. Owner and runner changes and the periodic check make
/// it re-read at once; this bounds how long a change nothing reports (a runner's registration
/// rewritten as its tasks end) goes unseen while submits keep coming.
const RUNNER_VIEW_TTL: Duration = Duration::from_millis(250);

/// The runners as the dispatch pass last read their registrations.
struct RunnerView {
    runners: Vec<RunnerSlots>,
    read_at: Instant,
}

/// Running tasks (and as many owners) read per pipelined batch by the periodic check.
const RUNNING_READ_BATCH: usize = 256;

/// How many queued jobs the worker runs before a requested dispatch pass.
const JOBS_BEFORE_PASS: usize = 16;

/// The most callers' jobs (`SchedulerHandle::call`) waiting in the queue; past it a call is
/// refused at once (`CallError::QueueFull`, 503 with `Retry-After`) instead of queueing work
/// the worker would reach only after its callers gave up.
pub const MAX_QUEUED_CALLS: usize = 4096;

/// How long a caller whose job already started waits for its outcome past its own deadline (the
/// job's ZooKeeper calls are bounded by the session timeout).
const RUNNING_JOB_GRACE: Duration = Duration::from_secs(30);

/// Why a `SchedulerHandle::call` has no answer. In every case but `Unknown` the job did not and
/// will not run: nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the dispatcher's queue is full ({MAX_QUEUED_CALLS} requests waiting); nothing was changed, retry later")]
    QueueFull,
    #[error(
        "the dispatcher did not reach the request in time (its database may not be open yet); nothing was changed"
    )]
    NotRun,
    #[error("the dispatcher is still running the request; its outcome is unknown, look it up before retrying")]
    Unknown,
}

/// A caller's job's fate, decided once: the worker starts it, or the caller abandons it first;
/// whichever comes second learns that it lost.
#[derive(Debug, Default)]
pub(crate) struct JobFate(std::sync::atomic::AtomicU8);

impl JobFate {
    const PENDING: u8 = 0;
    const STARTED: u8 = 1;
    const ABANDONED: u8 = 2;

    /// The worker: true when the job may run (its caller has not given up).
    pub(crate) fn start(&self) -> bool {
        self.0.compare_exchange(Self::PENDING, Self::STARTED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// The caller: true when the job will never run (the worker had not started it).
    pub(crate) fn abandon(&self) -> bool {
        self.0.compare_exchange(Self::PENDING, Self::ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

type Job = Box<dyn FnOnce(&mut Scheduler) + Send>;

struct Shared {
    queue: Mutex<VecDeque<Job>>,
    /// Callers' jobs in the queue (counted against `MAX_QUEUED_CALLS`).
    queued_calls: std::sync::atomic::AtomicUsize,
    wake: Mutex<SyncPoint>,
    check_requested: AtomicBool,
    ready: AtomicBool,
    /// Room under the database's cap, so that a submit reserves without a trip to the worker.
    room: Mutex<Room>,
    /// The database's session, once it is open (submits create their znodes with it).
    session: Mutex<Option<Arc<ZkSession>>>,
    /// Records whose znodes submits created, for the worker to cache (`adopt_created`).
    created: Mutex<Vec<TaskRecord>>,
    /// The cache's counts by type and state (see `# What metrics read`).
    tally: TaskTally,
    /// The runners as the dispatch pass last read them.
    runner_counts: Mutex<Option<RunnerCounts>>,
}

/// Registered runners by state, as the dispatch pass last read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunnerCounts {
    /// Registered and not draining.
    pub n_up: u64,
    pub n_draining: u64,
}

/// The database's counts as the worker last published them, and the submits in flight (reserved,
/// not yet adopted). A reservation is refused when both together would pass a cap; a record
/// being adopted is briefly counted twice, never less than once.
#[derive(Default)]
struct Room {
    n_records: usize,
    reply_bytes: usize,
    max_records: usize,
    in_flight_records: usize,
    in_flight_bytes: usize,
}

impl Room {
    fn reserve(&mut self, task_id: &TaskId) -> Result<(), DbError> {
        let bytes = task_db::layout::child_reply_bytes(task_id.as_str());
        if self.n_records + self.in_flight_records + 1 > self.max_records
            || self.reply_bytes + self.in_flight_bytes + bytes > task_db::layout::MAX_CHILDREN_REPLY_BYTES
        {
            return Err(DbError::Full {
                n_records: self.n_records,
                reply_bytes: self.reply_bytes,
                max_records: self.max_records,
                max_reply_bytes: task_db::layout::MAX_CHILDREN_REPLY_BYTES,
            });
        }
        self.in_flight_records += 1;
        self.in_flight_bytes += bytes;
        Ok(())
    }

    fn release(&mut self, task_id: &TaskId) {
        self.in_flight_records = self.in_flight_records.saturating_sub(1);
        self.in_flight_bytes =
            self.in_flight_bytes.saturating_sub(task_db::layout::child_reply_bytes(task_id.as_str()));
    }

    fn publish(&mut self, db: &TaskDb) {
        self.n_records = db.len();
        self.reply_bytes = db.reply_bytes();
        self.max_records = db.max_records();
    }
}

/// Posts work to the scheduler from any thread.
#[derive(Clone)]
pub struct SchedulerHandle {
    shared: Arc<Shared>,
}

impl SchedulerHandle {
    fn new() -> SchedulerHandle {
        SchedulerHandle {
            shared: Arc::new(Shared {
                queue: Mutex::new(VecDeque::new()),
                queued_calls: std::sync::atomic::AtomicUsize::new(0),
                wake: Mutex::new(SyncPoint::new()),
                check_requested: AtomicBool::new(false),
                ready: AtomicBool::new(false),
                room: Mutex::new(Room::default()),
                session: Mutex::new(None),
                created: Mutex::new(Vec::new()),
                tally: TaskTally::default(),
                runner_counts: Mutex::new(None),
            }),
        }
    }

    fn post(&self, job: Job) {
        self.shared.queue.lock().push_back(job);
        self.shared.wake.lock().done();
    }

    /// Asks for a check now (a submit, a runner change).
    pub fn request_check(&self) {
        self.shared.check_requested.store(true, Ordering::Release);
        self.shared.wake.lock().done();
    }

    /// True once the task database is open.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// The cached tasks by type and state, once the database is open (a copy of counters the
    /// cache keeps: nothing is listed, the worker is not asked).
    pub fn task_counts(&self) -> Option<TaskCounts> {
        self.is_ready().then(|| self.shared.tally.snapshot())
    }

    /// The runners up and draining as the dispatch pass last read them, once it has.
    pub fn runner_counts(&self) -> Option<RunnerCounts> {
        *self.shared.runner_counts.lock()
    }

    /// Submits a new task with its ZooKeeper create on the caller's coroutine, so that the
    /// creates of concurrent submitters are in flight together on the session (the client
    /// pipelines them) instead of one after another on the dispatcher's worker (see
    /// `# Submits`). `Unavailable` when the database is not open and did not open within
    /// `timeout`.
    pub fn submit(&self, timeout: Duration, submit: Submit) -> Result<Submitted, SubmitError> {
        submit.kind.validate()?;
        let body = submit.body();
        let mut record = TaskRecord::new(TaskId::generate(), submit.kind, now_ms());
        record.runtime_window = submit.runtime_window;
        record.request_id = submit.request_id;
        let published = self.shared.session.lock().clone();
        let session = match published {
            Some(session) => session,
            // The database is not open yet: wait for it like any other call.
            None => self.call(timeout, |scheduler| scheduler.session.clone()).map_err(|_| SubmitError::Unavailable)?,
        };
        // A retry: the request id names the task the first submit created.
        if let Some(request_id) = &record.request_id {
            if let Some(original) = replay(&session, request_id, &body)? {
                return Ok(original);
            }
        }
        // A copy's file system reads happen here, on the submitter's coroutine, never on the worker.
        let copy = match &body.kind {
            TaskKind::CopyVolume(args) => {
                let holds_data =
                    volumes::holds_data(&args.destination).map_err(|error| SubmitError::DestinationUnreadable {
                        destination: args.destination.clone(),
                        reason: error.to_string(),
                    })?;
                let refuse_data = (holds_data && !body.overwrite).then(|| args.destination.clone());
                Some((VolumeUse::resolve(args), refuse_data))
            }
            TaskKind::Sleep(_) => None,
        };
        match copy {
            // The volume rule must see every other copy, accepted or in flight: it runs on the
            // worker, which owns the cache and the copies' reservations (see `reserve_copy`).
            Some((volumes, refuse_data)) => {
                let (task_id, request_id) = (record.task_id.clone(), record.request_id.clone());
                self.call(timeout, move |scheduler| scheduler.reserve_copy(task_id, request_id, volumes, refuse_data))
                    .map_err(|_| SubmitError::Unavailable)??;
            }
            None => self.shared.room.lock().reserve(&record.task_id)?,
        }
        if let Err(error) = task_db::create_task_with_request(&session, &record, &body) {
            self.shared.room.lock().release(&record.task_id);
            let task_id = record.task_id.clone();
            self.post(Box::new(move |scheduler| {
                scheduler.reserved_copies.remove(&task_id);
            }));
            return match error {
                // Another submit with the same request id created its task first.
                DbError::RequestTaken { request_id } => match replay(&session, &request_id, &body)? {
                    Some(original) => Ok(original),
                    None => Err(DbError::RequestTaken { request_id }.into()),
                },
                error => Err(error.into()),
            };
        }
        tracing::info!(task_id = %record.task_id, kind = record.kind.type_name(), request_id = ?record.request_id.as_ref().map(RequestId::as_str), "task submitted");
        // Persisted: the answer goes now. The worker caches the record before any job posted
        // after this one (the queue is FIFO), so the client's next request through the
        // dispatcher already finds it.
        let answer = record.clone();
        // Submits that come while an adoption waits in the queue join it (one LevelDB write and
        // one wake-up for all of them); it runs before any job posted after this submit's answer.
        let first = {
            let mut created = self.shared.created.lock();
            created.push(record);
            created.len() == 1
        };
        if first {
            self.post(Box::new(|scheduler| scheduler.adopt_created()));
        }
        Ok(Submitted { record: answer, created: true })
    }

    /// Runs `job` on the dispatcher's context with the scheduler and waits (parking only the
    /// caller's coroutine) for its answer. The job carries its caller's deadline: one the worker
    /// has not started within `timeout` is dropped, never run (`NotRun`); one it started is waited
    /// for a little longer (`Unknown` past that). A full queue refuses at once (`QueueFull`).
    pub fn call<R, F>(&self, timeout: Duration, job: F) -> Result<R, CallError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Scheduler) -> R + Send + 'static,
    {
        let shared = &self.shared;
        if shared.queued_calls.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED_CALLS {
            shared.queued_calls.fetch_sub(1, Ordering::AcqRel);
            return Err(CallError::QueueFull);
        }
        let fate = Arc::new(JobFate::default());
        let answer: SyncPoint<R> = SyncPoint::new();
        let (done, job_fate, counted) = (answer.clone(), fate.clone(), self.shared.clone());
        self.post(Box::new(move |scheduler| {
            counted.queued_calls.fetch_sub(1, Ordering::AcqRel);
            if job_fate.start() {
                done.done_with(job(scheduler));
            }
        }));
        if answer.wait_timeout(timeout) {
            return answer.take().ok_or(CallError::Unknown);
        }
        if fate.abandon() {
            // The worker will find it abandoned and drop it: it never runs.
            return Err(CallError::NotRun);
        }
        if answer.wait_timeout(RUNNING_JOB_GRACE) {
            answer.take().ok_or(CallError::Unknown)
        } else {
            Err(CallError::Unknown)
        }
    }
}

/// The answer to a submit whose request id is known: the original task (read from ZooKeeper,
/// whatever its state now), `RequestIdReused` when the body differs, `RequestIdSpent` when the
/// task is gone. `None` when the request id is unknown.
fn replay(session: &ZkSession, request_id: &RequestId, body: &SubmitBody) -> Result<Option<Submitted>, SubmitError> {
    let Some(node) = task_db::read_request(session, request_id)? else {
        return Ok(None);
    };
    if node.body != *body {
        return Err(SubmitError::RequestIdReused { request_id: request_id.clone(), task_id: node.task_id });
    }
    match task_db::read_record(session, &node.task_id)? {
        Some(stored) => {
            tracing::info!(task_id = %node.task_id, %request_id, "a retried submit answered with its task");
            Ok(Some(Submitted { record: stored.record, created: false }))
        }
        None => Err(SubmitError::RequestIdSpent { request_id: request_id.clone(), task_id: node.task_id }),
    }
}

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

/// How long the worker tries to open the task database before it reports the dispatcher
/// unusable (a ZooKeeper hiccup passes within it; an unusable cache directory does not).
pub const OPEN_GIVE_UP: Duration = Duration::from_secs(10);

/// Starts the worker coroutine on `context`; it opens the database and then serves jobs until the
/// context stops.
pub fn start(
    context: &ContextHandle,
    callers: Vec<ContextHandle>,
    setup: SchedulerSetup,
) -> Result<SchedulerHandle, runtime::SchedError> {
    let handle = SchedulerHandle::new();
    let worker_handle = handle.clone();
    let own_context = context.clone();
    context.sched(move || worker(worker_handle, own_context, callers, setup))?;
    Ok(handle)
}

fn worker(handle: SchedulerHandle, context: ContextHandle, callers: Vec<ContextHandle>, setup: SchedulerSetup) {
    let first_try = Instant::now();
    let mut reported = false;
    let db = loop {
        let error = match setup.quorum.session() {
            Some(session) => match TaskDb::open(session.clone(), db_config(&handle, &setup)) {
                Ok(db) => break db,
                Err(error) => error.to_string(),
            },
            None => "no ZooKeeper session".to_string(),
        };
        tracing::error!(%error, "cannot open the task database; retrying");
        if !reported && first_try.elapsed() >= OPEN_GIVE_UP {
            reported = true;
            (setup.on_unusable)(format!("the task database cannot be opened for {OPEN_GIVE_UP:?}: {error}"));
        }
        runtime::sleep(CHECK_INTERVAL);
    };
    let session = db.session().clone();
    let mut scheduler = Scheduler {
        db,
        session,
        handle: handle.clone(),
        context,
        callers,
        next_caller: 0,
        watched: HashSet::new(),
        held_off: HashMap::new(),
        assigned: HashMap::new(),
        runner_view: None,
        retry: setup.retry,
        retry_wake: None,
        last_purge: Instant::now(),
        claim_grace: setup.claim_grace,
        retention: setup.retention,
        runner_client: setup.runner_client,
        reserved_copies: HashMap::new(),
        resolved_copies: HashMap::new(),
    };
    handle.shared.room.lock().publish(&scheduler.db);
    *handle.shared.session.lock() = Some(scheduler.session.clone());
    handle.shared.ready.store(true, Ordering::Release);
    let _unpublish = Unpublish(handle.shared.clone());
    scheduler.watch_runners();
    let mut next_check = Instant::now();
    loop {
        let wake = SyncPoint::new();
        *handle.shared.wake.lock() = wake.clone();
        // A burst of jobs (submits) must not hold back the dispatch pass they asked for: after
        // `JOBS_BEFORE_PASS` jobs a requested pass runs, then the rest of the queue.
        for _ in 0..JOBS_BEFORE_PASS {
            let job = handle.shared.queue.lock().pop_front();
            match job {
                Some(job) => {
                    let started = Instant::now();
                    job(&mut scheduler);
                    report_slow("a job", started);
                }
                None => break,
            }
        }
        if Instant::now() >= next_check {
            handle.shared.check_requested.store(false, Ordering::Release);
            let started = Instant::now();
            scheduler.check();
            report_slow("the periodic check", started);
            handle.shared.room.lock().publish(&scheduler.db);
            next_check = Instant::now() + CHECK_INTERVAL;
            continue;
        }
        // A retry's back-off ended: its task is due now, not at the next check.
        let retry_due = scheduler.retry_wake().is_some_and(|at| at <= now_ms());
        if handle.shared.check_requested.swap(false, Ordering::AcqRel) || retry_due {
            let started = Instant::now();
            scheduler.dispatch_pass();
            report_slow("a dispatch pass", started);
            continue;
        }
        if !handle.shared.queue.lock().is_empty() {
            continue;
        }
        // Refreshes, purges and creates by others changed the counts a reservation checks.
        handle.shared.room.lock().publish(&scheduler.db);
        let until_check = next_check.saturating_duration_since(Instant::now());
        let until_retry =
            scheduler.retry_wake().map_or(until_check, |at| Duration::from_millis(at.saturating_sub(now_ms())));
        wake.wait_timeout(until_check.min(until_retry));
    }
}

/// The database's configuration: the defaults, counting into the handle's tally and reporting
/// transitions to the setup's callback.
fn db_config(handle: &SchedulerHandle, setup: &SchedulerSetup) -> TaskDbConfig {
    let watch = CacheWatch { tally: handle.shared.tally.clone(), on_transition: setup.on_transition.clone() };
    TaskDbConfig { watch, ..TaskDbConfig::new(&setup.cache_dir) }
}

/// Withdraws the session from submitters when the worker ends (the dispatcher stopped): a
/// submit then waits for a worker like any other call (and times out) instead of creating a
/// task no worker will cache.
struct Unpublish(Arc<Shared>);

impl Drop for Unpublish {
    fn drop(&mut self) {
        self.0.ready.store(false, Ordering::Release);
        *self.0.session.lock() = None;
    }
}

/// Everything on the worker waits while one step runs: a step longer than `SLOW_STEP` is
/// logged, so that a latency spike can be traced to it.
fn report_slow(what: &str, started: Instant) {
    let elapsed = started.elapsed();
    if elapsed >= SLOW_STEP {
        tracing::warn!(elapsed_ms = elapsed.as_millis() as u64, "{what} held the dispatcher's worker");
    }
}

/// See `report_slow`.
const SLOW_STEP: Duration = Duration::from_millis(50);

/// Why an operation on a task (show, list, cancel, pause, resume, runtime, runners) was not
/// done: a domain value, which only `api.rs` turns into an HTTP status and JSON.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("task {task_id} not found")]
    TaskNotFound { task_id: TaskId },
    /// A record that says `Running` with no runner: damaged, not the caller's fault.
    #[error("task {task_id} is running without a runner")]
    NoRunner { task_id: TaskId },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What an operation on a task asks of the API handler afterwards.
#[derive(Debug, Clone)]
pub enum TaskAction {
    /// Done; the record as written.
    Done(Box<TaskRecord>),
    /// The task runs on this runner: the handler forwards the request there.
    Forward { runner_addr: String },
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

/// A copy reserved by `Scheduler::reserve_copy` and not yet adopted.
struct ReservedCopy {
    request_id: Option<RequestId>,
    volumes: VolumeUse,
}

/// How many cached copies the volume rule re-reads from ZooKeeper, per submit, before refusing
/// (the cache may not know yet that a runner finished them).
const MAX_CONFLICT_REFRESHES: usize = 8;

impl Scheduler {
    /// The worker's step of a copy's submit: room under the cap, then the one-writer-per-volume
    /// rule against every unfinished copy in the cache and every copy reserved and not yet
    /// adopted; on success the copy is reserved until `adopt_created` caches it (or its create
    /// fails). Race-free because the worker runs one job at a time: two submits' checks and
    /// reservations cannot interleave, and a reservation covers the time its znode is being
    /// created on the submitter's coroutine, when the cache does not show it yet.
    ///
    /// Copies with the same request id are not held against each other: at most one of them
    /// gets created (the multi-op's `NodeExists` on the request znode decides), and the others
    /// answer with it.
    ///
    /// `refuse_data` names the destination when it holds data and the client did not ask to
    /// overwrite it: refused after the volume rule, so that a busy volume is reported first
    /// (the copy writing it is the likelier reason the destination holds data).
    fn reserve_copy(
        &mut self,
        task_id: TaskId,
        request_id: Option<RequestId>,
        volumes: VolumeUse,
        refuse_data: Option<std::path::PathBuf>,
    ) -> Result<(), SubmitError> {
        let mut refreshed = 0;
        loop {
            let unfinished = self.unfinished_copies(request_id.as_ref())?;
            let reserved = self
                .reserved_copies
                .iter()
                .filter(|(_, reserved)| request_id.is_none() || reserved.request_id != request_id)
                .map(|(task_id, reserved)| (task_id, &reserved.volumes));
            let Some(conflict) =
                volumes::find_conflict(&volumes, unfinished.iter().map(|(id, use_)| (id, use_)).chain(reserved))
            else {
                break;
            };
            // The cache learns of a runner's final write only at the next check: re-read the
            // other copy before refusing.
            let other = conflict.task_id().clone();
            let cached = unfinished.iter().any(|(id, _)| *id == other);
            if cached && refreshed < MAX_CONFLICT_REFRESHES {
                refreshed += 1;
                match self.db.refresh(&other)? {
                    Some(fresh) if !fresh.record.state.is_finished() => {}
                    _ => continue,
                }
            }
            return Err(SubmitError::VolumeBusy { conflict });
        }
        if let Some(destination) = refuse_data {
            return Err(SubmitError::DestinationHoldsData { destination });
        }
        let mut room = self.handle.shared.room.lock();
        room.publish(&self.db);
        room.reserve(&task_id)?;
        drop(room);
        self.reserved_copies.insert(task_id, ReservedCopy { request_id, volumes });
        Ok(())
    }

    /// The unfinished copies in the cache, with their resolved paths (but those submitted with
    /// `except_request`, a retry's own original). Paths this leader has not resolved yet (tasks
    /// of an earlier leader) are resolved here, once.
    fn unfinished_copies(&mut self, except_request: Option<&RequestId>) -> Result<Vec<(TaskId, VolumeUse)>, DbError> {
        let mut copies = Vec::new();
        for state in TaskState::ALL.into_iter().filter(|state| !state.is_finished()) {
            for stored in self.db.list(&ListFilter::in_state(state))? {
                let TaskKind::CopyVolume(args) = &stored.record.kind else { continue };
                if except_request.is_some() && stored.record.request_id.as_ref() == except_request {
                    continue;
                }
                let volumes = self
                    .resolved_copies
                    .entry(stored.record.task_id.clone())
                    .or_insert_with(|| VolumeUse::resolve(args))
                    .clone();
                copies.push((stored.record.task_id, volumes));
            }
        }
        self.resolved_copies.retain(|task_id, _| copies.iter().any(|(id, _)| id == task_id));
        Ok(copies)
    }

    /// The last step of `SchedulerHandle::submit`: the created records are cached and counted,
    /// their reservations end, and a dispatch pass follows.
    fn adopt_created(&mut self) {
        let records = std::mem::take(&mut *self.handle.shared.created.lock());
        if let Err(error) = self.db.adopt_all_created(&records) {
            tracing::error!(n_tasks = records.len(), %error, "cannot cache submitted tasks");
        }
        {
            let mut room = self.handle.shared.room.lock();
            room.publish(&self.db);
            for record in &records {
                room.release(&record.task_id);
            }
        }
        for record in &records {
            if let Some(reserved) = self.reserved_copies.remove(&record.task_id) {
                self.resolved_copies.insert(record.task_id.clone(), reserved.volumes);
            }
        }
        self.handle.request_check();
    }

    /// One task, re-read from ZooKeeper when it is not finished (its runner writes progress).
    pub fn get(&mut self, task_id: &TaskId) -> Result<TaskRecord, DispatchError> {
        let cached = self.db.get(task_id)?;
        let stored = match cached {
            Some(stored) if stored.record.state.is_finished() => Some(stored),
            _ => self.db.refresh(task_id)?,
        };
        if let Some(stored) = &stored {
            self.track(&stored.record);
        }
        stored.map(|stored| stored.record).ok_or_else(|| DispatchError::TaskNotFound { task_id: task_id.clone() })
    }

    /// Records from the cache.
    pub fn list(&mut self, filter: &ListFilter) -> Result<Vec<TaskRecord>, DispatchError> {
        Ok(self.db.list(filter)?.into_iter().map(|stored| stored.record).collect())
    }

    /// The damaged task znodes.
    pub fn corrupt(&self) -> Vec<(String, String)> {
        self.db.corrupt().iter().map(|entry| (entry.path.clone(), entry.reason.clone())).collect()
    }

    /// Cancel or pause: a running task is forwarded to its runner; others change here.
    pub fn stop_task(&mut self, task_id: &TaskId, to: TaskState) -> Result<TaskAction, DispatchError> {
        let current = self.get(task_id)?;
        if current.state == TaskState::Running {
            let runner_addr =
                current.runner_addr.clone().ok_or_else(|| DispatchError::NoRunner { task_id: task_id.clone() })?;
            return Ok(TaskAction::Forward { runner_addr });
        }
        let stored = self.db.read_modify_write(task_id, |record| {
            record.transition_to(to)?;
            Ok(())
        })?;
        tracing::info!(%task_id, state = %to, "task changed on request");
        Ok(TaskAction::Done(Box::new(stored.record)))
    }

    /// Resume: `Paused → Pending`, then a check.
    pub fn resume(&mut self, task_id: &TaskId) -> Result<TaskRecord, DispatchError> {
        let stored = self.db.read_modify_write(task_id, |record| {
            // Only a paused task resumes. `Running → Pending` is the runner's own retry: done by
            // an operator to a running task it would hand the task out again while its runner
            // still runs it (two runs at once; found by the chaos run, seed 1311).
            if record.state != TaskState::Paused {
                return Err(DbError::Rejected {
                    task_id: record.task_id.clone(),
                    reason: format!("only a paused task resumes; this one is {}", record.state),
                });
            }
            record.transition_to(TaskState::Pending)?;
            Ok(())
        })?;
        self.handle.request_check();
        Ok(stored.record)
    }

    /// Sets the runtime window; a running task's runner is told too (the handler forwards).
    pub fn set_runtime(
        &mut self,
        task_id: &TaskId,
        window: crate::task::RuntimeWindow,
    ) -> Result<TaskAction, DispatchError> {
        let stored = self.db.read_modify_write(task_id, |record| {
            if record.state.is_finished() {
                return Err(DbError::Rejected {
                    task_id: record.task_id.clone(),
                    reason: format!("the task is {}", record.state),
                });
            }
            record.runtime_window = Some(window);
            Ok(())
        })?;
        match (stored.record.state, stored.record.runner_addr.clone()) {
            (TaskState::Running, Some(runner_addr)) => Ok(TaskAction::Forward { runner_addr }),
            _ => Ok(TaskAction::Done(Box::new(stored.record))),
        }
    }

    /// A runner this dispatcher has just drained (`draining`) or undrained through the API. Its
    /// registration says so a moment later (the runner republishes it on its own context, and
    /// the watch then resets the view); until then a drained runner is held off like one that
    /// refused, so that no task is assigned to it from a view read before the drain.
    pub fn note_runner_drain(&mut self, address: &str, draining: bool) {
        if draining {
            let until = now_ms().saturating_add(placement::RUNNER_HOLD_OFF.as_millis() as u64);
            self.held_off.insert(address.to_string(), until);
        } else {
            self.held_off.remove(address);
        }
        self.runner_view = None;
    }

    /// Every registered runner.
    pub fn runners(&mut self) -> Result<task_db::RunnerList, DispatchError> {
        Ok(task_db::list_runners(&self.session)?)
    }

    /// Watches the runners' directory; each change asks for a check and re-arms the watch.
    fn watch_runners(&mut self) {
        let session = self.session.clone();
        let handle = self.handle.clone();
        let spawned = self.context.sched(move || loop {
            let watch = match task_db::watch_runners(&session) {
                Ok((_, watch)) => watch,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch the runners");
                    runtime::sleep(CHECK_INTERVAL);
                    continue;
                }
            };
            let event = watch.wait();
            if matches!(event, quorum::zk::NodeEvent::SessionEnded { .. }) {
                return;
            }
            handle.post(Box::new(|scheduler| scheduler.runner_view = None));
            handle.request_check();
        });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the runners' watch");
        }
    }

    /// Follows `task_id`'s owner child until it goes: a coroutine that re-arms the one-shot
    /// watch by itself while the owner is only created or rewritten (a runner's claim), and
    /// hands the task back to the scheduler when the owner is deleted, or when it is found
    /// gone after having been seen (it came and went between two watches), or when the
    /// session ends. One `exists` per arming; the record is re-read only at the end.
    fn watch_owner(&mut self, task_id: &TaskId) {
        if !self.watched.insert(task_id.clone()) {
            return;
        }
        let (session, handle, watched_id) = (self.session.clone(), self.handle.clone(), task_id.clone());
        // A claim that never comes (or came and went before the watch was armed) ends the wait.
        let claim_wait = self.claim_grace + Duration::from_secs(1);
        let spawned = self.context.sched(move || {
            let mut seen_owner = false;
            let event = loop {
                let (present, watch) = match task_db::watch_owner_presence(&session, &watched_id) {
                    Ok(armed) => armed,
                    Err(error) => {
                        tracing::warn!(task_id = %watched_id, %error, "cannot watch a task's owner");
                        handle.post(Box::new(move |scheduler| {
                            scheduler.watched.remove(&watched_id);
                        }));
                        return;
                    }
                };
                if !present && seen_owner {
                    // The watch stays armed for a creation; a later claim re-reads anyway.
                    break quorum::zk::NodeEvent::Deleted { path: task_db::layout::owner_path(&watched_id) };
                }
                let fired = if seen_owner {
                    Some(watch.wait())
                } else {
                    runtime::block_on_timeout(watch.changed(), claim_wait)
                };
                match fired {
                    Some(quorum::zk::NodeEvent::Created { .. } | quorum::zk::NodeEvent::DataChanged { .. }) => {
                        seen_owner = true;
                    }
                    Some(event) => break event,
                    // No owner within the claim grace: the scheduler re-reads the task and judges
                    // it as the periodic check does (interrupted if its claim is late).
                    None => {
                        break quorum::zk::NodeEvent::DataChanged { path: task_db::layout::owner_path(&watched_id) }
                    }
                }
            };
            // The record is read here, not on the worker, so its round trip holds up no job.
            let read = match event {
                quorum::zk::NodeEvent::SessionEnded { .. } => None,
                _ => Some(task_db::read_record(&session, &watched_id)),
            };
            handle.post(Box::new(move |scheduler| scheduler.owner_changed(&watched_id, event, read)));
        });
        if spawned.is_err() {
            self.watched.remove(task_id);
        }
    }

    /// The end of an owner watch, with the task's record as read just after it fired.
    fn owner_changed(
        &mut self,
        task_id: &TaskId,
        event: quorum::zk::NodeEvent,
        read: Option<task_db::Result<Option<StoredRecord>>>,
    ) {
        self.watched.remove(task_id);
        let Some(read) = read else { return };
        if matches!(event, quorum::zk::NodeEvent::SessionEnded { .. }) {
            return;
        }
        // A slot may have come free on its runner: worth a re-read of the runners only when the
        // view has none left (otherwise its age bounds how long the slot goes unseen).
        let no_slot_left = self
            .runner_view
            .as_ref()
            .is_some_and(|view| view.runners.iter().all(|runner| placement::free_slots(runner, &self.assigned) == 0));
        if no_slot_left {
            self.runner_view = None;
        }
        let read_version = match &read {
            Ok(Some(stored)) => Some(stored.version),
            _ => None,
        };
        let refreshed = self.db.refresh_with(task_id, read);
        match &refreshed {
            Ok(Some(stored)) => self.track(&stored.record),
            Ok(None) => {
                self.assigned.remove(task_id);
            }
            Err(_) => {}
        }
        match refreshed {
            // This dispatcher wrote the task after the read (it was handed out again): the
            // event is about the previous assignment; the new one gets its own watch.
            Ok(Some(stored)) if read_version.is_some_and(|version| version != stored.version) => {
                if stored.record.state == TaskState::Running {
                    self.watch_owner(task_id);
                }
            }
            // The owner node existed and is gone: the runner released it or died. No claim grace.
            Ok(Some(stored))
                if stored.record.state == TaskState::Running
                    && matches!(event, quorum::zk::NodeEvent::Deleted { .. }) =>
            {
                self.interrupt(task_id, "its runner's owner node vanished");
                self.watch_owner_if_owned(&stored);
            }
            Ok(Some(stored)) if stored.record.state == TaskState::Running => {
                self.check_running(&stored);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%task_id, %error, "cannot re-read a task after its owner changed"),
        }
        self.handle.request_check();
    }

    /// Re-arms the owner watch of a task `interrupt` left running (a new owner claimed it).
    fn watch_owner_if_owned(&mut self, stored: &StoredRecord) {
        if let Ok(Some(fresh)) = self.db.get(&stored.record.task_id) {
            if fresh.record.state == TaskState::Running {
                self.watch_owner(&fresh.record.task_id);
            }
        }
    }

    /// A running task: interrupted when its owner is gone (or never came); watched otherwise.
    fn check_running(&mut self, stored: &StoredRecord) {
        let task_id = &stored.record.task_id;
        let owner = match task_db::owner_of(&self.session, task_id) {
            Ok(owner) => owner,
            Err(error) => {
                tracing::warn!(%task_id, %error, "cannot read a task's owner");
                return;
            }
        };
        self.judge_running(stored, is_current_owner(&stored.record, owner.as_ref()));
    }

    /// `check_running` once it is known whether the current assignment's owner is there (a
    /// stale owner, of an earlier assignment, counts as none: `task_db::OwnerMatch`).
    fn judge_running(&mut self, stored: &StoredRecord, owner_present: bool) {
        let task_id = &stored.record.task_id;
        match placement::judge_running(owner_present, stored.record.schedule_time_ms, now_ms(), self.claim_grace) {
            RunningVerdict::Interrupt => self.interrupt(task_id, "its runner is gone"),
            RunningVerdict::Watch => self.watch_owner(task_id),
        }
    }

    /// `Running → Interrupted` with `last_failed_ms`, if it is still running with no owner.
    fn interrupt(&mut self, task_id: &TaskId, why: &str) {
        let session = self.session.clone();
        let result = self.db.read_modify_write(task_id, |record| {
            if record.state != TaskState::Running {
                return Ok(());
            }
            if is_current_owner(record, task_db::owner_of(&session, &record.task_id)?.as_ref()) {
                return Ok(());
            }
            record.transition_to(TaskState::Interrupted)?;
            record.last_failed_ms = Some(now_ms());
            Ok(())
        });
        if let Ok(stored) = &result {
            self.track(&stored.record);
        }
        match result {
            Ok(stored) if stored.record.state == TaskState::Interrupted => {
                tracing::warn!(%task_id, runner = ?stored.record.runner_addr, why, "task interrupted; rescheduling");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%task_id, %error, "cannot mark a task interrupted"),
        }
    }

    /// The periodic check (see `# The check`). Only `Running` records are re-read from
    /// ZooKeeper: every other change of an unfinished task is this dispatcher's own write, or a
    /// runner's final write of a task the cache still shows `Running`. The runners are re-read
    /// too, so a registration change no watch reports (a drain, a health change) counts here.
    pub fn check(&mut self) {
        let listed = match self.db.list(&ListFilter::in_state(TaskState::Running)) {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%error, "cannot list the running tasks");
                return;
            }
        };
        // What the cache shows running is what counts against the runners' slots; the re-reads
        // below drop what has ended since.
        self.assigned = listed
            .iter()
            .filter_map(|stored| Some((stored.record.task_id.clone(), stored.record.runner_addr.clone()?)))
            .collect();
        let ids: Vec<TaskId> = listed.into_iter().map(|stored| stored.record.task_id).collect();
        for chunk in ids.chunks(RUNNING_READ_BATCH) {
            self.check_running_batch(chunk);
        }
        self.runner_view = None;
        self.dispatch_pass();
        if self.last_purge.elapsed() >= PURGE_INTERVAL.min(self.retention / 4) {
            self.last_purge = Instant::now();
            if let Err(error) = self.db.purge_finished(self.retention) {
                tracing::warn!(%error, "cannot purge finished tasks");
            }
        }
    }

    /// Re-reads running tasks and their owners, every read of the batch in flight at once (two
    /// round trips for the batch), then interrupts those whose owner is gone (or never came)
    /// and watches the others.
    fn check_running_batch(&mut self, task_ids: &[TaskId]) {
        let record_paths: Vec<String> = task_ids.iter().map(task_db::layout::task_path).collect();
        let owner_paths: Vec<String> = task_ids.iter().map(task_db::layout::owner_path).collect();
        let (records, owners) =
            match (self.session.get_data_of_each(&record_paths), self.session.get_data_of_each(&owner_paths)) {
                (Ok(records), Ok(owners)) => (records, owners),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(%error, "cannot re-read the running tasks");
                    return;
                }
            };
        for ((task_id, record), owner) in task_ids.iter().zip(records).zip(owners) {
            let read = match record {
                Ok(Some((data, stat))) => task_db::decode_read(task_id, &data, stat.version).map(Some),
                Ok(None) => Ok(None),
                Err(error) => {
                    tracing::warn!(%task_id, %error, "cannot re-read a task");
                    continue;
                }
            };
            let owner = match owner {
                Ok(owner) => owner.map(|(data, stat)| task_db::decode_owner_of(task_id, &data, stat.ephemeral_owner)),
                Err(error) => {
                    tracing::warn!(%task_id, %error, "cannot read a task's owner");
                    continue;
                }
            };
            let refreshed = self.db.refresh_with(task_id, read);
            match &refreshed {
                Ok(Some(fresh)) => self.track(&fresh.record),
                Ok(None) => {
                    self.assigned.remove(task_id);
                }
                Err(_) => {}
            }
            match refreshed {
                Ok(Some(fresh)) if fresh.record.state == TaskState::Running => {
                    let owner_present = is_current_owner(&fresh.record, owner.as_ref());
                    self.judge_running(&fresh, owner_present)
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%task_id, %error, "cannot re-read a task"),
            }
        }
    }

    /// Hands due tasks (`Interrupted` ones inside their window, `Pending` ones whose back-off
    /// passed), oldest first, to the runners with free slots: the decisions are
    /// `placement::plan`'s, this executes them. What a submit, an owner change or a runner change
    /// asks for: nothing is re-read from ZooKeeper but the runners (when the view of them is
    /// stale), and with no free slot nothing is listed at all.
    pub fn dispatch_pass(&mut self) {
        let now = now_ms();
        if self.retry_wake.is_some_and(|at| at <= now) {
            self.retry_wake = None;
        }
        let Some(capacity) = self.free_capacity(now) else { return };
        if capacity == 0 {
            return;
        }
        let mut listed: Vec<StoredRecord> = Vec::new();
        for state in [TaskState::Interrupted, TaskState::Pending] {
            // Oldest first: a page a little larger than the free slots usually holds enough due
            // tasks; when it does not (back-offs, closed windows), the whole state is read.
            let page = capacity as usize * 2 + 16;
            let mut found = self.list_state(state, Some(page));
            if found.len() == page {
                let n_due =
                    found.iter().filter(|stored| self.candidate(&stored.record).is_due(now, &self.retry)).count();
                if n_due < capacity as usize {
                    found = self.list_state(state, None);
                }
            }
            listed.extend(found);
        }
        if listed.is_empty() {
            return;
        }
        let candidates: Vec<Candidate> = listed.iter().map(|stored| self.candidate(&stored.record)).collect();
        let Some(view) = self.runner_view.as_ref() else { return };
        let commands = placement::plan(&placement::View {
            now_ms: now,
            candidates: &candidates,
            runners: &view.runners,
            assigned: &self.assigned,
            held_off: &self.held_off,
            retry: &self.retry,
        });
        let mut records: HashMap<TaskId, StoredRecord> =
            listed.into_iter().map(|stored| (stored.record.task_id.clone(), stored)).collect();
        let mut assignments = Vec::new();
        for command in commands {
            match command {
                Command::Assign { task_id, runner_addr } => {
                    if let Some(stored) = records.remove(&task_id) {
                        assignments.push((stored, runner_addr));
                    }
                }
                Command::FailPermanently { task_id } => self.fail_permanently(&task_id),
                Command::RetryAt { at_ms, .. } => {
                    self.retry_wake = Some(self.retry_wake.map_or(at_ms, |wake| wake.min(at_ms)));
                }
            }
        }
        if !assignments.is_empty() {
            self.dispatch(assignments);
        }
    }

    /// The placement rules' view of a cached record (its runtime window judged now).
    fn candidate(&self, record: &TaskRecord) -> Candidate {
        Candidate::of(record, record.runtime_window.is_none_or(|window| window.contains_now()))
    }

    /// When the earliest retry back-off the last pass saw ends, if one does.
    pub fn retry_wake(&self) -> Option<u64> {
        self.retry_wake
    }

    /// `Pending → Failed` for a task whose last failure was permanent (an older runner left it
    /// pending): it is never tried again.
    fn fail_permanently(&mut self, task_id: &TaskId) {
        let result = self.db.read_modify_write(task_id, |record| {
            if record.state != TaskState::Pending || record.last_error_class() != crate::task::FailureClass::Permanent {
                return Ok(());
            }
            record.transition_to(TaskState::Failed)?;
            Ok(())
        });
        match result {
            Ok(stored) => {
                tracing::warn!(%task_id, last_error = ?stored.record.last_error, "a permanent failure: the task fails without a retry");
                self.track(&stored.record);
            }
            Err(error) => tracing::warn!(%task_id, %error, "cannot fail a task"),
        }
    }

    fn list_state(&mut self, state: TaskState, limit: Option<usize>) -> Vec<StoredRecord> {
        match self.db.list(&ListFilter { limit, ..ListFilter::in_state(state) }) {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%error, %state, "cannot list the tasks");
                Vec::new()
            }
        }
    }

    /// The free slots of the runners that may take tasks now (`placement::free_capacity`:
    /// counting this dispatcher's own assignments their registrations do not show yet); `None`
    /// when they cannot be read. The view is re-read when missing or older than
    /// `RUNNER_VIEW_TTL`.
    fn free_capacity(&mut self, now: u64) -> Option<u32> {
        let stale = self.runner_view.as_ref().is_none_or(|view| view.read_at.elapsed() >= RUNNER_VIEW_TTL);
        if stale {
            let runners = match task_db::list_runners(&self.session) {
                Ok(list) => list.runners,
                Err(error) => {
                    tracing::warn!(%error, "cannot list the runners");
                    self.runner_view = None;
                    return None;
                }
            };
            let runners = runners
                .into_iter()
                .map(|runner| RunnerSlots {
                    address: runner.info.address,
                    slots: runner.info.slots,
                    free_slots: runner.info.free_slots,
                    draining: runner.info.draining,
                    healthy: runner.info.healthy,
                })
                .collect::<Vec<_>>();
            let n_draining = runners.iter().filter(|runner| runner.draining).count() as u64;
            let counts = RunnerCounts { n_up: runners.len() as u64 - n_draining, n_draining };
            *self.handle.shared.runner_counts.lock() = Some(counts);
            self.runner_view = Some(RunnerView { runners, read_at: Instant::now() });
        }
        self.held_off.retain(|_, until| *until > now);
        let view = self.runner_view.as_ref()?;
        let capacity = placement::free_capacity(&placement::View {
            now_ms: now,
            candidates: &[],
            runners: &view.runners,
            assigned: &self.assigned,
            held_off: &self.held_off,
            retry: &self.retry,
        });
        Some(capacity.iter().map(|(_, n_free)| *n_free).sum())
    }

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

    /// Writes the plan's assignments at once: one pipelined round trip, each write fenced on
    /// the version of the cached record it started from. A task whose write was fenced (someone
    /// wrote it since) is re-read and tried once more on its own.
    fn dispatch(&mut self, assignments: Vec<(StoredRecord, String)>) {
        let mut writes: Vec<(TaskRecord, i32)> = Vec::new();
        let mut assigned: Vec<String> = Vec::new();
        for (stored, runner_addr) in assignments {
            let mut record = stored.record;
            if let Err(error) = assign(&mut record, &runner_addr) {
                tracing::debug!(task_id = %record.task_id, %error, "task not dispatched");
                continue;
            }
            // Counted at once: a pass before the write's answer must not hand out its slot again.
            self.assigned.insert(record.task_id.clone(), runner_addr.clone());
            assigned.push(runner_addr);
            writes.push((record, stored.version));
        }
        if writes.is_empty() {
            return;
        }
        let results = match self.db.update_each(&writes) {
            Ok(results) => results,
            Err(error) => {
                tracing::warn!(%error, n_tasks = writes.len(), "cannot write the tasks' assignments");
                for (record, _) in &writes {
                    self.assigned.remove(&record.task_id);
                }
                return;
            }
        };
        for (((record, _), runner_addr), result) in writes.into_iter().zip(assigned).zip(results) {
            match result {
                Ok(stored) => self.hand_over(stored, runner_addr),
                Err(DbError::Fenced { .. }) => {
                    self.assigned.remove(&record.task_id);
                    self.execute_task(&record.task_id, runner_addr)
                }
                Err(error) => {
                    self.assigned.remove(&record.task_id);
                    tracing::debug!(task_id = %record.task_id, %error, "task not dispatched")
                }
            }
        }
    }

    /// The original's `ExecuteTask` for one task, from a fresh read (see `# The check`).
    fn execute_task(&mut self, task_id: &TaskId, runner_addr: String) {
        let addr = runner_addr.clone();
        let written = self.db.read_modify_write(task_id, |record| assign(record, &addr));
        match written {
            Ok(stored) => {
                self.track(&stored.record);
                self.hand_over(stored, runner_addr)
            }
            Err(error) => tracing::debug!(%task_id, %error, "task not dispatched"),
        }
    }

    /// The rest of `ExecuteTask` once the assignment is written: watch the owner child, then
    /// call the runner's execute RPC on the "zbs-task-call" context.
    fn hand_over(&mut self, stored: StoredRecord, runner_addr: String) {
        let task_id = stored.record.task_id;
        self.watch_owner(&task_id);
        tracing::info!(%task_id, runner = %runner_addr, "task dispatched");
        let handle = self.handle.clone();
        let runner_client = self.runner_client.clone();
        let Some(caller) = self.callers.get(self.next_caller % self.callers.len().max(1)) else {
            tracing::warn!(%task_id, "no context to call the runner from");
            return;
        };
        self.next_caller = self.next_caller.wrapping_add(1);
        let scheduled = caller.sched(move || {
            let body = serde_json::json!({ "task_id": task_id });
            let result = runner_client.post(&runner_addr, runner_paths::EXECUTE, &body);
            handle.post(Box::new(move |scheduler| scheduler.execute_answered(&task_id, &runner_addr, result)));
        });
        if let Err(error) = scheduled {
            tracing::warn!(%error, "cannot call the runner");
        }
    }

    /// The runner's answer to an execute: a refusal puts the task back (`Interrupted`, due at
    /// once) and holds the runner off as `placement::hold_off_after` says — not at all when it
    /// only had no free slot (its registration was behind; the view is read again).
    fn execute_answered(
        &mut self,
        task_id: &TaskId,
        runner_addr: &str,
        result: Result<serde_json::Value, RunnerCallError>,
    ) {
        let Err(error) = result else { return };
        let refusal = error.refusal();
        tracing::warn!(%task_id, runner = runner_addr, ?refusal, %error, "runner did not take the task");
        if let Some(until) = placement::hold_off_after(refusal, now_ms()) {
            self.held_off.insert(runner_addr.to_string(), until);
        }
        self.runner_view = None;
        let session = self.session.clone();
        let result = self.db.read_modify_write(task_id, |record| {
            if record.state != TaskState::Running || record.runner_addr.as_deref() != Some(runner_addr) {
                return Ok(());
            }
            // A stale owner (an earlier assignment's) does not make the refusal a claim.
            if is_current_owner(record, task_db::owner_of(&session, &record.task_id)?.as_ref()) {
                return Ok(());
            }
            record.transition_to(TaskState::Interrupted)?;
            record.last_failed_ms = Some(now_ms());
            Ok(())
        });
        match result {
            Ok(stored) => self.track(&stored.record),
            Err(error) => tracing::warn!(%task_id, %error, "cannot put a refused task back"),
        }
        self.handle.request_check();
    }
}

/// The assignment `ExecuteTask` writes: `runner_addr`, `schedule_time_ms`, `Running`. Only a
/// `Pending` or `Interrupted` task can be assigned.
fn assign(record: &mut TaskRecord, runner_addr: &str) -> task_db::Result<()> {
    if !matches!(record.state, TaskState::Pending | TaskState::Interrupted) {
        return Err(DbError::Rejected {
            task_id: record.task_id.clone(),
            reason: format!("the task is {}", record.state),
        });
    }
    record.runner_addr = Some(runner_addr.to_string());
    record.schedule_time_ms = Some(now_ms());
    record.transition_to(TaskState::Running)?;
    Ok(())
}

/// True when `owner` claimed the record's current assignment; false when there is none or it is
/// stale (an earlier assignment's, left behind: it can do no IO for this one).
fn is_current_owner(record: &TaskRecord, owner: Option<&task_db::Owner>) -> bool {
    let judged = task_db::owner_match(owner, record.runner_addr.as_deref(), record.schedule_time_ms);
    if judged == task_db::OwnerMatch::Stale {
        tracing::info!(task_id = %record.task_id, owner = ?owner.and_then(|owner| owner.info.as_ref()), "a stale owner node: ignored");
    }
    judged == task_db::OwnerMatch::Current
}

#[cfg(test)]
mod tests;
