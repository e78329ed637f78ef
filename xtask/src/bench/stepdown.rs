//! The stepdown benchmark: three real `zbs-taskd` processes (release build) on loopback around
//! one ZooKeeper; each round fails the leader, by writing `fail` into its health file or by
//! SIGTERM, and times the next leader's `became leader` from the moment of the injection.
//!
//! Two clocks measure the same hand-over. The primary numbers come from the new leader's own
//! glog line `became leader` (logged on its loop when `RoleChanged{leader:true}` arrives; local
//! wall clock with microseconds) against the wall-clock time taken just before the injection,
//! on the same machine. The `_polled` numbers are when the fixture's sampler, polling every
//! node's status every 2 ms, first saw another node say leader: an upper bound that includes the
//! poll gap and the HTTP round trip.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use tests::cluster::{Cluster, Signal};
use tests::prelude::*;

use super::report::{percentile, Report};

const ROUNDS: usize = 20;
const N_NODES: usize = 3;
/// The file source's read interval: the goal is stated for 200 ms.
const HEALTH_INTERVAL: Duration = Duration::from_millis(200);
const SESSION_TIMEOUT: Duration = Duration::from_millis(6000);
const SAMPLE_INTERVAL: Duration = Duration::from_millis(2);
const WAIT: Duration = Duration::from_secs(30);

/// One hand-over, in milliseconds from the injection.
struct Round {
    /// The new leader's `became leader` glog line.
    new_leader_logged: f64,
    /// The sampler's first sight of the new leader.
    new_leader_polled: f64,
    /// The old leader's `stop stage 1:` glog line: when it decided to stop.
    old_leader_stopping: f64,
}

pub fn run() -> Result<()> {
    let cluster = Cluster::builder()
        .nodes(N_NODES)
        .session_timeout(SESSION_TIMEOUT)
        .health_interval(HEALTH_INTERVAL)
        .sample_interval(SAMPLE_INTERVAL)
        .start()
        .context("start the cluster")?;
    eprintln!("stepdown bench: {} nodes from {} in {}", N_NODES, cluster.binary().display(), cluster.dir().display());

    let measured = measure(&cluster);
    if measured.is_err() {
        cluster.keep_dir_on_drop();
    }
    let (health_rounds, sigterm_rounds, sigterm_to_exit) = measured?;
    let core_files = cluster.core_files();
    let crash_lines = cluster.crash_lines();
    let overlaps = cluster.sampler().definite_overlaps();

    let mut report = Report::new("stepdown");
    let mut set_percentiles = |name: &str, mut samples: Vec<f64>| {
        report.set(&format!("{name}_p50"), percentile(&mut samples, 0.5));
        report.set(&format!("{name}_p99"), percentile(&mut samples, 0.99));
        report.set(&format!("{name}_max"), percentile(&mut samples, 1.0));
    };
    set_percentiles(
        "health_fail_to_new_leader_ms",
        health_rounds.iter().map(|round| round.new_leader_logged).collect(),
    );
    set_percentiles(
        "health_fail_to_new_leader_polled_ms",
        health_rounds.iter().map(|round| round.new_leader_polled).collect(),
    );
    set_percentiles("health_fail_to_stop_ms", health_rounds.iter().map(|round| round.old_leader_stopping).collect());
    set_percentiles(
        "health_stop_to_new_leader_ms",
        health_rounds.iter().map(|round| round.new_leader_logged - round.old_leader_stopping).collect(),
    );
    set_percentiles("sigterm_to_stop_ms", sigterm_rounds.iter().map(|round| round.old_leader_stopping).collect());
    set_percentiles("sigterm_to_new_leader_ms", sigterm_rounds.iter().map(|round| round.new_leader_logged).collect());
    set_percentiles(
        "sigterm_to_new_leader_polled_ms",
        sigterm_rounds.iter().map(|round| round.new_leader_polled).collect(),
    );
    set_percentiles("sigterm_to_exit_ms", sigterm_to_exit);
    report.set("rounds", ROUNDS as f64);
    report.set("core_files", core_files.len() as f64);
    report.set("crash_lines", crash_lines.len() as f64);
    report.set("two_leader_overlaps", overlaps.len() as f64);
    report.set("n_nodes", N_NODES as f64);
    report.set("health_file_interval_ms", HEALTH_INTERVAL.as_millis() as f64);
    report.set("session_timeout_ms", SESSION_TIMEOUT.as_millis() as f64);
    report.note("3 zbs-taskd release processes on 127.0.0.1-3, one standalone ZooKeeper (tests fixture, no fsync), file health source");
    report.note(
        "*_new_leader_ms: from the wall-clock time taken just before the injection (the health file renamed to `fail`, or \
         SIGTERM sent) to the timestamp of the new leader's own glog line `became leader` (local time, microseconds; same \
         machine, same clock), i.e. its RoleChanged{leader:true}",
    );
    report.note("*_polled_ms: to the first status answer of another node saying leader, polling every node every 2 ms (an upper bound)");
    report.note(format!(
        "health_fail_to_stop_ms: to the old leader's `stop stage 1:` line; it includes detection by the file source read every {} ms",
        HEALTH_INTERVAL.as_millis()
    ));
    report.note("health_stop_to_new_leader_ms: from the old leader's `stop stage 1:` line to the new leader's `became leader` line, both glog times: the hand-over itself");
    report.note("sigterm_to_stop_ms: to the old leader's `stop stage 1:` line; the supervisor looks at the signal flag every 20 ms");
    report.note("each injection waits a pseudo-random 0-200 ms first, so that it falls at every phase of the daemons' periodic reads");
    report.note("after each round the old leader is restarted as a fresh process (its health ok) and the next round starts once ZooKeeper shows all three members healthy");
    report.note(format!("core_files: core files found in the nodes' dirs (their working directories, core limit raised): {core_files:?}"));
    if !crash_lines.is_empty() {
        report.note(format!("crash lines: {crash_lines:?}"));
    }
    report.write()?;
    Ok(())
}

/// Health rounds, then SIGTERM rounds (with each old leader's time to exit).
fn measure(cluster: &Cluster) -> Result<(Vec<Round>, Vec<Round>, Vec<f64>)> {
    let mut health_rounds = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        health_rounds.push(health_round(cluster).with_context(|| format!("health round {round}"))?);
    }
    let mut sigterm_rounds = Vec::with_capacity(ROUNDS);
    let mut sigterm_to_exit = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let (measured, exited) = sigterm_round(cluster).with_context(|| format!("sigterm round {round}"))?;
        sigterm_rounds.push(measured);
        sigterm_to_exit.push(exited);
    }
    Ok((health_rounds, sigterm_rounds, sigterm_to_exit))
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn millis_between(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(elapsed) => millis(elapsed),
        Err(error) => -millis(error.duration()),
    }
}

/// Waits until every node serves and ZooKeeper shows every member healthy, so that the leader's
/// whole-outage guard has somewhere to hand over to; returns the leader.
fn wait_ready(cluster: &Cluster) -> Result<usize> {
    let n_nodes = cluster.n_nodes();
    cluster.wait_until(WAIT, "every member serving and healthy in ZooKeeper", || {
        (0..n_nodes).all(|node| {
            cluster.try_status(node).is_some_and(|status| !status.stopping && status.members.len() == n_nodes)
        }) && cluster
            .members_in_zookeeper()
            .is_ok_and(|members| members.len() == n_nodes && members.iter().all(|member| member.healthy))
    })?;
    cluster.wait_for_leader(WAIT)
}

/// The first `became leader` line of `node` at or after `since`, in ms after `since`.
fn became_leader_after(cluster: &Cluster, node: usize, since: SystemTime) -> Result<f64> {
    first_log_line_after(cluster, node, "became leader", since)
}

fn first_log_line_after(cluster: &Cluster, node: usize, needle: &str, since: SystemTime) -> Result<f64> {
    // The glog time has microseconds; the injection time is taken before the injection, so a
    // line of this round cannot be earlier than it.
    let found = cluster
        .log_times(node, needle)
        .into_iter()
        .find(|&time| time >= since)
        .with_context(|| format!("node {node} logged no `{needle}` after the injection"))?;
    Ok(millis_between(since, found))
}

fn wait_for_log_line(cluster: &Cluster, node: usize, needle: &str, since: SystemTime) -> Result<f64> {
    let mut found = None;
    cluster.wait_until(WAIT, &format!("`{needle}` in node {node}'s log"), || {
        found = first_log_line_after(cluster, node, needle, since).ok();
        found.is_some()
    })?;
    found.context("no log line")
}

/// Sleeps a pseudo-random part of `period`, so that the injections fall at every phase of the
/// daemons' periodic reads (the health file's, the supervisor's signal check) and not at one
/// phase fixed by the previous round's timing.
fn jitter(period: Duration) {
    let nanos =
        SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.subsec_nanos() as u64);
    // A multiplicative hash of the clock's low bits: spread enough for a phase.
    let spread = nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
    std::thread::sleep(Duration::from_nanos(spread % period.as_nanos().max(1) as u64));
}

fn health_round(cluster: &Cluster) -> Result<Round> {
    let old = wait_ready(cluster)?;
    jitter(HEALTH_INTERVAL);
    let injected_wall = SystemTime::now();
    let injected = Instant::now();
    cluster.set_health(old, false)?;
    let new = cluster.wait_for_new_leader(old, WAIT)?;
    let polled = cluster.sampler().wait_for_leader_after(injected, old, WAIT)?;
    let new_leader_logged = wait_for_log_line(cluster, new, "became leader", injected_wall)?;
    let old_leader_stopping = wait_for_log_line(cluster, old, "stop stage 1:", injected_wall)?;
    ensure!(polled.node == new, "the sampler saw node {} lead first, the cluster says node {new}", polled.node);
    // A fresh process for the old leader: its re-entry back-off would otherwise double with
    // every round it loses.
    cluster.set_health(old, true)?;
    cluster.signal(old, Signal::SIGTERM)?;
    let status = cluster.wait_exit(old, WAIT)?;
    if status.code() != Some(0) {
        bail!("node {old} ended with {status} after SIGTERM");
    }
    cluster.restart(old)?;
    Ok(Round { new_leader_logged, new_leader_polled: millis(polled.at - injected), old_leader_stopping })
}

fn sigterm_round(cluster: &Cluster) -> Result<(Round, f64)> {
    let old = wait_ready(cluster)?;
    jitter(HEALTH_INTERVAL);
    let injected_wall = SystemTime::now();
    let injected = Instant::now();
    cluster.signal(old, Signal::SIGTERM)?;
    let new = cluster.wait_for_new_leader(old, WAIT)?;
    let status = cluster.wait_exit(old, WAIT)?;
    let exited = millis(injected.elapsed());
    if status.code() != Some(0) {
        bail!("node {old} ended with {status} after SIGTERM");
    }
    let polled = cluster.sampler().wait_for_leader_after(injected, old, WAIT)?;
    let new_leader_logged = became_leader_after(cluster, new, injected_wall)?;
    let old_leader_stopping = first_log_line_after(cluster, old, "stop stage 1:", injected_wall)?;
    cluster.restart(old)?;
    Ok((Round { new_leader_logged, new_leader_polled: millis(polled.at - injected), old_leader_stopping }, exited))
}
