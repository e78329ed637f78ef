//! Unit tests of a Sleep task's run: how it ends for each request, seen at its next step.

use std::time::{Duration, Instant};

use super::*;

#[test]
fn a_sleep_succeeds_or_fails_as_asked() {
    let control = CopyControl::new();
    let started = Instant::now();
    assert!(matches!(run_sleep(60, false, &control), RunEnd::Succeeded));
    assert!(started.elapsed() >= Duration::from_millis(60));
    assert!(matches!(run_sleep(0, true, &control), RunEnd::Failed(message) if message.contains("fail")));
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
