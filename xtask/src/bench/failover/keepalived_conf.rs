//! keepalived's configs for the failover benchmark, written as text from a node's addresses:
//! the defaults (VRRP `advert_int 1`, `track_interface` and a ping `vrrp_script`), and the two
//! tuned forms issue 14 describes, "fastest" (BFD 10 ms × 5) and "fastest stable" (BFD 10 ms ×
//! 10). Pure: no files, no processes.
//!
//! Both tuned forms: VRRPv3 with `advert_int 0.05`; a BFD session to each peer over the data
//! network (`min_rx`/`min_tx` 10 ms); realtime scheduling and no swap for the VRRP and BFD
//! processes; the data link tracked (`track_interface`) and the ping script kept for "no data
//! peer at all" (its interval cannot go below 1 s). Each `track_bfd` is weighted by the peer it
//! reaches (the session to node 1 weighs −45, to node 2 −35, to node 3 −15, each less the
//! tracking node's number so that survivors never tie): an unweighted
//! `track_bfd` sends the instance to FAULT when any one session drops, so in a cut both backups
//! would fault too. With these weights a cut-off node loses the sum of its two peers' weights and
//! each survivor only the cut node's, which is less (every weight is below half of the sum), so
//! the cut node falls below both survivors and is preempted (preempt stays on); the base
//! priorities are equal, so a restored node does not take the VIP back.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Result};

/// The weight of the BFD session to node `index` (0-based).
const PEER_WEIGHTS: [i32; 3] = [-45, -35, -15];
/// The VRRP priority of every node.
pub const BASE_PRIORITY: i32 = 100;
/// The realtime priority of keepalived's VRRP and BFD processes in the tuned forms.
const RT_PRIORITY: u32 = 50;
/// Their `RLIMIT_RTTIME` (µs of CPU between blocking calls): keepalived's default, 10 ms, had
/// the kernel SIGKILL both processes at start-up on this loaded 2-core VM ("has
/// rlimit_rttime been exceeded?"), every BFD session then down for seconds; 1 s still stops a
/// runaway loop.
const RT_CPU_LIMIT_US: u32 = 1_000_000;

/// Which keepalived configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// VRRP `advert_int 1`, data link and ping script tracked, equal priorities.
    Defaults,
    /// VRRPv3 `advert_int 0.05`, weighted BFD 10 ms × 5, realtime, no swap.
    Fastest,
    /// As `Fastest` with BFD 10 ms × 10: no false BFD timeouts measured on a loaded 2-core VM.
    FastestStable,
}

impl Profile {
    /// The BFD multiplier, None without BFD.
    pub fn bfd_multiplier(self) -> Option<u32> {
        match self {
            Profile::Defaults => None,
            Profile::Fastest => Some(5),
            Profile::FastestStable => Some(10),
        }
    }

    /// One line for the report's notes.
    pub fn describe(self) -> String {
        match self.bfd_multiplier() {
            None => "VRRP advert_int 1, equal priorities, track_interface data0, vrrp_script pinging the peers' data addresses (interval 1, fall 2, rise 2)".to_string(),
            Some(multiplier) => format!(
                "VRRPv3 advert_int 0.05, BFD to each peer's data address 10 ms x {multiplier} with track_bfd weighted by peer ({PEER_WEIGHTS:?}, less the tracking node's number 1-3 against ties), preempt on, vrrp_rt_priority/bfd_rt_priority {RT_PRIORITY} (rlimit_rttime {RT_CPU_LIMIT_US} us), vrrp_no_swap, bfd_no_swap, track_interface data0, the ping vrrp_script (interval 1, fall 2, rise 2) for no data peer at all"
            ),
        }
    }
}

/// What a node's config is written from.
#[derive(Clone, Debug)]
pub struct NodeAddresses<'a> {
    /// The node's index (0-based).
    pub index: usize,
    pub node_id: &'a str,
    /// The node's own data address (BFD's source).
    pub data_address: Ipv4Addr,
    /// `(node index, data address)` of every peer.
    pub peers: Vec<(usize, Ipv4Addr)>,
    /// The ping `vrrp_script`.
    pub check_script: &'a Path,
    pub management_interface: &'a str,
    pub data_interface: &'a str,
    /// `address/prefix`.
    pub vip: &'a str,
}

/// The weight of node `tracker`'s BFD session to node `peer` (0-based): the peer's weight, less
/// the tracker's number (1 to 3), so that the two survivors of a cut never tie: tied backups
/// wait the same master-down skew, both become master and one yields, and a client whose ARP
/// entry followed the one that yielded is cut off until the entry goes stale (5.3 s measured).
fn session_weight(tracker: usize, peer: usize) -> Option<i32> {
    Some(PEER_WEIGHTS.get(peer)? - (tracker as i32 + 1))
}

/// The BFD session's name for the peer with index `peer`.
fn session_name(peer: usize) -> String {
    format!("peer_n{}", peer + 1)
}

/// The node's `keepalived.conf` for `profile`; an error for a peer index beyond the weights
/// (the weighted form is written for three nodes).
pub fn config(profile: Profile, node: &NodeAddresses<'_>) -> Result<String> {
    let mut text = format!("global_defs {{\n  router_id {}\n", node.node_id);
    if profile.bfd_multiplier().is_some() {
        text.push_str(&format!(
            "  vrrp_version 3\n  vrrp_rt_priority {RT_PRIORITY}\n  bfd_rt_priority {RT_PRIORITY}\n  vrrp_rlimit_rttime {RT_CPU_LIMIT_US}\n  bfd_rlimit_rttime {RT_CPU_LIMIT_US}\n  vrrp_no_swap\n  bfd_no_swap\n"
        ));
    }
    text.push_str("}\n");
    let mut track_bfd = String::new();
    if let Some(multiplier) = profile.bfd_multiplier() {
        for &(peer, address) in &node.peers {
            let Some(weight) = session_weight(node.index, peer) else {
                bail!("the weighted BFD config is written for {} nodes, not for node index {peer}", PEER_WEIGHTS.len());
            };
            let name = session_name(peer);
            text.push_str(&format!(
                "bfd_instance {name} {{\n  neighbor_ip {address}\n  source_ip {source}\n  min_rx 10\n  min_tx 10\n  multiplier {multiplier}\n  vrrp\n}}\n",
                source = node.data_address,
            ));
            track_bfd.push_str(&format!("    {name} weight {weight}\n"));
        }
    }
    text.push_str(&format!(
        "vrrp_script data_peers {{\n  script \"{script}\"\n  interval 1\n  timeout 2\n  fall 2\n  rise 2\n}}\n",
        script = node.check_script.display()
    ));
    let advert_int = if profile.bfd_multiplier().is_some() { "0.05" } else { "1" };
    text.push_str(&format!(
        "vrrp_instance VI_1 {{\n  state BACKUP\n  interface {mgmt}\n  virtual_router_id 51\n  priority {BASE_PRIORITY}\n  advert_int {advert_int}\n  track_interface {{\n    {data}\n  }}\n  track_script {{\n    data_peers\n  }}\n",
        mgmt = node.management_interface,
        data = node.data_interface,
    ));
    if !track_bfd.is_empty() {
        text.push_str(&format!("  track_bfd {{\n{track_bfd}  }}\n"));
    }
    text.push_str(&format!(
        "  virtual_ipaddress {{\n    {vip} dev {mgmt} label {mgmt}:vip\n  }}\n}}\n",
        vip = node.vip,
        mgmt = node.management_interface,
    ));
    Ok(text)
}

/// The effective priority of every node when the nodes in `cut` (indices) have lost every BFD
/// session across the cut, as the weights make it (for the tests and the module doc's claim).
#[cfg(test)]
fn priorities_after_cut(n_nodes: usize, cut: &[usize]) -> Vec<i32> {
    (0..n_nodes)
        .map(|node| {
            let lost: i32 = (0..n_nodes)
                .filter(|&peer| peer != node && (cut.contains(&peer) != cut.contains(&node)))
                .map(|peer| session_weight(node, peer).unwrap_or(0))
                .sum();
            BASE_PRIORITY + lost
        })
        .collect()
}

#[cfg(test)]
mod tests;
