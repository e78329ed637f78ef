//! `ZkSession` against a real ZooKeeper: the helpers, the typed errors, watches, multi-op
//! atomicity, the ephemeral-owner check and `close` removing ephemeral nodes at once.

use std::time::{Duration, Instant};

use anyhow::Result;
use quorum::zk::{NodeEvent, NodeKind, ZkOp, ZkOpResult};
use quorum::{ZkConfig, ZkError, ZkSession, ZkSessionState};
use tests::zk::ZooKeeper;

use super::fixture::{serialize, SESSION_TIMEOUT, WAIT};

fn connect(zookeeper: &ZooKeeper) -> Result<ZkSession> {
    Ok(ZkSession::connect(&ZkConfig::new(zookeeper.connect_string(), SESSION_TIMEOUT))?)
}

#[test]
fn session_helpers_map_errors_to_kinds_and_close_removes_ephemeral_nodes_at_once() -> Result<()> {
    let _serial = serialize();
    let zookeeper = ZooKeeper::start()?;
    let first = connect(&zookeeper)?;
    let second = connect(&zookeeper)?;
    assert_ne!(first.session_id(), second.session_id());
    assert_eq!(first.state(), ZkSessionState::SyncConnected);

    // ensure_path creates ancestors and is idempotent.
    first.ensure_path("/session/a/b")?;
    first.ensure_path("/session/a/b")?;
    assert!(first.exists("/session/a")?.is_some());

    // Typed errors.
    assert!(matches!(first.create_persistent("/session/a", b""), Err(ZkError::NodeExists { .. })));
    assert!(matches!(first.create_persistent("/session/missing/x", b""), Err(ZkError::NoNode { .. })));
    assert!(matches!(first.delete("/session/a", None), Err(ZkError::NotEmpty { .. })));
    assert_eq!(first.get_data("/session/nothing")?, None);

    // Conditional set and delete by version.
    first.create_persistent("/session/a/b/record", b"v0")?;
    let (_, stat) = first.get_data("/session/a/b/record")?.expect("the record exists");
    let written = first.set_data("/session/a/b/record", b"v1", Some(stat.version))?;
    assert_eq!(written.version, stat.version + 1);
    assert!(matches!(
        first.set_data("/session/a/b/record", b"stale", Some(stat.version)),
        Err(ZkError::BadVersion { .. })
    ));
    assert!(matches!(first.delete("/session/a/b/record", Some(stat.version)), Err(ZkError::BadVersion { .. })));
    first.delete("/session/a/b/record", Some(written.version))?;

    // Sequential nodes carry their sequence number.
    let one = first.create_ephemeral_sequential("/session/a/seq-", b"")?;
    let two = first.create_ephemeral_sequential("/session/a/seq-", b"")?;
    assert!(two.sequence > one.sequence, "{one:?} then {two:?}");
    assert!(one.path.starts_with("/session/a/seq-"));

    // Multi-op: all or nothing, and the failing operation is named.
    let failed = first.multi(&[
        ZkOp::Create { path: "/session/a/multi".into(), data: b"x".to_vec(), kind: NodeKind::Persistent },
        ZkOp::Delete { path: "/session/a/absent".into(), expected_version: None },
    ]);
    match failed {
        Err(ZkError::NoNode { path, .. }) => assert_eq!(path, "/session/a/absent"),
        other => panic!("expected NoNode on the delete, got {other:?}"),
    }
    assert!(first.exists("/session/a/multi")?.is_none(), "a failed multi-op left a node");
    let results = first.multi(&[
        ZkOp::Create { path: "/session/a/multi".into(), data: b"x".to_vec(), kind: NodeKind::Persistent },
        ZkOp::CheckVersion { path: "/session/a/multi".into(), version: 0 },
        ZkOp::SetData { path: "/session/a/multi".into(), data: b"y".to_vec(), expected_version: Some(0) },
    ])?;
    assert_eq!(results.len(), 3);
    assert_eq!(results[0], ZkOpResult::Created { path: "/session/a/multi".into() });
    assert_eq!(first.get_data("/session/a/multi")?.map(|(data, _)| data), Some(b"y".to_vec()));

    // Children watch fires on a new child.
    let (children, watch) = second.children_and_watch("/session/a")?;
    assert!(children.contains(&"b".to_string()));
    first.create_persistent("/session/a/new-child", b"")?;
    assert_eq!(watch.wait(), NodeEvent::ChildrenChanged { path: "/session/a".into() });

    // Ephemeral-owner check.
    let owned = first.create_ephemeral("/session/a/owned", b"")?;
    assert!(first.is_ephemeral_owner(&owned.path)?);
    assert!(!second.is_ephemeral_owner(&owned.path)?);
    assert!(!first.is_ephemeral_owner("/session/a/multi")?, "a persistent node has no owner");

    // close: the other session's watch on the ephemeral node fires at once, not after a timeout.
    let (stat, watch) = second.exists_and_watch(&owned.path)?;
    assert!(stat.is_some());
    let closing = Instant::now();
    assert_eq!(first.close(WAIT)?, ZkSessionState::Closed);
    assert_eq!(watch.wait(), NodeEvent::Deleted { path: owned.path.clone() });
    let vanished_after = closing.elapsed();
    assert!(vanished_after < SESSION_TIMEOUT / 2, "the ephemeral node lived {vanished_after:?} after close");
    assert!(second.exists(&one.path)?.is_none(), "every ephemeral node of the closed session is gone");

    // After close: typed errors, no panic; close again is fine.
    assert!(matches!(first.exists("/session"), Err(ZkError::SessionClosed { .. })));
    assert!(!first.is_open());
    assert_eq!(first.close(Duration::from_millis(100))?, ZkSessionState::Closed);
    second.close(WAIT)?;
    Ok(())
}

#[test]
fn session_calls_from_a_coroutine_park_only_the_coroutine() -> Result<()> {
    let _serial = serialize();
    let zookeeper = ZooKeeper::start()?;
    let session = std::sync::Arc::new(connect(&zookeeper)?);
    session.ensure_path("/coroutines")?;
    let context = runtime::ThreadContext::new("zk-coroutines")?;
    let (done_sender, done) = std::sync::mpsc::channel();
    // One coroutine waits on a watch while another, on the same thread, writes: only possible if
    // the waiting one parks itself and not the thread.
    let watcher_session = session.clone();
    let watcher_done = done_sender.clone();
    context.sched(move || {
        let outcome = watcher_session.exists_and_watch("/coroutines/flag").map(|(_, watch)| watch.wait());
        let _ = watcher_done.send(format!("{outcome:?}"));
    })?;
    std::thread::sleep(Duration::from_millis(200));
    let writer_session = session.clone();
    context.sched(move || {
        let outcome = writer_session.create_persistent("/coroutines/flag", b"");
        let _ = done_sender.send(format!("created {}", outcome.is_ok()));
    })?;
    let mut outcomes = [done.recv_timeout(WAIT)?, done.recv_timeout(WAIT)?];
    outcomes.sort();
    assert_eq!(outcomes[0], "Ok(Created { path: \"/coroutines/flag\" })");
    assert_eq!(outcomes[1], "created true");
    drop(context);
    session.close(WAIT)?;
    Ok(())
}
