//! The opt-in early take-over (issue 14, host death): the leader's namespace loses both links at
//! once, silently (the switch side detached, as a host that lost power looks to its peers). With
//! `early_takeover_ms` on, the member next in line takes the silent leader's election node over
//! once every healthy member has lost it on both networks for that long: another node leads well
//! before the session timeout. Off (the default), nobody can lead before the old session expires.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tests::netns::{Cut, NetnsCluster, NetnsClusterBuilder, Network};

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
        cluster.wait_for_vip_holder(Some(old), WAIT).context("the VIP on another node")?;
        // The documented trade-off: the cut-off leader is alive and keeps its VIP until it steps
        // down (a third of the session timeout without ZooKeeper) or its fence lapses.
        cluster.wait_until(SESSION_TIMEOUT + WAIT, "the cut-off leader's VIP gone", || {
            cluster.vip_holders().is_ok_and(|holders| !holders.contains(&old))
        })?;
        let two_holder_samples = cluster
            .holder_sampler()
            .samples_since(cut_at)
            .into_iter()
            .filter(|sample| sample.holders.len() > 1)
            .count();
        eprintln!(
            "early_takeover_on: {new_id} led {:.0} ms after {old_id} was cut off (session timeout {} ms, \
             early_takeover_ms {EARLY_TAKEOVER_MS}); VIP on two nodes in {two_holder_samples} samples",
            replaced_after.as_secs_f64() * 1000.0,
            SESSION_TIMEOUT.as_millis()
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
