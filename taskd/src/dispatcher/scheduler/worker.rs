//! The worker coroutine: opens the task database (reporting a dispatcher that cannot), then
//! runs the posted jobs, the periodic check and the dispatch passes, one at a time.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::{ContextHandle, SyncPoint};

use super::handle::{SchedulerHandle, Shared};
use super::{Scheduler, SchedulerSetup, CHECK_INTERVAL};
use crate::clock::now_ms;
use crate::task_db::{CacheWatch, TaskDb, TaskDbConfig};

/// How many queued jobs the worker runs before a requested dispatch pass.
const JOBS_BEFORE_PASS: usize = 16;

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
