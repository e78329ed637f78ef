//! Bad `[vip]` configurations across the whole cluster: every node is given the same mistake.
//! An address that is not one, or a prefix no IPv4 address has, is refused when the
//! configuration loads (exit 78, the key and the value named on stderr); an interface that does
//! not exist is found by the first leader's takeover, which stops its service for good, and so
//! does every node that leads after it. Either way no namespace ever holds an address, no node
//! comes back as leader, and nothing dumps core.

use std::thread;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use taskd::config::EXIT_CONFIG;
use tests::netns::{skip_reason, NetnsCluster, MANAGEMENT_INTERFACE, VIP};
use tests::prelude::*;

use super::{assert_no_crash, serialize, HOLD_WINDOW, WAIT};

/// What the supervisor logs when the VIP's error is permanent.
const PERMANENT_VIP_FAILURE: &str = "the vip configuration cannot work on this node";

#[test]
fn bad_vip_configurations_stop_every_node_with_a_clear_error_and_no_vip() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping bad_vip_configurations: {reason}");
        return;
    }
    let _serial = serialize();
    // The value the error names: the part of the address that is wrong.
    for (case, address, named) in
        [("not an address", "10.213.1.300/24", "\"10.213.1.300\""), ("wrong prefix", "10.213.1.100/33", "\"33\"")]
    {
        let cluster = NetnsCluster::builder()
            .vip_setting(address, MANAGEMENT_INTERFACE)
            .launch()
            .expect("launch the network-namespace cluster");
        if let Err(error) = refused_at_load(&cluster, named) {
            panic!("{case}: {error:?}\n(cluster dir: {})", cluster.dir().display());
        }
        eprintln!("bad vip ({case}): every node refused {address:?} at load with exit {EXIT_CONFIG}");
    }
    let cluster = NetnsCluster::builder()
        .vip_setting(format!("{VIP}/24"), "eth9")
        .launch()
        .expect("launch the network-namespace cluster");
    if let Err(error) = stopped_at_takeover(&cluster, "eth9") {
        panic!("missing interface: {error:?}\n(cluster dir: {})", cluster.dir().display());
    }
}

/// Every node exits with `EXIT_CONFIG`, naming `vip.address` and the wrong value; no VIP, no core.
fn refused_at_load(cluster: &NetnsCluster, named: &str) -> Result<()> {
    for node in 0..cluster.n_nodes() {
        let status = cluster.wait_exit(node, WAIT)?;
        let stderr = cluster.stderr(node);
        ensure!(
            status.code() == Some(EXIT_CONFIG),
            "{} exited with {status}, not {EXIT_CONFIG}; stderr:\n{stderr}",
            cluster.node(node).node_id
        );
        ensure!(
            stderr.contains("vip.address") && stderr.contains(named),
            "{}'s error does not name vip.address and {named}:\n{stderr}",
            cluster.node(node).node_id
        );
    }
    assert_no_vip_ever(cluster, None)?;
    assert_no_crash(cluster)
}

/// Each node in turn leads, fails to take the VIP on the missing interface, logs the permanent
/// failure naming the key and the interface and stops its service while its process stays; after
/// that no node leads, no namespace holds the VIP, nothing dumped core.
fn stopped_at_takeover(cluster: &NetnsCluster, interface: &str) -> Result<()> {
    let pids: Vec<Option<u32>> = (0..cluster.n_nodes()).map(|node| cluster.pid(node)).collect();
    cluster.wait_until(WAIT * 2, "every node logging the permanent VIP failure", || {
        (0..cluster.n_nodes()).all(|node| cluster.log(node).contains(PERMANENT_VIP_FAILURE))
    })?;
    let stopped_at = Instant::now();
    eprintln!("bad vip (missing interface): every node stopped its service at takeover, none leads again");
    for node in 0..cluster.n_nodes() {
        let log = cluster.log(node);
        let line = log.lines().find(|line| line.contains(PERMANENT_VIP_FAILURE)).unwrap_or_default();
        ensure!(
            line.contains("vip.interface") && line.contains(interface),
            "{}'s permanent failure does not name vip.interface and {interface:?}: {line}",
            cluster.node(node).node_id
        );
    }
    while stopped_at.elapsed() < HOLD_WINDOW {
        for (node, &pid) in pids.iter().enumerate() {
            ensure!(
                cluster.pid(node) == pid,
                "{}'s process changed or exited: {:?}, was {pid:?}",
                cluster.node(node).node_id,
                cluster.pid(node)
            );
            if let Some(status) = cluster.try_status(node) {
                ensure!(!status.leader, "{} leads again with the bad configuration", cluster.node(node).node_id);
            }
        }
        thread::sleep(std::time::Duration::from_millis(200));
    }
    for node in 0..cluster.n_nodes() {
        let log = cluster.log(node);
        let n_failures = log.matches(PERMANENT_VIP_FAILURE).count();
        ensure!(n_failures == 1, "{} failed {n_failures} times: it led again", cluster.node(node).node_id);
    }
    assert_no_vip_ever(cluster, Some(interface))?;
    assert_no_crash(cluster)
}

/// No sample of the sampler ever saw the VIP, and no node's namespace has any address but its
/// own two (and, when the nodes are still up, loopback).
fn assert_no_vip_ever(cluster: &NetnsCluster, interface: Option<&str>) -> Result<()> {
    let sampler = cluster.holder_sampler();
    cluster.wait_until(WAIT, "a few VIP samples", || sampler.samples().len() > 10)?;
    let seen: Vec<_> = sampler.samples().into_iter().filter(|sample| !sample.seen.is_empty()).collect();
    ensure!(seen.is_empty(), "the VIP was seen in {} samples, first {:?}", seen.len(), seen.first());
    ensure!(sampler.errors().is_empty(), "the VIP sampler failed: {:?}", sampler.errors());
    for node in 0..cluster.n_nodes() {
        let addresses = cluster.ip_addresses(node).context("list a node's addresses")?;
        let spec = cluster.node(node);
        for line in addresses.lines() {
            let own = [spec.management_address.to_string(), spec.data_address.to_string(), "127.0.0.1".to_string()];
            ensure!(
                own.iter().any(|address| line.contains(&format!("inet {address}/"))),
                "{} holds an address that is not its own ({interface:?}): {line}",
                spec.node_id
            );
        }
    }
    Ok(())
}
