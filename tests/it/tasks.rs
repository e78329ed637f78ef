//! The Task Center end to end: three real `zbs-taskd` processes around one ZooKeeper, driven
//! through the dispatcher API on the leader — Sleep and CopyVolume tasks complete (copies equal
//! to their sources, holes kept), a runner killed mid-task has its task rescheduled elsewhere,
//! and bad requests are refused with a 4xx that changes nothing.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use tests::cluster::{Cluster, ClusterBuilder};

/// Generous bound for anything that should happen soon on a busy 2-core machine.
const WAIT: Duration = Duration::from_secs(30);

const PREFIX: &str = "/api/v2/task_center";

fn serialize() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A cluster whose runners may copy under `roots` (and 2 s sessions, so a killed runner's
/// owner nodes vanish soon).
fn start_cluster(roots: &Path) -> Result<Cluster> {
    ClusterBuilder::new()
        .session_timeout(Duration::from_millis(2000))
        .extra_config(format!("allowed_roots = [\"{}\"]\nrunner_slots = 2", roots.display()))
        .start()
}

fn with_cluster(scenario: impl FnOnce(&Cluster, &Path) -> Result<()>) {
    let _serial = serialize();
    let roots = tempfile::Builder::new().prefix("zbs-tasks-").tempdir().expect("create the copy root");
    let cluster = start_cluster(roots.path()).expect("start the cluster");
    if let Err(error) = scenario(&cluster, roots.path()) {
        cluster.keep_dir_on_drop();
        panic!("{error:?}\n(cluster dir: {})", cluster.dir().display());
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(15)).build()
}

/// `(status, body)` of a request to `node`'s dispatcher port.
fn request(cluster: &Cluster, node: usize, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Value)> {
    let spec = cluster.node(node);
    let url = format!("http://{}:{}{path}", spec.address, spec.dispatcher_port);
    let request = agent().request(method, &url).set("Content-Type", "application/json");
    let result = match body {
        Some(body) => request.send_string(body),
        None => request.call(),
    };
    let (status, response) = match result {
        Ok(response) => (response.status(), response),
        Err(ureq::Error::Status(status, response)) => (status, response),
        Err(error) => bail!("{method} {url}: {error}"),
    };
    let text = response.into_string().context("read the answer")?;
    let value = serde_json::from_str(&text).with_context(|| format!("{method} {url}: not JSON: {text}"))?;
    Ok((status, value))
}

fn leader(cluster: &Cluster) -> Result<usize> {
    let leader = cluster.wait_for_leader(WAIT)?;
    // The dispatcher opens its task database just after the election.
    cluster.wait_until(WAIT, "the dispatcher answers", || {
        matches!(request(cluster, leader, "GET", &format!("{PREFIX}/tasks"), None), Ok((200, _)))
    })?;
    cluster.wait_until(WAIT, "every runner registers", || {
        request(cluster, leader, "GET", &format!("{PREFIX}/runners"), None)
            .is_ok_and(|(_, answer)| answer["runners"].as_array().map_or(0, Vec::len) == cluster.n_nodes())
    })?;
    Ok(leader)
}

fn submit(cluster: &Cluster, leader: usize, path: &str, body: Value) -> Result<String> {
    let (status, answer) = request(cluster, leader, "POST", &format!("{PREFIX}/{path}"), Some(&body.to_string()))?;
    ensure!(status == 201, "submit {path} {body}: {status} {answer}");
    answer["task_id"].as_str().map(str::to_string).context("no task_id in the answer")
}

fn show(cluster: &Cluster, leader: usize, task_id: &str) -> Result<Value> {
    let (status, answer) = request(cluster, leader, "GET", &format!("{PREFIX}/tasks/{task_id}"), None)?;
    ensure!(status == 200, "show {task_id}: {status} {answer}");
    Ok(answer)
}

/// Waits until the task reaches `state`; a final state other than it fails at once.
fn wait_state(cluster: &Cluster, leader: usize, task_id: &str, state: &str, timeout: Duration) -> Result<Value> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let record = show(cluster, leader, task_id)?;
        let now = record["state"].as_str().unwrap_or_default();
        if now == state {
            return Ok(record);
        }
        if ["succeeded", "failed", "cancelled"].contains(&now) {
            bail!("task {task_id} ended {now}, not {state}: {record}");
        }
        if std::time::Instant::now() > deadline {
            bail!("task {task_id} is still {now} after {timeout:?}, not {state}: {record}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn n_tasks(cluster: &Cluster, leader: usize) -> Result<usize> {
    let (status, answer) = request(cluster, leader, "GET", &format!("{PREFIX}/tasks"), None)?;
    ensure!(status == 200, "list: {status} {answer}");
    Ok(answer["tasks"].as_array().map_or(0, Vec::len))
}

/// A sparse file of `len` bytes with a few regions of pseudo-random data.
fn sparse_file(path: &Path, len: u64, seed: u64) -> Result<()> {
    let file = File::create(path)?;
    file.set_len(len)?;
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..6 {
        let offset = (next() % (len / 4096)) * 4096;
        let n = ((next() % 64 + 1) * 4096).min(len - offset);
        let data: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        file.write_all_at(&data, offset)?;
    }
    file.sync_all()?;
    Ok(())
}

fn files_equal(a: &Path, b: &Path) -> Result<bool> {
    Ok(std::fs::read(a).with_context(|| format!("read {}", a.display()))?
        == std::fs::read(b).with_context(|| format!("read {}", b.display()))?)
}

#[test]
fn sleep_and_copy_tasks_complete_and_bad_requests_change_nothing() {
    with_cluster(|cluster, roots| {
        let leader = leader(cluster)?;
        let follower = (leader + 1) % cluster.n_nodes();

        // Refused input: nothing is created.
        let outside = tempfile::NamedTempFile::new()?;
        let refused = [
            ("POST", "copy_volume/create".to_string(), json!({ "source": outside.path(), "destination": roots.join("x") }).to_string()),
            ("POST", "copy_volume/create".to_string(), json!({ "source": "/etc/passwd", "destination": "/tmp/stolen" }).to_string()),
            ("POST", "copy_volume/create".to_string(), json!({ "source": "relative", "destination": "/tmp/x" }).to_string()),
            ("POST", "copy_volume/create".to_string(), "{not json".to_string()),
            ("POST", "sleep/create".to_string(), json!({ "duration_ms": 10, "bogus": 1 }).to_string()),
            ("POST", "sleep/create".to_string(), json!({ "duration_ms": 999_999_999_999u64 }).to_string()),
            ("POST", "sleep/create".to_string(), json!({ "duration_ms": "ten" }).to_string()),
            ("GET", "tasks?state=bogus".to_string(), String::new()),
            ("GET", "tasks?date=2024-13-45".to_string(), String::new()),
            ("GET", "tasks/..%2Fetc".to_string(), String::new()),
            ("POST", "tasks/no-such-task/cancel".to_string(), "{}".to_string()),
            ("POST", "runners/no-such-node/drain".to_string(), "{}".to_string()),
        ];
        for (method, path, body) in &refused {
            let body = (method == &"POST").then_some(body.as_str());
            let (status, answer) = request(cluster, leader, method, &format!("{PREFIX}/{path}"), body)?;
            ensure!((400..500).contains(&status), "{method} {path}: expected a 4xx, got {status} {answer}");
            ensure!(answer["error"].is_string(), "{method} {path}: no error message in {answer}");
        }
        ensure!(n_tasks(cluster, leader)? == 0, "a refused request created a task");
        let (status, answer) = request(cluster, leader, "GET", &format!("{PREFIX}/tasks/0000-none"), None)?;
        ensure!(status == 404, "unknown task: {status} {answer}");

        // A follower names the leader.
        let (status, answer) = request(cluster, follower, "GET", &format!("{PREFIX}/tasks"), None)?;
        ensure!(status == 421, "follower answered {status} {answer}");
        let spec = cluster.node(leader);
        ensure!(answer["leader"] == json!(format!("{}:{}", spec.address, spec.dispatcher_port)), "follower's leader: {answer}");

        // Sleep tasks complete; a failing one is retried, then stays failed with its error.
        let sleeps: Vec<String> =
            (0..6).map(|_| submit(cluster, leader, "sleep/create", json!({ "duration_ms": 300 }))).collect::<Result<_>>()?;
        let failing = submit(cluster, leader, "sleep/create", json!({ "duration_ms": 10, "fail": true }))?;

        // CopyVolume over sparse files.
        let mut copies = Vec::new();
        for index in 0..3u64 {
            let source = roots.join(format!("src-{index}"));
            let destination = roots.join(format!("dst-{index}"));
            sparse_file(&source, (8 + index * 8) << 20, 0x9e37_79b9 + index)?;
            let task_id = submit(
                cluster,
                leader,
                "copy_volume/create",
                json!({ "source": source, "destination": destination, "io_depth": 4 }),
            )?;
            copies.push((task_id, source, destination));
        }

        let mut runners = std::collections::BTreeSet::new();
        for task_id in &sleeps {
            let record = wait_state(cluster, leader, task_id, "succeeded", WAIT)?;
            runners.insert(record["runner_addr"].as_str().unwrap_or_default().to_string());
        }
        ensure!(runners.len() >= 2, "six tasks with two slots per runner ran on only {runners:?}");
        for (task_id, source, destination) in &copies {
            wait_state(cluster, leader, task_id, "succeeded", WAIT)?;
            ensure!(files_equal(source, destination)?, "copy {task_id}: {} differs from its source", destination.display());
            let meta = std::fs::metadata(destination)?;
            ensure!(meta.blocks() * 512 < meta.len() / 2, "copy {task_id}: the destination is not sparse ({} blocks)", meta.blocks());
        }
        let record = wait_state(cluster, leader, &failing, "failed", WAIT)?;
        ensure!(record["attempts"] == json!(3), "failing task: {record}");
        ensure!(record["last_error"].as_str().is_some_and(|error| error.contains("fail")), "failing task: {record}");

        let (status, answer) = request(cluster, leader, "GET", &format!("{PREFIX}/tasks?state=succeeded"), None)?;
        ensure!(status == 200 && answer["tasks"].as_array().map_or(0, Vec::len) == 9, "list succeeded: {answer}");
        let (status, answer) = request(cluster, leader, "GET", &format!("{PREFIX}/runners"), None)?;
        ensure!(status == 200 && answer["runners"].as_array().map_or(0, Vec::len) == 3, "runners: {answer}");

        // Cancel a pending-or-running task and pause/resume another.
        let long = submit(cluster, leader, "sleep/create", json!({ "duration_ms": 60_000 }))?;
        wait_state(cluster, leader, &long, "running", WAIT)?;
        let (status, answer) = request(cluster, leader, "POST", &format!("{PREFIX}/tasks/{long}/pause"), Some("{}"))?;
        ensure!(status < 300, "pause: {status} {answer}");
        wait_state(cluster, leader, &long, "paused", WAIT)?;
        let (status, answer) = request(cluster, leader, "POST", &format!("{PREFIX}/tasks/{long}/resume"), Some("{}"))?;
        ensure!(status < 300, "resume: {status} {answer}");
        wait_state(cluster, leader, &long, "running", WAIT)?;
        let (status, answer) = request(cluster, leader, "POST", &format!("{PREFIX}/tasks/{long}/cancel"), Some("{}"))?;
        ensure!(status < 300, "cancel: {status} {answer}");
        wait_state(cluster, leader, &long, "cancelled", WAIT)?;
        Ok(())
    });
}

#[test]
fn a_killed_runners_task_is_rescheduled_and_finishes() {
    with_cluster(|cluster, _roots| {
        let leader = leader(cluster)?;
        // Keep the leader's own runner out of it, so the kill does not also move the dispatcher.
        let leader_id = cluster.node(leader).node_id.clone();
        let (status, answer) = request(cluster, leader, "POST", &format!("{PREFIX}/runners/{leader_id}/drain"), Some("{}"))?;
        ensure!(status < 300, "drain: {status} {answer}");
        cluster.wait_until(WAIT, "the leader's runner shows drained", || {
            request(cluster, leader, "GET", &format!("{PREFIX}/runners"), None).is_ok_and(|(_, answer)| {
                answer["runners"].as_array().into_iter().flatten().any(|runner| runner["node_id"] == json!(leader_id) && runner["draining"] == json!(true))
            })
        })?;

        let task_id = submit(cluster, leader, "sleep/create", json!({ "duration_ms": 4000 }))?;
        let record = wait_state(cluster, leader, &task_id, "running", WAIT)?;
        let first_runner = record["runner_addr"].as_str().context("no runner_addr")?.to_string();
        let victim = (0..cluster.n_nodes())
            .find(|&node| format!("{}:{}", cluster.node(node).address, cluster.node(node).runner_port) == first_runner)
            .context("the runner is no node of the cluster")?;
        ensure!(victim != leader, "a drained runner got the task");
        cluster.kill(victim)?;

        let record = wait_state(cluster, leader, &task_id, "succeeded", WAIT)?;
        let second_runner = record["runner_addr"].as_str().unwrap_or_default();
        ensure!(second_runner != first_runner, "the task finished on the killed runner {first_runner}: {record}");
        ensure!(record["attempts"] == json!(0), "an interruption counted as a failed attempt: {record}");
        ensure!(record["last_failed_ms"].is_u64(), "no last_failed_ms after the interruption: {record}");
        ensure!(cluster.log(leader).contains("task interrupted; rescheduling"), "the leader logged no interruption");
        Ok(())
    });
}
