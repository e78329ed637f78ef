//! Exactly once under overlapping faults: a runner stopped past its session timeout writes no
//! block after its lease lapsed, though its copy was mid-extent when it was stopped and another
//! runner finished the task meanwhile; and an owner node left by an earlier assignment (its
//! session still alive) does not keep a task owned by a runner that never ran it.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use quorum::{ZkConfig, ZkSession};
use taskd::task::TaskId;
use taskd::task_db::layout::owner_path;

use super::*;

const MIB: u64 = 1 << 20;

/// One 64 MiB extent of 64 KiB blocks at 2 MiB/s: the next extent boundary of a copy of a few
/// MiB is its end, seconds away.
fn slow_copies(config: &mut DaemonConfig) {
    config.tasks.copy_extent_mib = Some(64);
    config.tasks.copy_block_kib = Some(64);
    config.tasks.copy_max_mib_per_s = Some(2);
}

/// Lines of every node's log that say `task_id` ended in `state`.
fn n_ends(cluster: &Cluster, task_id: &str, state: &str) -> usize {
    let (task, state) = (format!("task_id={task_id}"), format!("state={state}"));
    (0..cluster.n_nodes())
        .map(|node| {
            cluster
                .log(node)
                .lines()
                .filter(|line| line.contains("task ended") && line.contains(&task) && line.contains(&state))
                .count()
        })
        .sum()
}

/// What changes when anyone writes the file: its modification time (ns) and length.
fn written_state(path: &Path) -> Result<(i64, i64, u64)> {
    let meta = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    Ok((meta.mtime(), meta.mtime_nsec(), meta.len()))
}

#[test]
fn a_runner_stopped_past_its_session_writes_no_block_after_its_lease_lapsed() {
    with_tuned_cluster(slow_copies, "info", |cluster, roots| {
        let leader = leader(cluster)?;
        // The leader's runner stays out of it, so the stop does not also move the dispatcher.
        let leader_id = cluster.node(leader).node_id.clone();
        set_drained(cluster, leader, &leader_id, true)?;

        let source = roots.join("dense-12m");
        dense_file(&source, 12 * MIB, 0x1ea5e)?;
        let destination = roots.join("dense-12m.copy");
        let body = json!({ "source": source, "destination": destination, "io_depth": 2 });
        let task_id = submit(cluster, leader, "copy_volume/create", body)?;
        let record = wait_state(cluster, leader, &task_id, "running", WAIT)?;
        let zombie = node_of_runner(cluster, record["runner_addr"].as_str().unwrap_or_default())?;
        ensure!(zombie != leader, "the drained leader's runner got the copy: {record}");
        wait_claimed(cluster, zombie, &task_id)?;
        // Mid-extent: a few MiB of the only extent copied, the rest seconds away.
        std::thread::sleep(Duration::from_millis(1500));
        cluster.signal(zombie, Signal::SIGSTOP)?;
        let stopped_at = std::time::Instant::now();

        // Its session expires, its owner node with it; the copy is handed to the third runner,
        // which empties the destination and copies it all.
        let record = wait_state(cluster, leader, &task_id, "succeeded", Duration::from_secs(60))?;
        let survivor = node_of_runner(cluster, record["runner_addr"].as_str().unwrap_or_default())?;
        ensure!(survivor != zombie && survivor != leader, "the copy finished on node {survivor}: {record}");
        let stop = cluster.session_timeout() * 3 / 2;
        if let Some(left) = stop.checked_sub(stopped_at.elapsed()) {
            std::thread::sleep(left);
        }
        ensure_same_copy(&source, &destination)?;
        let at_success = written_state(&destination)?;

        // The zombie wakes mid-extent, its pacer long due: without a lease it would write the
        // rest of its extent into a volume already reported succeeded.
        cluster.signal(zombie, Signal::SIGCONT)?;
        // Time for late blocks to land (the zombie's pacer is long due: it would write at once).
        std::thread::sleep(cluster.session_timeout() * 2);
        ensure!(
            written_state(&destination)? == at_success,
            "the destination was written after the task succeeded (before {at_success:?}, now {:?})",
            written_state(&destination)?
        );
        ensure_same_copy(&source, &destination)?;
        poll_until(WAIT, "the woken runner stops its copy on its lapsed lease", || {
            cluster.log(zombie).contains("the runner's lease lapsed")
        })?;
        let record = show(cluster, leader, &task_id)?;
        ensure!(record["state"] == json!("succeeded"), "the task changed after it succeeded: {record}");
        ensure!(n_ends(cluster, &task_id, "succeeded") == 1, "the task did not end succeeded exactly once");
        eprintln!(
            "zombie node {zombie} stopped {:?}; survivor node {survivor}; destination unchanged after the wake-up",
            stopped_at.elapsed()
        );
        Ok(())
    });
}

#[test]
fn an_owner_node_of_an_earlier_assignment_does_not_keep_a_task_owned() {
    with_cluster(|cluster, _roots| {
        let leader = leader(cluster)?;
        let node_ids: Vec<String> = (0..cluster.n_nodes()).map(|node| cluster.node(node).node_id.clone()).collect();
        for node_id in &node_ids {
            set_drained(cluster, leader, node_id, true)?;
        }
        let taker = (0..cluster.n_nodes()).find(|&node| node != leader).context("no follower")?;

        // Two waiting tasks, each with an owner node of a live session that is not the runner
        // the task will be assigned to: an old runner's node without session and epoch, naming
        // another runner; and a node of an earlier assignment on the very runner that will get
        // the task (its release failed, its session lives on).
        let tasks = [
            submit(cluster, leader, "sleep/create", json!({ "duration_ms": 200 }))?,
            submit(cluster, leader, "sleep/create", json!({ "duration_ms": 200 }))?,
        ];
        let ghost = Arc::new(ZkSession::connect(&ZkConfig::new(
            cluster.zookeeper().connect_string(),
            Duration::from_secs(30),
        ))?);
        let owners = [
            json!({ "runner_id": "ghost", "address": "127.0.0.1:1" }),
            json!({
                "runner_id": cluster.node(taker).node_id,
                "address": runner_addr(cluster, taker),
                "session_id": ghost.session_id(),
                "epoch": 1,
            }),
        ];
        for (task_id, owner) in tasks.iter().zip(&owners) {
            let path = owner_path(&TaskId::parse(task_id)?);
            ghost.create_ephemeral(&path, owner.to_string().as_bytes())?;
        }

        set_drained(cluster, leader, &node_ids[taker], false)?;
        for task_id in &tasks {
            let record = wait_state(cluster, leader, task_id, "succeeded", WAIT)
                .with_context(|| format!("task {task_id} behind a stale owner node"))?;
            ensure!(record["runner_addr"] == json!(runner_addr(cluster, taker)), "task {task_id}: {record}");
            let path = owner_path(&TaskId::parse(task_id)?);
            ensure!(ghost.exists(&path)?.is_none(), "task {task_id} still has an owner node after it ended");
        }
        ensure!(cluster.log(taker).contains("replaced a stale owner node"), "the runner did not log the replacement");
        ghost.close(Duration::from_secs(5))?;
        Ok(())
    });
}
