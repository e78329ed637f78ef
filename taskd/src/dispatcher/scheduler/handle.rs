//! `SchedulerHandle`: how other threads post jobs to the worker and wait for their answers
//! (with the caller's deadline and a bounded queue), a submit's create on the submitter's own
//! coroutine, and what the worker shares with the handle (`Shared`) for a scrape to read.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use quorum::ZkSession;
use runtime::SyncPoint;

use super::room::Room;
use super::Scheduler;
use crate::clock::now_ms;
use crate::dispatcher::submit::{Submit, SubmitError, Submitted};
use crate::dispatcher::volumes::{self, VolumeUse};
use crate::task::{RequestId, TaskId, TaskKind, TaskRecord};
use crate::task_db::{self, DbError, SubmitBody, TaskCounts, TaskTally};

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

pub(super) type Job = Box<dyn FnOnce(&mut Scheduler) + Send>;

pub(super) struct Shared {
    pub(super) queue: Mutex<VecDeque<Job>>,
    /// Callers' jobs in the queue (counted against `MAX_QUEUED_CALLS`).
    pub(super) queued_calls: std::sync::atomic::AtomicUsize,
    pub(super) wake: Mutex<SyncPoint>,
    pub(super) check_requested: AtomicBool,
    pub(super) ready: AtomicBool,
    /// Room under the database's cap, so that a submit reserves without a trip to the worker.
    pub(super) room: Mutex<Room>,
    /// The database's session, once it is open (submits create their znodes with it).
    pub(super) session: Mutex<Option<Arc<ZkSession>>>,
    /// Records whose znodes submits created, for the worker to cache (`adopt_created`).
    pub(super) created: Mutex<Vec<TaskRecord>>,
    /// The cache's counts by type and state (see `# What metrics read`).
    pub(super) tally: TaskTally,
    /// The runners as the dispatch pass last read them.
    pub(super) runner_counts: Mutex<Option<RunnerCounts>>,
}

/// Registered runners by state, as the dispatch pass last read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunnerCounts {
    /// Registered and not draining.
    pub n_up: u64,
    pub n_draining: u64,
}

/// Posts work to the scheduler from any thread.
#[derive(Clone)]
pub struct SchedulerHandle {
    pub(super) shared: Arc<Shared>,
}

impl SchedulerHandle {
    pub(super) fn new() -> SchedulerHandle {
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

    pub(super) fn post(&self, job: Job) {
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
