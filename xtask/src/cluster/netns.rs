//! `cargo xtask cluster up --netns [--nodes N]`: the failover tests' network-namespace cluster
//! (`tests::netns`), kept up after the command returns: N nodes with a management and a data
//! link each, ZooKeeper and a client in namespaces of their own, the leader holding the VIP.
//! Its files and `netns.json` (namespaces, pids, paths) live in `target/cluster/`; `cluster
//! status` reads it, `cluster down` stops exactly those processes and deletes the namespaces
//! (with their veths and bridges). Needs root.

use std::path::Path;
use std::time::Duration;

use ::tests::netns::{skip_reason, DetachedNetnsCluster, NetnsCluster, DATA_INTERFACE};
use ::tests::prelude::*;
use anyhow::{bail, Context, Result};

/// How long `up` waits for ZooKeeper, every node serving, and one leader holding the VIP.
const FORM_TIMEOUT: Duration = Duration::from_secs(90);

/// The netns cluster recorded in `dir`, if any.
pub fn load(dir: &Path) -> Result<Option<DetachedNetnsCluster>> {
    DetachedNetnsCluster::load(dir)
}

pub fn up(dir: &Path, n_nodes: usize) -> Result<()> {
    if let Some(reason) = skip_reason() {
        bail!("cannot start a network-namespace cluster: {reason}");
    }
    if let Some(cluster) = load(dir)? {
        println!("a network-namespace cluster is already up; `cargo xtask cluster down` first for a new one");
        return print_guide(&cluster);
    }
    if dir.join(super::STATE_FILE).exists() {
        bail!("a loopback cluster is up in {}; `cargo xtask cluster down` first", dir.display());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("remove the leftover {}", dir.display()))?;
    }
    let binary = ::tests::cluster::daemon_binary().context("find or build zbs-taskd")?;
    println!("starting ZooKeeper and {n_nodes} nodes in network namespaces...");
    let cluster = NetnsCluster::builder()
        .nodes(n_nodes)
        .binary(binary)
        .start_timeout(FORM_TIMEOUT)
        .detached_in(dir)
        .start()
        .context("start the network-namespace cluster (everything it started was stopped again)")?;
    let detached = cluster.detach().context("detach the network-namespace cluster")?;
    print_guide(&detached)
}

pub fn status(cluster: &DetachedNetnsCluster) -> Result<()> {
    let holders = cluster.vip_holders();
    println!(
        "network-namespace cluster, configured VIP {} (client namespace {})",
        cluster.vip, cluster.client_namespace
    );
    let mut all_up = true;
    for (node, spec) in cluster.nodes.iter().enumerate() {
        let running = cluster.is_running(node);
        all_up &= running;
        println!(
            "{:<8} pid {:<7} {:<11} namespace {:<9} mgmt {:<12} {}",
            spec.node_id,
            spec.pid,
            if running { "running" } else { "NOT running" },
            spec.namespace,
            spec.management_address,
            held(cluster, node)
        );
    }
    if !all_up || holders.len() != 1 {
        std::process::exit(3);
    }
    Ok(())
}

pub fn down(cluster: DetachedNetnsCluster) -> Result<()> {
    cluster.stop()
}

/// "holds the VIP <address>" for a node that holds one.
fn held(cluster: &DetachedNetnsCluster, node: usize) -> String {
    let addresses = cluster.vip_addresses(node);
    if addresses.is_empty() {
        String::new()
    } else {
        format!("holds the VIP {}", addresses.join(" "))
    }
}

fn print_guide(cluster: &DetachedNetnsCluster) -> Result<()> {
    let holders = cluster.vip_holders();
    for (node, spec) in cluster.nodes.iter().enumerate() {
        println!(
            "{:<8} pid {:<7} namespace {:<9} mgmt {:<12} data {:<12} {}",
            spec.node_id,
            spec.pid,
            spec.namespace,
            spec.management_address,
            spec.data_address,
            held(cluster, node)
        );
    }
    // The VIP held now: the configured one, or one set at run time.
    let held_vip = holders.first().and_then(|&node| cluster.vip_addresses(node).into_iter().next());
    let held_vip = held_vip.unwrap_or_else(|| cluster.vip.clone());
    let vip = held_vip.split('/').next().unwrap_or(&held_vip);
    let base = format!("http://{vip}:{}", cluster.dispatcher_port);
    let client = format!("ip netns exec {}", cluster.client_namespace);
    let zbs_task = cluster.binary.with_file_name("zbs-task");
    let mut tries = vec![
        (format!("{client} curl -s {base}/api/v1/status"), "the leader's status, through the VIP".to_string()),
        (format!("{client} curl -s {base}/api/v2/task_center/cluster"), "members and their health".to_string()),
        (
            format!("{client} {} --server {vip}:{} vip show", zbs_task.display(), cluster.dispatcher_port),
            "the VIP and where it comes from".to_string(),
        ),
    ];
    if let Some(&leader) = holders.first() {
        let spec = &cluster.nodes[leader];
        tries.push((
            format!("ip -n {} link set {DATA_INTERFACE} down", spec.namespace),
            format!("cut {}'s data link: the VIP moves (`link set {DATA_INTERFACE} up` restores it)", spec.node_id),
        ));
        tries.push((format!("kill -TERM {}", spec.pid), format!("SIGTERM the leader ({})", spec.node_id)));
    }
    tries.push(("cargo xtask cluster status".to_string(), "each node's process and who holds the VIP".to_string()));
    tries.push(("cargo xtask cluster down".to_string(), "stop it all and delete the namespaces".to_string()));
    let width = tries.iter().map(|(command, _)| command.len()).max().unwrap_or(0);
    println!("\nstate: {}\ntry (as root):", cluster.dir.join("netns.json").display());
    for (command, comment) in tries {
        println!("  {command:<width$}  # {comment}");
    }
    Ok(())
}
