//! Election scenarios without faults: one leader among three, hand-over on `stop`, priority
//! take-over, and corrupt member data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use quorum::zk::NodeKind;
use quorum::{Event, QuorumServer, ZkConfig, ZkSession};
use tests::zk::ZooKeeper;

use super::fixture::{
    assert_never_two_leaders, member_config, serialize, service_path, unix_micros, EventLog, InProcessMember, Kind,
    Record, SESSION_TIMEOUT, WAIT,
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
    // The leader learns of every join through its children watch; a follower reports the
    // membership it saw when it last evaluated (at least itself): no herd of followers re-reading.
    log.wait_for(WAIT, "the leader to know all three", |record| {
        record.member == leader && matches!(&record.kind, Kind::Members(ids) if ids.len() == 3)
    })?;
    for member in &members {
        log.wait_for(WAIT, "every member to see itself", |record| {
            record.member == member.id && matches!(&record.kind, Kind::Members(ids) if ids.contains(&member.id))
        })?;
    }
    let handles: Vec<_> = members.iter().map(InProcessMember::handle).collect();
    // Any member can read the current membership from ZooKeeper on demand.
    for handle in &handles {
        let ids: Vec<String> = handle.read_members()?.into_iter().map(|member| member.info.id).collect();
        assert_eq!(ids.len(), 3, "{ids:?}");
    }
    let leaders: Vec<&str> = members
        .iter()
        .zip(&handles)
        .filter(|(_, handle)| handle.is_leader())
        .map(|(member, _)| member.id.as_str())
        .collect();
    assert_eq!(leaders, vec![leader.as_str()], "handles and events disagree on the leader");
    let lowest = members
        .iter()
        .zip(&handles)
        .min_by_key(|(_, handle)| handle.sequence().unwrap_or(i64::MAX))
        .map(|(member, _)| member.id.clone());
    assert_eq!(lowest.as_deref(), Some(leader.as_str()), "the lowest sequence must lead");
    // Dropping a running server stops it and joins its thread.
    drop(members);
    for id in ["a", "b", "c"] {
        let last = log.records().into_iter().rfind(|record| record.member == id);
        assert_eq!(last.map(|record| record.kind), Some(Kind::Stopped), "{id} did not stop on drop");
    }
    assert_never_two_leaders(&log, &[]);
    eprintln!("events:\n{}", log.describe());
    Ok(())
}

#[test]
fn stop_from_the_event_handler_on_the_loop_and_run_on_a_callers_thread() -> Result<()> {
    let _serial = serialize();
    let zookeeper = ZooKeeper::start()?;
    let path = service_path("stop_from_handler");
    let log = EventLog::default();
    let server = Arc::new(QuorumServer::new(member_config(&zookeeper.connect_string(), &path, "a", 0))?);
    let handle = server.handle();
    let handler_log = log.clone();
    server.initialize(move |event: Event| {
        let leader = matches!(event, Event::RoleChanged { leader: true, .. });
        handler_log.push(Record {
            at_micros: unix_micros(),
            member: "a".into(),
            kind: match event {
                Event::RoleChanged { leader: true, sequence } => Kind::Leader(sequence),
                Event::RoleChanged { leader: false, sequence } => Kind::Follower(sequence),
                Event::MembersChanged(members) => {
                    Kind::Members(members.into_iter().map(|member| member.info.id).collect())
                }
                Event::SessionLost => Kind::SessionLost,
                Event::Stopped => Kind::Stopped,
            },
        });
        if leader {
            // From the loop itself, twice: returns at once and leaves once.
            handle.leave();
            handle.leave();
        }
    })?;
    let runner = server.clone();
    let thread = std::thread::spawn(move || runner.run());
    let run_result = thread.join().map_err(|_| anyhow::anyhow!("run panicked"))?;
    run_result?;
    assert!(server.wait_stopped(Duration::ZERO));
    let kinds: Vec<Kind> = log.records().into_iter().map(|record| record.kind).collect();
    assert!(matches!(kinds.first(), Some(Kind::Leader(_))), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&Kind::Stopped), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|kind| **kind == Kind::Stopped).count(), 1, "{kinds:?}");
    // The election node is gone: nothing is left under the service path.
    let session = ZkSession::connect(&ZkConfig::new(zookeeper.connect_string(), SESSION_TIMEOUT))?;
    assert_eq!(session.children(&path)?, Vec::<String>::new());
    session.close(SESSION_TIMEOUT)?;
    server.stop();
    drop(server);
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
        log.wait_for(WAIT, "the member to join", |record| {
            record.member == id && matches!(record.kind, Kind::Members(_) | Kind::Leader(_))
        })?;
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
        let stopped =
            log.wait_for(WAIT, "Stopped", |record| record.member == old.id && record.kind == Kind::Stopped)?;
        let last = log.records().into_iter().rfind(|record| record.member == old.id);
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
    log.wait_for(WAIT, "a to see b", |record| {
        record.member == "a" && matches!(&record.kind, Kind::Members(ids) if ids.len() == 2)
    })?;
    let preferred = InProcessMember::start(&log, member_config(&connect, &path, "p", 10))?;
    let taken_over =
        log.wait_for(WAIT, "p to lead", |record| record.member == "p" && matches!(record.kind, Kind::Leader(_)))?;
    let a_stepped_down = log
        .wait_for(WAIT, "a to step down", |record| record.member == "a" && matches!(record.kind, Kind::Follower(_)))?;
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
    log.wait_for(WAIT, "p to see q", |record| {
        record.member == "p" && matches!(&record.kind, Kind::Members(ids) if ids.len() == 4)
    })?;
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
    let read: Vec<String> = b.handle().read_members()?.into_iter().map(|member| member.info.id).collect();
    assert_eq!(read, vec!["a".to_string(), "b".to_string()], "corrupt nodes are skipped on demand too");
    a.stop()?;
    assert_eq!(log.wait_for_single_leader(WAIT, &["a"])?, "b");
    b.stop()?;
    session.close(SESSION_TIMEOUT)?;
    assert_never_two_leaders(&log, &[]);
    eprintln!("events:\n{}", log.describe());
    Ok(())
}
