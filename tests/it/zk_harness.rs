//! Tests of the ZooKeeper fixture itself: real servers start, answer, fail on demand and are cleaned up.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tests::zk::{ServerMode, ServerState, ZooKeeper, INSTALL_HINT};

/// Generous: a 2-core CI machine may be starting several JVMs at once.
const WAIT: Duration = Duration::from_secs(30);

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `pid` is gone, or at least no longer runs a ZooKeeper from `dir`.
fn process_gone(pid: u32, dir: &Path) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Err(_) => true,
        Ok(cmdline) => !String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy()),
    }
}

fn answers_imok(zookeeper: &ZooKeeper, server: usize) -> bool {
    matches!(zookeeper.four_letter_word(server, "ruok"), Ok(reply) if reply == "imok")
}

#[test]
fn single_server_answers_ruok_and_accepts_clients() -> Result<()> {
    let zookeeper = ZooKeeper::start()?;
    assert_eq!(zookeeper.n_servers(), 1);
    assert_eq!(zookeeper.four_letter_word(0, "ruok")?, "imok");
    assert_eq!(zookeeper.mode(0)?, ServerMode::Standalone);
    assert_eq!(zookeeper.connect_string(), format!("127.0.0.1:{}", zookeeper.client_port(0)));
    TcpStream::connect(zookeeper.client_addr(0)).context("connect to the client port")?;

    // Stop and restart keep the port and serve again.
    let port = zookeeper.client_port(0);
    zookeeper.stop_server(0)?;
    assert_eq!(zookeeper.state(0), ServerState::Stopped);
    assert!(zookeeper.four_letter_word(0, "ruok").is_err(), "a stopped server answered");
    zookeeper.restart_server(0)?;
    assert_eq!(zookeeper.state(0), ServerState::Running);
    assert_eq!(zookeeper.client_port(0), port);
    assert_eq!(zookeeper.mode(0)?, ServerMode::Standalone);
    Ok(())
}

#[test]
fn drop_stops_the_server_and_removes_its_dir() -> Result<()> {
    let zookeeper = ZooKeeper::start()?;
    let pid = zookeeper.pid(0).context("the server has no pid")?;
    let dir = zookeeper.dir().to_path_buf();
    assert!(zookeeper.log_path(0).is_file(), "the server has no log");
    assert!(!process_gone(pid, &dir), "the server's process is not running");
    drop(zookeeper);
    assert!(process_gone(pid, &dir), "pid {pid} still runs after drop");
    assert!(!dir.exists(), "{} was not removed", dir.display());
    Ok(())
}

#[test]
fn a_failed_test_keeps_the_dir_and_still_stops_the_server() -> Result<()> {
    let (sender, receiver) = mpsc::channel::<(u32, PathBuf)>();
    let failed_test = thread::spawn(move || {
        let zookeeper = match ZooKeeper::start() {
            Ok(zookeeper) => zookeeper,
            Err(error) => panic!("start ZooKeeper: {error:#}"),
        };
        if let Some(pid) = zookeeper.pid(0) {
            let _ = sender.send((pid, zookeeper.dir().to_path_buf()));
        }
        panic!("a deliberate failure, to check that the fixture keeps its dir");
    });
    assert!(failed_test.join().is_err(), "the failing thread did not panic");
    let (pid, dir) = receiver.recv().context("the failing thread reported no server")?;
    assert!(process_gone(pid, &dir), "pid {pid} still runs after a failed test");
    let kept = dir.join("server-1/zookeeper.log").is_file();
    std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    assert!(kept, "the log in {} was not kept", dir.display());
    Ok(())
}

#[test]
fn missing_package_error_says_what_to_install() {
    let result = ZooKeeper::builder().zookeeper_jar("/nonexistent/zookeeper.jar").start();
    let message = match result {
        Ok(zookeeper) => panic!("started {zookeeper:?} without its jar"),
        Err(error) => format!("{error:#}"),
    };
    assert!(message.contains(INSTALL_HINT), "unhelpful error: {message}");
    assert!(message.contains("apt-get install -y zookeeper"), "unhelpful error: {message}");
}

#[test]
fn ensemble_elects_again_after_a_kill_and_survives_a_pause() -> Result<()> {
    let zookeeper = ZooKeeper::start_ensemble()?;
    assert_eq!(zookeeper.n_servers(), 3);
    let ports = zookeeper.client_ports();
    let expected: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
    assert_eq!(zookeeper.connect_string(), expected.join(","));
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "client ports are not distinct: {ports:?}");

    // All three answer; one leads and two follow.
    for server in 0..3 {
        assert_eq!(zookeeper.four_letter_word(server, "ruok")?, "imok");
    }
    let modes = (0..3).map(|server| zookeeper.mode(server)).collect::<Result<Vec<_>>>()?;
    let n_leaders = modes.iter().filter(|&&mode| mode == ServerMode::Leader).count();
    let n_followers = modes.iter().filter(|&&mode| mode == ServerMode::Follower).count();
    assert_eq!((n_leaders, n_followers), (1, 2), "modes: {modes:?}");
    let old_leader = zookeeper.wait_for_leader(WAIT)?;

    // Killing the leader makes one of the other two the leader.
    zookeeper.kill_server(old_leader)?;
    assert_eq!(zookeeper.state(old_leader), ServerState::Stopped);
    let new_leader = zookeeper.wait_for_leader(WAIT)?;
    assert_ne!(new_leader, old_leader);
    let survivor = (0..3).find(|&server| server != old_leader && server != new_leader).context("no third server")?;
    assert!(
        eventually(WAIT, || matches!(zookeeper.mode(survivor), Ok(ServerMode::Follower))),
        "server {survivor} did not follow the new leader"
    );

    // The killed server restarts on its ports and rejoins as a follower.
    zookeeper.restart_server(old_leader)?;
    assert_eq!(zookeeper.client_ports(), ports);
    assert!(
        eventually(WAIT, || matches!(zookeeper.mode(old_leader), Ok(ServerMode::Follower))),
        "the restarted server did not rejoin as a follower"
    );

    // A paused server answers nothing; resumed, it answers again.
    zookeeper.pause_server(survivor)?;
    assert_eq!(zookeeper.state(survivor), ServerState::Paused);
    assert!(zookeeper.four_letter_word(survivor, "ruok").is_err(), "a paused server answered ruok");
    zookeeper.resume_server(survivor)?;
    assert_eq!(zookeeper.state(survivor), ServerState::Running);
    assert!(eventually(WAIT, || answers_imok(&zookeeper, survivor)), "the resumed server does not answer imok");

    // A gracefully stopped follower restarts and serves again.
    zookeeper.stop_server(survivor)?;
    assert!(zookeeper.four_letter_word(survivor, "ruok").is_err(), "a stopped server answered");
    zookeeper.start_server(survivor)?;
    zookeeper.wait_serving(survivor, WAIT)?;
    assert_eq!(zookeeper.wait_for_leader(WAIT)?, new_leader);
    Ok(())
}
