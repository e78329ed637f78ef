//! An IPv6 VIP set at run time: the leader adds it (no duplicate address detection, so it is
//! usable at once) and announces it with unsolicited neighbour advertisements; after a failover
//! the client's neighbour entry points at the new leader's MAC without the client sending
//! anything (only the Override advertisement can change a stale entry that is not in use).

use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::json;
use tests::netns::{in_netns, NetnsCluster, Signal, MANAGEMENT_INTERFACE, VIP};
use tests::prelude::*;

use super::{assert_no_crash, with_cluster, WAIT};

const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x213, 1, 0, 0, 0, 0, 0x100);
const SET_PATH: &str = "/api/v2/task_center/vip/set";

#[test]
fn an_ipv6_vip_moves_with_the_leader_and_its_advertisement_updates_the_client() {
    with_cluster("vip_ipv6", NetnsCluster::builder(), |cluster| {
        let leader = cluster.wait_for_vip_holder(None, WAIT)?;
        let body = json!({ "address": format!("{VIP6}/64"), "interface": MANAGEMENT_INTERFACE });
        let (status, answer) = cluster.http("POST", &cluster.api_url(leader, SET_PATH), Some(&body))?;
        ensure!(status == 200, "set answered {status}: {answer}");
        wait_only_holder6(cluster, leader)?;
        ensure!(cluster.address_holders(VIP)?.is_empty(), "the IPv4 VIP is still held");

        // The client resolves the VIP (a connect: nothing listens on IPv6, the refusal is fine).
        let address = SocketAddr::new(VIP6.into(), 9);
        let _refused =
            in_netns(cluster.client_namespace(), move || TcpStream::connect_timeout(&address, Duration::from_secs(2)))?;
        let leader_mac = cluster.management_mac(leader)?;
        cluster.wait_until(WAIT, "the client's neighbour entry for the IPv6 VIP", || {
            cluster.client_neighbour6(VIP6).ok().flatten().as_deref() == Some(leader_mac.as_str())
        })?;

        let signalled_at = Instant::now();
        cluster.signal(leader, Signal::SIGTERM)?;
        let mut new = None;
        cluster.wait_until(WAIT, "another node holding the IPv6 VIP", || {
            new = cluster.address6_holders(VIP6).ok().and_then(|holders| match holders[..] {
                [node] if node != leader => Some(node),
                _ => None,
            });
            new.is_some()
        })?;
        let new = new.context("no new holder")?;
        let moved_after = signalled_at.elapsed();
        let new_mac = cluster.management_mac(new)?;
        let mut last = None;
        cluster
            .wait_until(WAIT, &format!("the client's neighbour entry to become {new_mac}"), || {
                last = cluster.client_neighbour6(VIP6).ok().flatten();
                last.as_deref() == Some(new_mac.as_str())
            })
            .with_context(|| format!("the entry is {last:?}; the old leader's MAC was {leader_mac}"))?;
        eprintln!(
            "vip ipv6: {VIP6} on {} {:.0} ms after the SIGTERM; the client's entry followed",
            cluster.node(new).node_id,
            moved_after.as_secs_f64() * 1000.0
        );
        cluster.wait_exit(leader, WAIT)?;
        ensure!(
            cluster.address6_holders(VIP6)? == [new],
            "the IPv6 VIP is held by {:?}",
            cluster.address6_holders(VIP6)?
        );
        assert_no_crash(cluster)
    });
}

fn wait_only_holder6(cluster: &NetnsCluster, node: usize) -> Result<()> {
    let mut holders = Vec::new();
    cluster
        .wait_until(WAIT, &format!("{VIP6} on {} only", cluster.node(node).node_id), || {
            holders = cluster.address6_holders(VIP6).unwrap_or_default();
            holders == [node]
        })
        .with_context(|| format!("{VIP6} is on {holders:?}"))
        .map(drop)
}
