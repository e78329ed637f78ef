//! Unit tests of the scheduler's pieces that need no ZooKeeper: the submit room, assignments,
//! job fates and the bounded queue (the placement rules are tested in `placement/tests.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::execution::assign;
use super::handle::{CallError, JobFate, SchedulerHandle, MAX_QUEUED_CALLS};
use super::room::Room;
use crate::clock::now_ms;
use crate::task::SleepArgs;
use crate::task::{TaskId, TaskKind, TaskRecord, TaskState};
use crate::task_db::DbError;

fn sleep_record() -> TaskRecord {
    TaskRecord::new(
        TaskId::generate(),
        TaskKind::Sleep(SleepArgs { duration_ms: 1, fail: false, fail_first: 0 }),
        now_ms(),
    )
}

#[test]
fn submits_in_flight_count_against_the_cap_until_released() {
    let mut room = Room { max_records: 2, ..Room::default() };
    let (first, second, third) = (TaskId::generate(), TaskId::generate(), TaskId::generate());
    room.reserve(&first).expect("room for the first");
    room.reserve(&second).expect("room for the second");
    assert!(matches!(room.reserve(&third), Err(DbError::Full { .. })), "two in flight fill a cap of two");
    room.release(&first);
    room.reserve(&third).expect("a released reservation frees its room");
    // One adopted and published (n_records 1) plus one still in flight: full again.
    room.n_records = 1;
    room.release(&second);
    assert!(matches!(room.reserve(&first), Err(DbError::Full { .. })));
}

#[test]
fn only_pending_or_interrupted_tasks_are_assigned() {
    let mut record = sleep_record();
    assign(&mut record, "127.0.0.1:1").expect("a pending task is assigned");
    assert_eq!(record.state, TaskState::Running);
    assert_eq!(record.runner_addr.as_deref(), Some("127.0.0.1:1"));
    assert!(record.schedule_time_ms.is_some());
    assert!(matches!(assign(&mut record, "127.0.0.1:2"), Err(DbError::Rejected { .. })), "a running task is not");
    assert_eq!(record.runner_addr.as_deref(), Some("127.0.0.1:1"), "a refused assignment changes nothing");
    record.transition_to(TaskState::Interrupted).expect("running to interrupted");
    assign(&mut record, "127.0.0.1:2").expect("an interrupted task is assigned again");
}

/// A job's fate is decided once: after the caller abandons it the worker never runs it, and
/// after the worker starts it the caller cannot abandon it.
#[test]
fn a_job_runs_or_is_abandoned_never_both() {
    let abandoned_first = JobFate::default();
    assert!(abandoned_first.abandon());
    assert!(!abandoned_first.start(), "an abandoned job must not run");
    let started_first = JobFate::default();
    assert!(started_first.start());
    assert!(!started_first.abandon(), "a started job cannot be abandoned: its caller waits for it");
    // Raced from two threads, exactly one side wins every time.
    for _ in 0..1000 {
        let fate = Arc::new(JobFate::default());
        let worker = {
            let fate = fate.clone();
            std::thread::spawn(move || fate.start())
        };
        let abandoned = fate.abandon();
        let started = worker.join().expect("worker");
        assert!(abandoned != started, "abandoned {abandoned}, started {started}");
    }
}

/// A call the worker never reaches answers `NotRun` at its deadline (its job will be dropped),
/// and once `MAX_QUEUED_CALLS` wait in the queue the next call is refused at once.
#[test]
fn calls_carry_their_deadline_and_the_queue_is_bounded() {
    let handle = SchedulerHandle::new();
    let started = Instant::now();
    assert_eq!(handle.call(Duration::from_millis(20), |_| ()), Err(CallError::NotRun));
    assert!(started.elapsed() < Duration::from_secs(5));
    for _ in 1..MAX_QUEUED_CALLS {
        assert_eq!(handle.call(Duration::ZERO, |_| ()), Err(CallError::NotRun));
    }
    let refused_at = Instant::now();
    assert_eq!(handle.call(Duration::from_secs(60), |_| ()), Err(CallError::QueueFull));
    assert!(refused_at.elapsed() < Duration::from_secs(1), "a full queue refuses at once");
    assert_eq!(handle.shared.queue.lock().len(), MAX_QUEUED_CALLS, "the refused call queued nothing");
}
