//! A restarted daemon cleans up after its previous incarnation: a runner SIGKILLed mid-task and
//! restarted at once deletes the owner node its dead process left, so the task is handed out
//! again while the dead session still lives in ZooKeeper (not a session timeout later); and a
//! second daemon on the same state directory refuses to start, leaving the first untouched.

use std::process::Stdio;
use std::time::Instant;

use quorum::{ZkConfig, ZkSession};
use taskd::task::TaskId;

use super::*;

/// Long enough that waiting for the dead session's expiry is plainly not what happened.
const LONG_SESSION: Duration = Duration::from_secs(20);

fn with_long_session_cluster(scenario: impl FnOnce(&Cluster) -> Result<()>) {
    let _serial = serialize();
    let roots = tempfile::Builder::new().prefix("zbs-tasks-").tempdir().expect("create the copy root");
    let cluster = ClusterBuilder::new()
        .session_timeout(LONG_SESSION)
        .extra_config(format!("allowed_roots = [\"{}\"]\nrunner_slots = 2\n", roots.path().display()))
        .start()
        .expect("start the cluster");
    if let Err(error) = scenario(&cluster) {
        cluster.keep_dir_on_drop();
        panic!("{error:?}\n(cluster dir: {})", cluster.dir().display());
    }
}

/// The session that owns `task_id`'s owner node now, if any.
fn owner_session(session: &ZkSession, task_id: &TaskId) -> Result<Option<i64>> {
    Ok(taskd::task_db::owner_of(session, task_id)?.map(|owner| owner.session_id))
}

/// True while ZooKeeper still tracks `session_id` (the `dump` of its session sets lists it).
fn session_alive(cluster: &Cluster, session_id: i64) -> Result<bool> {
    let dump = cluster.zookeeper().four_letter_word(0, "dump")?;
    Ok(dump.contains(&format!("{session_id:#x}")))
}

#[test]
fn a_runner_killed_and_restarted_at_once_has_its_task_rescheduled_before_its_old_session_expires() {
    with_long_session_cluster(|cluster| {
        let leader = leader(cluster)?;
        // Keep the leader's own runner out of it, so the kill does not also move the dispatcher.
        set_drained(cluster, leader, &cluster.node(leader).node_id.clone(), true)?;
        let task_id = submit(cluster, leader, "sleep/create", json!({ "duration_ms": 3000 }))?;
        let record = wait_state(cluster, leader, &task_id, "running", WAIT)?;
        let victim = node_of_runner(cluster, record["runner_addr"].as_str().unwrap_or_default())?;
        ensure!(victim != leader, "the drained leader's runner got the task: {record}");
        wait_claimed(cluster, victim, &task_id)?;

        let zk = ZkSession::connect(&ZkConfig::new(cluster.zookeeper().connect_string(), Duration::from_secs(6)))?;
        let parsed_id = TaskId::parse(&task_id)?;
        let old_session = owner_session(&zk, &parsed_id)?.context("the claimed task has no owner node")?;
        ensure!(
            session_alive(cluster, old_session)?,
            "ZooKeeper's dump does not list the owner's session {old_session:#x}"
        );

        // The leader is frozen meanwhile: its runner watch (`crash_watch::runners`) would
        // otherwise take the dead runner over first (the same proof, by another path), and this
        // test is about the restarted process's own clean-up.
        cluster.signal(leader, Signal::SIGSTOP)?;
        let killed_at = Instant::now();
        let restarted = (|| -> Result<()> {
            cluster.kill(victim)?;
            cluster.restart(victim)?;
            cluster.wait_until(WAIT, "the restarted runner removing its previous incarnation's owner nodes", || {
                cluster.log(victim).contains("removed the owner nodes of this node's previous incarnation")
            })?;
            Ok(())
        })();
        cluster.signal(leader, Signal::SIGCONT)?;
        restarted?;

        // The task gets a new owner (a new claim, on whichever runner the dispatcher chose) while
        // the killed process's session is still alive: its owner node did not wait for expiry.
        let mut new_owner = None;
        poll_until(WAIT, "a new owner claims the task", || {
            new_owner = owner_session(&zk, &parsed_id).ok().flatten().filter(|session| *session != old_session);
            new_owner.is_some()
        })?;
        let rescheduled_after = killed_at.elapsed();
        ensure!(
            session_alive(cluster, old_session)?,
            "the killed runner's session {old_session:#x} expired before its task was claimed again: \
             the restart did not clean up after its previous incarnation"
        );
        ensure!(
            cluster.log(victim).contains("removed the owner nodes of this node's previous incarnation"),
            "the restarted runner does not say it removed its previous incarnation's owner nodes"
        );
        let record = wait_state(cluster, leader, &task_id, "succeeded", WAIT)?;
        ensure!(record["attempts"] == json!(0), "the kill counted as a failed attempt: {record}");
        eprintln!(
            "task claimed again {} ms after the SIGKILL and restart (session timeout {} ms)",
            rescheduled_after.as_millis(),
            LONG_SESSION.as_millis()
        );
        Ok(())
    });
}

#[test]
fn a_second_daemon_on_the_same_state_dir_refuses_to_start() {
    with_long_session_cluster(|cluster| {
        let leader = leader(cluster)?;
        let node = (leader + 1) % cluster.n_nodes();
        let first_pid = cluster.pid(node).context("the node runs")?;
        let mut second = Command::new(cluster.binary())
            .arg("--config")
            .arg(&cluster.node(node).config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start a second daemon")?;
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = second.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                // Ours to end: the child we spawned above.
                let _ = second.kill();
                let _ = second.wait();
                bail!("a second daemon on the same state dir kept running");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = second.stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stderr)?;
        }
        ensure!(status.code() == Some(1), "the second daemon exited {status}: {stderr}");
        ensure!(
            stderr.contains("holds the lock") && stderr.contains(&format!("pid {first_pid}")),
            "the refusal does not name the lock and its holder: {stderr}"
        );
        ensure!(cluster.pid(node) == Some(first_pid), "the first daemon did not survive the attempt");
        let status = cluster.wait_serving(node, WAIT)?;
        ensure!(status.members.len() == cluster.n_nodes(), "the first daemon's view changed: {status:?}");
        Ok(())
    });
}
