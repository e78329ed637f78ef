//! The early take-over rule: only the next in line, only when healthy, only when every healthy
//! member but the leader has lost it on both networks for the whole wait; and the reports decode
//! defensively.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use quorum::{Member, MemberInfo};

use super::early_takeover::{decide, EarlyTakeover, EarlyTakeoverView, HoldReason};
use super::report::{LostPeer, UnreachableReport, REPORT_VERSION};

fn member(sequence: i64, healthy: bool) -> Member {
    let mut info = MemberInfo::new(format!("node-{sequence}"), "127.0.0.1:1");
    info.healthy = healthy;
    Member { sequence, node_name: quorum::takeover::member_node_name(sequence), session_id: sequence * 7, info }
}

const WAIT: Duration = Duration::from_millis(500);

fn view<'a>(
    members: &'a [Member],
    own_sequence: i64,
    lost: &'a HashMap<String, Instant>,
    now: Instant,
) -> EarlyTakeoverView<'a> {
    EarlyTakeoverView { members, own_sequence: Some(own_sequence), lost_leader_since: lost, now, wait: WAIT }
}

#[test]
fn every_healthy_member_lost_the_leader_for_the_wait_takes_it_over() {
    let members = vec![member(1, true), member(2, true), member(3, true)];
    let start = Instant::now();
    let lost: HashMap<String, Instant> = [("node-2".to_string(), start), ("node-3".to_string(), start)].into();
    let decision = decide(&view(&members, 2, &lost, start + WAIT));
    assert_eq!(decision, EarlyTakeover::TakeOver { node_name: members[0].node_name.clone(), session_id: 7 });
    let too_early = decide(&view(&members, 2, &lost, start + WAIT - Duration::from_millis(1)));
    assert!(matches!(too_early, EarlyTakeover::Hold(HoldReason::TooRecent(_))), "{too_early:?}");
}

#[test]
fn one_member_that_still_reaches_the_leader_holds_it() {
    let members = vec![member(1, true), member(2, true), member(3, true)];
    let start = Instant::now();
    let lost: HashMap<String, Instant> = [("node-2".to_string(), start)].into();
    let decision = decide(&view(&members, 2, &lost, start + WAIT * 10));
    assert_eq!(decision, EarlyTakeover::Hold(HoldReason::NotLostBy("node-3".to_string())));
}

#[test]
fn an_unhealthy_member_is_no_judge_and_cannot_take_over() {
    let members = vec![member(1, true), member(2, true), member(3, false)];
    let start = Instant::now();
    let lost: HashMap<String, Instant> = [("node-2".to_string(), start)].into();
    assert!(matches!(decide(&view(&members, 2, &lost, start + WAIT)), EarlyTakeover::TakeOver { .. }));
    let members = vec![member(1, true), member(2, false), member(3, true)];
    let lost: HashMap<String, Instant> = [("node-2".to_string(), start), ("node-3".to_string(), start)].into();
    assert_eq!(decide(&view(&members, 2, &lost, start + WAIT)), EarlyTakeover::Hold(HoldReason::SelfUnhealthy));
}

#[test]
fn off_or_not_next_in_line_decides_nothing() {
    let members = vec![member(1, true), member(2, true), member(3, true)];
    let start = Instant::now();
    let lost: HashMap<String, Instant> = [("node-2".to_string(), start), ("node-3".to_string(), start)].into();
    assert_eq!(decide(&view(&members, 3, &lost, start + WAIT)), EarlyTakeover::NotMine);
    assert_eq!(decide(&view(&members, 1, &lost, start + WAIT)), EarlyTakeover::NotMine);
    let mut off = view(&members, 2, &lost, start + WAIT);
    off.wait = Duration::ZERO;
    assert_eq!(decide(&off), EarlyTakeover::NotMine);
}

#[test]
fn reports_decode_defensively() {
    let report = UnreachableReport {
        version: REPORT_VERSION,
        node: "node-2".to_string(),
        lost: vec![LostPeer {
            node: "node-1".to_string(),
            election_node: Some("member-0000000001".to_string()),
            management_since_ms: Some(10),
            data_since_ms: Some(12),
        }],
    };
    let decoded = UnreachableReport::decode(&report.encode()).expect("its own encoding decodes");
    assert!(decoded.lost_on_both("member-0000000001"));
    assert!(!decoded.lost_on_both("member-0000000002"));
    assert!(UnreachableReport::decode(b"{").is_err());
    assert!(UnreachableReport::decode(br#"{"version":2,"node":"x","lost":[]}"#).is_err());
    let one_network = br#"{"version":1,"node":"x","lost":[{"node":"n1","election_node":"m","data_since_ms":1}]}"#;
    assert!(!UnreachableReport::decode(one_network).expect("decodes").lost_on_both("m"));
}

proptest! {
    /// Whatever the membership, health, reports and times: a take-over names the leader, comes
    /// only to the healthy member next in line, and only when every healthy member but the leader
    /// has reported it lost on both networks for at least the wait.
    #[test]
    fn a_take_over_needs_every_healthy_judge_for_the_whole_wait(
        healths in proptest::collection::vec(any::<bool>(), 1..7),
        reported in proptest::collection::vec(proptest::option::of(0u64..2_000), 7),
        own_index in 0usize..7,
        wait_ms in 0u64..1_500,
    ) {
        let members: Vec<Member> =
            healths.iter().enumerate().map(|(index, healthy)| member(index as i64 + 1, *healthy)).collect();
        let now = Instant::now() + Duration::from_secs(10);
        let lost: HashMap<String, Instant> = members
            .iter()
            .zip(&reported)
            .filter_map(|(member, age)| Some((member.info.id.clone(), now - Duration::from_millis((*age)?))))
            .collect();
        let own_sequence = own_index as i64 + 1;
        let decision = decide(&EarlyTakeoverView {
            members: &members,
            own_sequence: Some(own_sequence),
            lost_leader_since: &lost,
            now,
            wait: Duration::from_millis(wait_ms),
        });
        if let EarlyTakeover::TakeOver { node_name, session_id } = decision {
            prop_assert!(wait_ms > 0);
            prop_assert_eq!(&node_name, &members[0].node_name);
            prop_assert_eq!(session_id, members[0].session_id);
            prop_assert_eq!(own_index, 1, "only the next in line takes over");
            prop_assert!(members[1].info.healthy);
            for judge in members.iter().skip(1).filter(|member| member.info.healthy) {
                let since = lost.get(&judge.info.id);
                prop_assert!(since.is_some_and(|since| now - *since >= Duration::from_millis(wait_ms)));
            }
        }
    }
}
