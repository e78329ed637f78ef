//! Election under faults: a member killed, ZooKeeper frozen, the ZooKeeper leader of an ensemble
//! killed, a member frozen past its session. Members that must be killed or frozen run as
//! `quorum-member` processes.

use std::thread;
use std::time::Duration;

use anyhow::Result;
use quorum::{ZkConfig, ZkSession};
use tests::zk::ZooKeeper;

use super::fixture::{
    assert_never_two_leaders, member_config, member_config_with_timeout, serialize, service_path, unix_micros,
    EventLog, InProcessMember, Kind, ProcessMember, SESSION_TIMEOUT, WAIT,
};

/// Starts process members in order, each after the previous one has joined, so that the
/// sequence order is the start order.
fn start_processes(log: &EventLog, connect: &str, path: &str, ids: &[&str]) -> Result<Vec<ProcessMember>> {
    let mut members = Vec::new();
    for id in ids {
        members.push(ProcessMember::start(log, connect, path, id)?);
        log.wait_for(WAIT, "the member to join", |record| {
            record.member == *id && matches!(record.kind, Kind::Members(_) | Kind::Leader(_))
        })?;
    }
    Ok(members)
}

#[test]
fn sigkill_of_the_leader_process_hands_over_only_after_the_session_timeout() -> Result<()> {
    let _serial = serialize();
    let zookeeper = ZooKeeper::start()?;
    let path = service_path("sigkill");
    let log = EventLog::default();
    let mut members = start_processes(&log, &zookeeper.connect_string(), &path, &["a", "b", "c"])?;
    assert_eq!(log.wait_for_single_leader(WAIT, &[])?, "a");
    let killed_at = members[0].kill()?;
    let new_leader =
        log.wait_for(WAIT, "a new leader", |record| record.member != "a" && matches!(record.kind, Kind::Leader(_)))?;
    assert_eq!(new_leader.member, "b");
    let hand_over = Duration::from_micros(new_leader.at_micros.saturating_sub(killed_at));
    // The dead leader's node lives until the server expires its session: no early take-over.
    // (The server last heard of it at most a ping interval before the kill.)
    assert!(
        hand_over >= SESSION_TIMEOUT / 2,
        "a new leader only {hand_over:?} after the kill: before the session could expire; events:\n{}",
        log.describe()
    );
    assert_never_two_leaders(&log, &[("a".to_string(), killed_at)]);
    for member in &mut members[1..] {
        member.stop()?;
    }
    eprintln!("events:\n{}", log.describe());
    Ok(())
}

#[test]
fn paused_zookeeper_makes_the_leader_step_down_before_anyone_else_leads() -> Result<()> {
    let _serial = serialize();
    let zookeeper = ZooKeeper::start()?;
    let path = service_path("paused_server");
    let log = EventLog::default();
    let connect = zookeeper.connect_string();
    let mut members = Vec::new();
    for id in ["a", "b", "c"] {
        members.push(InProcessMember::start(&log, member_config(&connect, &path, id, 0))?);
        log.wait_for(WAIT, "the member to join", |record| {
            record.member == id && matches!(record.kind, Kind::Members(_) | Kind::Leader(_))
        })?;
    }
    assert_eq!(log.wait_for_single_leader(WAIT, &[])?, "a");
    let paused_at = unix_micros();
    zookeeper.pause_server(0)?;
    thread::sleep(SESSION_TIMEOUT * 2);
    let stepped_down = log.records().into_iter().find(|record| {
        record.member == "a"
            && record.at_micros > paused_at
            && matches!(record.kind, Kind::Follower(_) | Kind::SessionLost)
    });
    zookeeper.resume_server(0)?;
    let Some(stepped_down) = stepped_down else {
        panic!("the leader did not step down while ZooKeeper was frozen; events:\n{}", log.describe());
    };
    let step_down_after = Duration::from_micros(stepped_down.at_micros - paused_at);
    assert!(
        step_down_after < SESSION_TIMEOUT,
        "the leader stepped down {step_down_after:?} after the freeze: not before its session could expire"
    );
    log.wait_for_single_leader(WAIT, &[])?;
    let first_new_leader =
        log.records().into_iter().find(|record| record.at_micros > paused_at && matches!(record.kind, Kind::Leader(_)));
    if let Some(first_new_leader) = first_new_leader {
        assert!(
            first_new_leader.at_micros > stepped_down.at_micros,
            "{} led before the old leader stepped down; events:\n{}",
            first_new_leader.member,
            log.describe()
        );
    }
    assert_never_two_leaders(&log, &[]);
    for member in &members {
        member.stop()?;
    }
    assert_never_two_leaders(&log, &[]);
    eprintln!("events:\n{}", log.describe());
    Ok(())
}

#[test]
fn a_leader_disconnected_within_its_session_steps_down_then_leads_again() -> Result<()> {
    let _serial = serialize();
    // A longer session, so that the freeze can outlast the step-down deadline and still end well
    // before the session could expire: the client declares a frozen server lost after 2/5 of the
    // session timeout and the leader steps down a third of it later (about 4.4 s of 6 s).
    let session_timeout = Duration::from_secs(6);
    let zookeeper = ZooKeeper::start()?;
    let path = service_path("reconnect_within_session");
    let log = EventLog::default();
    let connect = zookeeper.connect_string();
    let mut members = Vec::new();
    for id in ["a", "b", "c"] {
        members
            .push(InProcessMember::start(&log, member_config_with_timeout(&connect, &path, id, 0, session_timeout))?);
        log.wait_for(WAIT, "the member to join", |record| {
            record.member == id && matches!(record.kind, Kind::Members(_) | Kind::Leader(_))
        })?;
    }
    assert_eq!(log.wait_for_single_leader(WAIT, &[])?, "a");
    // Every session has just been heard from, so none can expire before the freeze ends.
    for member in &members {
        let session = member.handle().session().expect("a joined member has a session");
        session.exists(&path)?;
    }
    let paused_at = unix_micros();
    zookeeper.pause_server(0)?;
    let stepped_down = log.wait_for(session_timeout, "a to step down while frozen", |record| {
        record.member == "a" && record.at_micros > paused_at && matches!(record.kind, Kind::Follower(_))
    });
    thread::sleep(Duration::from_micros((paused_at + 5_200_000).saturating_sub(unix_micros())));
    zookeeper.resume_server(0)?;
    let stepped_down = stepped_down?;
    let leads_again = log.wait_for(WAIT, "a to lead again", |record| {
        record.member == "a" && record.at_micros > stepped_down.at_micros && matches!(record.kind, Kind::Leader(_))
    })?;
    let records = log.records();
    assert!(
        !records.iter().any(|record| record.kind == Kind::SessionLost),
        "a session expired; the freeze was meant to end within every session; events:\n{}",
        log.describe()
    );
    assert!(
        !records.iter().any(|record| record.member != "a" && matches!(record.kind, Kind::Leader(_))),
        "another member led while a's session lived; events:\n{}",
        log.describe()
    );
    assert_eq!(stepped_down.kind, Kind::Follower(0));
    assert_eq!(leads_again.kind, Kind::Leader(0), "a keeps its election node through the reconnection");
    for member in &members {
        member.stop()?;
    }
    assert_never_two_leaders(&log, &[]);
    eprintln!("events:\n{}", log.describe());
    Ok(())
}

#[test]
fn ensemble_survives_losing_its_zookeeper_leader_with_at_most_one_leader() -> Result<()> {
    let _serial = serialize();
    let zookeeper = ZooKeeper::start_ensemble()?;
    let path = service_path("ensemble");
    let log = EventLog::default();
    let connect = zookeeper.connect_string();
    let members: Vec<InProcessMember> = ["a", "b", "c"]
        .into_iter()
        .map(|id| InProcessMember::start(&log, member_config(&connect, &path, id, 0)))
        .collect::<Result<_>>()?;
    log.wait_for_single_leader(WAIT, &[])?;
    let zookeeper_leader = zookeeper.wait_for_leader(WAIT)?;
    zookeeper.kill_server(zookeeper_leader)?;
    // The two remaining servers elect a new ZooKeeper leader; the members reconnect (or rejoin).
    zookeeper.wait_for_leader(WAIT)?;
    thread::sleep(SESSION_TIMEOUT * 2);
    log.wait_for_single_leader(WAIT, &[])?;
    for member in &members {
        member.stop()?;
    }
    assert_never_two_leaders(&log, &[]);
    eprintln!("events:\n{}", log.describe());
    Ok(())
}

#[test]
fn a_leader_frozen_past_its_session_rejoins_as_a_follower() -> Result<()> {
    let _serial = serialize();
    let zookeeper = ZooKeeper::start()?;
    let path = service_path("expired");
    let log = EventLog::default();
    let mut members = start_processes(&log, &zookeeper.connect_string(), &path, &["a", "b", "c"])?;
    assert_eq!(log.wait_for_single_leader(WAIT, &[])?, "a");
    // Freeze the leader's whole process (like a long GC pause) past its session timeout.
    members[0].pause()?;
    let paused_at = unix_micros();
    let b_leads =
        log.wait_for(WAIT, "b to lead", |record| record.member == "b" && matches!(record.kind, Kind::Leader(_)));
    let resumed_at = unix_micros();
    members[0].resume()?;
    let b_leads = b_leads?;
    assert!(b_leads.at_micros > paused_at);
    // Woken, the old leader stops leading at once: its step-down clock started at its last
    // contact with ZooKeeper, long before the freeze ended, not at the disconnection it learns of
    // on waking (a third of the session later, two leaders would have overlapped that long).
    let a_steps_down = log.wait_for(WAIT, "a to stop leading", |record| {
        record.member == "a"
            && record.at_micros > resumed_at
            && matches!(record.kind, Kind::Follower(_) | Kind::SessionLost)
    })?;
    let zombie = Duration::from_micros(a_steps_down.at_micros - resumed_at);
    eprintln!("the woken leader stopped leading {} ms after SIGCONT", zombie.as_millis());
    assert!(zombie < SESSION_TIMEOUT / 6, "the woken leader led on for {zombie:?} after SIGCONT");
    // Back, the old leader learns its session expired, steps down and rejoins at the tail.
    log.wait_for(WAIT, "a to lose its session", |record| record.member == "a" && record.kind == Kind::SessionLost)?;
    log.wait_for(WAIT, "a to rejoin", |record| {
        record.member == "b"
            && record.at_micros > b_leads.at_micros
            && matches!(&record.kind, Kind::Members(ids) if ids.len() == 3)
    })?;
    thread::sleep(Duration::from_millis(500));
    assert_eq!(log.current_leaders(), vec!["b".to_string()], "events:\n{}", log.describe());
    let a_led_again = log
        .records()
        .into_iter()
        .any(|record| record.member == "a" && record.at_micros > paused_at && matches!(record.kind, Kind::Leader(_)));
    assert!(!a_led_again, "a led again after its session expired; events:\n{}", log.describe());
    for member in &mut members {
        member.stop()?;
    }
    eprintln!("events:\n{}", log.describe());
    Ok(())
}

/// A member whose election node another member deleted (an early take-over of a host that was
/// cut off, whose link came back within its session) rejoins with a new node when it next writes
/// its data, instead of retrying the write to a node that is gone forever.
#[test]
fn a_member_whose_node_was_deleted_by_a_peer_rejoins_on_its_next_write() -> Result<()> {
    let _serial = serialize();
    let zookeeper = ZooKeeper::start()?;
    let path = service_path("deleted_by_peer");
    let log = EventLog::default();
    let a = InProcessMember::start(&log, member_config(&zookeeper.connect_string(), &path, "a", 0))?;
    assert_eq!(log.wait_for_single_leader(WAIT, &[])?, "a");
    let b = InProcessMember::start(&log, member_config(&zookeeper.connect_string(), &path, "b", 0))?;
    log.wait_for(WAIT, "b to see a and b", |record| {
        record.member == "b" && matches!(&record.kind, Kind::Members(ids) if ids.len() == 2)
    })?;
    let old_sequence = b.handle().sequence().expect("b has joined");
    let peer = ZkSession::connect(&ZkConfig::new(zookeeper.connect_string(), SESSION_TIMEOUT))?;
    peer.delete(&format!("{path}/{}", quorum::takeover::member_node_name(old_sequence)), None)?;
    b.handle().set_health(false);
    let started = std::time::Instant::now();
    while b.handle().sequence().is_none_or(|sequence| sequence == old_sequence) {
        anyhow::ensure!(started.elapsed() < WAIT, "b never rejoined after its node was deleted:\n{}", log.describe());
        thread::sleep(Duration::from_millis(20));
    }
    let members: Vec<String> = a.handle().read_members()?.into_iter().map(|member| member.info.id).collect();
    assert_eq!(members, vec!["a".to_string(), "b".to_string()], "b is a member again, behind a");
    assert!(a.handle().is_leader() && !b.handle().is_leader(), "a still leads");
    peer.close(SESSION_TIMEOUT)?;
    a.stop()?;
    b.stop()?;
    assert_never_two_leaders(&log, &[]);
    Ok(())
}
