//! The operations on runners and running copies, end to end: a drain sends no new task to the
//! runner while its running copy finishes, and outlives the daemon's restart until undrain;
//! cancel stops a running copy at once; pause stops it with no further progress and resume
//! finishes it from where it paused; a runtime window that closes pauses a running copy, and
//! opening it lets the copy finish; a failing task stops after the configured attempts.

use super::*;

const MIB: u64 = 1 << 20;

/// 1 MiB extents and 4 MiB/s per copy: a 16 MiB copy takes about 4 s; two attempts per task.
fn paced(config: &mut DaemonConfig) {
    config.tasks.copy_extent_mib = Some(1);
    config.tasks.copy_block_kib = Some(256);
    config.tasks.copy_max_mib_per_s = Some(4);
    config.tasks.max_attempts = Some(2);
}

/// Submits a paced copy of a fresh dense file of `mib` MiB; returns (task id, source, destination).
fn submit_copy(
    cluster: &Cluster,
    leader: usize,
    roots: &Path,
    name: &str,
    mib: u64,
) -> Result<(String, PathBuf, PathBuf)> {
    let source = roots.join(format!("{name}.src"));
    dense_file(&source, mib * MIB, name.bytes().fold(7u64, |hash, byte| hash.wrapping_mul(31) ^ u64::from(byte)))?;
    let destination = roots.join(format!("{name}.dst"));
    let body = json!({ "source": source, "destination": destination, "io_depth": 2 });
    Ok((submit(cluster, leader, "copy_volume/create", body)?, source, destination))
}

fn post(cluster: &Cluster, leader: usize, path: &str, body: &Value) -> Result<Value> {
    let (status, answer) = request(cluster, leader, "POST", &format!("{PREFIX}/{path}"), Some(&body.to_string()))?;
    ensure!(status < 300, "POST {path} {body}: {status} {answer}");
    Ok(answer)
}

fn cur_extent(record: &Value) -> u64 {
    record["progress"]["cur_extent"].as_u64().unwrap_or(0)
}

/// Waits until the copy has recorded at least `extent` extents; returns its record.
fn wait_extent(cluster: &Cluster, leader: usize, task_id: &str, extent: u64) -> Result<Value> {
    let mut record = Value::Null;
    poll_until(WAIT, &format!("copy {task_id} records extent {extent}"), || {
        record = show(cluster, leader, task_id).unwrap_or(Value::Null);
        cur_extent(&record) >= extent
    })?;
    Ok(record)
}

/// True while `node`'s runner lists `task_id` as running.
fn runs_on(cluster: &Cluster, node: usize, task_id: &str) -> bool {
    let spec = cluster.node(node);
    let url = format!("http://{}:{}/api/v1/runner", spec.address, spec.runner_port);
    agent()
        .get(&url)
        .call()
        .ok()
        .and_then(|response| response.into_json::<Value>().ok())
        .is_some_and(|status| status["running"].as_array().into_iter().flatten().any(|id| id == task_id))
}

#[test]
fn drain_survives_a_restart_and_cancel_pause_resume_and_windows_act_on_running_copies() {
    with_tuned_cluster(paced, "info", |cluster, roots| {
        let leader = leader(cluster)?;
        let drained = (leader + 1) % cluster.n_nodes();
        let drained_id = cluster.node(drained).node_id.clone();
        let drained_addr = runner_addr(cluster, drained);

        // Drain: a copy running on the node finishes there; no new task goes to it.
        let mut running_copy = None;
        for attempt in 0..6 {
            let (task_id, source, destination) = submit_copy(cluster, leader, roots, &format!("drain-{attempt}"), 8)?;
            let record = wait_state(cluster, leader, &task_id, "running", WAIT)?;
            if record["runner_addr"] == json!(drained_addr) {
                running_copy = Some((task_id, source, destination));
                break;
            }
        }
        let (draining_copy, source, destination) = running_copy.context("no copy went to the node to drain")?;
        wait_claimed(cluster, drained, &draining_copy)?;
        set_drained(cluster, leader, &drained_id, true)?;
        let sleeps: Vec<String> = (0..6)
            .map(|_| submit(cluster, leader, "sleep/create", json!({ "duration_ms": 200 })))
            .collect::<Result<_>>()?;
        let record = wait_state(cluster, leader, &draining_copy, "succeeded", WAIT)?;
        ensure!(record["runner_addr"] == json!(drained_addr), "the drained runner's copy moved: {record}");
        ensure_same_copy(&source, &destination)?;
        for task_id in &sleeps {
            let record = wait_state(cluster, leader, task_id, "succeeded", WAIT)?;
            ensure!(record["runner_addr"] != json!(drained_addr), "a task went to the drained runner: {record}");
        }

        // The drain outlives a restart: the first registration of the new process says drained.
        cluster.signal(drained, Signal::SIGTERM)?;
        cluster.wait_exit(drained, WAIT)?;
        poll_until(WAIT, "the stopped runner's registration goes", || {
            registration(cluster, leader, &drained_id).is_ok_and(|runner| runner.is_none())
        })?;
        cluster.restart(drained)?;
        let mut first = None;
        poll_until(WAIT, "the restarted runner registers", || {
            first = registration(cluster, leader, &drained_id).ok().flatten();
            first.is_some()
        })?;
        let first = first.context("no registration")?;
        ensure!(first["draining"] == json!(true), "the restarted runner registered undrained: {first}");
        let sleeps: Vec<String> = (0..6)
            .map(|_| submit(cluster, leader, "sleep/create", json!({ "duration_ms": 200 })))
            .collect::<Result<_>>()?;
        for task_id in &sleeps {
            let record = wait_state(cluster, leader, task_id, "succeeded", WAIT)?;
            ensure!(record["runner_addr"] != json!(drained_addr), "the restarted drained runner got {record}");
        }
        // Undrain: the runner takes tasks again (six at once fill every runner's two slots).
        set_drained(cluster, leader, &drained_id, false)?;
        let sleeps: Vec<String> = (0..6)
            .map(|_| submit(cluster, leader, "sleep/create", json!({ "duration_ms": 1500 })))
            .collect::<Result<_>>()?;
        let mut ran_on_undrained = 0;
        for task_id in &sleeps {
            let record = wait_state(cluster, leader, task_id, "succeeded", WAIT)?;
            ran_on_undrained += usize::from(record["runner_addr"] == json!(drained_addr));
        }
        ensure!(ran_on_undrained > 0, "no task ran on the undrained runner");

        // Cancel: a running copy stops at its next block, well before it could have finished.
        let (cancelled, _, _) = submit_copy(cluster, leader, roots, "cancel", 16)?;
        wait_extent(cluster, leader, &cancelled, 1)?;
        let before = show(cluster, leader, &cancelled)?;
        let runner = node_of_runner(cluster, before["runner_addr"].as_str().unwrap_or_default())?;
        let asked = std::time::Instant::now();
        post(cluster, leader, &format!("tasks/{cancelled}/cancel"), &json!({}))?;
        let record = wait_state(cluster, leader, &cancelled, "cancelled", WAIT)?;
        let took = asked.elapsed();
        ensure!(took < Duration::from_secs(3), "the cancel took {took:?}");
        // At most an extent finishing as the cancel came: no whole extent is copied after it.
        ensure!(
            cur_extent(&record) <= cur_extent(&before) + 1,
            "the copy went on from extent {} to {} after the cancel: {record}",
            cur_extent(&before),
            cur_extent(&record)
        );
        ensure!(!runs_on(cluster, runner, &cancelled), "the runner still runs the cancelled copy");

        // Pause: no progress while paused; resume finishes from the pause point.
        let (paused, source, destination) = submit_copy(cluster, leader, roots, "pause", 16)?;
        wait_extent(cluster, leader, &paused, 2)?;
        post(cluster, leader, &format!("tasks/{paused}/pause"), &json!({}))?;
        let at_pause = wait_state(cluster, leader, &paused, "paused", WAIT)?;
        let runner = node_of_runner(cluster, at_pause["runner_addr"].as_str().unwrap_or_default())?;
        ensure!(!runs_on(cluster, runner, &paused), "the runner still runs the paused copy");
        std::thread::sleep(Duration::from_millis(1500));
        let later = show(cluster, leader, &paused)?;
        ensure!(later["state"] == json!("paused"), "the paused copy moved on: {later}");
        ensure!(later["progress"] == at_pause["progress"], "a paused copy progressed: {at_pause} then {later}");
        ensure!(cur_extent(&at_pause) < 16, "the copy finished before the pause: {at_pause}");
        post(cluster, leader, &format!("tasks/{paused}/resume"), &json!({}))?;
        let record = wait_state(cluster, leader, &paused, "succeeded", WAIT)?;
        let runner = node_of_runner(cluster, record["runner_addr"].as_str().unwrap_or_default())?;
        let starts = logged_numbers(cluster, runner, &paused, "copy started", "start_extent");
        ensure!(
            starts.contains(&cur_extent(&at_pause)),
            "the resumed copy did not start at its pause point {}: {starts:?}",
            cur_extent(&at_pause)
        );
        ensure_same_copy(&source, &destination)?;

        // A runtime window that closes pauses a running copy at its next extent; it waits (as
        // pending, on no runner) until the window includes now again, then finishes.
        let (windowed, source, destination) = submit_copy(cluster, leader, roots, "window", 16)?;
        let record = wait_extent(cluster, leader, &windowed, 1)?;
        let runner = node_of_runner(cluster, record["runner_addr"].as_str().unwrap_or_default())?;
        let closed_hour = (chrono::Local::now().hour() + 2) % 24;
        let closed = json!({ "start_hour": closed_hour, "start_min": 0, "end_hour": closed_hour, "end_min": 1 });
        post(cluster, leader, &format!("tasks/{windowed}/runtime"), &closed)?;
        poll_until(WAIT, "the copy stops outside its window", || {
            !runs_on(cluster, runner, &windowed)
                && show(cluster, leader, &windowed).is_ok_and(|record| record["state"] == json!("pending"))
        })?;
        let at_close = show(cluster, leader, &windowed)?;
        ensure!(cur_extent(&at_close) < 16, "the copy finished despite its closed window: {at_close}");
        std::thread::sleep(Duration::from_millis(2500));
        let later = show(cluster, leader, &windowed)?;
        ensure!(
            later["state"] == json!("pending") && later["progress"] == at_close["progress"],
            "a copy outside its window ran: {at_close} then {later}"
        );
        // Opened through the original's path and body.
        let all_day = json!({ "start_hour": 0, "start_min": 0, "end_hour": 0, "end_min": 0 });
        post(cluster, leader, &format!("copy_volume/{windowed}/set_runtime"), &all_day)?;
        wait_state(cluster, leader, &windowed, "succeeded", WAIT)?;
        ensure_same_copy(&source, &destination)?;

        // `[tasks] max_attempts = 2`: a failing task is tried twice, then stays failed.
        let failing = submit(cluster, leader, "sleep/create", json!({ "duration_ms": 10, "fail": true }))?;
        let record = wait_state(cluster, leader, &failing, "failed", WAIT)?;
        ensure!(record["attempts"] == json!(2), "max_attempts = 2, but: {record}");

        // The original's `list_by_status`: every task is in exactly one of the two listings,
        // each listing holds only its kind, and the CLI's verb lists the same.
        let listed = |status: &str| -> Result<Vec<(String, String)>> {
            let (code, answer) = request(cluster, leader, "GET", &format!("{PREFIX}/tasks?status={status}"), None)?;
            ensure!(code == 200, "GET tasks?status={status}: {code} {answer}");
            Ok(answer["tasks"]
                .as_array()
                .map(|tasks| {
                    tasks
                        .iter()
                        .map(|task| {
                            (
                                task["task_id"].as_str().unwrap_or("").to_string(),
                                task["state"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default())
        };
        let (finished, unfinished) = (listed("finished")?, listed("unfinished")?);
        let finished_states = ["succeeded", "failed", "cancelled"];
        ensure!(finished.iter().all(|(_, state)| finished_states.contains(&state.as_str())), "{finished:?}");
        ensure!(unfinished.iter().all(|(_, state)| !finished_states.contains(&state.as_str())), "{unfinished:?}");
        ensure!(
            finished.iter().any(|(id, _)| *id == failing),
            "the failed task is not listed as finished: {finished:?}"
        );
        ensure!(
            finished.len() + unfinished.len() == n_tasks(cluster, leader)?,
            "the two listings do not cover every task"
        );
        let (code, answer) = request(cluster, leader, "GET", &format!("{PREFIX}/tasks?status=done"), None)?;
        ensure!(code == 400, "an unknown status listed: {code} {answer}");
        let (code, out) = cli(cluster, leader, &["--json", "task", "list_by_status", "finished"])?;
        ensure!(code == 0, "zbs-task task list_by_status finished: {code} {out}");
        let by_cli: Vec<Value> = serde_json::from_str(&out).context("list_by_status's JSON")?;
        ensure!(
            by_cli.len() == finished.len(),
            "the CLI listed {} finished tasks, the API {}",
            by_cli.len(),
            finished.len()
        );
        Ok(())
    });
}
