//! Election scenarios without faults: one leader among three, hand-over on `stop`, priority
//! take-over, and corrupt member data.

use std::time::{Duration, Instant};

use anyhow::Result;
use quorum::zk::NodeKind;
use quorum::{ZkConfig, ZkSession};
use tests::zk::ZooKeeper;

use super::fixture::{
    assert_never_two_leaders, member_config, serialize, service_path, EventLog, InProcessMember, Kind, SESSION_TIMEOUT,
    WAIT,
};

#[test]
fn three_members_elect_exactly_one_leader_the_lowest_sequence() -> Result<()> {
    let _serial = serialize();
    let zookeeper = ZooKeeper::start()?;
    let path = service_path("three_members");
    let log = EventLog::default();
    let members: Vec<InProcessMember> = ["a", "b", "c"]
        .into_iter()
        .map(|id| InProcessMember::start(&log, member_config(&zookeeper.connect_string(), &path, id, 0)))
        .collect::<Result<_>>()?;
    let leader = log.wait_for_single_leader(WAIT, &[])?;
    // Everybody has seen all three members (the leader by its children watch).
    for member in &members {
        log.wait_for(WAIT, "every member knows all three", |record| {
            record.member == member.id && matches!(&record.kind, Kind::Members(ids) if ids.len() == 3)
        })?;
    }
    let handles: Vec<_> = members.iter().map(InProcessMember::handle).collect();
    let leaders: Vec<&str> = members.iter().zip(&handles).filter(|(_, handle)| handle.is_leader()).map(|(member, _)| member.id.as_str()).collect();
    assert_eq!(leaders, vec![leader.as_str()], "handles and events disagree on the leader");
    let lowest = members
        .iter()
        .zip(&handles)
        .min_by_key(|(_, handle)| handle.sequence().unwrap_or(i64::MAX))
        .map(|(member, _)| member.id.clone());
    assert_eq!(lowest.as_deref(), Some(leader.as_str()), "the lowest sequence must lead");
    for member in &members {
        member.stop()?;
    }
    assert_never_two_leaders(&log, &[]);
    eprintln!("events:\n{}", log.describe());
    Ok(())
}

#[test]
fn stop_of_the_leader_hands_over_through_the_watch() -> Result<()> {
    let _serial = serialize();
    let zookeeper = ZooKeeper::start()?;
    let path = service_path("stop_hand_over");
    let log = EventLog::default();
    let mut members = Vec::new();
    for id in ["a", "b", "c"] {
        members.push(InProcessMember::start(&log, member_config(&zookeeper.connect_string(), &path, id, 0))?);
        // Start in order so that the sequence order is a, b, c.
        log.wait_for(WAIT, "the member to join", |record| record.member == id && matches!(record.kind, Kind::Members(_) | Kind::Leader(_)))?;
    }
    assert_eq!(log.wait_for_single_leader(WAIT, &[])?, "a");
    for round in 0..2 {
        let old = &members[round];
        let stop_called = Instant::now();
        old.server.stop();
        let new_leader = log.wait_for_single_leader(WAIT, &[old.id.as_str()])?;
        let hand_over = stop_called.elapsed();
        assert_eq!(new_leader, members[round + 1].id, "the next in sequence must take over");
        // Through the watch on the deleted node, not by a session timeout.
        assert!(
            hand_over < SESSION_TIMEOUT / 2,
            "hand-over took {hand_over:?}, as long as a session timeout; events:\n{}",
            log.describe()
        );
        assert!(old.server.wait_stopped(WAIT), "the old leader did not finish stopping");
        let stopped = log.wait_for(WAIT, "Stopped", |record| record.member == old.id && record.kind == Kind::Stopped)?;
        let last = log.records().into_iter().filter(|record| record.member == old.id).last();
        assert_eq!(last.map(|record| record.kind), Some(Kind::Stopped), "Stopped must be the last event");
        let _ = stopped;
    }
    // stop is idempotent and drop joins.
    members[0].server.stop();
    members[2].stop()?;
    drop(members);
    assert_never_two_leaders(&log, &[]);
    eprintln!("events:\n{}", log.describe());
    Ok(())
}

#[test]
fn a_member_with_higher_priority_takes_over_cleanly() -> Result<()> {
    let _serial = serialize();
    let zookeeper = ZooKeeper::start()?;
    let path = service_path("priority");
    let log = EventLog::default();
    let connect = zookeeper.connect_string();
    let a = InProcessMember::start(&log, member_config(&connect, &path, "a", 0))?;
    assert_eq!(log.wait_for_single_leader(WAIT, &[])?, "a");
    let b = InProcessMember::start(&log, member_config(&connect, &path, "b", 0))?;
    log.wait_for(WAIT, "a to see b", |record| record.member == "a" && matches!(&record.kind, Kind::Members(ids) if ids.len() == 2))?;
    let preferred = InProcessMember::start(&log, member_config(&connect, &path, "p", 10))?;
    let taken_over = log.wait_for(WAIT, "p to lead", |record| record.member == "p" && matches!(record.kind, Kind::Leader(_)))?;
    let a_stepped_down = log.wait_for(WAIT, "a to step down", |record| record.member == "a" && matches!(record.kind, Kind::Follower(_)))?;
    assert!(
        a_stepped_down.at_micros <= taken_over.at_micros,
        "p led before a stepped down; events:\n{}",
        log.describe()
    );
    assert!(
        !log.records().iter().any(|record| record.member == "b" && matches!(record.kind, Kind::Leader(_))),
        "b (lower priority) must never lead during the hand-over; events:\n{}",
        log.describe()
    );
    // A later member with a priority between keeps p leading.
    let q = InProcessMember::start(&log, member_config(&connect, &path, "q", 5))?;
    log.wait_for(WAIT, "p to see q", |record| record.member == "p" && matches!(&record.kind, Kind::Members(ids) if ids.len() == 4))?;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(log.current_leaders(), vec!["p".to_string()]);
    // When p leaves, the highest remaining priority (q) leads.
    preferred.stop()?;
    assert_eq!(log.wait_for_single_leader(WAIT, &["p"])?, "q");
    for member in [&a, &b, &q] {
        member.stop()?;
    }
    assert_never_two_leaders(&log, &[]);
    eprintln!("events:\n{}", log.describe());
    Ok(())
}

#[test]
fn corrupt_member_data_is_skipped_not_fatal() -> Result<()> {
    let _serial = serialize();
    let zookeeper = ZooKeeper::start()?;
    let path = service_path("corrupt");
    let log = EventLog::default();
    // Strangers under the election path, with the lowest sequences: corrupt JSON, bad names.
    let session = ZkSession::connect(&ZkConfig::new(zookeeper.connect_string(), SESSION_TIMEOUT))?;
    session.ensure_path(&path)?;
    session.create(&format!("{path}/member-"), b"{not json", NodeKind::PersistentSequential)?;
    session.create(&format!("{path}/member-"), b"\xff\xfe\x00", NodeKind::PersistentSequential)?;
    session.create_persistent(&format!("{path}/garbage"), b"{}")?;
    session.create_persistent(&format!("{path}/member-abc"), br#"{"id":"x","address":"y"}"#)?;
    let a = InProcessMember::start(&log, member_config(&zookeeper.connect_string(), &path, "a", 0))?;
    assert_eq!(log.wait_for_single_leader(WAIT, &[])?, "a");
    // A corrupt node between a and b: b must watch a, not the stranger.
    session.create(&format!("{path}/member-"), b"[1,2,3]", NodeKind::PersistentSequential)?;
    let b = InProcessMember::start(&log, member_config(&zookeeper.connect_string(), &path, "b", 0))?;
    log.wait_for(WAIT, "b to see a and b only", |record| {
        record.member == "b" && matches!(&record.kind, Kind::Members(ids) if ids == &["a".to_string(), "b".to_string()])
    })?;
    a.stop()?;
    assert_eq!(log.wait_for_single_leader(WAIT, &["a"])?, "b");
    b.stop()?;
    session.close(SESSION_TIMEOUT)?;
    assert_never_two_leaders(&log, &[]);
    eprintln!("events:\n{}", log.describe());
    Ok(())
}
