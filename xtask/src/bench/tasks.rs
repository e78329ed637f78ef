//! `cargo xtask bench tasks`: the Task Center measured through a real three-node cluster
//! (`tests::cluster`: three release `zbs-taskd` processes on 127.0.0.1-3 around one standalone
//! ZooKeeper from the tests fixture, which does not fsync), every number in one run, through the
//! leader's HTTP API as a client sees it.
//!
//! # Phases, in order
//! 1. **Idle RSS** of the leader once its dispatcher answers and the three runners registered.
//! 2. **Raw ZooKeeper creates** ([`raw_zk`]): `CLIENTS` threads on one `ZkSession` create
//!    persistent nodes holding an encoded Sleep record, before and after the submit phase
//!    (the mean is `raw_zk_create_per_s`); plus one thread alone (`raw_zk_create_serial_per_s`),
//!    the floor of anything that creates one node per round trip.
//! 3. **Submit throughput** ([`load`]): every runner drained first (the drain API), so that the
//!    submits measure the submit path alone (validate, fenced create in ZooKeeper, cache put,
//!    answer; plus the check each submit asks for, which finds no runner) and not dispatch
//!    competing on the dispatcher's one worker; `CLIENTS` keep-alive clients, closed loop. An
//!    acknowledged submit is a 201, which the dispatcher sends after the ZooKeeper create
//!    returned. Then the runners are undrained and the backlog runs to its end.
//! 4. **Submit-to-running latency** ([`latency`]): open-loop Sleep submits (10 ms tasks) at
//!    200/s for 10 s with 64 slots per runner (nothing queues). The end of each sample is the
//!    runner's own `task started` glog line (microseconds, local clock, same machine as the
//!    client's wall clock read just before the send); the leader's `task submitted` and
//!    `task dispatched` lines split the time into persist, dispatch and start.
//! 5. **Cache queries**: `show` of finished tasks (the API answers finished ones from the LevelDB
//!    cache; an unfinished one is re-read from ZooKeeper, so it is not what is timed here) in a
//!    pseudo-random order, and `list` of every task and of the first 100, with thousands of
//!    records present; timed at the client until the whole body is read, one keep-alive
//!    connection, nothing else running.
//! 6. **CopyVolume** against `cp --sparse=always` ([`copy`]).
//! 7. **RSS with 10,000 retained tasks**: Sleep tasks of 0 ms are submitted (runners working)
//!    until the task database holds 10,000 records (its default limit) and all have finished;
//!    then the leader's `VmRSS`. Nothing is purged: the retention is days.
//!
//! # Caveats
//! Two cores shared with whatever else runs: the daemons, ZooKeeper's JVM and the client threads
//! compete for them, so absolute numbers move between runs; the ratios measured in one run are
//! the meaningful part. Log lines are written at `info` (one per submit, dispatch, start, end).

mod api;
mod copy;
mod latency;
mod load;
mod raw_zk;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tests::cluster::Cluster;

use self::api::Api;
use super::report::{bench_dir, percentile, Report};

const N_NODES: usize = 3;
/// The most the configuration allows: with 192 slots nothing queues at 200 tasks/s.
const RUNNER_SLOTS: u32 = 64;
/// Concurrent clients of the submit and raw-create phases.
const CLIENTS: usize = 4;
const N_RAW_CREATES: usize = 2_000;
const N_RAW_SERIAL_CREATES: usize = 500;
const N_SUBMITS: usize = 2_000;
const LATENCY_RATE_PER_S: f64 = 200.0;
const N_LATENCY_SUBMITS: usize = 2_000;
const LATENCY_SENDERS: usize = 16;
const LATENCY_SLEEP_MS: u64 = 10;
const N_SHOWS: usize = 2_000;
const N_LISTS_ALL: usize = 20;
const N_LISTS_100: usize = 200;
const COPY_ROUNDS: usize = 3;
/// The task database's default record limit (`layout::DEFAULT_MAX_RECORDS`).
const RETAINED_TASKS: usize = 10_000;
const IDLE_TIMEOUT: Duration = Duration::from_secs(240);
const WAIT: Duration = Duration::from_secs(60);
/// Set (to anything) to keep the cluster's dir with the daemons' logs, for a timing breakdown.
const KEEP_DIR_ENV: &str = "ZBS_BENCH_KEEP_DIR";

pub fn run() -> Result<()> {
    let work = bench_dir().join("tasks-work");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("remove the old {}", work.display()))?;
    }
    fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    // The allowed roots refuse paths with `..`, which `bench_dir` has.
    let work = fs::canonicalize(&work).with_context(|| format!("resolve {}", work.display()))?;
    let result = run_in(&work);
    let cleanup = fs::remove_dir_all(&work).with_context(|| format!("remove {}", work.display()));
    let report = result?;
    cleanup?;
    report.write()?;
    Ok(())
}

fn run_in(work: &Path) -> Result<Report> {
    let cluster = Cluster::builder()
        .nodes(N_NODES)
        .extra_config(format!("allowed_roots = [\"{}\"]\nrunner_slots = {RUNNER_SLOTS}", work.display()))
        .start()
        .context("start the cluster")?;
    eprintln!("tasks bench: {} nodes from {} in {}", N_NODES, cluster.binary().display(), cluster.dir().display());
    let mut report = Report::new("tasks");
    let measured = measure(&cluster, work, &mut report);
    if measured.is_err() || std::env::var_os(KEEP_DIR_ENV).is_some() {
        eprintln!("tasks bench: keeping {} (logs)", cluster.dir().display());
        cluster.keep_dir_on_drop();
    }
    measured?;
    let crash_lines = cluster.crash_lines();
    report.set("core_files", cluster.core_files().len() as f64);
    report.set("crash_lines", crash_lines.len() as f64);
    if !crash_lines.is_empty() {
        report.note(format!("crash lines: {crash_lines:?}"));
    }
    Ok(report)
}

/// Runs the phases of the module documentation, filling `report`.
fn measure(cluster: &Cluster, work: &Path, report: &mut Report) -> Result<()> {
    let leader = cluster.wait_for_leader(WAIT)?;
    let api = Api::new(cluster, leader);
    cluster.wait_until(WAIT, "the dispatcher answers and every runner registered", || {
        api.runners().is_ok_and(|runners| runners.len() == N_NODES)
    })?;
    let leader_pid = cluster.pid(leader).context("the leader has no process")?;
    report.set("rss_mib_idle", rss_mib(leader_pid)?);

    phase("raw ZooKeeper creates");
    let connect = cluster.zookeeper().connect_string();
    let raw_before = raw_zk::creates_per_s(&connect, N_RAW_CREATES, CLIENTS)?;
    let raw_serial = raw_zk::creates_per_s(&connect, N_RAW_SERIAL_CREATES, 1)?;

    phase("submit throughput (runners drained)");
    let node_ids: Vec<String> = (0..N_NODES).map(|node| cluster.node(node).node_id.clone()).collect();
    set_all_draining(cluster, &api, &node_ids, true)?;
    let submitted = load::submit_sleeps(&api, N_SUBMITS, CLIENTS, 0)?;
    ensure!(api.list("state=running&limit=1")?.is_empty(), "a task started while every runner was drained");
    let raw_after = raw_zk::creates_per_s(&connect, N_RAW_CREATES, CLIENTS)?;
    let raw = (raw_before + raw_after) / 2.0;
    report.set("raw_zk_create_per_s", raw);
    report.set("raw_zk_create_per_s_before", raw_before);
    report.set("raw_zk_create_per_s_after", raw_after);
    report.set("raw_zk_create_serial_per_s", raw_serial);
    report.set("submit_per_s", submitted.per_s());
    report.set("submit_vs_raw_ratio", submitted.per_s() / raw);
    report.set("submit_per_s_first_500", submitted.per_s_between(0, 500));
    report.set("submit_per_s_last_500", submitted.per_s_between(N_SUBMITS - 500, N_SUBMITS - 1));
    report.set("rss_mib_after_submits", rss_mib(leader_pid)?);

    phase("backlog runs");
    set_all_draining(cluster, &api, &node_ids, false)?;
    let backlog = load::wait_idle(&api, IDLE_TIMEOUT)?;
    report.set("backlog_run_per_s", N_SUBMITS as f64 / backlog.as_secs_f64());

    phase("submit-to-running latency at 200/s");
    latency_phase(cluster, &api, report)?;

    phase("cache show and list");
    cache_phase(&api, report)?;

    phase("CopyVolume and cp");
    let mut rates = copy::measure(&api, work, COPY_ROUNDS)?;
    let copy_mib_per_s = percentile(&mut rates.copy, 0.5);
    let cp_mib_per_s = percentile(&mut rates.cp, 0.5);
    report.set("copy_mib_per_s", copy_mib_per_s);
    report.set("cp_mib_per_s", cp_mib_per_s);
    report.set("copy_vs_cp_ratio", copy_mib_per_s / cp_mib_per_s);
    report.set("copy_volume_mib", (copy::VOLUME_BYTES >> 20) as f64);
    report.set("copy_data_mib", (copy::DATA_BYTES >> 20) as f64);

    phase("10,000 retained tasks");
    let present = api.list("")?.len();
    let top_up = load::submit_sleeps(&api, RETAINED_TASKS.saturating_sub(present), CLIENTS, 0)?;
    report.set("submit_per_s_runners_busy", top_up.per_s());
    load::wait_idle(&api, IDLE_TIMEOUT)?;
    let retained = api.list("")?;
    ensure!(
        retained.iter().all(|task| task["state"] == "succeeded"),
        "not every retained task succeeded: {:?}",
        retained.iter().find(|task| task["state"] != "succeeded")
    );
    report.set("retained_tasks", retained.len() as f64);
    report.set("dispatcher_rss_mib_10k_tasks", rss_mib(leader_pid)?);
    ensure!(cluster.leader() == Some(leader), "the leader changed during the benchmark");

    add_notes(report);
    Ok(())
}

fn phase(name: &str) {
    eprintln!("tasks bench: {name}");
}

/// Drains or undrains every runner and waits until the runner list shows it.
fn set_all_draining(cluster: &Cluster, api: &Api, node_ids: &[String], draining: bool) -> Result<()> {
    for node_id in node_ids {
        api.set_draining(node_id, draining)?;
    }
    cluster.wait_until(WAIT, "every runner's registration shows the drain", || {
        api.runners().is_ok_and(|runners| {
            runners.len() == node_ids.len() && runners.iter().all(|runner| runner["draining"] == draining)
        })
    })?;
    Ok(())
}

fn latency_phase(cluster: &Cluster, api: &Api, report: &mut Report) -> Result<()> {
    let sent = latency::open_loop(api, N_LATENCY_SUBMITS, LATENCY_RATE_PER_S, LATENCY_SENDERS, LATENCY_SLEEP_MS)?;
    load::wait_idle(api, IDLE_TIMEOUT)?;
    let submitted = latency::task_times(cluster, "task submitted");
    let dispatched = latency::task_times(cluster, "task dispatched");
    let started = latency::task_times(cluster, "task started");
    let mut to_running = Vec::new();
    let mut to_persisted = Vec::new();
    let mut persisted_to_dispatched = Vec::new();
    let mut dispatched_to_running = Vec::new();
    let mut missing = 0;
    for sample in &sent {
        let times = (submitted.get(&sample.task_id), dispatched.get(&sample.task_id), started.get(&sample.task_id));
        let (Some(&persisted), Some(&dispatched), Some(&running)) = times else {
            missing += 1;
            continue;
        };
        to_running.push(latency::millis_between(sample.sent, running));
        to_persisted.push(latency::millis_between(sample.sent, persisted));
        persisted_to_dispatched.push(latency::millis_between(persisted, dispatched));
        dispatched_to_running.push(latency::millis_between(dispatched, running));
    }
    ensure!(missing * 100 <= sent.len(), "{missing} of {} latency tasks have no log lines", sent.len());
    let mut set_percentiles = |name: &str, samples: &mut Vec<f64>| {
        report.set(&format!("{name}_p50"), percentile(samples, 0.5));
        report.set(&format!("{name}_p99"), percentile(samples, 0.99));
        report.set(&format!("{name}_max"), percentile(samples, 1.0));
    };
    set_percentiles("submit_to_running_ms", &mut to_running);
    set_percentiles("latency_submit_to_persisted_ms", &mut to_persisted);
    set_percentiles("latency_persisted_to_dispatched_ms", &mut persisted_to_dispatched);
    set_percentiles("latency_dispatched_to_running_ms", &mut dispatched_to_running);
    let mut acks: Vec<f64> = sent.iter().map(|sample| sample.ack.as_secs_f64() * 1000.0).collect();
    set_percentiles("latency_submit_ack_ms", &mut acks);
    let lag_max = sent.iter().map(|sample| sample.lag).max().unwrap_or_default();
    report.set("latency_send_lag_ms_max", lag_max.as_secs_f64() * 1000.0);
    report.set("latency_rate_per_s", LATENCY_RATE_PER_S);
    report.set("latency_samples", to_running.len() as f64);
    Ok(())
}

fn cache_phase(api: &Api, report: &mut Report) -> Result<()> {
    let finished: Vec<String> =
        api.list("state=succeeded")?.iter().filter_map(|task| task["task_id"].as_str().map(str::to_string)).collect();
    ensure!(finished.len() >= 1_000, "only {} finished tasks to show", finished.len());
    report.set("cache_tasks_present", api.list("")?.len() as f64);
    let client = api.fresh();
    let mut show_us = Vec::with_capacity(N_SHOWS);
    // A multiplicative walk over the ids: every show a different record, no order the cache could exploit.
    let mut index = 0usize;
    for _ in 0..N_SHOWS {
        index = (index + 7_919) % finished.len();
        let started = Instant::now();
        let (status, body) = client.get_text(&format!("/tasks/{}", finished[index]))?;
        show_us.push(started.elapsed().as_secs_f64() * 1e6);
        ensure!(status == 200, "show {}: {status} {body}", finished[index]);
    }
    report.set("cache_show_us_p50", percentile(&mut show_us, 0.5));
    report.set("cache_show_us_p99", percentile(&mut show_us, 0.99));
    let (mut list_all, n_listed) = time_lists(&client, "", N_LISTS_ALL)?;
    let (mut list_100, _) = time_lists(&client, "?limit=100", N_LISTS_100)?;
    report.set("cache_list_ms_p50", percentile(&mut list_all, 0.5));
    report.set("cache_list_ms_p99", percentile(&mut list_all, 0.99));
    report.set("cache_list_records", n_listed as f64);
    report.set("cache_list_100_ms_p50", percentile(&mut list_100, 0.5));
    report.set("cache_list_100_ms_p99", percentile(&mut list_100, 0.99));
    Ok(())
}

/// `n` timings (ms) of `GET /tasks<query>`, and how many records the last one held.
fn time_lists(client: &Api, query: &str, n: usize) -> Result<(Vec<f64>, usize)> {
    let mut samples = Vec::with_capacity(n);
    let mut n_records = 0;
    for _ in 0..n {
        let started = Instant::now();
        let (status, body) = client.get_text(&format!("/tasks{query}"))?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        ensure!(status == 200, "list{query}: {status}");
        let answer: serde_json::Value = serde_json::from_str(&body).context("the list answer is not JSON")?;
        n_records = answer["tasks"].as_array().map_or(0, Vec::len);
    }
    Ok((samples, n_records))
}

/// `VmRSS` of `pid` in MiB.
fn rss_mib(pid: u32) -> Result<f64> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("no VmRSS in {}", path.display()))?;
    Ok(kib / 1024.0)
}

fn add_notes(report: &mut Report) {
    report.note(
        "3 zbs-taskd release processes on 127.0.0.1-3, runner_slots = 64, one standalone ZooKeeper (tests fixture, \
         no fsync); 2 cores shared by the daemons, ZooKeeper and the client",
    );
    report.note(format!(
        "submit_per_s: {N_SUBMITS} Sleep submits from {CLIENTS} keep-alive clients (closed loop), every runner \
         drained, so nothing is dispatched; acknowledged = the 201 sent after the ZooKeeper create returned"
    ));
    report.note(format!(
        "raw_zk_create_per_s: persistent creates of an encoded Sleep record (same size) under UUID names through \
         zookeeper-client (quorum::ZkSession), one session shared by {CLIENTS} threads, mean of a run before and \
         one after the submits; raw_zk_create_serial_per_s: one thread, one create per round trip"
    ));
    report.note(
        "submit_to_running_ms: open-loop Sleep(10 ms) submits at 200/s for 10 s from 16 threads; from the client's \
         wall clock just before the send to the runner's `task started` glog line (after its claim, µs resolution, \
         same machine); latency_* split it at the leader's `task submitted` and `task dispatched` lines",
    );
    report.note(
        "cache_show_us: GET /tasks/<id> of finished tasks (answered from the LevelDB cache; unfinished ones are \
         re-read from ZooKeeper), one keep-alive client, timed until the body is read; cache_list_ms: GET /tasks \
         (every record, cache_list_records of them) and cache_list_100_ms: GET /tasks?limit=100",
    );
    report.note(format!(
        "copy: CopyVolume through the daemon (default 256 MiB extents, io_depth 4, submit to `succeeded` polled \
         every 5 ms) vs cp --sparse=always + fsync, 2 GiB file with 256 MiB of data, source evicted from the page \
         cache before each copy, median of {COPY_ROUNDS} rounds in alternating order; MiB/s of the volume's length"
    ));
    report.note(
        "dispatcher_rss_mib_10k_tasks: the leader's VmRSS once 10,000 finished tasks are in its database (the \
         default max_records), all Sleep records; rss_mib_idle: before the first task",
    );
}
