//! The `zbs-taskd` daemon as operators run it: three real processes on loopback around one real
//! ZooKeeper, failed through their `file` health source and signals, with the outcome asserted
//! on their statuses, exit codes and logs (see `tests::cluster`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::Signal;
use tests::cluster::{daemon_binary, Cluster, ClusterBuilder, OnNetworkFailure};
use tests::cluster_options::DaemonConfig;
use tests::prelude::*;

use crate::{serialize, with_cluster};

/// Generous bound for anything that should happen "soon" on a busy 2-core machine.
const WAIT: Duration = Duration::from_secs(20);

/// How long a node whose health file says `fail` is watched for not leading again.
const NO_FLAP_WINDOW: Duration = Duration::from_secs(3);

/// The exit codes the daemon documents.
const EXIT_NETWORK_FAILURE: i32 = 75;
const EXIT_CONFIG: i32 = 78;

/// Checks that the node's log has `stop stage 1:` to `stop stage 8:`, in order, in its last stop.
fn assert_stop_stages_in_order(cluster: &Cluster, node: usize) -> Result<()> {
    let log = cluster.log(node);
    let last_stop =
        log.rfind("stop stage 1:").with_context(|| format!("node {node} logged no stop stage 1:\n{log}"))?;
    let mut at = last_stop;
    for stage in 1..=8 {
        let needle = format!("stop stage {stage}:");
        let found = log[at..]
            .find(&needle)
            .with_context(|| format!("node {node}: no `{needle}` after stage {}:\n{}", stage - 1, &log[last_stop..]))?;
        at += found + needle.len();
    }
    Ok(())
}

fn assert_no_crash(cluster: &Cluster) -> Result<()> {
    let cores = cluster.core_files();
    ensure!(cores.is_empty(), "core files: {cores:?}");
    let crash_lines = cluster.crash_lines();
    ensure!(crash_lines.is_empty(), "crash or self-join lines in the logs:\n{}", crash_lines.join("\n"));
    let overlaps = cluster.sampler().definite_overlaps();
    ensure!(overlaps.is_empty(), "two leaders at one instant: {overlaps:?}");
    Ok(())
}

fn wait_for_log(cluster: &Cluster, node: usize, needle: &str, timeout: Duration) -> Result<()> {
    cluster
        .wait_until(timeout, &format!("`{needle}` in node {node}'s log"), || cluster.log(node).contains(needle))
        .map(drop)
        .with_context(|| format!("log of node {node}:\n{}", cluster.log(node)))
}

#[test]
fn failed_health_hands_over_and_keeps_the_process() {
    with_cluster(Cluster::builder(), |cluster| {
        let old = cluster.wait_for_leader(WAIT)?;
        let old_pid = cluster.pid(old).context("the leader's process")?;
        ensure!(cluster.status(old)?.pid == old_pid, "the leader's status names another pid");

        cluster.set_health(old, false)?;
        let injected = Instant::now();
        let new = cluster.wait_for_new_leader(old, WAIT)?;
        let handed_over = injected.elapsed();
        eprintln!("health failure → node {new} leads after {handed_over:?}");
        wait_for_log(cluster, old, "stop stage 8:", WAIT)?;
        ensure!(cluster.pid(old) == Some(old_pid), "the old leader's process did not stay: {:?}", cluster.pid(old));
        assert_stop_stages_in_order(cluster, old)?;

        // While its file says fail it must not come back, and the new leader must stay.
        let window = Instant::now();
        thread::sleep(NO_FLAP_WINDOW);
        ensure!(!cluster.sampler().led_since(old, window), "the old leader led again while unhealthy");
        ensure!(cluster.leader() == Some(new), "leadership moved off node {new} while node {old} was unhealthy");
        ensure!(cluster.pid(old) == Some(old_pid), "the old leader's process exited while unhealthy");

        cluster.set_health(old, true)?;
        let rejoined = cluster
            .wait_until(WAIT, "the old leader to answer as a follower", || {
                cluster
                    .try_status(old)
                    .is_some_and(|status| status.role == "follower" && !status.stopping && status.members.len() == 3)
            })
            .with_context(|| format!("log of node {old}:\n{}", cluster.log(old)))?;
        eprintln!("node {old} rejoined as a follower {rejoined:?} after its health said ok");
        let status = cluster.status(old)?;
        ensure!(status.pid == old_pid, "the rejoined node runs as pid {}, not {old_pid}", status.pid);
        ensure!(cluster.leader() == Some(new), "the rejoined node took leadership back");
        assert_no_crash(cluster)
    });
}

/// SIGTERM or SIGINT on the leader: exit 0 after the ordered stop, and the next leader is elected
/// through ZooKeeper's watch, well before the session timeout could have expired the old session.
fn signal_on_the_leader(signal: Signal) {
    with_cluster(Cluster::builder(), |cluster| {
        let old = cluster.wait_for_leader(WAIT)?;
        let old_pid = cluster.pid(old).context("the leader's process")?;
        let sent = Instant::now();
        cluster.signal(old, signal)?;
        let new = cluster.wait_for_new_leader(old, WAIT)?;
        let handed_over = cluster.sampler().wait_for_leader_after(sent, old, WAIT)?.at - sent;
        eprintln!("{signal} → node {new} leads after {handed_over:?}");
        ensure!(
            handed_over < cluster.session_timeout(),
            "the new leader came after {handed_over:?}, not before the session timeout {:?}: not through the watch",
            cluster.session_timeout()
        );
        let status = cluster.wait_exit(old, WAIT)?;
        ensure!(status.code() == Some(0), "pid {old_pid} ended with {status} after {signal}, not exit code 0");
        assert_stop_stages_in_order(cluster, old)?;
        ensure!(
            cluster.log(old).contains("stopped on a signal; exiting"),
            "the old leader did not log its exit:\n{}",
            cluster.log(old)
        );
        let survivors = cluster.wait_until(WAIT, "the new leader to see two members", || {
            cluster.try_status(new).is_some_and(|status| status.members.len() == 2)
        });
        survivors.context("the stopped node's election node stayed")?;
        assert_no_crash(cluster)
    });
}

#[test]
fn sigterm_on_the_leader_exits_0_and_hands_over_through_the_watch() {
    signal_on_the_leader(Signal::SIGTERM);
}

#[test]
fn sigint_on_the_leader_exits_0_and_hands_over_through_the_watch() {
    signal_on_the_leader(Signal::SIGINT);
}

/// A regular file where the node's task cache directory goes: its dispatcher can never open
/// the task database.
fn break_task_cache(spec: &tests::cluster::NodeSpec) -> Result<()> {
    std::fs::write(spec.state_dir.join("task-cache"), b"not a directory\n").context("write the blocking file")
}

/// A leader whose dispatcher cannot run (here: its task database cannot be opened) does not
/// stay a leader that answers every task route 503: it hands leadership over and keeps its
/// process, until a node that can run the dispatcher leads and serves tasks.
#[test]
fn a_leader_that_cannot_run_its_dispatcher_hands_leadership_over() {
    let builder = ClusterBuilder::new().prepare_node(0, break_task_cache).prepare_node(1, break_task_cache);
    with_cluster(builder, |cluster| {
        let submit_to_node_3 = || -> bool {
            let spec = cluster.node(2);
            let url = format!("http://{}:{}/api/v2/task_center/sleep/create", spec.address, spec.dispatcher_port);
            ureq::post(&url)
                .set(taskd::access::TOKEN_HEADER, cluster.token())
                .send_json(serde_json::json!({ "duration_ms": 10 }))
                .is_ok_and(|response| response.status() == 201)
        };
        let serving = |what: &str| {
            cluster.wait_until(Duration::from_secs(90), what, || cluster.leader() == Some(2) && submit_to_node_3())
        };
        serving("node-3 leading and taking tasks")?;
        // Node-3 goes; a broken node is elected next and must hand over to node-3 once it is back.
        cluster.signal(2, Signal::SIGTERM)?;
        cluster.wait_exit(2, WAIT)?;
        cluster.wait_until(WAIT, "a broken node elected", || cluster.leader().is_some_and(|node| node < 2))?;
        cluster.restart(2)?;
        serving("node-3 leading and taking tasks again")?;
        let handed_over: Vec<usize> =
            (0..2).filter(|&node| cluster.log(node).contains("handing leadership over")).collect();
        ensure!(!handed_over.is_empty(), "no broken leader handed leadership over");
        for node in 0..2 {
            ensure!(cluster.is_running(node), "node {node}'s process exited");
        }
        assert_no_crash(cluster)
    });
}

/// After a hand-over, a follower that did not watch the old leader (it watches only its
/// predecessor) still names the new leader in its 421 answers, from a fresh read, and so a
/// client that asks it reaches the leader.
#[test]
fn a_follower_that_did_not_watch_the_old_leader_names_the_new_one() {
    with_cluster(ClusterBuilder::new(), |cluster| {
        cluster.wait_for_leader(WAIT)?;
        let mut by_sequence: Vec<(i64, usize)> = (0..cluster.n_nodes())
            .map(|node| Ok((cluster.status(node)?.sequence.context("a member has a sequence")?, node)))
            .collect::<Result<_>>()?;
        by_sequence.sort();
        let [(_, old_leader), (_, next), (_, last)] = by_sequence[..] else { bail!("three members: {by_sequence:?}") };
        cluster.signal(old_leader, Signal::SIGTERM)?;
        cluster.wait_exit(old_leader, WAIT)?;
        ensure!(cluster.wait_for_new_leader(old_leader, WAIT)? == next, "the next in line leads");
        let spec = cluster.node(last);
        let url = format!("http://{}:{}/api/v2/task_center/tasks", spec.address, spec.dispatcher_port);
        let expected = format!("{}:{}", cluster.node(next).address, cluster.node(next).dispatcher_port);
        let named = || -> Option<String> {
            match ureq::get(&url).call() {
                Err(ureq::Error::Status(421, response)) => response
                    .into_json::<serde_json::Value>()
                    .ok()
                    .and_then(|answer| answer["leader"].as_str().map(str::to_string)),
                _ => None,
            }
        };
        cluster.wait_until(Duration::from_secs(3), "the last follower naming the new leader", || {
            named().as_deref() == Some(expected.as_str())
        })?;
        for _ in 0..10 {
            ensure!(named().as_deref() == Some(expected.as_str()), "the follower's 421 went back to a stale leader");
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    });
}

#[test]
fn whole_outage_keeps_the_leader() {
    with_cluster(Cluster::builder(), |cluster| {
        let leader = cluster.wait_for_leader(WAIT)?;
        let leader_pid = cluster.pid(leader).context("the leader's process")?;
        let sequence = cluster.status(leader)?.sequence;
        let followers: Vec<usize> = (0..cluster.n_nodes()).filter(|&node| node != leader).collect();
        // The followers fail first and the test waits until ZooKeeper shows it, so that the
        // leader's guard has nothing healthy to hand over to when its own health fails.
        for &node in &followers {
            cluster.set_health(node, false)?;
        }
        cluster.wait_until(WAIT, "ZooKeeper to show both followers unhealthy", || {
            cluster
                .members_in_zookeeper()
                .is_ok_and(|members| members.len() == 3 && members.iter().filter(|member| !member.healthy).count() == 2)
        })?;
        let failed = Instant::now();
        cluster.set_health(leader, false)?;
        wait_for_log(cluster, leader, "keeping leadership (whole-outage guard)", WAIT)?;
        thread::sleep(NO_FLAP_WINDOW);
        let status = cluster.status(leader)?;
        ensure!(
            status.leader && status.pid == leader_pid && status.sequence == sequence,
            "the leader gave way: {status:?}"
        );
        ensure!(
            !cluster.log(leader).contains("stop stage 1:"),
            "the leader stopped its service:\n{}",
            cluster.log(leader)
        );
        for &node in &followers {
            ensure!(!cluster.sampler().led_since(node, failed), "node {node} led during the whole outage");
        }

        // Once one peer is healthy again, the guard lets the unhealthy leader go, and leadership
        // ends on the healthy node. (The election hands over to the next member by sequence,
        // healthy or not; an unhealthy one that gets it steps down in turn: see the report.)
        let healthy = followers[0];
        let recovered = Instant::now();
        cluster.set_health(healthy, true)?;
        cluster
            .wait_until(WAIT, &format!("the healthy node {healthy} to lead"), || cluster.leader() == Some(healthy))?;
        let unhealthy = followers[1];
        let interim: Vec<Instant> = cluster
            .sampler()
            .observations_since(recovered)
            .iter()
            .filter(|observation| observation.node == unhealthy && observation.is_leader())
            .map(|observation| observation.at)
            .collect();
        if let (Some(first), Some(last)) = (interim.first(), interim.last()) {
            eprintln!(
                "note: the unhealthy node {unhealthy} led for {:?} before the healthy node {healthy}",
                *last - *first
            );
        }
        ensure!(cluster.pid(leader) == Some(leader_pid), "the old leader's process did not stay");
        let settled = Instant::now();
        thread::sleep(Duration::from_secs(2));
        ensure!(cluster.leader() == Some(healthy), "leadership left the only healthy node");
        ensure!(
            (0..cluster.n_nodes()).all(|node| node == healthy || !cluster.sampler().led_since(node, settled)),
            "an unhealthy node led again after the healthy node took over"
        );
        assert_no_crash(cluster)
    });
}

#[test]
fn exit_mode_exits_75_until_the_start_limit_then_stays_up() {
    let builder = Cluster::builder()
        .nodes(1)
        // One node: nobody else could report healthy, so the guard is off for this scenario.
        .step_down_requires_healthy_peer(false)
        .on_network_failure(OnNetworkFailure::Exit { start_limit_burst: 2, start_limit_interval_sec: 60 });
    with_cluster(builder, |cluster| {
        for round in 1..=2 {
            if round > 1 {
                cluster.set_health(0, true)?;
                cluster.restart(0)?;
            }
            ensure!(cluster.wait_for_leader(WAIT)? == 0, "the only node does not lead");
            cluster.set_health(0, false)?;
            let status = cluster.wait_exit(0, WAIT)?;
            ensure!(
                status.code() == Some(EXIT_NETWORK_FAILURE),
                "round {round}: ended with {status}, not exit code {EXIT_NETWORK_FAILURE}\n{}",
                cluster.log(0)
            );
            assert_stop_stages_in_order(cluster, 0)?;
        }
        ensure!(cluster.node(0).state_dir.join("exit-counter").is_file(), "no exit counter in the state dir");

        cluster.set_health(0, true)?;
        let pid = cluster.restart(0)?;
        ensure!(cluster.wait_for_leader(WAIT)? == 0, "the only node does not lead");
        // The restarted process exports what the counter holds.
        let spec = cluster.node(0);
        let url = format!("http://{}:{}/metrics", spec.address, spec.dispatcher_port);
        let metrics = ureq::get(&url).call()?.into_string()?;
        ensure!(
            metrics.lines().any(|line| line == "zbs_taskd_exit_counter_exits 2"),
            "exit_counter_exits is not 2: {:?}",
            metrics.lines().find(|line| line.starts_with("zbs_taskd_exit_counter_exits"))
        );
        cluster.set_health(0, false)?;
        wait_for_log(cluster, 0, "exiting again would exceed systemd's start limit; staying up instead", WAIT)?;
        thread::sleep(Duration::from_secs(1));
        ensure!(cluster.pid(0) == Some(pid), "the node exited although the start limit was reached");
        let n_exits = cluster.log(0).matches("exiting for the network failure").count();
        ensure!(n_exits == 2, "{n_exits} exits logged, not 2");

        cluster.set_health(0, true)?;
        cluster
            .wait_until(WAIT, "the node to lead again", || cluster.try_status(0).is_some_and(|status| status.leader))?;
        ensure!(cluster.pid(0) == Some(pid), "the node restarted instead of rejoining");
        assert_no_crash(cluster)
    });
}

/// Runs the daemon with `args` (and the config `toml` when given); returns its exit code and stderr.
fn run_with_bad_config(dir: &Path, toml: Option<&str>, args: &[&str]) -> Result<(Option<i32>, String)> {
    let binary = daemon_binary()?;
    let mut command = Command::new(binary);
    if let Some(toml) = toml {
        let path = dir.join("taskd.toml");
        std::fs::write(&path, toml)?;
        command.arg("--config").arg(path);
    }
    let stderr_path = dir.join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path)?;
    let mut child =
        command.args(args).current_dir(dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).spawn()?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > WAIT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("zbs-taskd {args:?} did not exit within {WAIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Ok((status.code(), std::fs::read_to_string(stderr_path)?))
}

#[test]
fn bad_config_exits_78_naming_the_key() {
    let dir = tempfile::Builder::new().prefix("zbs-bad-config-").tempdir().expect("temp dir");
    let state_dir = dir.path().join("state");
    // Valid except for what each case adds (top-level keys only, so what a case appends is
    // top-level too); port 9 is never contacted, the daemon stops first.
    let base = DaemonConfig {
        node_id: Some("node-1".to_string()),
        zookeeper_hosts: Some("127.0.0.1:9".to_string()),
        state_dir: Some(state_dir.clone()),
        ..DaemonConfig::default()
    };
    let base = base.to_toml().expect("write the base configuration");
    let missing = dir.path().join("no-such-dir/taskd.toml");
    let missing = missing.to_str().expect("utf-8 temp path");
    let cases: Vec<(&str, Option<String>, Vec<&str>, &str)> = vec![
        ("unknown key", Some(format!("{base}bogus_key = 1\n")), vec![], "`bogus_key`"),
        (
            "session timeout out of range",
            Some(format!("{base}session_timeout_ms = 10\n")),
            vec![],
            "session_timeout_ms",
        ),
        (
            "session timeout not a number",
            Some(format!("{base}session_timeout_ms = \"fast\"\n")),
            vec![],
            "session_timeout_ms",
        ),
        ("unknown key in a section", Some(format!("{base}[health]\nfal = 2\n")), vec![], "`fal`"),
        ("bad flag value", Some(base.clone()), vec!["--dispatcher-port", "abc"], "--dispatcher-port"),
        ("flag out of range", Some(base.clone()), vec!["--session-timeout-ms", "10"], "session_timeout_ms"),
        ("missing explicit config file", None, vec!["--config", missing], missing),
    ];
    let mut failures = Vec::new();
    for (name, toml, args, key) in cases {
        match run_with_bad_config(dir.path(), toml.as_deref(), &args) {
            Ok((code, stderr)) => {
                if code != Some(EXIT_CONFIG) {
                    failures.push(format!("{name}: exit code {code:?}, not {EXIT_CONFIG}; stderr:\n{stderr}"));
                } else if !stderr.contains(key) {
                    failures.push(format!("{name}: stderr does not name `{key}`:\n{stderr}"));
                } else if stderr.contains("panicked") {
                    failures.push(format!("{name}: panic in stderr:\n{stderr}"));
                }
            }
            Err(error) => failures.push(format!("{name}: {error:#}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_failed_test_keeps_the_dirs_and_stops_every_daemon_gracefully() {
    let (sender, receiver) = std::sync::mpsc::channel::<(Vec<u32>, std::path::PathBuf, std::path::PathBuf)>();
    let failed_test = thread::spawn(move || {
        let _serial = serialize();
        let cluster = Cluster::builder().nodes(2).start().expect("start the cluster");
        let pids = (0..cluster.n_nodes()).filter_map(|node| cluster.pid(node)).collect();
        let _ = sender.send((pids, cluster.dir().to_path_buf(), cluster.zookeeper().dir().to_path_buf()));
        panic!("a deliberate failure, to check that the cluster fixture keeps its dirs");
    });
    assert!(failed_test.join().is_err(), "the failing thread did not panic");
    let (pids, dir, zookeeper_dir) = receiver.recv().expect("the failing thread reported its cluster");
    assert_eq!(pids.len(), 2, "not every node ran");
    for pid in &pids {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), None).is_ok();
        assert!(!alive, "pid {pid} still runs after a failed test");
    }
    let logs: Vec<String> = (1..=2)
        .map(|node| std::fs::read_to_string(dir.join(format!("n{node}/taskd.log"))).unwrap_or_default())
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&zookeeper_dir);
    for (node, log) in logs.iter().enumerate() {
        // SIGTERM from the fixture's drop, not the SIGKILL of the parent-death signal.
        assert!(
            log.contains("zbs-taskd exiting code=0"),
            "node {node}'s log was not kept or it did not stop gracefully:\n{log}"
        );
    }
}
