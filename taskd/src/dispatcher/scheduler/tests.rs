//! Unit tests of the scheduling rules that need no ZooKeeper: retry back-off, runtime windows and
//! the HTTP status of each database error.

use chrono::Timelike;

use super::*;
use crate::task::{RuntimeWindow, SleepArgs};

fn sleep_record() -> TaskRecord {
    TaskRecord::new(
        TaskId::generate(),
        TaskKind::Sleep(SleepArgs { duration_ms: 1, fail: false, fail_first: 0 }),
        now_ms(),
    )
}

#[test]
fn a_task_that_never_failed_is_due() {
    assert!(retry_due(&sleep_record()));
}

#[test]
fn retries_back_off_exponentially() {
    let mut record = sleep_record();
    record.attempts = 1;
    record.last_failed_ms = Some(now_ms());
    assert!(!retry_due(&record), "a retry right after the failure");
    record.last_failed_ms = Some(now_ms() - 1_100);
    assert!(retry_due(&record), "the first retry waits about a second");
    record.attempts = 2;
    assert!(!retry_due(&record), "the second retry waits about two seconds");
    record.last_failed_ms = Some(now_ms() - 2_100);
    assert!(retry_due(&record));
}

#[test]
fn a_task_outside_its_window_is_not_due() {
    let mut record = sleep_record();
    // A one-minute window two hours from now never contains now.
    let start_hour = (chrono::Local::now().time().hour() + 2) % 24;
    record.runtime_window = Some(RuntimeWindow::new(start_hour, 0, start_hour, 1).expect("a valid window"));
    assert!(!retry_due(&record));
    record.runtime_window = Some(RuntimeWindow::new(0, 0, 0, 0).expect("the all-day window"));
    assert!(retry_due(&record));
}

#[test]
fn database_errors_map_to_http_statuses() {
    let not_found: ApiError = DbError::NotFound { what: "task", id: "x".to_string() }.into();
    assert_eq!(not_found.status, 404);
    let rejected: ApiError = DbError::Rejected { task_id: TaskId::generate(), reason: "no".to_string() }.into();
    assert_eq!(rejected.status, 409);
    let full: ApiError = DbError::Full { n_records: 1, reply_bytes: 1, max_records: 1, max_reply_bytes: 1 }.into();
    assert_eq!(full.status, 507);
    let transition: ApiError =
        DbError::Transition(crate::task::TransitionError { from: TaskState::Succeeded, to: TaskState::Pending }).into();
    assert_eq!(transition.status, 409);
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
    assert!(is_due(&record), "an interrupted task with no window is due");
    assign(&mut record, "127.0.0.1:2").expect("an interrupted task is assigned again");
}
