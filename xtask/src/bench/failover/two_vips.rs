//! Two VIPs of two services moving together (issue 17): ours at the bench's settings in a
//! cluster of its own holding the management VIP and the `iscsi` service's VIP on a third
//! network (`NetnsClusterBuilder::second_vip`); each trial cuts the leader's data link and times
//! the moment the *last* of the two VIPs is up on one new node.

use std::time::{Duration, Instant};

use ::tests::netns::{NetnsCluster, Signal, SECOND_VIP};
use ::tests::prelude::*;
use anyhow::{bail, Context, Result};

use super::super::report::{percentile, Report};
use super::systems::{System, WAIT};

/// What the trials measured.
pub struct TwoVipsRun {
    /// Per trial: injection → both VIPs up on the same new node, ms.
    pub last_vip_up_ms: Vec<f64>,
    /// Samples where either VIP was on two nodes at once, over every trial.
    pub two_holder_samples: usize,
}

/// Starts its own cluster and runs `trials` link-cut trials.
pub fn run(trials: usize) -> Result<TwoVipsRun> {
    let cluster = System::Taskd.daemon_settings().second_vip(true).start().context("start the two-VIP cluster")?;
    let mut last_vip_up_ms = Vec::with_capacity(trials);
    for index in 0..trials {
        let up = trial(&cluster).with_context(|| format!("two VIPs link_cut trial {}", index + 1))?;
        eprintln!("failover bench: two_vips link_cut trial {:>2}: last VIP up after {up:>7.1} ms", index + 1);
        last_vip_up_ms.push(up);
    }
    let second = cluster.second_holder_sampler().context("the cluster holds a second VIP")?;
    let two_holder_samples = [cluster.holder_sampler().samples(), second.samples()]
        .iter()
        .flatten()
        .filter(|sample| sample.holders.len() > 1)
        .count();
    Ok(TwoVipsRun { last_vip_up_ms, two_holder_samples })
}

/// One trial: from a formed cluster (one leader holding both VIPs), cut the leader's data link,
/// wait until another node holds both, restore, restart the old holder and wait until formed.
fn trial(cluster: &NetnsCluster) -> Result<f64> {
    cluster.wait_formed(WAIT)?;
    let old = cluster.wait_for_vip_holder(None, WAIT)?;
    let injected_at = Instant::now();
    cluster.cut_data_link(old)?;
    let last_up = loop {
        let first = cluster.vip_holders()?;
        let second = cluster.address_holders(SECOND_VIP)?;
        let new_holder = first.iter().find(|&&node| node != old);
        if new_holder.is_some_and(|node| second.contains(node)) {
            break injected_at.elapsed();
        }
        if injected_at.elapsed() > WAIT {
            bail!("the two VIPs were not both up on a new node within {WAIT:?} (first on {first:?}, second on {second:?})");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    cluster.restore_data_link(old)?;
    // As the main trials do: the old holder, stopped for its network, is restarted rather than
    // left to its re-entry back-off, which grows with every trial (1 s, 2 s, 4 s, ...).
    cluster.signal(old, Signal::SIGTERM)?;
    if cluster.wait_exit(old, WAIT).is_err() {
        cluster.kill(old)?;
    }
    cluster.restart(old)?;
    cluster.wait_formed(WAIT)?;
    Ok(last_up.as_secs_f64() * 1000.0)
}

/// `two_vips_link_cut_vip_up_ms_p50`/`_p99` and `two_vips_vip_on_two_nodes_samples`.
pub fn set_keys(report: &mut Report, run: &TwoVipsRun) {
    let mut values = run.last_vip_up_ms.clone();
    report.set("two_vips_link_cut_vip_up_ms_p50", percentile(&mut values, 0.5));
    report.set("two_vips_link_cut_vip_up_ms_p99", percentile(&mut values, 0.99));
    report.set("two_vips_link_cut_trials", run.last_vip_up_ms.len() as f64);
    report.set("two_vips_vip_on_two_nodes_samples", run.two_holder_samples as f64);
}
