//! Tests of the re-entry back-off (pure logic, fake clock).

use super::*;

#[test]
fn back_off_doubles_up_to_the_maximum_and_resets_after_a_stable_period() {
    let t0 = Instant::now();
    let mut backoff = ReentryBackoff::new(Duration::from_secs(1), Duration::from_secs(8), Duration::from_secs(60));
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..6 {
        backoff.started(now);
        now += Duration::from_secs(5); // Flapping: each run lasts 5 s.
        waits.push(backoff.stopped(now).as_secs());
    }
    assert_eq!(waits, vec![1, 2, 4, 8, 8, 8]);
    backoff.started(now);
    now += Duration::from_secs(61); // A stable run.
    assert_eq!(backoff.stopped(now), Duration::from_secs(1));
    assert_eq!(backoff.n_failures(), 1);
}
