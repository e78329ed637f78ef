//! A crashed leader process is replaced at once: SIGKILLed, its host's kernel refuses its port,
//! and the member next in line takes its election node over while its session still lives in
//! ZooKeeper (not a session timeout later); the tasks its own runner held are handed out again
//! as soon as a runner can take them. And the detector never fires for a live process: a leader
//! that stops its service for a network failure (keeping its process) or exits on SIGTERM is
//! replaced through its own hand-over, never taken over. The same proof applies to runners: the
//! leader watches every other runner's port, so a SIGKILLed runner's task runs again on another
//! runner while the dead session still lives; a runner stopped by SIGTERM drains its own tasks and
//! is never taken over.

use std::time::Instant;

use quorum::{ZkConfig, ZkSession};
use taskd::task::TaskId;

use super::*;

/// Long enough that waiting for the dead session's expiry is plainly not what happened.
const LONG_SESSION: Duration = Duration::from_secs(20);

/// What the detector logs when it takes a dead leader's node over.
const TAKEN_OVER: &str = "took its election node over";

fn with_long_session_cluster(scenario: impl FnOnce(&Cluster) -> Result<()>) {
    let _serial = serialize();
    let roots = tempfile::Builder::new().prefix("zbs-tasks-").tempdir().expect("create the copy root");
    let cluster = ClusterBuilder::new()
        .session_timeout(LONG_SESSION)
        // The shortest claim grace: the task is killed moments after its assignment, and a new
        // dispatcher that never saw its owner waits that long for a claim before it interrupts it.
        .configure(|config| {
            config.allowed_roots = Some(vec![roots.path().to_path_buf()]);
            config.runner_slots = Some(2);
            config.tasks.claim_grace_ms = Some(1000);
        })
        .start()
        .expect("start the cluster");
    if let Err(error) = scenario(&cluster) {
        cluster.keep_dir_on_drop();
        panic!("{error:?}\n(cluster dir: {})", cluster.dir().display());
    }
}

/// True while ZooKeeper still tracks `session_id` (the `dump` of its session sets lists it).
fn session_alive(cluster: &Cluster, session_id: i64) -> Result<bool> {
    let dump = cluster.zookeeper().four_letter_word(0, "dump")?;
    Ok(dump.contains(&format!("{session_id:#x}")))
}

fn test_session(cluster: &Cluster) -> Result<ZkSession> {
    Ok(ZkSession::connect(&ZkConfig::new(cluster.zookeeper().connect_string(), Duration::from_secs(6)))?)
}

#[test]
fn a_sigkilled_leader_is_replaced_and_its_tasks_rescheduled_before_its_session_expires() {
    with_long_session_cluster(|cluster| {
        let old = leader(cluster)?;
        // Only the leader's own runner may take the task, so it dies with the leader.
        for node in (0..cluster.n_nodes()).filter(|&node| node != old) {
            set_drained(cluster, old, &cluster.node(node).node_id.clone(), true)?;
        }
        let task_id = submit(cluster, old, "sleep/create", json!({ "duration_ms": 3000 }))?;
        wait_claimed(cluster, old, &task_id)?;
        let zk = test_session(cluster)?;
        let parsed_id = TaskId::parse(&task_id)?;
        let owner_session = |zk: &ZkSession| -> Option<i64> {
            taskd::task_db::owner_of(zk, &parsed_id).ok().flatten().map(|owner| owner.session_id)
        };
        let dead_session = owner_session(&zk).context("the claimed task has no owner node")?;
        ensure!(session_alive(cluster, dead_session)?, "ZooKeeper's dump does not list the leader's session");

        let killed_at = Instant::now();
        cluster.kill(old)?;
        let new = cluster.wait_for_new_leader(old, WAIT)?;
        let elected_after = killed_at.elapsed();
        ensure!(
            session_alive(cluster, dead_session)?,
            "the dead leader's session {dead_session:#x} expired before node {new} led: no early take-over"
        );
        // The take-over's deletion elects the taker before its thread logs the take-over.
        cluster
            .wait_until(WAIT, "the new leader logging its take-over", || cluster.log(new).contains(TAKEN_OVER))
            .context("the new leader did not take the dead one's node over")?;

        // Its task is interrupted and runs again as soon as a runner may take it.
        cluster.wait_until(WAIT, "the new dispatcher answers", || {
            matches!(request(cluster, new, "GET", &format!("{PREFIX}/tasks"), None), Ok((200, _)))
        })?;
        set_drained(cluster, new, &cluster.node(new).node_id.clone(), false)?;
        poll_until(WAIT, "a new owner claims the dead leader's task", || {
            owner_session(&zk).is_some_and(|session| session != dead_session)
        })?;
        let rescheduled_after = killed_at.elapsed();
        ensure!(
            session_alive(cluster, dead_session)?,
            "the dead leader's session {dead_session:#x} expired before its task was claimed again"
        );
        let record = wait_state(cluster, new, &task_id, "succeeded", WAIT)?;
        ensure!(record["attempts"] == json!(0), "the crash counted as a failed attempt: {record}");

        // Again, one hand-over later: the member next in line now is one whose predecessor did
        // not change (its election view is older than the hand-over), and it must watch too.
        let members = quorum::member::read_members(&zk, taskd::task_server::QUORUM_PATH)?;
        let second_session = members
            .iter()
            .find(|member| member.info.id == cluster.node(new).node_id)
            .map(|member| member.session_id)
            .context("the new leader has no election node")?;
        let killed_again_at = Instant::now();
        cluster.kill(new)?;
        let third = cluster.wait_for_new_leader(new, WAIT)?;
        let elected_again_after = killed_again_at.elapsed();
        ensure!(third != old, "the dead first leader leads again");
        ensure!(
            session_alive(cluster, second_session)?,
            "the second dead leader's session {second_session:#x} expired before node {third} led"
        );
        ensure!(
            cluster.log(third).contains(TAKEN_OVER),
            "node {third} did not take the second dead leader's node over"
        );
        eprintln!("second SIGKILLed leader: new leader after {} ms", elapsed_ms(elected_again_after));
        eprintln!(
            "SIGKILLed leader: new leader after {} ms, its task claimed again after {} ms (session timeout {} ms)",
            elapsed_ms(elected_after),
            elapsed_ms(rescheduled_after),
            LONG_SESSION.as_millis()
        );
        Ok(())
    });
}

#[test]
fn a_leader_that_stops_its_service_or_exits_on_sigterm_is_never_taken_over() {
    with_long_session_cluster(|cluster| {
        let old = leader(cluster)?;
        let old_pid = cluster.pid(old).context("the leader runs")?;
        // A network failure: the service stops (its ports close) while the process lives on.
        cluster.set_health(old, false)?;
        let second = cluster.wait_for_new_leader(old, WAIT)?;
        cluster.wait_until(WAIT, "the old leader's service stopped", || cluster.log(old).contains("stop stage 8:"))?;
        ensure!(cluster.pid(old) == Some(old_pid), "the old leader's process did not stay");
        // The port stays closed a while (the re-entry waits for health): give a detector time.
        std::thread::sleep(Duration::from_millis(500));
        cluster.set_health(old, true)?;
        cluster.wait_until(WAIT, "the old leader rejoins", || {
            cluster.try_status(old).is_some_and(|status| !status.stopping && status.members.len() == cluster.n_nodes())
        })?;

        // SIGTERM: the ordered stop of an exiting process.
        cluster.signal(second, Signal::SIGTERM)?;
        let third = cluster.wait_for_new_leader(second, WAIT)?;
        cluster.wait_exit(second, WAIT)?;
        for node in 0..cluster.n_nodes() {
            ensure!(
                !cluster.log(node).contains(TAKEN_OVER),
                "node {node} took a live leader's node over (leaders: {old}, {second}, {third})"
            );
        }
        ensure!(cluster.pid(old) == Some(old_pid), "the first leader's process did not survive");
        Ok(())
    });
}

/// What the leader's runner watch logs when it takes a dead runner over.
const RUNNER_TAKEN_OVER: &str = "a runner's process is dead";

/// Submits a sleep of `duration_ms` that only `runner` may take (every other runner drained,
/// the leader's too), waits for its claim and undrains the others; returns the task id and the
/// session of its owner node.
fn task_held_by(cluster: &Cluster, leader: usize, runner: usize, duration_ms: u64) -> Result<(String, i64)> {
    let others: Vec<usize> = (0..cluster.n_nodes()).filter(|&node| node != runner).collect();
    for &node in &others {
        set_drained(cluster, leader, &cluster.node(node).node_id.clone(), true)?;
    }
    let task_id = submit(cluster, leader, "sleep/create", json!({ "duration_ms": duration_ms }))?;
    wait_claimed(cluster, runner, &task_id)?;
    let record = show(cluster, leader, &task_id)?;
    ensure!(record["runner_addr"] == json!(runner_addr(cluster, runner)), "the task went elsewhere: {record}");
    let zk = test_session(cluster)?;
    let owner = taskd::task_db::owner_of(&zk, &TaskId::parse(&task_id)?)?.context("the claimed task has no owner")?;
    for &node in &others {
        set_drained(cluster, leader, &cluster.node(node).node_id.clone(), false)?;
    }
    Ok((task_id, owner.session_id))
}

#[test]
fn a_sigkilled_runners_task_finishes_on_another_runner_before_its_session_expires() {
    with_long_session_cluster(|cluster| {
        let leader = leader(cluster)?;
        let victim = (0..cluster.n_nodes()).find(|&node| node != leader).context("a follower")?;
        let (task_id, dead_session) = task_held_by(cluster, leader, victim, 3000)?;
        ensure!(session_alive(cluster, dead_session)?, "ZooKeeper's dump does not list the runner's session");

        let killed_at = Instant::now();
        cluster.kill(victim)?;
        let record = wait_state(cluster, leader, &task_id, "succeeded", WAIT)?;
        let finished_after = killed_at.elapsed();
        ensure!(
            session_alive(cluster, dead_session)?,
            "the dead runner's session {dead_session:#x} expired before its task finished elsewhere: no early take-over"
        );
        ensure!(
            record["runner_addr"] != json!(runner_addr(cluster, victim)),
            "finished on the killed runner: {record}"
        );
        ensure!(record["attempts"] == json!(0), "the crash counted as a failed attempt: {record}");
        ensure!(
            cluster.log(leader).contains(RUNNER_TAKEN_OVER),
            "the leader did not take the dead runner over:\n{}",
            cluster.log(leader)
        );
        ensure!(cluster.try_status(leader).is_some_and(|status| status.leader), "the leader changed");
        eprintln!(
            "SIGKILLed runner: its 3 s task finished on another runner {} ms after the kill (session timeout {} ms)",
            elapsed_ms(finished_after),
            LONG_SESSION.as_millis()
        );
        Ok(())
    });
}

#[test]
fn a_runner_stopped_by_sigterm_drains_its_own_task_and_is_never_taken_over() {
    with_long_session_cluster(|cluster| {
        let leader = leader(cluster)?;
        let stopped = (0..cluster.n_nodes()).find(|&node| node != leader).context("a follower")?;
        let (task_id, _) = task_held_by(cluster, leader, stopped, 4000)?;
        cluster.signal(stopped, Signal::SIGTERM)?;
        cluster.wait_exit(stopped, WAIT)?;
        ensure!(
            cluster.log(stopped).contains("1 running tasks interrupted"),
            "the stopped runner did not interrupt its own task"
        );
        let record = wait_state(cluster, leader, &task_id, "succeeded", WAIT)?;
        ensure!(record["runner_addr"] != json!(runner_addr(cluster, stopped)), "finished on the stopped runner");
        // Give the leader's watch time to misjudge the closed port, had it a reason to.
        std::thread::sleep(Duration::from_secs(1));
        for node in 0..cluster.n_nodes() {
            ensure!(
                !cluster.log(node).contains(RUNNER_TAKEN_OVER),
                "node {node} took the runner stopped by SIGTERM over"
            );
        }
        Ok(())
    });
}

fn elapsed_ms(duration: Duration) -> u128 {
    duration.as_millis()
}
