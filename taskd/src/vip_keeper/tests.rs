//! Tests of the policy across VIPs: with one VIP it is the single VIP's policy; a VIP that fails
//! alone never takes the others down.

use std::time::Duration;

use proptest::prelude::*;
use vip::VipVerdict;

use super::policy::{affects_node, leader_verdict, LeaderVerdict, VipStanding};

fn verdict() -> impl Strategy<Value = Option<VipVerdict>> {
    prop_oneof![
        Just(None),
        Just(Some(VipVerdict::Healthy)),
        Just(Some(VipVerdict::RetryAfter(Duration::from_millis(100)))),
        Just(Some(VipVerdict::StepDown)),
        Just(Some(VipVerdict::StopService)),
    ]
}

fn standing() -> impl Strategy<Value = VipStanding> {
    (verdict(), any::<bool>()).prop_map(|(verdict, node_wide)| VipStanding { verdict, node_wide })
}

proptest! {
    /// One VIP: the leader does what that VIP's verdict says, as before VIPs were per service.
    #[test]
    fn one_vip_keeps_the_single_vip_policy(standing in standing()) {
        let expected = match standing.verdict {
            Some(VipVerdict::StepDown) => LeaderVerdict::StepDown,
            Some(VipVerdict::StopService) => LeaderVerdict::StopService,
            _ => LeaderVerdict::Keep,
        };
        prop_assert_eq!(leader_verdict(&[standing]), expected);
    }

    /// A VIP failing alone (not a node-wide error) never makes the leader leave while another
    /// VIP is still held or tried.
    #[test]
    fn a_vip_failing_alone_leaves_the_others_held(mut standings in prop::collection::vec(standing(), 2..6), healthy in 0usize..6) {
        for standing in &mut standings {
            standing.node_wide = false;
        }
        let healthy = healthy % standings.len();
        standings[healthy].verdict = Some(VipVerdict::Healthy);
        prop_assert_eq!(leader_verdict(&standings), LeaderVerdict::Keep);
    }

    /// A node-wide terminal error acts whatever the other VIPs do.
    #[test]
    fn a_node_wide_failure_acts_at_once(mut standings in prop::collection::vec(standing(), 1..6), at in 0usize..6, stop in any::<bool>()) {
        for standing in &mut standings {
            standing.node_wide = false;
        }
        let at = at % standings.len();
        standings[at] = VipStanding {
            verdict: Some(if stop { VipVerdict::StopService } else { VipVerdict::StepDown }),
            node_wide: true,
        };
        let verdict = leader_verdict(&standings);
        prop_assert_ne!(verdict, LeaderVerdict::Keep);
        if stop {
            prop_assert_eq!(verdict, LeaderVerdict::StopService);
        }
    }

    /// The leader stops its service only when a node-wide error says so or every VIP failed
    /// permanently.
    #[test]
    fn the_service_stops_only_for_a_node_or_every_vip(standings in prop::collection::vec(standing(), 0..6)) {
        if leader_verdict(&standings) == LeaderVerdict::StopService {
            let node_stop = standings.iter().any(|s| s.node_wide && s.verdict == Some(VipVerdict::StopService));
            let all_stop = standings.iter().all(|s| s.verdict == Some(VipVerdict::StopService));
            prop_assert!(node_stop || all_stop);
        }
    }
}

#[test]
fn every_vip_given_up_steps_down_and_every_permanent_one_stops() {
    let step = VipStanding { verdict: Some(VipVerdict::StepDown), node_wide: false };
    let stop = VipStanding { verdict: Some(VipVerdict::StopService), node_wide: false };
    assert_eq!(leader_verdict(&[step, stop]), LeaderVerdict::StepDown);
    assert_eq!(leader_verdict(&[stop, stop]), LeaderVerdict::StopService);
    assert_eq!(leader_verdict(&[stop, VipStanding::PENDING]), LeaderVerdict::Keep);
    assert_eq!(leader_verdict(&[]), LeaderVerdict::Keep);
}

#[test]
fn interface_and_address_errors_are_one_vips_and_privilege_is_the_nodes() {
    assert!(!affects_node(&vip::VipError::Interface("eth1 disappeared".into())));
    assert!(!affects_node(&vip::VipError::NotFound("no eth1".into())));
    assert!(affects_node(&vip::VipError::Fenced("no contact".into())));
    let eperm = std::io::Error::from_raw_os_error(libc::EPERM);
    assert!(affects_node(&vip::VipError::NetLink { context: "add".into(), source: eperm }));
    let busy = std::io::Error::from_raw_os_error(libc::EBUSY);
    assert!(!affects_node(&vip::VipError::NetLink { context: "add".into(), source: busy }));
}
