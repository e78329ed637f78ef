//! The VIP set at run time through the dispatcher API (`zbs-task vip set`): stored in ZooKeeper,
//! applied by the leader within its VIP loop's tick (the old address released, the new one added
//! and announced),
//! taken by the next leader after a failover, refused with a 4xx (and nothing changed) when it
//! is bad, and cleared back to the configuration file's `[vip]`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::json;
use tests::netns::{NetnsCluster, Signal, MANAGEMENT_INTERFACE, VIP};
use tests::prelude::*;

use super::{assert_no_crash, with_cluster, TAKEOVER_BURST, WAIT};

const SET_VIP: Ipv4Addr = Ipv4Addr::new(10, 213, 1, 101);
const VIP_PATH: &str = "/api/v2/task_center/vip";
const SET_PATH: &str = "/api/v2/task_center/vip/set";
const CLUSTER_PATH: &str = "/api/v2/task_center/cluster";

#[test]
fn a_vip_set_through_the_api_moves_at_once_survives_failover_and_refuses_bad_input() {
    with_cluster("vip_set", NetnsCluster::builder(), |cluster| {
        let leader = cluster.wait_for_vip_holder(None, WAIT)?;
        let follower = (leader + 1) % cluster.n_nodes();

        // Set on the leader: it answers with the new VIP, held, from the store.
        let set_at = Instant::now();
        let body = json!({ "address": format!("{SET_VIP}/24"), "interface": MANAGEMENT_INTERFACE });
        let (status, answer) = cluster.http("POST", &cluster.api_url(leader, SET_PATH), Some(&body))?;
        ensure!(status == 200, "set answered {status}: {answer}");
        ensure!(answer["address"] == format!("{SET_VIP}/24") && answer["source"] == "stored", "set answered {answer}");
        wait_only_holder(cluster, SET_VIP, leader)?;
        let moved_after = set_at.elapsed();
        ensure!(cluster.address_holders(VIP)?.is_empty(), "the old VIP is still held: {:?}", cluster.vip_holders()?);
        wait_announced(cluster, leader, SET_VIP, set_at)?;
        eprintln!("vip set: {SET_VIP} on the leader {:.0} ms after the request", moved_after.as_secs_f64() * 1000.0);
        ensure!(moved_after < Duration::from_secs(3), "the leader took {moved_after:?} to move to the set VIP");

        // Any node shows it (a follower reads the store): as the VIP served, not only as the
        // stored one, in `vip show` and in `cluster show`.
        let (status, shown) = cluster.http("GET", &cluster.api_url(follower, VIP_PATH), None)?;
        ensure!(status == 200, "show answered {status}: {shown}");
        ensure!(
            shown["stored"]["address"] == format!("{SET_VIP}/24") && shown["held"] == false,
            "a follower shows {shown}"
        );
        ensure!(
            shown["address"] == format!("{SET_VIP}/24") && shown["source"] == "stored",
            "a follower shows the old VIP as the one served: {shown}"
        );
        ensure_cluster_view_shows(cluster, follower, SET_VIP)?;
        // A follower does not change the VIP: it names the leader.
        let (status, answer) = cluster.http("POST", &cluster.api_url(follower, SET_PATH), Some(&body))?;
        ensure!(status == 421, "a follower answered the set with {status}: {answer}");

        // Bad input: a 4xx and nothing changes.
        for (bad, expected) in [
            (json!({ "address": "10.213.1.300/24", "interface": MANAGEMENT_INTERFACE }), 400),
            (json!({ "address": "10.213.1.102/33", "interface": MANAGEMENT_INTERFACE }), 400),
            (json!({ "address": "10.213.1.102/24" }), 400),
            (json!({ "address": "10.213.1.102/24", "interface": "eth9" }), 409),
            (json!({ "address": "10.213.1.102/24", "interface": MANAGEMENT_INTERFACE, "clear": true }), 400),
            (json!({ "vip": "10.213.1.102/24" }), 400),
        ] {
            let (status, answer) = cluster.http("POST", &cluster.api_url(leader, SET_PATH), Some(&bad))?;
            ensure!(status == expected, "{bad} answered {status}, not {expected}: {answer}");
            ensure!(answer["error"].as_str().is_some_and(|error| !error.is_empty()), "{bad}: no error: {answer}");
        }
        ensure!(cluster.address_holders(SET_VIP)? == [leader], "a refused set moved the VIP");
        ensure!(cluster.address_holders(Ipv4Addr::new(10, 213, 1, 102))?.is_empty(), "a refused VIP was added");
        let (_, shown) = cluster.http("GET", &cluster.api_url(leader, VIP_PATH), None)?;
        ensure!(shown["stored"]["address"] == format!("{SET_VIP}/24"), "a refused set changed the store: {shown}");

        // The next leader takes the stored VIP, not the file's.
        let signalled_at = Instant::now();
        cluster.signal(leader, Signal::SIGTERM)?;
        let mut new = None;
        cluster.wait_until(WAIT, "another node holding the stored VIP", || {
            new = cluster.address_holders(SET_VIP).ok().and_then(|holders| match holders[..] {
                [node] if node != leader => Some(node),
                _ => None,
            });
            new.is_some()
        })?;
        let new = new.context("no new holder")?;
        ensure!(cluster.address_holders(VIP)?.is_empty(), "the file's VIP came back after the failover");
        wait_announced(cluster, new, SET_VIP, signalled_at)?;
        cluster.wait_exit(leader, WAIT)?;

        // A cold start: every node stopped and started again; the first leader binds the stored
        // VIP, the file's never appears.
        cluster.stop_all(WAIT);
        let restarted_at = Instant::now();
        for node in 0..cluster.n_nodes() {
            cluster.restart(node)?;
        }
        let mut new = None;
        cluster.wait_until(WAIT * 2, "a node holding the stored VIP after a cold start", || {
            new = cluster.address_holders(SET_VIP).ok().and_then(|holders| match holders[..] {
                [node] => Some(node),
                _ => None,
            });
            new.is_some()
        })?;
        let new = new.context("no holder after the cold start")?;
        let file_vip_seen: Vec<_> = cluster
            .holder_sampler()
            .samples_since(restarted_at)
            .into_iter()
            .filter(|sample| !sample.seen.is_empty())
            .collect();
        ensure!(file_vip_seen.is_empty(), "the file's VIP was bound after the cold start: {:?}", file_vip_seen.first());
        ensure!(cluster.status(new)?.leader, "{} holds the stored VIP but does not lead", cluster.node(new).node_id);

        // Clear: the leader goes back to the file's VIP.
        // A leader whose dispatcher is still starting answers 503: a client tries again.
        let mut answered = None;
        cluster.wait_until(WAIT, "the new leader's dispatcher answering the clear", || {
            answered = cluster.http("POST", &cluster.api_url(new, SET_PATH), Some(&json!({ "clear": true }))).ok();
            answered.as_ref().is_some_and(|(status, _)| *status != 503)
        })?;
        let (status, answer) = answered.context("no answer to the clear")?;
        ensure!(status == 200 && answer["source"] == "config", "clear answered {status}: {answer}");
        wait_only_holder(cluster, VIP, new)?;
        ensure!(cluster.address_holders(SET_VIP)?.is_empty(), "the cleared VIP is still held");
        let follower = (new + 1) % cluster.n_nodes();
        let (_, shown) = cluster.http("GET", &cluster.api_url(follower, VIP_PATH), None)?;
        ensure!(
            shown["address"] == format!("{VIP}/24") && shown["source"] == "config",
            "after the clear a follower shows {shown}"
        );
        ensure_cluster_view_shows(cluster, follower, VIP)?;
        assert_no_crash(cluster)
    });
}

/// `cluster show` on `node` names `address` (with the netns cluster's /24) as the VIP.
fn ensure_cluster_view_shows(cluster: &NetnsCluster, node: usize, address: Ipv4Addr) -> Result<()> {
    let (status, view) = cluster.http("GET", &cluster.api_url(node, CLUSTER_PATH), None)?;
    ensure!(status == 200, "cluster show answered {status}: {view}");
    ensure!(
        view["vip"] == format!("{address}/24"),
        "{} shows the VIP {} in `cluster show`, not {address}/24",
        cluster.node(node).node_id,
        view["vip"]
    );
    Ok(())
}

fn wait_only_holder(cluster: &NetnsCluster, address: Ipv4Addr, node: usize) -> Result<()> {
    let mut holders = Vec::new();
    cluster
        .wait_until(WAIT, &format!("{address} on {} only", cluster.node(node).node_id), || {
            holders = cluster.address_holders(address).unwrap_or_default();
            holders == [node]
        })
        .with_context(|| format!("{address} is on {holders:?}"))
        .map(drop)
}

fn wait_announced(cluster: &NetnsCluster, node: usize, address: Ipv4Addr, since: Instant) -> Result<()> {
    let mut seen = 0;
    cluster
        .wait_until(WAIT, &format!("{TAKEOVER_BURST} announcements of {address}"), || {
            seen = cluster.announcements_since(node, address, since).unwrap_or(0);
            seen >= TAKEOVER_BURST
        })
        .with_context(|| format!("the switch saw {seen} announcements of {address}"))
        .map(drop)
}
