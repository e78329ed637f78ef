//! Tests of the fence's rule: what it grants never outlives the session, and a configuration it
//! accepts never lets a live leader's VIP lapse between two renewals.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::{fence_window, lifetime_until, FenceRule, FENCE_MARGIN, KERNEL_EXPIRY_SLACK};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// The daemon's defaults: the contact probe every quarter of a lease of a third of S.
fn rule(session_timeout: Duration, renew_interval: Duration) -> FenceRule {
    FenceRule { session_timeout, contact_probe_interval: session_timeout / 12, renew_interval }
}

#[test]
fn lifetimes_are_whole_seconds_rounded_down_and_never_under_one() {
    let now = Instant::now();
    assert_eq!(lifetime_until(now + ms(2_999), now), Some(2));
    assert_eq!(lifetime_until(now + ms(1_000), now), Some(1));
    assert_eq!(lifetime_until(now + ms(999), now), None, "under a second left: nothing is granted");
    assert_eq!(lifetime_until(now, now), None);
    assert_eq!(lifetime_until(now, now + ms(1)), None, "a deadline in the past grants nothing");
}

#[test]
fn the_window_keeps_the_kernel_slack_and_the_margin_from_the_session() {
    assert_eq!(fence_window(ms(4_000)), ms(2_750));
    assert_eq!(fence_window(ms(6_000)), ms(4_750));
    assert_eq!(fence_window(ms(1_000)), Duration::ZERO);
}

#[test]
fn the_rule_holds_for_the_defaults_and_names_the_keys_when_the_session_is_too_short() {
    rule(ms(6_000), ms(1_000)).check().expect("the daemon's defaults");
    rule(ms(4_000), ms(1_000)).check().expect("the netns tests' and the chaos run's session");
    let error = rule(ms(3_000), ms(1_000)).check().unwrap_err();
    assert!(error.contains("session_timeout_ms") && error.contains("vip.sync_interval_ms"), "{error}");
    rule(ms(3_000), ms(500)).check().expect("a shorter renewal fits a shorter session");
}

proptest! {
    /// Whatever the session timeout, the contact and the moment of the renewal: the VIP a renewal
    /// grants is gone (its lifetime plus the kernel's slack) before the session can expire, which
    /// is no earlier than S after the contact.
    #[test]
    fn a_granted_lifetime_ends_before_the_session_can_expire(
        session_ms in 1_000u64..60_000,
        contact_age_ms in 0u64..60_000,
    ) {
        let contact = Instant::now();
        let session_timeout = ms(session_ms);
        let renewed_at = contact + ms(contact_age_ms);
        if let Some(lifetime) = lifetime_until(contact + fence_window(session_timeout), renewed_at) {
            let gone_by = renewed_at + Duration::from_secs(u64::from(lifetime)) + KERNEL_EXPIRY_SLACK;
            prop_assert!(gone_by + FENCE_MARGIN <= contact + session_timeout);
        }
    }

    /// A rule that passes: a renewal made with a contact at most one probe interval old grants a
    /// lifetime that outlasts the next renewal.
    #[test]
    fn a_passing_rule_keeps_a_live_leaders_vip_between_renewals(
        session_ms in 1_000u64..60_000,
        probe_ms in 10u64..20_000,
        renew_ms in 10u64..60_000,
        age_per_mille in 0u64..=1_000,
    ) {
        let rule = FenceRule {
            session_timeout: ms(session_ms),
            contact_probe_interval: ms(probe_ms),
            renew_interval: ms(renew_ms),
        };
        prop_assume!(rule.check().is_ok());
        let contact = Instant::now();
        let renewed_at = contact + ms(probe_ms * age_per_mille / 1_000);
        let lifetime = lifetime_until(contact + rule.window(), renewed_at);
        prop_assert!(lifetime.is_some());
        let lapses_at = renewed_at + Duration::from_secs(u64::from(lifetime.unwrap_or(0)));
        prop_assert!(lapses_at > renewed_at + rule.renew_interval);
    }
}
