//! A network-namespace cluster kept up after the process that built it has exited, for
//! `cargo xtask cluster up --netns`: [`NetnsCluster::detach`] records its namespaces, pids and
//! files in `<dir>/netns.json`, and [`DetachedNetnsCluster::stop`] (`cargo xtask cluster down`)
//! stops exactly those processes (while each still is a `zbs-taskd` with its recorded config),
//! stops ZooKeeper, deletes the namespaces (and with them every veth and bridge) and the dir.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::{ip, ClusterDir, ClusterZooKeeper, NetnsCluster, DISPATCHER_PORT, NETNS_DIR, VIP, VIP_PREFIX};
use crate::zk::DetachedZooKeeper;

/// The namespaces of a detached cluster are `zbsx-sw`, `zbsx-zk`, `zbsx-cl`, `zbsx-n<i>`: fixed
/// names (one such cluster per machine) that the test clusters' leftover sweep (`zbs-<pid>-...`)
/// never matches.
pub(super) const NETNS_PREFIX: &str = "zbsx";

/// The state file in the cluster's dir.
const STATE_FILE: &str = "netns.json";

/// How long `stop` waits for the daemons after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// What a detached cluster left running, as recorded in its dir.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DetachedNetnsCluster {
    pub dir: PathBuf,
    pub switch_namespace: String,
    pub zookeeper_namespace: String,
    pub client_namespace: String,
    /// Every namespace the cluster created.
    pub namespaces: Vec<String>,
    pub zookeeper_dir: PathBuf,
    /// The VIP with its prefix, and the port of the dispatcher API behind it.
    pub vip: String,
    pub dispatcher_port: u16,
    /// The `zbs-taskd` the nodes run (`zbs-task` is beside it).
    pub binary: PathBuf,
    pub nodes: Vec<DetachedNode>,
}

/// One node of a detached cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DetachedNode {
    pub node_id: String,
    pub namespace: String,
    pub management_address: Ipv4Addr,
    pub data_address: Ipv4Addr,
    /// 0 when it was not running at detach.
    pub pid: u32,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub stderr_path: PathBuf,
}

/// Makes `dir` (absent or empty) ready for a detachable cluster; refuses when a detached
/// cluster's namespaces exist already.
pub(super) fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    let taken: Vec<String> = fs::read_dir(NETNS_DIR)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().to_string())
                .filter(|name| name.starts_with(&format!("{NETNS_PREFIX}-")))
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        taken.is_empty(),
        "a detached network-namespace cluster exists already (namespaces {taken:?}); stop it first"
    );
    if dir.exists() {
        let mut entries = fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))?;
        ensure!(entries.next().is_none(), "{} is not empty", dir.display());
    }
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    fs::canonicalize(dir).with_context(|| format!("resolve {}", dir.display()))
}

impl NetnsCluster {
    /// Leaves the cluster running after this process exits (it must have been built with
    /// [`super::NetnsClusterBuilder::detached_in`]): the background threads stop, the daemons,
    /// ZooKeeper and the namespaces stay, and what is needed to stop them is written to
    /// `<dir>/netns.json`.
    pub fn detach(mut self) -> Result<DetachedNetnsCluster> {
        let dir = match &self.dir {
            Some(ClusterDir::Kept(dir)) => dir.clone(),
            _ => anyhow::bail!("only a cluster built with detached_in can be detached"),
        };
        let zookeeper_dir = match &self.zookeeper {
            Some(ClusterZooKeeper::Detached(zookeeper)) => zookeeper.dir.clone(),
            _ => anyhow::bail!("only a cluster built with detached_in can be detached"),
        };
        self.client.stop();
        self.holder_sampler.stop();
        self.arp_watcher.stop();
        let pids = self.daemons.detach();
        let topology = self.topology.as_mut().context("the cluster has no topology")?;
        let namespaces = std::mem::take(&mut topology.created);
        let state = DetachedNetnsCluster {
            dir: dir.clone(),
            switch_namespace: topology.switch_ns.clone(),
            zookeeper_namespace: topology.zookeeper_ns.clone(),
            client_namespace: topology.client_ns.clone(),
            namespaces,
            zookeeper_dir,
            vip: format!("{VIP}/{VIP_PREFIX}"),
            dispatcher_port: DISPATCHER_PORT,
            binary: self.binary.clone(),
            nodes: self
                .nodes
                .iter()
                .zip(pids)
                .map(|(node, pid)| DetachedNode {
                    node_id: node.spec.node_id.clone(),
                    namespace: node.spec.namespace.clone(),
                    management_address: node.spec.management_address,
                    data_address: node.spec.data_address,
                    pid: pid.unwrap_or(0),
                    config_path: node.spec.config_path.clone(),
                    log_path: node.spec.log_path.clone(),
                    stderr_path: node.spec.stderr_path.clone(),
                })
                .collect(),
        };
        self.detached = true;
        state.save()?;
        Ok(state)
    }
}

impl DetachedNetnsCluster {
    /// The cluster recorded in `dir`, if any.
    pub fn load(dir: &Path) -> Result<Option<DetachedNetnsCluster>> {
        let path = dir.join(STATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error).with_context(|| format!("read {}", path.display())),
        };
        serde_json::from_str(&text).map(Some).with_context(|| format!("parse {}", path.display()))
    }

    fn save(&self) -> Result<()> {
        let path = self.dir.join(STATE_FILE);
        let text = serde_json::to_string_pretty(self).context("encode the netns cluster state")?;
        fs::write(&path, text).with_context(|| format!("write {}", path.display()))
    }

    /// Whether the node's recorded pid is still its `zbs-taskd` (a reused pid is not).
    pub fn is_running(&self, node: usize) -> bool {
        let node = &self.nodes[node];
        is_daemon(node.pid, &node.config_path)
    }

    /// The addresses on the node's management interface besides its own: the VIP when it holds
    /// it (the configured one, or one set at run time with `zbs-task vip set`).
    pub fn vip_addresses(&self, node: usize) -> Vec<String> {
        let spec = &self.nodes[node];
        let own = format!("{}/", spec.management_address);
        ip(&["-n", &spec.namespace, "-4", "-o", "addr", "show", "dev", super::MANAGEMENT_INTERFACE])
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_whitespace().skip_while(|word| *word != "inet").nth(1).map(str::to_string))
            .filter(|address| !address.starts_with(&own))
            .collect()
    }

    /// The nodes whose namespace holds a VIP now.
    pub fn vip_holders(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&node| !self.vip_addresses(node).is_empty()).collect()
    }

    /// Stops what the cluster left running: SIGTERM to each recorded daemon still running
    /// (SIGKILL after a grace), ZooKeeper, then deletes the namespaces and the dir. Reports each
    /// step on stdout.
    pub fn stop(self) -> Result<()> {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&node| self.is_running(node)).collect();
        for &node in &running {
            let pid = self.nodes[node].pid;
            kill(Pid::from_raw(pid as i32), Signal::SIGTERM)
                .with_context(|| format!("send SIGTERM to {} (pid {pid})", self.nodes[node].node_id))?;
        }
        let deadline = Instant::now() + STOP_GRACE;
        for &node in &running {
            let (node_id, pid) = (&self.nodes[node].node_id, self.nodes[node].pid);
            while self.is_running(node) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.is_running(node) {
                println!("{node_id} (pid {pid}) did not stop within {STOP_GRACE:?}; sending SIGKILL");
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            } else {
                println!("{node_id} (pid {pid}) stopped");
            }
        }
        match DetachedZooKeeper::load(&self.zookeeper_dir)? {
            Some(zookeeper) => {
                zookeeper.stop().context("stop ZooKeeper")?;
                println!("ZooKeeper stopped");
            }
            None => println!("ZooKeeper: nothing recorded in {}", self.zookeeper_dir.display()),
        }
        for namespace in self.namespaces.iter().rev() {
            if Path::new(NETNS_DIR).join(namespace).exists() {
                ip(&["netns", "del", namespace]).with_context(|| format!("delete namespace {namespace}"))?;
            }
        }
        println!("deleted the namespaces {}", self.namespaces.join(" "));
        fs::remove_dir_all(&self.dir).with_context(|| format!("remove {}", self.dir.display()))?;
        println!("removed {}", self.dir.display());
        Ok(())
    }
}

/// Whether `pid` is a live `zbs-taskd` with `config_path` on its command line (`ip netns exec`
/// execs the daemon, so the recorded pid is the daemon's).
fn is_daemon(pid: u32, config_path: &Path) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let mut args = cmdline.split(|&byte| byte == 0).map(|arg| Path::new(std::ffi::OsStr::from_bytes(arg)));
    let is_taskd = args.next().and_then(Path::file_name).is_some_and(|name| name == "zbs-taskd");
    is_taskd && args.any(|arg| arg == config_path)
}
