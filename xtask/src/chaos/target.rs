//! The cluster under test, either fixture: the loopback [`Cluster`] (three daemons and a
//! three-server ZooKeeper ensemble) or the [`NetnsCluster`] (`--netns`: namespaces, a VIP and
//! its holder sampler, one ZooKeeper in its own namespace). The nemesis, the workload and the
//! gathering see only this.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tests::cluster::{Cluster, Signal};
use tests::netns::{Cut, NetnsCluster, Network};
use tests::prelude::*;
use tests::zk::ZooKeeper;

use super::checker::LeaderSample;

/// An episode of the VIP on two nodes at once: its first and last sample on `CLOCK_MONOTONIC`,
/// and the nodes that held it.
pub type TwoHolderEpisode = (u64, u64, Vec<usize>);

/// One VIP sample that saw several holders: when (`CLOCK_MONOTONIC`) and which nodes.
pub type HolderSample = (u64, Vec<usize>);

pub enum Target {
    Loopback { cluster: Cluster, agent: ureq::Agent },
    Netns { cluster: NetnsCluster },
}

/// One HTTP exchange's answer: the status and the JSON body (`null` when not JSON).
pub type Answer = (u16, serde_json::Value);

impl Target {
    pub fn loopback(cluster: Cluster) -> Target {
        // A fresh connection per request: an idle keep-alive one would hold up a stopping daemon.
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .build();
        Target::Loopback { cluster, agent }
    }

    pub fn n_nodes(&self) -> usize {
        match self {
            Target::Loopback { cluster, .. } => cluster.n_nodes(),
            Target::Netns { cluster } => cluster.n_nodes(),
        }
    }

    pub fn is_netns(&self) -> bool {
        matches!(self, Target::Netns { .. })
    }

    pub fn session_timeout(&self) -> Duration {
        match self {
            Target::Loopback { cluster, .. } => cluster.session_timeout(),
            Target::Netns { cluster } => cluster.session_timeout(),
        }
    }

    /// `http://<node's management address>:<dispatcher port><path>`.
    pub fn api_url(&self, node: usize, path: &str) -> String {
        match self {
            Target::Loopback { cluster, .. } => {
                let spec = cluster.node(node);
                format!("http://{}:{}{path}", spec.address, spec.dispatcher_port)
            }
            Target::Netns { cluster } => cluster.api_url(node, path),
        }
    }

    /// The runner address the dispatcher writes in `runner_addr` for this node.
    pub fn runner_addr(&self, node: usize) -> String {
        match self {
            Target::Loopback { cluster, .. } => {
                let spec = cluster.node(node);
                format!("{}:{}", spec.address, spec.runner_port)
            }
            Target::Netns { cluster } => {
                format!("{}:{}", cluster.node(node).management_address, tests::netns::RUNNER_PORT)
            }
        }
    }

    /// One request with the cluster's token; 4xx and 5xx are answers, a transport failure an error.
    pub fn http(&self, method: &str, url: &str, body: Option<&serde_json::Value>) -> Result<Answer> {
        match self {
            Target::Loopback { cluster, agent } => {
                let request = agent.request(method, url).set(taskd::access::TOKEN_HEADER, cluster.token());
                tests::http::json_answer(request, body)
            }
            Target::Netns { cluster } => cluster.http(method, url, body),
        }
    }

    pub fn leader(&self) -> Option<usize> {
        match self {
            Target::Loopback { cluster, .. } => cluster.leader(),
            Target::Netns { cluster } => cluster.leader(),
        }
    }

    pub fn signal(&self, node: usize, signal: Signal) -> Result<()> {
        match self {
            Target::Loopback { cluster, .. } => cluster.signal(node, signal),
            Target::Netns { cluster } => cluster.signal(node, signal),
        }
    }

    pub fn kill(&self, node: usize) -> Result<()> {
        match self {
            Target::Loopback { cluster, .. } => cluster.kill(node),
            Target::Netns { cluster } => cluster.kill(node),
        }
    }

    /// Starts the node's process again; on the thread that owns the cluster (see the fixtures).
    pub fn restart(&self, node: usize) -> Result<u32> {
        match self {
            Target::Loopback { cluster, .. } => cluster.restart(node),
            Target::Netns { cluster } => cluster.restart(node),
        }
    }

    pub fn pid(&self, node: usize) -> Option<u32> {
        match self {
            Target::Loopback { cluster, .. } => cluster.pid(node),
            Target::Netns { cluster } => cluster.pid(node),
        }
    }

    /// Health flaps: the loopback nodes' health file (netns nodes probe their data link: cut it).
    pub fn set_health(&self, node: usize, ok: bool) -> Result<()> {
        match self {
            Target::Loopback { cluster, .. } => cluster.set_health(node, ok),
            Target::Netns { cluster } if ok => cluster.restore(node, Network::Data),
            Target::Netns { cluster } => cluster.cut(node, Network::Data, Cut::Detach),
        }
    }

    /// Cuts or restores a link (netns only).
    pub fn link(&self, node: usize, network: Network, up: bool) -> Result<()> {
        match self {
            Target::Loopback { .. } => bail!("the loopback cluster has no links to cut"),
            Target::Netns { cluster } if up => cluster.restore(node, network),
            Target::Netns { cluster } => cluster.cut(node, network, Cut::InterfaceDown),
        }
    }

    /// The ensemble whose servers the nemesis may stop (loopback only).
    pub fn zookeeper(&self) -> Option<&ZooKeeper> {
        match self {
            Target::Loopback { cluster, .. } => Some(cluster.zookeeper()),
            Target::Netns { .. } => None,
        }
    }

    pub fn state_dir(&self, node: usize) -> PathBuf {
        match self {
            Target::Loopback { cluster, .. } => cluster.node(node).state_dir.clone(),
            Target::Netns { cluster } => cluster.node(node).state_dir.clone(),
        }
    }

    pub fn dir(&self) -> PathBuf {
        match self {
            Target::Loopback { cluster, .. } => cluster.dir().to_path_buf(),
            Target::Netns { cluster } => cluster.dir().to_path_buf(),
        }
    }

    pub fn keep_dir_on_drop(&self) {
        match self {
            Target::Loopback { cluster, .. } => cluster.keep_dir_on_drop(),
            Target::Netns { cluster } => cluster.keep_dir_on_drop(),
        }
    }

    pub fn core_files(&self) -> Vec<PathBuf> {
        match self {
            Target::Loopback { cluster, .. } => cluster.core_files(),
            Target::Netns { cluster } => cluster.core_files(),
        }
    }

    pub fn crash_lines(&self) -> Vec<String> {
        match self {
            Target::Loopback { cluster, .. } => cluster.crash_lines(),
            Target::Netns { cluster } => cluster.crash_lines(),
        }
    }

    /// The loopback fixture's leader samples on `CLOCK_MONOTONIC`; None for netns, whose
    /// samples the harness takes itself.
    pub fn fixture_leader_samples(&self) -> Option<Vec<LeaderSample>> {
        let Target::Loopback { cluster, .. } = self else { return None };
        let (now, now_ns) = (Instant::now(), taskd::run_log::monotonic_ns());
        let samples = cluster
            .sampler()
            .observations()
            .into_iter()
            .map(|observation| LeaderSample {
                node: observation.node,
                at_ns: now_ns.saturating_sub(now.saturating_duration_since(observation.at).as_nanos() as u64),
                status: observation.status.map(|status| (status.pid, status.leader, status.sequence)),
            })
            .collect();
        Some(samples)
    }

    /// One node's status as a leader sample (netns: the harness's own sampler).
    pub fn leader_sample(&self, node: usize) -> LeaderSample {
        let status = match self {
            Target::Loopback { cluster, .. } => cluster.try_status(node),
            Target::Netns { cluster } => cluster.try_status(node),
        };
        LeaderSample {
            node,
            at_ns: taskd::run_log::monotonic_ns(),
            status: status.map(|status| (status.pid, status.leader, status.sequence)),
        }
    }

    /// The samples of the VIP on two nodes at once (netns; `CLOCK_MONOTONIC` and the holders),
    /// the number of samples, and the episodes of two holders: `(first, last)` and the nodes.
    pub fn vip_two_holder_samples(&self) -> (Vec<HolderSample>, usize, Vec<TwoHolderEpisode>) {
        match self {
            Target::Loopback { .. } => (Vec::new(), 0, Vec::new()),
            Target::Netns { cluster } => {
                let (now, now_ns) = (Instant::now(), taskd::run_log::monotonic_ns());
                let to_ns = |at: Instant| now_ns.saturating_sub(now.saturating_duration_since(at).as_nanos() as u64);
                let samples = cluster.holder_sampler().samples();
                let mut episodes: Vec<(u64, u64, Vec<usize>)> = Vec::new();
                let mut in_episode = false;
                for sample in &samples {
                    match (sample.holders.len() > 1, in_episode, episodes.last_mut()) {
                        (true, true, Some(episode)) => {
                            episode.1 = to_ns(sample.at);
                            for holder in &sample.holders {
                                if !episode.2.contains(holder) {
                                    episode.2.push(*holder);
                                }
                            }
                        }
                        (true, _, _) => episodes.push((to_ns(sample.at), to_ns(sample.at), sample.holders.clone())),
                        _ => {}
                    }
                    in_episode = sample.holders.len() > 1;
                }
                let two: Vec<HolderSample> = samples
                    .iter()
                    .filter(|sample| sample.holders.len() > 1)
                    .map(|sample| (to_ns(sample.at), sample.holders.clone()))
                    .collect();
                (two, samples.len(), episodes)
            }
        }
    }
}
