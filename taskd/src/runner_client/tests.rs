//! Tests of how a failed runner call reads to the placement rules.

use super::*;

#[test]
fn only_a_full_runner_is_told_from_an_unavailable_one() {
    assert_eq!(RunnerCallError::new(429, "no free slot").refusal(), Refusal::NoFreeSlot);
    // A runner of the previous version answered 503 with the same message.
    assert_eq!(RunnerCallError::new(503, crate::runner::NO_FREE_SLOT).refusal(), Refusal::NoFreeSlot);
    for (status, message) in [
        (503, "the runner is draining"),
        (503, "the runner is stopping"),
        (502, "cannot reach the runner at 10.0.0.1:10601: timed out"),
        (409, "task t is pending and assigned to None, not to this runner"),
    ] {
        assert_eq!(RunnerCallError::new(status, message).refusal(), Refusal::Unavailable, "{status} {message}");
    }
}
