//! The Task Center end to end: three real `zbs-taskd` processes around one ZooKeeper, driven
//! through the dispatcher API on the leader — Sleep and CopyVolume tasks complete (copies equal
//! to their sources, holes kept), a runner killed mid-task has its task rescheduled elsewhere,
//! and bad requests are refused with a 4xx that changes nothing. The submodules run copies at
//! scale and through failures (`copies`), the operations on running copies (`operations`), the
//! API's authentication (`auth`), the copies' confinement to their roots (`confinement`), and
//! exactly once under overlapping faults: runner leases and stale owner nodes (`leases`), and a
//! restarted daemon's clean-up after its previous incarnation (`incarnation`), and a crashed
//! leader replaced at once, never a live one (`crash_takeover`).

mod auth;
mod confinement;
mod copies;
mod crash_takeover;
mod forwarding;
mod incarnation;
mod leases;
mod operations;
mod placement;
mod retention;
mod submits;

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use chrono::Timelike;
use serde_json::{json, Value};
use tests::cluster::{daemon_binary, glog_time, Cluster, ClusterBuilder, Signal};
use tests::cluster_options::DaemonConfig;
use tests::prelude::*;

/// Generous bound for anything that should happen soon on a busy 2-core machine.
const WAIT: Duration = Duration::from_secs(30);

const PREFIX: &str = "/api/v2/task_center";

fn serialize() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A cluster whose runners may copy under `roots` (and 2 s sessions, so a killed runner's
/// owner nodes vanish soon), with two slots per runner unless `configure` says otherwise, and
/// the log filter `log_level`.
fn start_cluster(roots: &Path, configure: impl FnOnce(&mut DaemonConfig), log_level: &str) -> Result<Cluster> {
    ClusterBuilder::new()
        .session_timeout(Duration::from_millis(2000))
        .log_level(log_level)
        .configure(|config| {
            config.allowed_roots = Some(vec![roots.to_path_buf()]);
            config.runner_slots = Some(2);
            configure(config);
        })
        .start()
}

fn with_cluster(scenario: impl FnOnce(&Cluster, &Path) -> Result<()>) {
    with_tuned_cluster(|_| {}, "info", scenario)
}

/// `with_cluster` with every node's configuration changed by `configure` (e.g.
/// `|config| config.tasks.copy_extent_mib = Some(1)`) and a log filter.
fn with_tuned_cluster(
    configure: impl FnOnce(&mut DaemonConfig),
    log_level: &str,
    scenario: impl FnOnce(&Cluster, &Path) -> Result<()>,
) {
    let _serial = serialize();
    let roots = tempfile::Builder::new().prefix("zbs-tasks-").tempdir().expect("create the copy root");
    let cluster = start_cluster(roots.path(), configure, log_level).expect("start the cluster");
    if let Err(error) = scenario(&cluster, roots.path()) {
        cluster.keep_dir_on_drop();
        panic!("{error:?}\n(cluster dir: {})", cluster.dir().display());
    }
}

/// One agent for every request, so connections are kept alive and reused: each new connection
/// that ends costs the daemon a coroutine whose IO timer may race `may`'s selector (the
/// runtime's known crash, see `runtime/src/rpc/connection.rs`), and polling on a fresh
/// connection every 100 ms made that a matter of minutes.
fn agent() -> ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| ureq::AgentBuilder::new().timeout(Duration::from_secs(15)).build()).clone()
}

/// `(status, body)` of a request to `node`'s dispatcher port.
fn request(cluster: &Cluster, node: usize, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Value)> {
    let spec = cluster.node(node);
    let url = format!("http://{}:{}{path}", spec.address, spec.dispatcher_port);
    let request = agent()
        .request(method, &url)
        .set("Content-Type", "application/json")
        .set(taskd::access::TOKEN_HEADER, cluster.token());
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

/// Waits until `node`'s runner reports `task_id` among its running tasks (claimed, not only
/// assigned).
fn wait_claimed(cluster: &Cluster, node: usize, task_id: &str) -> Result<()> {
    let spec = cluster.node(node);
    let url = format!("http://{}:{}/api/v1/runner", spec.address, spec.runner_port);
    poll_until(WAIT, "the runner claims the task", || {
        agent()
            .get(&url)
            .call()
            .ok()
            .and_then(|response| response.into_json::<Value>().ok())
            .is_some_and(|status| status["running"].as_array().into_iter().flatten().any(|id| id == task_id))
    })?;
    Ok(())
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

/// The `zbs-task` binary next to `zbs-taskd`, built once per run.
fn cli_binary() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let daemon = daemon_binary().map_err(|error| format!("{error:#}"))?;
            let profile_dir = daemon.parent().ok_or("the daemon binary has no dir")?.to_path_buf();
            let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            command.args(["build", "--quiet", "--package", "taskd", "--bin", "zbs-task"]);
            command.current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
            if profile_dir.file_name().is_some_and(|name| name == "release") {
                command.arg("--release");
            }
            if let Some(target_dir) = profile_dir.parent() {
                command.env("CARGO_TARGET_DIR", target_dir);
            }
            let status = command.status().map_err(|error| format!("run cargo build: {error}"))?;
            if !status.success() {
                return Err(format!("cargo build of zbs-task failed ({status})"));
            }
            Ok(profile_dir.join("zbs-task"))
        })
        .clone()
        .map_err(|error| anyhow::anyhow!(error))
}

/// Runs `zbs-task --server <node's dispatcher> args...`: (exit code, stdout).
fn cli(cluster: &Cluster, node: usize, args: &[&str]) -> Result<(i32, String)> {
    let spec = cluster.node(node);
    let output = Command::new(cli_binary()?)
        .env_remove(taskd::cli::TOKEN_ENV)
        .arg("--token-file")
        .arg(cluster.token_path())
        .arg("--server")
        .arg(format!("{}:{}", spec.address, spec.dispatcher_port))
        .args(args)
        .output()
        .context("run zbs-task")?;
    Ok((output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned()))
}

#[test]
fn sleep_and_copy_tasks_complete_and_bad_requests_change_nothing() {
    with_cluster(|cluster, roots| {
        let leader = leader(cluster)?;
        let follower = (leader + 1) % cluster.n_nodes();

        // Refused input: nothing is created.
        let outside = tempfile::NamedTempFile::new()?;
        let refused = [
            (
                "POST",
                "copy_volume/create".to_string(),
                json!({ "source": outside.path(), "destination": roots.join("x") }).to_string(),
            ),
            (
                "POST",
                "copy_volume/create".to_string(),
                json!({ "source": "/etc/passwd", "destination": "/tmp/stolen" }).to_string(),
            ),
            (
                "POST",
                "copy_volume/create".to_string(),
                json!({ "source": "relative", "destination": "/tmp/x" }).to_string(),
            ),
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
        ensure!(
            answer["leader"] == json!(format!("{}:{}", spec.address, spec.dispatcher_port)),
            "follower's leader: {answer}"
        );

        // Sleep tasks complete; a failing one is retried, then stays failed with its error.
        let sleeps: Vec<String> = (0..6)
            .map(|_| submit(cluster, leader, "sleep/create", json!({ "duration_ms": 300 })))
            .collect::<Result<_>>()?;
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
            let record = wait_state(cluster, leader, task_id, "succeeded", WAIT)?;
            let progress = &record["progress"];
            ensure!(
                progress["bytes_done"] == progress["bytes_total"]
                    && progress["bytes_total"] == json!(std::fs::metadata(source)?.len()),
                "copy {task_id}: final progress {progress}"
            );
            ensure!(
                progress["cur_extent"] == progress["n_extents"] && progress["n_extents"] == json!(1),
                "copy {task_id}: {progress}"
            );
            ensure!(
                files_equal(source, destination)?,
                "copy {task_id}: {} differs from its source",
                destination.display()
            );
            let meta = std::fs::metadata(destination)?;
            ensure!(
                meta.blocks() * 512 < meta.len() / 2,
                "copy {task_id}: the destination is not sparse ({} blocks)",
                meta.blocks()
            );
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
        let refused_ops = [
            (format!("tasks/{long}/resume"), "{}".to_string(), 409),
            (format!("tasks/{long}/cancel"), "{}".to_string(), 409),
            (
                format!("tasks/{long}/runtime"),
                json!({ "start_hour": 1, "start_min": 0, "end_hour": 2, "end_min": 0 }).to_string(),
                409,
            ),
            (
                format!("tasks/{long}/runtime"),
                json!({ "start_hour": 24, "start_min": 0, "end_hour": 2, "end_min": 0 }).to_string(),
                400,
            ),
        ];
        for (path, body, expected) in &refused_ops {
            let (status, answer) = request(cluster, leader, "POST", &format!("{PREFIX}/{path}"), Some(body))?;
            ensure!(status == *expected, "POST {path} {body}: expected {expected}, got {status} {answer}");
        }
        ensure!(show(cluster, leader, &long)?["runtime_window"].is_null(), "a refused set_runtime changed the record");

        // A copy outside its runtime window waits; set_runtime to the whole day lets it run.
        let closed_hour = (chrono::Local::now().hour() + 2) % 24;
        let window = json!({ "start_hour": closed_hour, "start_min": 0, "end_hour": closed_hour, "end_min": 1 });
        let (_, source, _) = &copies[0];
        let windowed = submit(
            cluster,
            leader,
            "copy_volume/create",
            json!({ "source": source, "destination": roots.join("dst-windowed"), "runtime_window": window }),
        )?;
        std::thread::sleep(Duration::from_secs(3));
        let record = show(cluster, leader, &windowed)?;
        ensure!(
            record["state"] == json!("pending") && record["runner_addr"].is_null(),
            "a copy ran outside its window: {record}"
        );
        let all_day = json!({ "start_hour": 0, "start_min": 0, "end_hour": 0, "end_min": 0 }).to_string();
        let (status, answer) =
            request(cluster, leader, "POST", &format!("{PREFIX}/tasks/{windowed}/runtime"), Some(&all_day))?;
        ensure!(status == 200, "set_runtime: {status} {answer}");
        wait_state(cluster, leader, &windowed, "succeeded", WAIT)?;
        ensure!(files_equal(source, &roots.join("dst-windowed"))?, "the windowed copy differs from its source");

        // The command-line client, pointed at a follower: it follows the 421 to the leader.
        let (code, out) = cli(cluster, follower, &["--json", "task", "sleep", "50"])?;
        ensure!(code == 0, "zbs-task task sleep: exit {code}: {out}");
        let created: Value = serde_json::from_str(&out).context("zbs-task --json output")?;
        let cli_task = created["task_id"].as_str().context("no task_id")?.to_string();
        wait_state(cluster, leader, &cli_task, "succeeded", WAIT)?;
        let (code, out) = cli(cluster, follower, &["task", "show", &cli_task])?;
        ensure!(code == 0 && out.contains("succeeded"), "zbs-task task show: exit {code}: {out}");
        let (code, out) = cli(cluster, follower, &["task", "watch", &cli_task])?;
        ensure!(code == 0, "zbs-task task watch of a finished task: exit {code}: {out}");
        let (code, out) = cli(cluster, leader, &["--json", "task", "list", "--state", "succeeded"])?;
        let listed: Value = serde_json::from_str(&out).context("zbs-task task list --json output")?;
        ensure!(code == 0 && listed.as_array().map_or(0, Vec::len) == 11, "zbs-task task list: exit {code}: {out}");
        let (code, out) = cli(cluster, leader, &["runner", "list"])?;
        ensure!(
            code == 0 && out.contains("node-1") && out.contains("node-3"),
            "zbs-task runner list: exit {code}: {out}"
        );
        let (code, out) = cli(cluster, leader, &["cluster", "show"])?;
        ensure!(code == 0 && out.contains("leader"), "zbs-task cluster show: exit {code}: {out}");
        let (code, _) = cli(cluster, leader, &["task", "show", "0000-none"])?;
        ensure!(code == 3, "zbs-task task show of an unknown task: exit {code}, not 3");
        let (code, _) = cli(cluster, leader, &["task", "frobnicate"])?;
        ensure!(code == 2, "zbs-task with a bad command: exit {code}, not 2");
        let (code, _) = cli(cluster, leader, &["task", "set_runtime", &cli_task, "25", "0", "1", "0"])?;
        ensure!(code == 2, "zbs-task set_runtime with hour 25: exit {code}, not 2");
        Ok(())
    });
}

#[test]
fn a_killed_runners_task_is_rescheduled_and_finishes() {
    with_cluster(|cluster, _roots| {
        let leader = leader(cluster)?;
        // Keep the leader's own runner out of it, so the kill does not also move the dispatcher.
        let leader_id = cluster.node(leader).node_id.clone();
        let (status, answer) =
            request(cluster, leader, "POST", &format!("{PREFIX}/runners/{leader_id}/drain"), Some("{}"))?;
        ensure!(status < 300, "drain: {status} {answer}");
        cluster.wait_until(WAIT, "the leader's runner shows drained", || {
            request(cluster, leader, "GET", &format!("{PREFIX}/runners"), None).is_ok_and(|(_, answer)| {
                answer["runners"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|runner| runner["node_id"] == json!(leader_id) && runner["draining"] == json!(true))
            })
        })?;

        let task_id = submit(cluster, leader, "sleep/create", json!({ "duration_ms": 4000 }))?;
        let record = wait_state(cluster, leader, &task_id, "running", WAIT)?;
        let first_runner = record["runner_addr"].as_str().context("no runner_addr")?.to_string();
        let victim = (0..cluster.n_nodes())
            .find(|&node| format!("{}:{}", cluster.node(node).address, cluster.node(node).runner_port) == first_runner)
            .context("the runner is no node of the cluster")?;
        ensure!(victim != leader, "a drained runner got the task");
        wait_claimed(cluster, victim, &task_id)?;
        cluster.kill(victim)?;

        let record = wait_state(cluster, leader, &task_id, "succeeded", WAIT)?;
        let second_runner = record["runner_addr"].as_str().unwrap_or_default();
        ensure!(second_runner != first_runner, "the task finished on the killed runner {first_runner}: {record}");
        ensure!(record["attempts"] == json!(0), "an interruption counted as a failed attempt: {record}");
        ensure!(record["last_failed_ms"].is_u64(), "no last_failed_ms after the interruption: {record}");
        ensure!(cluster.log(leader).contains("task interrupted; rescheduling"), "the leader logged no interruption");

        // SIGTERM of the last undrained runner: its task is recorded interrupted, then finishes
        // on the leader's runner once that is undrained.
        let task_id = submit(cluster, leader, "sleep/create", json!({ "duration_ms": 3000 }))?;
        let record = wait_state(cluster, leader, &task_id, "running", WAIT)?;
        let runner = record["runner_addr"].as_str().unwrap_or_default().to_string();
        let stopped = (0..cluster.n_nodes())
            .find(|&node| format!("{}:{}", cluster.node(node).address, cluster.node(node).runner_port) == runner)
            .context("the runner is no node of the cluster")?;
        ensure!(stopped != leader && stopped != victim, "task ran on {runner}, a drained or dead runner");
        wait_claimed(cluster, stopped, &task_id)?;
        cluster.signal(stopped, Signal::SIGTERM)?;
        wait_state(cluster, leader, &task_id, "interrupted", WAIT)?;
        // The record is written before the runner logs its drain's count: wait for the line.
        cluster
            .wait_until(WAIT, "the stopped runner logging its interruption", || {
                cluster.log(stopped).contains("1 running tasks interrupted")
            })
            .context("the stopped runner did not log its interruption")?;
        let (status, answer) =
            request(cluster, leader, "POST", &format!("{PREFIX}/runners/{leader_id}/undrain"), Some("{}"))?;
        ensure!(status < 300, "undrain: {status} {answer}");
        let record = wait_state(cluster, leader, &task_id, "succeeded", WAIT)?;
        let leader_runner = format!("{}:{}", cluster.node(leader).address, cluster.node(leader).runner_port);
        ensure!(
            record["runner_addr"] == json!(leader_runner),
            "finished on {} instead of the leader",
            record["runner_addr"]
        );
        Ok(())
    });
}

/// Every run of every task from the runners' logs: task id → (node, start, end); a run with no
/// end line (a killed runner) lasts until now.
fn runs(cluster: &Cluster) -> std::collections::BTreeMap<String, Vec<(usize, SystemTime, SystemTime)>> {
    let mut runs: std::collections::BTreeMap<String, Vec<(usize, SystemTime, SystemTime)>> = Default::default();
    for node in 0..cluster.n_nodes() {
        let mut open: std::collections::BTreeMap<String, SystemTime> = Default::default();
        for line in cluster.log(node).lines() {
            let Some(at) = glog_time(line) else { continue };
            let task_id = |line: &str| {
                line.split("task_id=").nth(1).and_then(|rest| rest.split_whitespace().next()).map(str::to_string)
            };
            if line.contains("] task started ") {
                if let Some(task_id) = task_id(line) {
                    open.insert(task_id, at);
                }
            } else if line.contains("] task ended ") || line.contains("] task taken over") {
                if let Some(task_id) = task_id(line) {
                    let start = open.remove(&task_id).unwrap_or(at);
                    runs.entry(task_id).or_default().push((node, start, at));
                }
            }
        }
        for (task_id, start) in open {
            runs.entry(task_id).or_default().push((node, start, SystemTime::now()));
        }
    }
    runs
}

#[test]
fn sigterm_of_the_leader_mid_dispatch_loses_no_task_and_runs_none_twice_at_once_despite_a_damaged_record() {
    with_cluster(|cluster, _roots| {
        let leader = leader(cluster)?;
        let tasks: Vec<String> = (0..8)
            .map(|_| submit(cluster, leader, "sleep/create", json!({ "duration_ms": 1500 })))
            .collect::<Result<_>>()?;
        // SIGTERM while the leader's own runner works on one of them.
        let leader_runner = format!("{}:{}", cluster.node(leader).address, cluster.node(leader).runner_port);
        let mut on_leader = None;
        cluster.wait_until(WAIT, "a task runs on the leader's runner", || {
            on_leader = tasks.iter().find(|task_id| {
                show(cluster, leader, task_id).is_ok_and(|record| {
                    record["runner_addr"] == json!(leader_runner) && record["state"] == json!("running")
                })
            });
            on_leader.is_some()
        })?;
        let on_leader = on_leader.context("no task on the leader's runner")?.clone();
        // A damaged record the next leader finds when it rebuilds its cache.
        let session = quorum::ZkSession::connect(&quorum::ZkConfig::new(
            cluster.zookeeper().connect_string(),
            Duration::from_secs(6),
        ))?;
        session.create_persistent("/zbs/taskd/db/damaged-record", b"{not a record")?;
        drop(session);
        wait_claimed(cluster, leader, &on_leader)?;
        cluster.signal(leader, Signal::SIGTERM)?;
        let new_leader = cluster.wait_for_new_leader(leader, WAIT)?;
        cluster.wait_until(WAIT, "the new dispatcher answers", || {
            matches!(request(cluster, new_leader, "GET", &format!("{PREFIX}/tasks"), None), Ok((200, _)))
        })?;
        for task_id in &tasks {
            wait_state(cluster, new_leader, task_id, "succeeded", Duration::from_secs(60))?;
        }
        let (status, answer) = request(cluster, new_leader, "GET", &format!("{PREFIX}/tasks"), None)?;
        ensure!(status == 200, "list: {status} {answer}");
        let corrupt = answer["corrupt"].as_array().cloned().unwrap_or_default();
        ensure!(
            corrupt.iter().any(|entry| entry["path"] == json!("/zbs/taskd/db/damaged-record")),
            "the damaged record is not reported: {answer}"
        );
        let runs = runs(cluster);
        let interrupted_run = runs.get(&on_leader).and_then(|runs| runs.iter().find(|run| run.0 == leader)).is_some();
        ensure!(
            interrupted_run && runs[&on_leader].len() >= 2,
            "task {on_leader} was not run again after the leader stopped: {:?}",
            runs.get(&on_leader)
        );
        for task_id in &tasks {
            let task_runs = runs.get(task_id).with_context(|| format!("no run of {task_id} in the logs"))?;
            for (index, a) in task_runs.iter().enumerate() {
                for b in &task_runs[index + 1..] {
                    let overlap = a.1 < b.2 && b.1 < a.2;
                    ensure!(!overlap, "task {task_id} ran on node {} and node {} at once: {task_runs:?}", a.0, b.0);
                }
            }
        }
        Ok(())
    });
}

/// Polls `done` every 100 ms until it says true; an error naming `what` after `timeout`. Each
/// try is usually an HTTP request on a new connection, so this polls ten times less often than
/// the fixture's `wait_until`.
fn poll_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        if std::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The runner address the dispatcher writes in `runner_addr` for `node`.
fn runner_addr(cluster: &Cluster, node: usize) -> String {
    format!("{}:{}", cluster.node(node).address, cluster.node(node).runner_port)
}

/// The node whose runner listens at `addr`.
fn node_of_runner(cluster: &Cluster, addr: &str) -> Result<usize> {
    (0..cluster.n_nodes())
        .find(|&node| runner_addr(cluster, node) == addr)
        .with_context(|| format!("no runner at {addr}"))
}

/// The registration of `node_id` in the dispatcher's runner list, if it is registered.
fn registration(cluster: &Cluster, leader: usize, node_id: &str) -> Result<Option<Value>> {
    let (status, answer) = request(cluster, leader, "GET", &format!("{PREFIX}/runners"), None)?;
    ensure!(status == 200, "runners: {status} {answer}");
    Ok(answer["runners"].as_array().into_iter().flatten().find(|runner| runner["node_id"] == json!(node_id)).cloned())
}

/// Drains (`true`) or undrains `node_id` through the leader and waits until its registration
/// shows it.
fn set_drained(cluster: &Cluster, leader: usize, node_id: &str, drained: bool) -> Result<()> {
    let verb = if drained { "drain" } else { "undrain" };
    let (status, answer) = request(cluster, leader, "POST", &format!("{PREFIX}/runners/{node_id}/{verb}"), Some("{}"))?;
    ensure!(status < 300, "{verb} {node_id}: {status} {answer}");
    ensure!(answer["persisted"] == json!(true), "{verb} {node_id} was not persisted: {answer}");
    poll_until(WAIT, &format!("{node_id}'s registration shows draining = {drained}"), || {
        registration(cluster, leader, node_id)
            .is_ok_and(|runner| runner.is_some_and(|runner| runner["draining"] == json!(drained)))
    })?;
    Ok(())
}

/// A file of `len` bytes of pseudo-random data (no holes, no zero pages).
fn dense_file(path: &Path, len: u64, seed: u64) -> Result<()> {
    let mut state = seed | 1;
    let data: Vec<u8> = (0..len / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect();
    std::fs::write(path, &data).with_context(|| format!("write {}", path.display()))?;
    File::open(path)?.sync_all()?;
    Ok(())
}

/// The data ranges of a file as `SEEK_DATA`/`SEEK_HOLE` report them, adjacent ones merged.
fn data_map(path: &Path) -> Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let len = file.metadata()?.len() as i64;
    let fd = file.as_raw_fd();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut offset = 0i64;
    while offset < len {
        // SAFETY: lseek on a descriptor this function owns; it only moves the file offset.
        let data = unsafe { libc::lseek(fd, offset, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: no data after `offset`.
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        ensure!(hole > data, "SEEK_HOLE of {} at {data} answered {hole}", path.display());
        match ranges.last_mut() {
            Some(last) if last.1 == data as u64 => last.1 = hole as u64,
            _ => ranges.push((data as u64, hole as u64)),
        }
        offset = hole;
    }
    Ok(ranges)
}

/// The destination has the source's bytes and its holes: the same `SEEK_DATA` map.
fn ensure_same_copy(source: &Path, destination: &Path) -> Result<()> {
    ensure!(
        files_equal(source, destination)?,
        "{} differs from its source {}",
        destination.display(),
        source.display()
    );
    let (source_map, destination_map) = (data_map(source)?, data_map(destination)?);
    ensure!(
        source_map == destination_map,
        "{}'s data map {destination_map:?} is not its source's {source_map:?}",
        destination.display()
    );
    Ok(())
}

/// The values of `field=` on `node`'s log lines about `task_id` that contain `message`.
fn logged_numbers(cluster: &Cluster, node: usize, task_id: &str, message: &str, field: &str) -> Vec<u64> {
    let task = format!("task_id={task_id} ");
    let key = format!("{field}=");
    cluster
        .log(node)
        .lines()
        .filter(|line| line.contains(message) && (line.contains(&task) || line.ends_with(&task[..task.len() - 1])))
        .filter_map(|line| line.split(&key).nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}
