//! Unit and property tests of the runner lease and the timer rule: no ZooKeeper needed.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

#[test]
fn a_lease_without_contact_does_not_hold() {
    let lease = RunnerLease::new(Duration::from_secs(2));
    assert!(!lease.holds(7, Duration::from_secs(6)));
}

#[test]
fn a_fresh_contact_holds_for_its_session_only() {
    let lease = RunnerLease::new(Duration::from_secs(2));
    lease.confirm(7, Instant::now());
    assert!(lease.holds(7, Duration::from_secs(6)));
    assert!(!lease.holds(8, Duration::from_secs(6)), "a new session confirms nothing about the old one's tasks");
}

#[test]
fn an_old_contact_lapses() {
    let lease = RunnerLease::new(Duration::from_millis(300));
    lease.confirm(7, Instant::now() - Duration::from_millis(400));
    assert!(!lease.holds(7, Duration::from_secs(6)));
}

#[test]
fn the_granted_session_timeout_shortens_the_lease() {
    // Configured 2 s, but the server granted 1.2 s: the lease is 400 ms.
    let lease = RunnerLease::new(Duration::from_secs(2));
    lease.confirm(7, Instant::now() - Duration::from_millis(500));
    assert!(lease.holds(7, Duration::from_secs(6)));
    assert!(!lease.holds(7, Duration::from_millis(1200)));
}

#[test]
fn a_late_answer_of_an_older_probe_does_not_move_contact_back() {
    let lease = RunnerLease::new(Duration::from_millis(300));
    let now = Instant::now();
    lease.confirm(7, now);
    lease.confirm(7, now - Duration::from_secs(10));
    assert!(lease.holds(7, Duration::from_secs(6)));
}

#[test]
fn an_io_check_bounds_io_by_the_contact_it_saw() {
    let lease = RunnerLease::new(Duration::from_millis(1000));
    let timeout = Duration::from_secs(6);
    let at = Instant::now() - Duration::from_millis(1500);
    lease.confirm(7, at);
    // Lapsed: refused, and IO ended when the lease did, not now.
    let check = lease.check_io(7, timeout);
    assert!(!check.allowed);
    assert_eq!(check.until, at + Duration::from_millis(1000));
    // Fresh: allowed until the contact plus the lease.
    let fresh = Instant::now();
    lease.confirm(7, fresh);
    assert_eq!(lease.check_io(7, timeout), IoCheck { allowed: true, until: fresh + Duration::from_millis(1000) });
    // Another session's contact proves nothing for session 7: refused, bounded by the check.
    lease.confirm(8, Instant::now());
    let before = Instant::now();
    let other = lease.check_io(7, timeout);
    assert!(!other.allowed);
    assert!(other.until >= before);
}

#[test]
fn the_defaults_keep_the_rule() {
    for session_ms in [1_000u64, 2_000, 6_000, 60_000] {
        let session_timeout = Duration::from_millis(session_ms);
        for block_kib in [4u64, 256, 4096, 65_536] {
            let rule = TimerRule {
                session_timeout,
                step_down_after: session_timeout / 3,
                lease: session_timeout / 3,
                block_io: TimerRule::block_io_for(block_kib << 10),
            };
            let checked = rule.check();
            // The largest blocks take too long for the shortest sessions: the rule says so.
            if session_ms * 1000 / 6 >= TimerRule::block_io_for(block_kib << 10).as_micros() as u64 {
                assert_eq!(checked, Ok(()), "{rule:?}");
            }
        }
    }
}

#[test]
fn a_lease_too_long_for_the_session_is_refused() {
    let rule = TimerRule {
        session_timeout: Duration::from_secs(6),
        step_down_after: Duration::from_secs(2),
        lease: Duration::from_secs(3),
        block_io: MIN_BLOCK_IO,
    };
    assert!(
        matches!(rule.check(), Err(TimerRuleError::Lease(message)) if message.contains("half the session timeout"))
    );
}

#[test]
fn a_slow_step_down_is_refused() {
    let rule = TimerRule {
        session_timeout: Duration::from_secs(6),
        step_down_after: Duration::from_secs(3),
        lease: Duration::from_secs(1),
        block_io: MIN_BLOCK_IO,
    };
    assert!(matches!(rule.check(), Err(TimerRuleError::StepDown(_))));
}

proptest! {
    /// Whatever the timers, a rule that passes means: a runner whose last confirmed contact was
    /// at 0 makes its last lease check before F and so ends its last write before F + B, which
    /// is before half the session timeout, when the server can expire the session at S at the
    /// earliest.
    #[test]
    fn a_passing_rule_stops_writes_before_expiry(
        session_ms in 1_000u64..=60_000,
        lease_ms in 1u64..=60_000,
        step_down_ms in 1u64..=60_000,
        block_kib in 1u64..=65_536,
        check_ms in 0u64..=120_000,
    ) {
        let rule = TimerRule {
            session_timeout: Duration::from_millis(session_ms),
            step_down_after: Duration::from_millis(step_down_ms),
            lease: Duration::from_millis(lease_ms),
            block_io: TimerRule::block_io_for(block_kib << 10),
        };
        if rule.check().is_ok() {
            let contact_at = Instant::now();
            let check_at = contact_at + Duration::from_millis(check_ms);
            let granted = rule.session_timeout;
            let may_write = lease_holds(Some((1, contact_at)), 1, effective_lease(rule.lease, granted), check_at);
            if may_write {
                let write_ends = Duration::from_millis(check_ms) + rule.block_io;
                prop_assert!(write_ends <= rule.session_timeout / 2);
            }
            prop_assert!(rule.step_down_after * 3 <= rule.session_timeout);
        }
    }

    /// A lease never holds once its contact is F old, and always holds before, for its session.
    #[test]
    fn a_lease_holds_exactly_until_it_lapses(lease_ms in 1u64..10_000, age_ms in 0u64..20_000, other in any::<bool>()) {
        let now = Instant::now() + Duration::from_secs(30);
        let contact = Some((5, now - Duration::from_millis(age_ms)));
        let session = if other { 6 } else { 5 };
        let holds = lease_holds(contact, session, Duration::from_millis(lease_ms), now);
        prop_assert_eq!(holds, !other && age_ms < lease_ms);
    }

    /// The granted timeout only ever shortens the lease, to at most a third of it.
    #[test]
    fn the_effective_lease_is_at_most_a_third_of_the_granted_timeout(configured_ms in 0u64..100_000, granted_ms in 0u64..100_000) {
        let lease = effective_lease(Duration::from_millis(configured_ms), Duration::from_millis(granted_ms));
        prop_assert!(lease <= Duration::from_millis(configured_ms));
        prop_assert!(lease * 3 <= Duration::from_millis(granted_ms));
    }
}
