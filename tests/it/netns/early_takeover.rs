//! The opt-in early take-over (issue 14, host death): the leader's namespace loses both links at
//! once, silently (the switch side detached, as a host that lost power looks to its peers). With
//! `early_takeover_ms` on, the member next in line takes the silent leader's election node over
//! once every healthy member has lost it on both networks for that long: another node leads well
//! before the session timeout — while the cut-off leader's task keeps its owner node until the
//! session expires (the leader may be alive and its runner still writing until its lease lapses).
//! Off (the default), nobody can lead before the old session expires.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use tests::netns::{Cut, NetnsCluster, NetnsClusterBuilder, Network, RUNNER_PORT};

use super::{leader_with_pid, with_cluster, WAIT};

/// Long enough that "well before" the session's expiry is not a race on a loaded machine.
const SESSION_TIMEOUT: Duration = Duration::from_secs(12);

/// The option under test (at most half the session timeout, the configuration's rule).
const EARLY_TAKEOVER_MS: u64 = 800;

/// A daemon binary that runs the fixture's `zbs-taskd` with `--early-takeover-ms` (the fixture
/// writes the config file; a flag wins over it). The script lives as long as the returned dir.
fn daemon_with_early_takeover() -> Result<(tempfile::TempDir, PathBuf)> {
    let binary = tests::cluster::daemon_binary()?;
    let dir = tempfile::Builder::new().prefix("zbs-early-takeover-").tempdir().context("create the wrapper's dir")?;
    let wrapper = dir.path().join("zbs-taskd");
    let script = format!("#!/bin/sh\nexec {} --early-takeover-ms {EARLY_TAKEOVER_MS} \"$@\"\n", binary.display());
    std::fs::write(&wrapper, script).context("write the wrapper")?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).context("chmod the wrapper")?;
    Ok((dir, wrapper))
}

fn builder() -> NetnsClusterBuilder {
    NetnsCluster::builder().session_timeout(SESSION_TIMEOUT)
}

/// Cuts both of `node`'s links at the switch at once; returns when.
fn cut_off(cluster: &NetnsCluster, node: usize) -> Result<Instant> {
    let cut_at = Instant::now();
    cluster.cut(node, Network::Management, Cut::Detach)?;
    cluster.cut(node, Network::Data, Cut::Detach)?;
    Ok(cut_at)
}

const PREFIX: &str = "/api/v2/task_center";

/// A task's record as `node`'s dispatcher shows it.
fn show(cluster: &NetnsCluster, node: usize, task_id: &str) -> Result<Value> {
    let (status, record) = cluster.http("GET", &cluster.api_url(node, &format!("{PREFIX}/tasks/{task_id}")), None)?;
    ensure!(status == 200, "show {task_id}: {status} {record}");
    Ok(record)
}

/// Starts a long sleep task that only `leader`'s own runner may take (the others drained) and
/// waits until that runner has claimed it; returns its id.
fn task_on_leaders_runner(cluster: &NetnsCluster, leader: usize) -> Result<String> {
    for node in (0..cluster.n_nodes()).filter(|&node| node != leader) {
        let node_id = &cluster.node(node).node_id;
        let url = cluster.api_url(leader, &format!("{PREFIX}/runners/{node_id}/drain"));
        let (status, answer) = cluster.http("POST", &url, Some(&json!({})))?;
        ensure!(status < 300, "drain {node_id}: {status} {answer}");
        cluster.wait_until(WAIT, &format!("{node_id} drained"), || {
            cluster.http("GET", &cluster.api_url(leader, &format!("{PREFIX}/runners")), None).is_ok_and(
                |(_, answer)| {
                    answer["runners"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|runner| runner["node_id"] == json!(node_id) && runner["draining"] == json!(true))
                },
            )
        })?;
    }
    let url = cluster.api_url(leader, &format!("{PREFIX}/sleep/create"));
    let (status, answer) = cluster.http("POST", &url, Some(&json!({ "duration_ms": 120_000 })))?;
    ensure!(status == 201, "submit: {status} {answer}");
    let task_id = answer["task_id"].as_str().context("no task_id")?.to_string();
    let leaders_runner = format!("{}:{RUNNER_PORT}", cluster.node(leader).management_address);
    let runner_status = format!("http://{leaders_runner}/api/v1/runner");
    cluster.wait_until(WAIT, "the leader's runner claiming the task", || {
        cluster
            .http("GET", &runner_status, None)
            .is_ok_and(|(_, status)| status["running"].as_array().into_iter().flatten().any(|id| id == &json!(task_id)))
    })?;
    let record = show(cluster, leader, &task_id)?;
    ensure!(record["runner_addr"] == json!(leaders_runner), "the task went elsewhere: {record}");
    Ok(task_id)
}

/// Another node than `old` that reports itself leader, if any.
fn other_leader(cluster: &NetnsCluster, old: usize) -> Option<usize> {
    (0..cluster.n_nodes())
        .filter(|&node| node != old)
        .find(|&node| cluster.try_status(node).is_some_and(|status| status.leader))
}

#[test]
fn with_early_takeover_a_leader_cut_off_on_both_networks_is_replaced_well_before_its_session_timeout() {
    let (_wrapper_dir, wrapper) = daemon_with_early_takeover().expect("write the daemon wrapper");
    with_cluster("early_takeover_on", builder().binary(wrapper), |cluster| {
        let (old, _) = leader_with_pid(cluster)?;
        let old_id = cluster.node(old).node_id.clone();
        let task_id = task_on_leaders_runner(cluster, old)?;
        let cut_at = cut_off(cluster, old)?;
        let mut new = None;
        cluster
            .wait_until(SESSION_TIMEOUT / 2, "another node leading well before the session timeout", || {
                new = other_leader(cluster, old);
                new.is_some()
            })
            .with_context(|| format!("nobody replaced the cut-off {old_id} within half the session timeout"))?;
        let new = new.context("no new leader")?;
        let replaced_after = cut_at.elapsed();
        let new_id = cluster.node(new).node_id.clone();
        let log = cluster.log(new);
        ensure!(
            log.contains("took its election node over early"),
            "{new_id} leads but did not log an early take-over:\n{log}"
        );
        // Leadership moved early, the task did not: its owner node (of the cut-off, maybe live,
        // session) holds it until the session expires.
        cluster.wait_until(WAIT, "the new leader's dispatcher answering", || show(cluster, new, &task_id).is_ok())?;
        std::thread::sleep(Duration::from_secs(2));
        let record = show(cluster, new, &task_id)?;
        ensure!(
            cut_at.elapsed() < SESSION_TIMEOUT && record["state"] == json!("running"),
            "the cut-off leader's task did not stay owned until its session expired ({:?} after the cut): {record}",
            cut_at.elapsed()
        );
        cluster.wait_for_vip_holder(Some(old), WAIT).context("the VIP on another node")?;
        cluster.wait_until(SESSION_TIMEOUT + WAIT, "the task interrupted once the session expired", || {
            show(cluster, new, &task_id).is_ok_and(|record| record["state"] == json!("interrupted"))
        })?;
        let interrupted_after = cut_at.elapsed();
        ensure!(
            interrupted_after >= SESSION_TIMEOUT / 2,
            "the task was interrupted {interrupted_after:?} after the cut, before the session could expire"
        );
        // The documented trade-off: the cut-off leader is alive and keeps its VIP until it steps
        // down (a third of the session timeout without ZooKeeper) or its fence lapses.
        cluster.wait_until(SESSION_TIMEOUT + WAIT, "the cut-off leader's VIP gone", || {
            cluster.vip_holders().is_ok_and(|holders| !holders.contains(&old))
        })?;
        // It goes at its step-down (a third of the session timeout without ZooKeeper, once the
        // client notices), not only when its fence lapses (S - 1.25 s after its last contact):
        // nothing on the step-down path may wait for ZooKeeper before the VIP is released.
        let old_gone_after = cluster
            .holder_sampler()
            .samples_since(cut_at)
            .into_iter()
            .rfind(|sample| sample.seen.contains(&old))
            .map(|sample| sample.at.duration_since(cut_at))
            .context("no sample shows the cut-off leader's VIP")?;
        ensure!(
            old_gone_after < SESSION_TIMEOUT * 2 / 3,
            "the cut-off leader's VIP was last seen {old_gone_after:?} after the cut: it lapsed by its fence, \
             not at its step-down"
        );
        let doubles: Vec<Instant> = cluster
            .holder_sampler()
            .samples_since(cut_at)
            .into_iter()
            .filter(|sample| sample.holders.len() > 1)
            .map(|sample| sample.at)
            .collect();
        let doubles_span = match (doubles.first(), doubles.last()) {
            (Some(first), Some(last)) => last.duration_since(*first),
            _ => Duration::ZERO,
        };
        eprintln!(
            "early_takeover_on: {new_id} led {:.0} ms after {old_id} was cut off (session timeout {} ms, \
             early_takeover_ms {EARLY_TAKEOVER_MS}); VIP on two nodes in {} samples over {:.0} ms, the old one's \
             last seen {:.0} ms after the cut",
            replaced_after.as_secs_f64() * 1000.0,
            SESSION_TIMEOUT.as_millis(),
            doubles.len(),
            doubles_span.as_secs_f64() * 1000.0,
            old_gone_after.as_secs_f64() * 1000.0
        );
        Ok(())
    });
}

#[test]
fn without_early_takeover_a_leader_cut_off_on_both_networks_is_replaced_only_after_its_session() {
    with_cluster("early_takeover_off", builder(), |cluster| {
        let (old, _) = leader_with_pid(cluster)?;
        let cut_at = cut_off(cluster, old)?;
        while cut_at.elapsed() < SESSION_TIMEOUT / 2 {
            if let Some(new) = other_leader(cluster, old) {
                anyhow::bail!(
                    "{} leads {:?} after the cut, before the cut-off leader's session could expire",
                    cluster.node(new).node_id,
                    cut_at.elapsed()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Not vacuous: the cut did isolate the leader, whose session then expires.
        cluster.wait_until(SESSION_TIMEOUT + WAIT, "another node leading after the session expired", || {
            other_leader(cluster, old).is_some()
        })?;
        let replaced_after = cut_at.elapsed();
        ensure!(
            replaced_after >= SESSION_TIMEOUT / 2,
            "replaced {replaced_after:?} after the cut, before half the session timeout"
        );
        eprintln!("early_takeover_off: replaced {:.0} ms after the cut", replaced_after.as_secs_f64() * 1000.0);
        Ok(())
    });
}
