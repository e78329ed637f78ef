//! CopyVolume at scale and through failures, with 1 MiB extents so small files have many: fifty
//! sparse copies equal their sources with the same holes (and the runners count the bytes they
//! read, never the holes); a copy whose runner is SIGKILLed
//! resumes on another runner from its last recorded extent; the copies of a SIGTERMed runner
//! are recorded `Interrupted` and finish elsewhere.

use super::*;

const MIB: u64 = 1 << 20;

/// Copies in 1 MiB extents of 256 KiB blocks.
fn small_extents(config: &mut DaemonConfig) {
    config.tasks.copy_extent_mib = Some(1);
    config.tasks.copy_block_kib = Some(256);
}

/// Small extents, and each copy paced to 4 MiB/s so a 16 MiB copy takes about 4 s: long
/// enough to kill or stop its runner in the middle.
fn paced(config: &mut DaemonConfig) {
    small_extents(config);
    config.tasks.copy_max_mib_per_s = Some(4);
}

/// A log filter that keeps the runner's per-extent "copy progress recorded" lines.
const RUNNER_DEBUG: &str = "info,taskd::runner=debug";

#[test]
fn fifty_sparse_copies_equal_their_sources_with_the_same_holes() {
    with_tuned_cluster(
        |config| {
            small_extents(config);
            config.runner_slots = Some(4);
        },
        "info",
        |cluster, roots| {
            let leader = leader(cluster)?;
            let mut copies = Vec::new();
            for index in 0..50u64 {
                let source = roots.join(format!("sparse-{index}"));
                let destination = roots.join(format!("copy-{index}"));
                // 8 to 16 MiB with six random data regions of up to 256 KiB each.
                sparse_file(&source, (8 + index % 9) * MIB, 0x5eed_0000 + index)?;
                copies.push((source, destination));
            }
            // A destination left over from an earlier copy is overwritten, holes included.
            std::fs::write(&copies[0].1, vec![0xa5u8; 3 * MIB as usize])?;
            let started = std::time::Instant::now();
            let mut task_ids = Vec::new();
            for (source, destination) in &copies {
                // Only the leftover destination holds data; asking to overwrite the others is harmless.
                let body = json!({ "source": source, "destination": destination, "io_depth": 4, "overwrite": true });
                task_ids.push(submit(cluster, leader, "copy_volume/create", body)?);
            }
            let mut runners = std::collections::BTreeMap::<String, usize>::new();
            for (task_id, (source, destination)) in task_ids.iter().zip(&copies) {
                let record = wait_state(cluster, leader, task_id, "succeeded", Duration::from_secs(60))?;
                *runners.entry(record["runner_addr"].as_str().unwrap_or_default().to_string()).or_default() += 1;
                let progress = &record["progress"];
                let n_extents = std::fs::metadata(source)?.len().div_ceil(MIB);
                ensure!(
                    progress["cur_extent"] == json!(n_extents) && progress["n_extents"] == json!(n_extents),
                    "copy {task_id} of {}: final progress {progress} is not {n_extents} extents of 1 MiB",
                    source.display()
                );
                ensure!(progress["extent_size"] == json!(MIB), "copy {task_id}: {progress}");
                ensure!(record["attempts"] == json!(0), "copy {task_id} needed retries: {record}");
                ensure_same_copy(source, destination).with_context(|| format!("copy {task_id}"))?;
                let meta = std::fs::metadata(destination)?;
                ensure!(
                    meta.blocks() * 512 <= 2 * MIB,
                    "copy {task_id}: {} allocates {} KiB for at most 1.5 MiB of data",
                    destination.display(),
                    meta.blocks() / 2
                );
            }
            eprintln!("50 sparse copies finished in {:?} on runners {runners:?}", started.elapsed());
            // The runners counted what they read: at least every allocated byte of the sources,
            // never their holes (far less than their lengths).
            let (mut n_allocated, mut n_length) = (0, 0);
            for (source, _) in &copies {
                let meta = std::fs::metadata(source)?;
                n_allocated += meta.blocks() * 512;
                n_length += meta.len();
            }
            let transferred = metric_sum(cluster, "zbs_taskd_copy_transferred_bytes_total")?;
            ensure!(
                transferred >= n_allocated as f64 && transferred < n_length as f64 / 2.0,
                "copy_transferred_bytes {transferred}: the sources allocate {n_allocated} of {n_length} bytes"
            );
            ensure!(metric_sum(cluster, "zbs_taskd_copy_skipped_bytes_total")? >= 0.0, "no copy_skipped_bytes");
            ensure!(runners.len() == cluster.n_nodes(), "the copies ran on only {runners:?}");
            Ok(())
        },
    );
}

#[test]
fn a_killed_or_stopped_runners_copies_resume_elsewhere() {
    with_tuned_cluster(paced, RUNNER_DEBUG, |cluster, roots| {
        let leader = leader(cluster)?;
        // Keep the leader's own runner out of it, so a kill does not also move the dispatcher.
        let leader_id = cluster.node(leader).node_id.clone();
        set_drained(cluster, leader, &leader_id, true)?;

        // SIGKILL mid-copy: the copy resumes on the other runner from its last recorded extent.
        let source = roots.join("dense-16m");
        dense_file(&source, 16 * MIB, 0xdead_beef)?;
        let destination = roots.join("dense-16m.copy");
        let body = json!({ "source": source, "destination": destination, "io_depth": 2 });
        let task_id = submit(cluster, leader, "copy_volume/create", body)?;
        let mut record = Value::Null;
        poll_until(WAIT, "the copy records its third extent", || {
            record = show(cluster, leader, &task_id).unwrap_or(Value::Null);
            record["progress"]["cur_extent"].as_u64().is_some_and(|extent| extent >= 3)
        })?;
        let victim = node_of_runner(cluster, record["runner_addr"].as_str().unwrap_or_default())?;
        ensure!(victim != leader, "the drained leader's runner got the copy: {record}");
        cluster.kill(victim)?;
        let recorded_before_kill = logged_numbers(cluster, victim, &task_id, "copy progress recorded", "cur_extent");
        let last_recorded = *recorded_before_kill.iter().max().context("the killed runner recorded no extent")?;
        ensure!(last_recorded < 16, "the copy finished before the kill: {recorded_before_kill:?}");

        let record = wait_state(cluster, leader, &task_id, "succeeded", Duration::from_secs(40))?;
        let survivor = node_of_runner(cluster, record["runner_addr"].as_str().unwrap_or_default())?;
        ensure!(survivor != victim && survivor != leader, "the copy finished on node {survivor}: {record}");
        ensure!(record["attempts"] == json!(0), "an interruption counted as a failed attempt: {record}");
        let resumed_at = logged_numbers(cluster, survivor, &task_id, "copy started", "start_extent");
        ensure!(resumed_at.len() == 1, "the survivor started the copy {} times: {resumed_at:?}", resumed_at.len());
        // The runner logs each recorded extent right after its fenced write, so the killed one
        // had copied at most extents 0..=last_recorded (the last one in flight, or copied and
        // recorded just before the kill cut its log line): the survivor redoes at most
        // `last_recorded + 1 - start` extents, and must not start past what was copied.
        let redone = (last_recorded + 1).saturating_sub(resumed_at[0]);
        ensure!(
            resumed_at[0] <= last_recorded + 1,
            "the copy resumed at extent {} though the killed runner got only to {last_recorded}",
            resumed_at[0]
        );
        ensure!(redone < 2, "the rescheduled copy redid {redone} extents (resumed at {})", resumed_at[0]);
        ensure_same_copy(&source, &destination)?;
        eprintln!("killed at recorded extent {last_recorded}; resumed at {}; redid at most {redone}", resumed_at[0]);

        // SIGTERM: the stopping runner records both of its copies `Interrupted`; they finish
        // on the leader's runner once that is undrained.
        let mut stopped_copies = Vec::new();
        for index in 0..2u64 {
            let source = roots.join(format!("dense-8m-{index}"));
            dense_file(&source, 8 * MIB, 0xfeed + index)?;
            let destination = roots.join(format!("dense-8m-{index}.copy"));
            let body = json!({ "source": source, "destination": destination, "io_depth": 2 });
            stopped_copies.push((submit(cluster, leader, "copy_volume/create", body)?, source, destination));
        }
        for (task_id, _, _) in &stopped_copies {
            let record = wait_state(cluster, leader, task_id, "running", WAIT)?;
            ensure!(record["runner_addr"] == json!(runner_addr(cluster, survivor)), "copy {task_id}: {record}");
            wait_claimed(cluster, survivor, task_id)?;
            poll_until(WAIT, "the copy records an extent", || {
                show(cluster, leader, task_id).is_ok_and(|record| record["progress"]["cur_extent"].as_u64() >= Some(1))
            })?;
        }
        cluster.signal(survivor, Signal::SIGTERM)?;
        for (task_id, _, _) in &stopped_copies {
            let record = wait_state(cluster, leader, task_id, "interrupted", WAIT)?;
            ensure!(record["last_failed_ms"].is_u64(), "interrupted without last_failed_ms: {record}");
            ensure!(record["attempts"] == json!(0), "an interruption counted as a failed attempt: {record}");
        }
        ensure!(
            cluster.log(survivor).contains("2 running tasks interrupted"),
            "the stopped runner did not log its two interruptions"
        );
        set_drained(cluster, leader, &leader_id, false)?;
        for (task_id, source, destination) in &stopped_copies {
            let record = wait_state(cluster, leader, task_id, "succeeded", WAIT)?;
            ensure!(record["runner_addr"] == json!(runner_addr(cluster, leader)), "copy {task_id}: {record}");
            let resumed_at = logged_numbers(cluster, leader, task_id, "copy started", "start_extent");
            ensure!(
                resumed_at.len() == 1 && resumed_at[0] > 0,
                "copy {task_id} did not resume where the stopped runner left it: {resumed_at:?}"
            );
            ensure_same_copy(source, destination).with_context(|| format!("copy {task_id}"))?;
        }
        Ok(())
    });
}

/// The sum over every node of the metric `series` (exactly as encoded); an error when a node
/// does not export it.
fn metric_sum(cluster: &Cluster, series: &str) -> Result<f64> {
    let mut sum = 0.0;
    for node in 0..cluster.n_nodes() {
        let spec = cluster.node(node);
        let url = format!("http://{}:{}/metrics", spec.address, spec.dispatcher_port);
        let text = agent().get(&url).set(taskd::access::TOKEN_HEADER, cluster.token()).call()?.into_string()?;
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse::<f64>().ok())
            .with_context(|| format!("node {node} does not export {series}"))?;
        sum += value;
    }
    Ok(sum)
}
