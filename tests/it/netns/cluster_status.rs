//! The cluster route (`GET /api/v2/task_center/cluster`, `zbs-task cluster show`) reports every
//! member's health as the member last published it in ZooKeeper, not as the answering node's
//! cached membership had it (which changes only when members come and go).

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use tests::netns::{health_invalid, health_valid, NetnsCluster};
use tests::prelude::*;

use super::{with_cluster, WAIT};

const CLUSTER_PATH: &str = "/api/v2/task_center/cluster";

#[test]
fn the_cluster_route_shows_a_followers_new_health_within_a_second() {
    with_cluster("cluster_status", NetnsCluster::builder(), |cluster| {
        let leader = cluster.wait_for_vip_holder(None, WAIT)?;
        let follower = (leader + 1) % cluster.n_nodes();
        // A member publishes "healthy" once its probe has risen (`rise` answers), which may be
        // just after the VIP has found its holder.
        cluster.wait_until(WAIT, "the follower shown healthy at the start", || {
            member_healthy(cluster, leader, follower).ok().flatten() == Some(true)
        })?;

        cluster.cut_data_link(follower)?;
        cluster.wait_until(WAIT, "the follower's own health invalid", || {
            cluster.try_status(follower).is_some_and(|status| health_invalid(&status))
        })?;
        let invalid_at = Instant::now();
        let mut seen = None;
        cluster.wait_until(WAIT, "the leader's cluster route showing the follower unhealthy", || {
            seen = member_healthy(cluster, leader, follower).ok().flatten();
            seen == Some(false)
        })?;
        let shown_after = invalid_at.elapsed();
        eprintln!(
            "cluster status: the cut follower shown unhealthy {} ms after its own status",
            shown_after.as_millis()
        );
        ensure!(
            shown_after <= Duration::from_secs(2),
            "the cluster route took {shown_after:?} to show the follower's new health (stale cache?)"
        );

        cluster.restore_data_link(follower)?;
        cluster.wait_until(WAIT, "the follower's own health valid", || {
            cluster.try_status(follower).is_some_and(|status| health_valid(&status))
        })?;
        let valid_at = Instant::now();
        cluster.wait_until(WAIT, "the leader's cluster route showing the follower healthy", || {
            member_healthy(cluster, leader, follower).ok().flatten() == Some(true)
        })?;
        ensure!(valid_at.elapsed() <= Duration::from_secs(2), "the recovered health took {:?}", valid_at.elapsed());
        Ok(())
    });
}

/// The follower's `healthy` in the node's cluster route; the route must say it read ZooKeeper.
fn member_healthy(cluster: &NetnsCluster, node: usize, member: usize) -> Result<Option<bool>> {
    let (status, answer) = cluster.http("GET", &cluster.api_url(node, CLUSTER_PATH), None)?;
    ensure!(status == 200, "the cluster route answered {status}: {answer}");
    ensure!(answer["members_source"] == "zookeeper", "the cluster route did not read ZooKeeper: {answer}");
    let id = &cluster.node(member).node_id;
    Ok(answer["members"]
        .as_array()
        .and_then(|members| members.iter().find(|entry| entry["id"] == id.as_str()))
        .and_then(|entry| entry["healthy"].as_bool()))
}
