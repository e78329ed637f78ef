//! Where the daemons listen, seen from the networks they are on: every node's APIs answer on its
//! management address and never on its data address (a peer on the data network is refused on
//! both ports), and the dispatcher API answers on the VIP at the leader.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tests::netns::{in_netns, NetnsCluster, DISPATCHER_PORT, RUNNER_PORT, VIP};
use tests::prelude::*;

use super::{with_cluster, WAIT};

/// Whether a TCP connection from `namespace` to `address` is accepted (false when refused or
/// unanswered within a second).
fn connects(namespace: &str, address: SocketAddr) -> Result<bool> {
    in_netns(namespace, move || TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok())
}

#[test]
fn the_apis_answer_on_the_management_address_and_the_vip_never_on_the_data_network() {
    with_cluster("listening", NetnsCluster::builder(), |cluster| {
        let leader = cluster.wait_for_vip_holder(None, WAIT)?;
        for node in 0..cluster.n_nodes() {
            let spec = cluster.node(node);
            // A peer on the data network: the next node's namespace.
            let peer = &cluster.node((node + 1) % cluster.n_nodes()).namespace;
            for port in [DISPATCHER_PORT, RUNNER_PORT] {
                let data = SocketAddr::from((spec.data_address, port));
                ensure!(!connects(peer, data)?, "{} accepts on its data address {data}", spec.node_id);
                let management = SocketAddr::from((spec.management_address, port));
                ensure!(connects(peer, management)?, "{} does not accept on {management}", spec.node_id);
            }
        }
        let (status, answer) = cluster.http("GET", &format!("http://{VIP}:{DISPATCHER_PORT}/api/v1/status"), None)?;
        ensure!(status == 200, "the VIP's dispatcher answers: {status} {answer}");
        let node_id = answer["node_id"].as_str().context("node_id")?;
        ensure!(node_id == cluster.node(leader).node_id, "the VIP reached {node_id}, not the leader");
        Ok(())
    });
}
