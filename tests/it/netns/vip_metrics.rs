//! The VIP's metrics across a hand-over for a cut data link: `zbs_taskd_vip_held{service,vip}` is 1 on
//! exactly the node whose namespace holds the VIP and 0 on every other (the old leader's stopped
//! service included), before and after; the old leader counts the step-down's reason and its
//! gratuitous ARPs, the new leader its election and its own ARPs.

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use tests::netns::{NetnsCluster, VIP, VIP_PREFIX};
use tests::prelude::*;

use super::{assert_no_crash, leader_with_pid, with_cluster, WAIT};

/// The node's `/metrics`, read from the client's namespace: (series as encoded, value).
fn scrape(cluster: &NetnsCluster, node: usize) -> Result<Vec<(String, f64)>> {
    let (status, text) = cluster.http_text(&cluster.api_url(node, "/metrics"))?;
    ensure!(status == 200, "GET /metrics on node {node}: {status}: {text}");
    ensure!(text.ends_with("# EOF\n"), "node {node}'s metrics do not end with # EOF");
    Ok(text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect())
}

fn value(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(name, _)| name == series).map(|(_, value)| *value)
}

fn vip_held(samples: &[(String, f64)]) -> Option<f64> {
    // The `vip` label is the VIP as configured, with its prefix length (beside its `service`).
    let label = format!("vip=\"{VIP}/{VIP_PREFIX}\"");
    let mut held =
        samples.iter().filter(|(series, _)| series.starts_with("zbs_taskd_vip_held{") && series.contains(&label));
    let (_, value) = held.next()?;
    held.next().is_none().then_some(*value)
}

/// Waits until `vip_held` is 1 on `holder` and 0 on every other node.
fn wait_vip_held_only_on(cluster: &NetnsCluster, holder: usize) -> Result<()> {
    let mut last: Vec<std::result::Result<f64, String>> = Vec::new();
    cluster
        .wait_until(WAIT, &format!("vip_held 1 on {} only", cluster.node(holder).node_id), || {
            last = (0..cluster.n_nodes())
                .map(|node| match scrape(cluster, node) {
                    Ok(samples) => vip_held(&samples).ok_or_else(|| {
                        let held: Vec<_> = samples.iter().filter(|(series, _)| series.contains("vip_held")).collect();
                        format!("node {node} exports {held:?}")
                    }),
                    Err(error) => Err(format!("node {node}: {error:#}")),
                })
                .collect();
            last.iter().enumerate().all(|(node, held)| held == &Ok(if node == holder { 1.0 } else { 0.0 }))
        })
        .with_context(|| format!("vip_held by node: {last:?}"))?;
    Ok(())
}

#[test]
fn vip_held_follows_the_vip_across_a_data_link_cut_and_the_reason_is_counted() {
    with_cluster("vip_metrics", NetnsCluster::builder(), |cluster| {
        let (old, _old_pid) = leader_with_pid(cluster)?;
        wait_vip_held_only_on(cluster, old)?;
        let before = scrape(cluster, old)?;
        let garps_before = value(&before, "zbs_taskd_vip_garps_sent_total").context("no vip_garps_sent")?;
        ensure!(garps_before >= 1.0, "the leader counted no gratuitous ARP: {garps_before}");
        let reason = "zbs_taskd_leader_transitions_total{reason=\"data_network_failed\"}";
        ensure!(value(&before, reason) == Some(0.0), "a data network failure counted before the cut");

        let cut_at = Instant::now();
        cluster.cut_data_link(old)?;
        let new = cluster.wait_for_vip_holder(Some(old), WAIT).context("the VIP moving after the cut")?;
        eprintln!("vip_metrics: the VIP moved in {:?}", cut_at.elapsed());
        ensure!(cluster.vip_holders()? == [new], "VIP holders {:?}", cluster.vip_holders()?);
        wait_vip_held_only_on(cluster, new)?;

        let old_samples = scrape(cluster, old)?;
        ensure!(
            value(&old_samples, reason) == Some(1.0),
            "the old leader's step-down reason: {:?}",
            value(&old_samples, reason)
        );
        ensure!(value(&old_samples, "zbs_taskd_is_leader") == Some(0.0), "the old leader still says is_leader");
        let new_samples = scrape(cluster, new)?;
        let elected = "zbs_taskd_leader_transitions_total{reason=\"elected\"}";
        ensure!(value(&new_samples, elected).is_some_and(|n| n >= 1.0), "the new leader counted no election");
        ensure!(value(&new_samples, "zbs_taskd_is_leader") == Some(1.0), "the new leader's is_leader");
        cluster.wait_until(WAIT, "the new leader to count its gratuitous ARPs", || {
            scrape(cluster, new)
                .ok()
                .and_then(|samples| value(&samples, "zbs_taskd_vip_garps_sent_total"))
                .is_some_and(|n| n >= 1.0)
        })?;

        // The link back: the old node rejoins as a follower; the VIP and the gauge stay put.
        cluster.restore_data_link(old)?;
        cluster.wait_until(WAIT, "the old leader serving again as a follower", || {
            cluster.try_status(old).is_some_and(|status| !status.stopping && !status.leader)
        })?;
        wait_vip_held_only_on(cluster, new)?;
        assert_no_crash(cluster)
    });
}
