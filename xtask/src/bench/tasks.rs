//! `cargo xtask bench tasks`: the Task Center measured through a real three-node cluster
//! (`tests::cluster`: three release `zbs-taskd` processes on 127.0.0.1-3 around one standalone
//! ZooKeeper from the tests fixture, which does not fsync), every number in one run, through the
//! leader's HTTP API as a client sees it.
//!
//! # Phases, in order
//! 1. **Idle RSS** of the leader once its dispatcher answers and the three runners registered.
//! 2. **Submit-to-running latency, fresh database** ([`latency`]): 1,000 open-loop Sleep submits
//!    (10 ms tasks) at 200/s with 64 slots per runner (nothing queues), keys `fresh_*`. The end
//!    of each sample is the runner's own `task started` glog line (microseconds, local clock,
//!    same machine as the client's wall clock read just before the send); the leader's
//!    `task submitted` and `task dispatched` lines split it into persist, dispatch and start.
//! 3. **Submit throughput against raw ZooKeeper creates**: every runner drained first (the drain
//!    API), so that the submits measure the submit path (HTTP, validation, the ZooKeeper create,
//!    the cache put, the answer; plus the check each submit asks for, which finds no free
//!    runner) and not dispatch work competing on the dispatcher's one worker. An acknowledged
//!    submit is a 201, sent after the ZooKeeper create returned. `CLIENTS` keep-alive clients,
//!    closed loop ([`load`]). The reference ([`raw_zk`]): `CLIENTS` threads on one `ZkSession`
//!    creating persistent nodes that hold an encoded Sleep record under UUID names. After a raw
//!    warm-up (ZooKeeper's JIT), raw and submit rounds alternate and each rate is a total over
//!    its rounds; one thread alone gives `raw_zk_create_serial_per_s`, the ceiling of anything
//!    that waits for one create per round trip. The machine's CPU share during each kind of
//!    round is kept ([`machine`]). Then the runners are undrained and the backlog runs.
//! 4. **Submit-to-running latency after that history**: 2,000 submits at 200/s (10 s) while a
//!    Prometheus-like scraper reads the leader's `/metrics` every 100 ms, the headline
//!    `submit_to_running_ms_*` (a daemon that has run a few thousand tasks, and is monitored, is
//!    the usual case; the fresh numbers show how much the history costs), and 2,000 without
//!    scraping beside them (`unscraped_*`), in rounds of 1,000 ordered unscraped, scraped,
//!    scraped, unscraped; `metrics_scrape_ms_*` and `metrics_families` say what a scrape costs.
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
//! compete for them, so absolute numbers move between runs (the `cpu_busy_*` and
//! `*_latency_cpu_busy` keys show how loaded the machine was); the ratios measured in one run are
//! the meaningful part. Log lines are written at `info` (one per submit, dispatch, start, end).
//! `*_latency_zk_requests_per_task` counts every ZooKeeper request (dispatcher and runners)
//! during a latency phase, divided by its tasks. `ZBS_BENCH_KEEP_DIR=1` keeps the cluster's dir
//! (the daemons' logs) for a closer look.

mod api;
mod copy;
mod latency;
mod load;
mod machine;
mod raw_zk;
mod scrape;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tests::cluster::Cluster;
use tests::prelude::*;

use self::api::Api;
use self::machine::CpuSample;
use super::report::{bench_dir, percentile, Report};

const N_NODES: usize = 3;
/// The most the configuration allows: with 192 slots nothing queues at 200 tasks/s.
const RUNNER_SLOTS: u32 = 64;
/// Concurrent clients of the submit and raw-create phases.
const CLIENTS: usize = 4;
const N_RAW_WARM_UP: usize = 1_000;
const N_RAW_SERIAL_CREATES: usize = 500;
const N_THROUGHPUT_ROUNDS: usize = 2;
const N_SUBMITS_PER_ROUND: usize = 1_000;
const LATENCY_RATE_PER_S: f64 = 200.0;
const N_LATENCY_SUBMITS: usize = 2_000;
const N_FRESH_LATENCY_SUBMITS: usize = 1_000;
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
    // One dir per run: a second run at the same time (another shell, `bench all`) must not
    // remove this one's files.
    let work = bench_dir().join(format!("tasks-work-{}", std::process::id()));
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
        .configure(|config| {
            config.allowed_roots = Some(vec![work.to_path_buf()]);
            config.runner_slots = Some(RUNNER_SLOTS);
        })
        .start()
        .context("start the cluster")?;
    eprintln!("tasks bench: {} nodes from {} in {}", N_NODES, cluster.binary().display(), cluster.dir().display());
    let mut report = Report::new("tasks");
    // Other work on the machine moves every number here; the load before the run says how much.
    if let Some(load) = loadavg_1m() {
        report.set("machine_loadavg_1m_at_start", load);
    }
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

    phase("submit-to-running latency at 200/s, fresh database");
    latency_phase(cluster, &api, N_FRESH_LATENCY_SUBMITS, "fresh_", report)?;
    report.set("rss_mib_after_fresh_latency", rss_mib(leader_pid)?);

    phase("submit throughput and raw ZooKeeper creates (runners drained)");
    let node_ids: Vec<String> = (0..N_NODES).map(|node| cluster.node(node).node_id.clone()).collect();
    set_all_draining(cluster, &api, &node_ids, true)?;
    throughput_phase(cluster, &api, report)?;
    ensure!(api.list("state=running&limit=1")?.is_empty(), "a task started while every runner was drained");
    report.set("rss_mib_after_submits", rss_mib(leader_pid)?);

    phase("backlog runs");
    set_all_draining(cluster, &api, &node_ids, false)?;
    let backlog = load::wait_idle(&api, IDLE_TIMEOUT)?;
    report.set("backlog_run_per_s", (N_SUBMITS_PER_ROUND * N_THROUGHPUT_ROUNDS) as f64 / backlog.as_secs_f64());
    report.set("rss_mib_after_backlog", rss_mib(leader_pid)?);

    phase("submit-to-running latency at 200/s, after the backlog, with and without /metrics scraped every 100 ms");
    scraped_latency_phase(cluster, &api, leader, report)?;
    report.set("rss_mib_after_latency", rss_mib(leader_pid)?);

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
    report.set("dispatcher_rss_anon_mib_10k_tasks", status_mib(leader_pid, "RssAnon")?);
    report.set("dispatcher_peak_rss_mib", status_mib(leader_pid, "VmHWM")?);
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

/// Raw creates and submits in alternating rounds (after a raw warm-up of ZooKeeper's JIT), so
/// that both see the same machine; the rates are totals over the rounds.
fn throughput_phase(cluster: &Cluster, api: &Api, report: &mut Report) -> Result<()> {
    let connect = cluster.zookeeper().connect_string();
    raw_zk::time_creates(&connect, N_RAW_WARM_UP, CLIENTS)?;
    let serial = raw_zk::time_creates(&connect, N_RAW_SERIAL_CREATES, 1)?;
    let (mut raw_time, mut submit_time) = (Duration::ZERO, Duration::ZERO);
    let (mut raw_cpu, mut submit_cpu) = (0.0, 0.0);
    let mut submit_round_rates = Vec::new();
    for _ in 0..N_THROUGHPUT_ROUNDS {
        let before = CpuSample::now()?;
        raw_time += raw_zk::time_creates(&connect, N_SUBMITS_PER_ROUND, CLIENTS)?;
        let between = CpuSample::now()?;
        let submitted = load::submit_sleeps(api, N_SUBMITS_PER_ROUND, CLIENTS, 0)?;
        let after = CpuSample::now()?;
        submit_time += submitted.elapsed;
        submit_round_rates.push(submitted.per_s());
        raw_cpu += between.busy_since(&before) / N_THROUGHPUT_ROUNDS as f64;
        submit_cpu += after.busy_since(&between) / N_THROUGHPUT_ROUNDS as f64;
    }
    let n = (N_SUBMITS_PER_ROUND * N_THROUGHPUT_ROUNDS) as f64;
    let (raw, submit) = (n / raw_time.as_secs_f64(), n / submit_time.as_secs_f64());
    report.set("raw_zk_create_per_s", raw);
    report.set("raw_zk_create_serial_per_s", N_RAW_SERIAL_CREATES as f64 / serial.as_secs_f64());
    report.set("submit_per_s", submit);
    report.set("submit_vs_raw_ratio", submit / raw);
    report.set("submit_per_s_round_min", submit_round_rates.iter().copied().fold(f64::INFINITY, f64::min));
    report.set("submit_per_s_round_max", submit_round_rates.iter().copied().fold(0.0, f64::max));
    report.set("cpu_busy_raw_creates", raw_cpu);
    report.set("cpu_busy_submits", submit_cpu);
    Ok(())
}

/// Open-loop submits at `LATENCY_RATE_PER_S`; sets `{prefix}submit_to_running_ms_*` and the
/// breakdown `{prefix}latency_*`.
fn latency_phase(cluster: &Cluster, api: &Api, n: usize, prefix: &str, report: &mut Report) -> Result<()> {
    let mut run = latency_run(cluster, api, n)?;
    report_latency(&mut run, prefix, report);
    Ok(())
}

/// The samples of one or more open-loop runs (merged by `absorb`).
#[derive(Default)]
struct LatencyRun {
    to_running: Vec<f64>,
    to_persisted: Vec<f64>,
    persisted_to_dispatched: Vec<f64>,
    dispatched_to_running: Vec<f64>,
    acks: Vec<f64>,
    lag_max_ms: f64,
    n_sent: usize,
    /// CPU busy share during each run, weighted by its submits.
    cpu_weighted: f64,
    zk_packets: u64,
}

impl LatencyRun {
    fn absorb(&mut self, other: LatencyRun) {
        self.to_running.extend(other.to_running);
        self.to_persisted.extend(other.to_persisted);
        self.persisted_to_dispatched.extend(other.persisted_to_dispatched);
        self.dispatched_to_running.extend(other.dispatched_to_running);
        self.acks.extend(other.acks);
        self.lag_max_ms = self.lag_max_ms.max(other.lag_max_ms);
        self.n_sent += other.n_sent;
        self.cpu_weighted += other.cpu_weighted;
        self.zk_packets += other.zk_packets;
    }
}

/// `n` open-loop submits at `LATENCY_RATE_PER_S`, until every task ran; the samples from the
/// daemons' log lines.
fn latency_run(cluster: &Cluster, api: &Api, n: usize) -> Result<LatencyRun> {
    let packets_before = machine::zk_packets_received(cluster.zookeeper())?;
    let cpu_before = CpuSample::now()?;
    let sent = latency::open_loop(api, n, LATENCY_RATE_PER_S, LATENCY_SENDERS, LATENCY_SLEEP_MS)?;
    let cpu = CpuSample::now()?.busy_since(&cpu_before);
    load::wait_idle(api, IDLE_TIMEOUT)?;
    let packets = machine::zk_packets_received(cluster.zookeeper())?.saturating_sub(packets_before);
    let submitted = latency::task_times(cluster, "task submitted");
    let dispatched = latency::task_times(cluster, "task dispatched");
    let started = latency::task_times(cluster, "task started");
    let mut run = LatencyRun {
        n_sent: sent.len(),
        cpu_weighted: cpu * sent.len() as f64,
        zk_packets: packets,
        ..LatencyRun::default()
    };
    let mut missing = 0;
    for sample in &sent {
        let times = (submitted.get(&sample.task_id), dispatched.get(&sample.task_id), started.get(&sample.task_id));
        let (Some(&persisted), Some(&dispatched), Some(&running)) = times else {
            missing += 1;
            continue;
        };
        run.to_running.push(latency::millis_between(sample.sent, running));
        run.to_persisted.push(latency::millis_between(sample.sent, persisted));
        run.persisted_to_dispatched.push(latency::millis_between(persisted, dispatched));
        run.dispatched_to_running.push(latency::millis_between(dispatched, running));
    }
    ensure!(missing * 100 <= sent.len(), "{missing} of {} latency tasks have no log lines", sent.len());
    run.acks = sent.iter().map(|sample| sample.ack.as_secs_f64() * 1000.0).collect();
    run.lag_max_ms = sent.iter().map(|sample| sample.lag).max().unwrap_or_default().as_secs_f64() * 1000.0;
    Ok(run)
}

/// Sets `{prefix}submit_to_running_ms_*`, the breakdown `{prefix}latency_*` and the run's load.
fn report_latency(run: &mut LatencyRun, prefix: &str, report: &mut Report) {
    let mut set_percentiles = |name: &str, samples: &mut Vec<f64>| {
        report.set(&format!("{prefix}{name}_p50"), percentile(samples, 0.5));
        report.set(&format!("{prefix}{name}_p99"), percentile(samples, 0.99));
        report.set(&format!("{prefix}{name}_max"), percentile(samples, 1.0));
    };
    set_percentiles("submit_to_running_ms", &mut run.to_running);
    set_percentiles("latency_submit_to_persisted_ms", &mut run.to_persisted);
    set_percentiles("latency_persisted_to_dispatched_ms", &mut run.persisted_to_dispatched);
    set_percentiles("latency_dispatched_to_running_ms", &mut run.dispatched_to_running);
    set_percentiles("latency_submit_ack_ms", &mut run.acks);
    report.set(&format!("{prefix}latency_send_lag_ms_max"), run.lag_max_ms);
    report.set(&format!("{prefix}latency_samples"), run.to_running.len() as f64);
    let n_sent = run.n_sent.max(1) as f64;
    report.set(&format!("{prefix}latency_cpu_busy"), run.cpu_weighted / n_sent);
    report.set(&format!("{prefix}latency_zk_requests_per_task"), run.zk_packets as f64 / n_sent);
    report.set("latency_rate_per_s", LATENCY_RATE_PER_S);
}

/// The latency after the backlog with and without a 100 ms `/metrics` scrape of the leader, in
/// rounds of `N_LATENCY_SUBMITS / 2` ordered unscraped, scraped, scraped, unscraped (so that a
/// drift over the phase, such as the growing history, weighs on both alike): the headline
/// `submit_to_running_ms_*` is scraped, `unscraped_*` beside it, and `metrics_scrape_*` what the
/// scrapes cost.
fn scraped_latency_phase(cluster: &Cluster, api: &Api, leader: usize, report: &mut Report) -> Result<()> {
    let metrics_url =
        format!("http://{}:{}/metrics", cluster.node(leader).address, cluster.node(leader).dispatcher_port);
    let n_round = N_LATENCY_SUBMITS / 2;
    let (mut scraped, mut unscraped) = (LatencyRun::default(), LatencyRun::default());
    let mut scrape_ms = Vec::new();
    let mut n_families = 0;
    for scrape_this_round in [false, true, true, false] {
        if !scrape_this_round {
            unscraped.absorb(latency_run(cluster, api, n_round)?);
            continue;
        }
        let stop_scraping = std::sync::atomic::AtomicBool::new(false);
        let (run, scrapes) = std::thread::scope(|scope| {
            let scraper = scope.spawn(|| scrape::scrape_until(&metrics_url, &stop_scraping));
            let run = latency_run(cluster, api, n_round);
            stop_scraping.store(true, std::sync::atomic::Ordering::Release);
            let scrapes = scraper.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the scraper panicked")));
            (run, scrapes)
        });
        scraped.absorb(run?);
        let scrapes = scrapes?;
        scrape_ms.extend(scrapes.durations_ms);
        n_families = scrapes.n_families;
    }
    let scraped_p99 = percentile(&mut scraped.to_running.clone(), 0.99);
    let unscraped_p99 = percentile(&mut unscraped.to_running.clone(), 0.99);
    report.set("scraped_vs_unscraped_p99_ratio", scraped_p99 / unscraped_p99);
    report_latency(&mut unscraped, "unscraped_", report);
    report_latency(&mut scraped, "", report);
    report.set("metrics_scrape_ms_p50", percentile(&mut scrape_ms, 0.5));
    report.set("metrics_scrape_ms_p99", percentile(&mut scrape_ms, 0.99));
    report.set("metrics_scrapes", scrape_ms.len() as f64);
    report.set("metrics_families", n_families as f64);
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

/// The 1-minute load average, from `/proc/loadavg`.
fn loadavg_1m() -> Option<f64> {
    fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// `VmRSS` of `pid` in MiB.
fn rss_mib(pid: u32) -> Result<f64> {
    status_mib(pid, "VmRSS")
}

/// A `kB` field of `/proc/<pid>/status` in MiB.
fn status_mib(pid: u32, field: &str) -> Result<f64> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("no {field} in {}", path.display()))?;
    Ok(kib / 1024.0)
}

fn add_notes(report: &mut Report) {
    report.note(
        "3 zbs-taskd release processes on 127.0.0.1-3, runner_slots = 64, one standalone ZooKeeper (tests fixture, \
         no fsync); 2 cores shared by the daemons, ZooKeeper and the client",
    );
    report.note(format!(
        "submit_per_s: Sleep submits from {CLIENTS} keep-alive clients (closed loop), every runner drained so \
         nothing is dispatched; acknowledged = the 201 sent after the ZooKeeper create returned; \
         raw_zk_create_per_s: persistent creates of an encoded Sleep record (same size) under UUID names through \
         zookeeper-client (quorum::ZkSession), one session shared by {CLIENTS} threads; after {N_RAW_WARM_UP} \
         warm-up creates, {N_THROUGHPUT_ROUNDS} alternating rounds of {N_SUBMITS_PER_ROUND} each, rates are totals; \
         raw_zk_create_serial_per_s: one thread, one create per round trip"
    ));
    report.note(
        "submit_to_running_ms: open-loop Sleep(10 ms) submits at 200/s for 10 s from 16 threads, after ~4,000 \
         tasks ran (fresh_*: 1,000 submits on a fresh database); from the client's wall clock just before the send \
         to the runner's `task started` glog line (after its claim, µs resolution, same machine); latency_* split \
         it at the leader's `task submitted` and `task dispatched` lines",
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
         default max_records), all Sleep records, RssAnon its anonymous part, peak_rss VmHWM; rss_mib_idle: before \
         the first task, rss_mib_after_*: after each phase",
    );
}
