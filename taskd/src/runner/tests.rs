//! Unit tests of a Sleep task's run: how it ends for each request, seen at its next step.

use std::time::{Duration, Instant};

use super::run::{run_sleep, RunEnd};
use super::*;

#[test]
fn a_sleep_succeeds_or_fails_as_asked() {
    let control = CopyControl::new();
    let started = Instant::now();
    assert!(matches!(run_sleep(60, false, &control), RunEnd::Succeeded));
    assert!(started.elapsed() >= Duration::from_millis(60));
    assert!(
        matches!(run_sleep(0, true, &control), RunEnd::Failed(message, FailureClass::Transient) if message.contains("fail"))
    );
}

#[test]
fn requests_stop_a_sleep_at_its_next_step() {
    for (request, expected) in [("cancel", "cancelled"), ("interrupt", "interrupted"), ("pause", "paused")] {
        let control = CopyControl::new();
        match request {
            "cancel" => control.cancel(),
            "interrupt" => control.interrupt(),
            _ => control.pause(),
        }
        let started = Instant::now();
        let end = run_sleep(60_000, false, &control);
        let name = match end {
            RunEnd::Cancelled => "cancelled",
            RunEnd::Interrupted => "interrupted",
            RunEnd::Paused => "paused",
            _ => "other",
        };
        assert_eq!(name, expected, "after {request}");
        assert!(started.elapsed() < Duration::from_secs(5), "{request} took {:?}", started.elapsed());
    }
}

#[test]
fn a_drain_requested_during_the_marker_read_wins() {
    let mut flag = DrainFlag::default();
    // The start-up read is sent ...
    let requests_then = flag.requests;
    // ... a drain is requested while it is in flight ...
    let request = flag.request(true);
    // ... and the read answers "not drained": it must not undo the request.
    assert!(!flag.apply_marker(requests_then, false), "the stale read was applied");
    assert!(flag.draining, "the drain request was lost");
    // The marker is then written with the request's value, and only that makes it persisted.
    assert!(!DrainFlag::persists(DrainFlag::default(), request, true));
    assert!(DrainFlag::persists(flag, request, true));
}

#[test]
fn the_marker_read_applies_when_no_request_came() {
    let mut flag = DrainFlag::default();
    let requests_then = flag.requests;
    assert!(flag.apply_marker(requests_then, true));
    assert!(flag.draining);
}

#[test]
fn a_superseded_request_is_not_answered_persisted() {
    let mut flag = DrainFlag::default();
    let drain = flag.request(true);
    let undrain = flag.request(false);
    // The marker holds the latest request, an undrain: the drain is not what it holds.
    assert!(!DrainFlag::persists(flag, drain, true));
    assert!(DrainFlag::persists(flag, undrain, false));
}

proptest::proptest! {
    /// Whatever the interleaving of requests and one start-up read, the flag ends as the latest
    /// request asked, or as the marker said when no request came.
    #[test]
    fn the_latest_request_wins(requests in proptest::collection::vec(proptest::bool::ANY, 0..8), read_at in 0usize..8, drained in proptest::bool::ANY) {
        let mut flag = DrainFlag::default();
        let read_at = read_at.min(requests.len());
        let mut requests_then = None;
        for (index, &draining) in requests.iter().enumerate() {
            if index == read_at {
                requests_then = Some(flag.requests);
            }
            flag.request(draining);
        }
        let requests_then = requests_then.unwrap_or(flag.requests);
        flag.apply_marker(requests_then, drained);
        let expected = if read_at < requests.len() { requests[requests.len() - 1] } else { drained };
        proptest::prop_assert_eq!(flag.draining, expected);
    }
}

#[test]
fn a_sleep_stops_when_its_lease_lapses() {
    let control = CopyControl::new();
    let lapse_at = Instant::now() + Duration::from_millis(100);
    control.set_write_permit(move || Instant::now() < lapse_at);
    let started = Instant::now();
    let end = run_sleep(60_000, false, &control);
    assert!(matches!(end, RunEnd::LeaseLapsed), "the sleep went on without its lease");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(control.is_permit_refused());
}
