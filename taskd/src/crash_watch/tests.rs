//! The crash detector's rules: only consecutive refusals prove anything, an answer clears every
//! suspicion, and only the next in line watches, never itself.

use proptest::prelude::*;
use quorum::{Member, MemberInfo};

use super::verdict::{judge, runners_to_watch, watch_target, Probe, Verdict};

fn probe() -> impl Strategy<Value = Probe> {
    prop_oneof![Just(Probe::Answered), Just(Probe::Refused), Just(Probe::Ended), Just(Probe::NoAnswer)]
}

fn member(sequence: i64) -> Member {
    Member {
        sequence,
        node_name: quorum::takeover::member_node_name(sequence),
        session_id: sequence * 7,
        info: MemberInfo::new(format!("node-{sequence}"), "127.0.0.1:1"),
    }
}

#[test]
fn an_ended_connection_alone_is_only_a_suspicion() {
    assert_eq!(judge(&[Probe::Answered, Probe::Ended], 2), Verdict::Suspect);
    assert_eq!(judge(&[Probe::Ended, Probe::Refused], 2), Verdict::Suspect);
    assert_eq!(judge(&[Probe::Ended, Probe::Refused, Probe::Refused], 2), Verdict::Refused);
    assert_eq!(judge(&[Probe::Refused, Probe::NoAnswer], 2), Verdict::Unknown);
    assert_eq!(judge(&[], 2), Verdict::Unknown);
}

#[test]
fn only_the_next_in_line_watches_the_leader() {
    let members = [member(1), member(2), member(3)];
    assert_eq!(watch_target(&members, Some(2)).map(|target| target.sequence), Some(1));
    assert_eq!(watch_target(&members, Some(3)), None);
    assert_eq!(watch_target(&members, Some(1)), None);
    assert_eq!(watch_target(&members, None), None);
    assert_eq!(watch_target(&members[..1], Some(1)), None);
}

#[test]
fn the_leader_watches_every_other_runner_whose_session_holds_an_election_node() {
    let members = [member(1), member(2), member(3)];
    let runners = vec![
        ("node-1".to_string(), "127.0.0.1:11".to_string(), 7),
        ("node-2".to_string(), "127.0.0.1:12".to_string(), 14),
        // node-3's registration belongs to another session than its election node.
        ("node-3".to_string(), "127.0.0.1:13".to_string(), 99),
        ("node-4".to_string(), "127.0.0.1:14".to_string(), 28),
    ];
    let targets = runners_to_watch(&runners, &members, "node-1");
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(targets[0].node_id, "node-2");
    assert_eq!(targets[0].election_node, members[1].node_name);
    assert_eq!(targets[0].session_id, 14);
}

proptest! {
    /// The leader never watches its own runner, and every runner it watches has an election
    /// node of the same node id and session (whose leaving marker protects a stopping runner).
    #[test]
    fn a_watched_runner_is_never_the_leader_and_always_has_its_sessions_election_node(
        registrations in proptest::collection::vec((0i64..6, 0i64..60), 0..8),
        sequences in proptest::collection::btree_set(0i64..6, 0..6),
        own in 0i64..6,
    ) {
        let members: Vec<Member> = sequences.iter().map(|sequence| member(*sequence)).collect();
        let runners: Vec<(String, String, i64)> = registrations
            .iter()
            .map(|(node, session)| (format!("node-{node}"), "127.0.0.1:1".to_string(), *session))
            .collect();
        let own_id = format!("node-{own}");
        for target in runners_to_watch(&runners, &members, &own_id) {
            prop_assert_ne!(&target.node_id, &own_id);
            let member = members.iter().find(|member| member.node_name == target.election_node);
            prop_assert!(member.is_some_and(|member| member.session_id == target.session_id && member.info.id == target.node_id));
        }
    }

    /// `Refused` needs the last `needed` probes to be refusals: an answer, an ended connection or
    /// a silence among them clears it.
    #[test]
    fn refused_only_after_enough_refusals_in_a_row(probes in proptest::collection::vec(probe(), 0..20), needed in 1usize..4) {
        let verdict = judge(&probes, needed);
        let tail_all_refused = probes.len() >= needed && probes[probes.len() - needed..].iter().all(|p| *p == Probe::Refused);
        prop_assert_eq!(verdict == Verdict::Refused, tail_all_refused);
    }

    /// Whatever came before, an answered probe means alive.
    #[test]
    fn an_answer_clears_every_suspicion(mut probes in proptest::collection::vec(probe(), 0..20), needed in 1usize..4) {
        probes.push(Probe::Answered);
        prop_assert_eq!(judge(&probes, needed), Verdict::Alive);
    }

    /// A watcher never targets itself, and targets only the lowest sequence.
    #[test]
    fn a_member_never_watches_itself(mut sequences in proptest::collection::btree_set(0i64..50, 0..6), own in 0i64..50) {
        sequences.insert(own);
        let members: Vec<Member> = sequences.iter().map(|sequence| member(*sequence)).collect();
        if let Some(target) = watch_target(&members, Some(own)) {
            prop_assert_ne!(target.sequence, own);
            prop_assert_eq!(target.sequence, members[0].sequence);
            prop_assert_eq!(members[1].sequence, own);
        }
    }
}
