//! A real cluster in Linux network namespaces: N `zbs-taskd` nodes, each in its own namespace
//! with a management link (ZooKeeper, API, VIP) and a data link (the `probe` health source),
//! ZooKeeper in a namespace of its own, and a client namespace, all wired through two bridges in
//! a switch namespace. Nothing of it touches the host's interfaces.
//!
//! ```text
//!   zbs-<pid>-<seq>-sw (switch)       mgmtbr (management, 10.213.1.0/24)   databr (data, 10.213.2.0/24)
//!     ├── m1 ── mgmt0 of -n1 10.213.1.1        d1 ── data0 of -n1 10.213.2.1
//!     ├── m2 ── mgmt0 of -n2 10.213.1.2        d2 ── data0 of -n2 10.213.2.2
//!     ├── ...
//!     ├── mzk ── mgmt0 of -zk 10.213.1.250 (ZooKeeper :2181)
//!     └── mcl ── mgmt0 of -cl 10.213.1.200 (the client)
//!   VIP 10.213.1.100/24 on the leader's mgmt0 (label mgmt0:vip)
//!
//!   with `second_vip(true)`, a third bridge and link per node for a second service's VIP:
//!     svcbr (service, 10.213.3.0/24)   s1 ── svc0 of -n1 10.213.3.1, ...
//!   VIP 10.213.3.100/24 of the service `iscsi` on the leader's svc0 (label svc0:vip)
//! ```
//!
//! ZooKeeper is the [`crate::zk`] fixture placed in its namespace
//! ([`crate::zk::ZooKeeperBuilder::in_netns`]); the daemons are [`crate::daemon::Daemons`], the
//! same process handling as the loopback [`crate::cluster`].
//!
//! Node `i` (0-based) is `node-{i+1}` in namespace `<prefix>-n{i+1}`, with its files in
//! `<dir>/n{i+1}/` (`taskd.toml`, `taskd.log`, `stderr.log`, `state/`, and a `core` file if it
//! crashed: its core-size limit is raised and this machine's `core_pattern` is relative). Each
//! daemon runs as `ip netns exec <ns> zbs-taskd --config ...`; `ip` execs the daemon, so the
//! child's pid is the daemon's.
//!
//! The daemons listen where a deployed one does: on their management address (`10.213.1.x`) and
//! the VIP (bound with `IP_FREEBIND`), never on the data address (`10.213.2.x`, the one peers
//! probe). The keepalived comparison runs the daemons without a `[vip]` and lists keepalived's
//! VIP in `[api] listen_also`, so its clients still reach the leader there. Every node has the
//! cluster's API token (`token`), which [`NetnsCluster::http`] sends.
//!
//! The test process itself stays in the host's namespace. Whatever must talk to the cluster runs
//! on a thread that entered a namespace with `setns(2)` ([`in_netns`]): status requests and the
//! [`ClientLoop`] from the client namespace, the VIP checks over a netlink socket opened in each
//! node's namespace (no process per check, so the [`HolderSampler`] can look every 50 ms).
//!
//! Dropping the cluster stops the client loop and the sampler, SIGTERMs every daemon (SIGKILL
//! after a grace), stops ZooKeeper, then deletes every namespace it created, which destroys their
//! veths and bridges; this runs on a panic too. A namespace named `zbs-<pid>-...` whose `<pid>`
//! is no longer alive is a leftover of a crashed run and is deleted when the next cluster starts.
//! On a panic the dir with the logs is kept and its path printed.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use nix::sys::signal::kill;
use nix::unistd::Pid;

use taskd::config::{LogFormat, NetworkFailureAction, VipSection};
use vip::health::SourceKind;
use vip::VipConfig;

use crate::cluster::{daemon_binary, NodeStatus};
use crate::cluster_options::{write_daemon_config, ClusterOptions, ClusterSettings, DaemonConfig};
use crate::daemon::{die_with_parent, read_lossy, DaemonFiles, Daemons};
use crate::node_control::NodeControl;
use crate::zk::ZooKeeper;

mod detached;
pub use detached::DetachedNetnsCluster;

pub use nix::sys::signal::Signal;

/// The management subnet's first three octets; node `i` is `.{i+1}`.
const MANAGEMENT_NET: [u8; 3] = [10, 213, 1];
/// The data subnet's first three octets; node `i` is `.{i+1}`.
const DATA_NET: [u8; 3] = [10, 213, 2];
/// The VIP the leader holds.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 213, 1, 100);
/// Its prefix length.
pub const VIP_PREFIX: u8 = 24;
/// ZooKeeper's address on the management network.
pub const ZOOKEEPER_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 213, 1, 250);
/// The client's address on the management network.
pub const CLIENT_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 213, 1, 200);
/// ZooKeeper's client port (each namespace is its own network: fixed ports are free).
pub const ZOOKEEPER_PORT: u16 = 2181;
/// The daemons' ports.
pub const DISPATCHER_PORT: u16 = 10600;
pub const RUNNER_PORT: u16 = 10601;
pub const PROBE_PORT: u16 = 10602;
/// The interface names inside a node's (and ZooKeeper's and the client's) namespace.
pub const MANAGEMENT_INTERFACE: &str = "mgmt0";
pub const DATA_INTERFACE: &str = "data0";
/// The bridges in the switch namespace.
const MANAGEMENT_BRIDGE: &str = "mgmtbr";
const DATA_BRIDGE: &str = "databr";

/// The second VIP (`NetnsClusterBuilder::second_vip`): its service, address, prefix, interface.
pub const SECOND_VIP_SERVICE: &str = "iscsi";
pub const SECOND_VIP: Ipv4Addr = Ipv4Addr::new(10, 213, 3, 100);
pub const SECOND_VIP_PREFIX: u8 = 24;
pub const SERVICE_INTERFACE: &str = "svc0";
/// The service subnet's first three octets; node `i` is `.{i+1}`.
const SERVICE_NET: [u8; 3] = [10, 213, 3];
/// The bridge of the service links.
const SERVICE_BRIDGE: &str = "svcbr";

/// Where `ip netns add` puts its namespaces.
const NETNS_DIR: &str = "/run/netns";
/// Every namespace this harness creates starts with it.
const NETNS_PREFIX: &str = "zbs-";

/// How long a daemon gets to exit after SIGTERM when the cluster is dropped, before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(8);
/// How long one status request may take.
const STATUS_TIMEOUT: Duration = Duration::from_millis(1000);
/// How often the `wait_*` helpers look again.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Why the harness cannot run here (not root, no `ip`, no ZooKeeper), or None when it can. Tests
/// print it and return early.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("network-namespace tests need root".to_string());
    }
    match Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(status) if status.success() => {}
        _ => return Some("network-namespace tests need iproute2's `ip`".to_string()),
    }
    if !Path::new(crate::zk::DEFAULT_ZOOKEEPER_JAR).is_file() {
        return Some(format!("no ZooKeeper server: {}", crate::zk::INSTALL_HINT));
    }
    None
}

/// Which of a node's two links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// ZooKeeper, API and VIP.
    Management,
    /// The data network the `probe` health source checks.
    Data,
}

/// How a link is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// The node's interface is set down: its link state says so at once.
    InterfaceDown,
    /// The switch-side veth is detached from its bridge: the node's interface stays up, only
    /// traffic stops (a silent cut, as a failed switch port or cable beyond the NIC).
    Detach,
}

/// Settings for starting a cluster; every node gets the same ones. The setters both fixtures
/// share (node count, session timeout, `configure`, ...) are [`ClusterSettings`]'.
#[derive(Clone, Debug)]
pub struct NetnsClusterBuilder {
    options: ClusterOptions,
    holder_sample_interval: Duration,
    client_interval: Duration,
    client_timeout: Duration,
    vip: bool,
    vip_setting: Option<(String, String)>,
    second_vip: bool,
    detached_dir: Option<PathBuf>,
}

impl Default for NetnsClusterBuilder {
    fn default() -> Self {
        let mut config = DaemonConfig {
            session_timeout_ms: Some(4_000),
            drain_deadline_ms: Some(2_000),
            on_network_failure: Some(NetworkFailureAction::Stay),
            step_down_requires_healthy_peer: Some(true),
            ..DaemonConfig::default()
        };
        config.log.format = Some(LogFormat::Glog);
        config.log.level = Some("info,may=warn".to_string());
        config.health.source = SourceKind::Probe;
        config.health.fall = 2;
        config.health.rise = 3;
        config.health.probe.port = PROBE_PORT;
        config.health.probe.interval_ms = 100;
        config.health.probe.timeout_ms = 50;
        config.health.probe.track_interface = true;
        config.health.probe.interface = Some(DATA_INTERFACE.to_string());
        NetnsClusterBuilder {
            options: ClusterOptions::new(config),
            holder_sample_interval: Duration::from_millis(50),
            client_interval: Duration::from_millis(20),
            client_timeout: Duration::from_millis(200),
            vip: true,
            vip_setting: None,
            second_vip: false,
            detached_dir: None,
        }
    }
}

impl ClusterSettings for NetnsClusterBuilder {
    fn options_mut(&mut self) -> &mut ClusterOptions {
        &mut self.options
    }
}

impl NetnsClusterBuilder {
    /// Three nodes (1 to 99), 4 s sessions, the `probe` source every 100 ms (50 ms timeout) with
    /// fall 2 / rise 3, the whole-outage guard on, VIP samples every 50 ms, a client request every
    /// 20 ms.
    pub fn new() -> Self {
        Self::default()
    }

    /// The settings both fixtures share, every node's configuration among them.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// Sets the probe's round interval and timeout.
    pub fn probe_timing(mut self, interval: Duration, timeout: Duration) -> Self {
        let probe = &mut self.options.config.health.probe;
        probe.interval_ms = interval.as_millis() as u64;
        probe.timeout_ms = timeout.as_millis() as u64;
        self
    }

    /// Sets how often the background sampler looks for the VIP in every node's namespace.
    pub fn holder_sample_interval(mut self, interval: Duration) -> Self {
        self.holder_sample_interval = interval;
        self
    }

    /// Sets the client loop's request interval and per-request timeout.
    pub fn client_timing(mut self, interval: Duration, timeout: Duration) -> Self {
        self.client_interval = interval;
        self.client_timeout = timeout;
        self
    }

    /// Whether the daemons hold the VIP (default true). Without, they only serve their API (on
    /// their management address and, through `[api] listen_also`, on [`VIP`] wherever it is) and
    /// something else, such as keepalived ([`NetnsCluster::start_keepalived`]), can move the VIP.
    pub fn vip(mut self, vip: bool) -> Self {
        self.vip = vip;
        self
    }

    /// Writes `vip.address` and `vip.interface` as given instead of [`VIP`]/[`VIP_PREFIX`] on
    /// [`MANAGEMENT_INTERFACE`], unchecked, so a test can hand the daemons a bad configuration.
    /// Clusters started this way are launched ([`NetnsClusterBuilder::launch`]): they may never
    /// form.
    pub fn vip_setting(mut self, address: impl Into<String>, interface: impl Into<String>) -> Self {
        self.vip = true;
        self.vip_setting = Some((address.into(), interface.into()));
        self
    }

    /// Gives every node a third link, `svc0` on the bridge `svcbr` (10.213.3.0/24), and the
    /// daemons a second VIP there: `[[vip]]` tables for the service `default` ([`VIP`] on
    /// [`MANAGEMENT_INTERFACE`]) and [`SECOND_VIP_SERVICE`] ([`SECOND_VIP`] on
    /// [`SERVICE_INTERFACE`]). A second holder sampler and ARP watcher follow that VIP
    /// ([`NetnsCluster::second_holder_sampler`], [`NetnsCluster::second_arp_watcher`]).
    /// Ignored with `vip(false)` or `vip_setting`.
    pub fn second_vip(mut self, second_vip: bool) -> Self {
        self.second_vip = second_vip;
        self
    }

    /// Whether the daemons hold the second VIP.
    fn holds_second_vip(&self) -> bool {
        self.second_vip && self.vip && self.vip_setting.is_none()
    }

    /// Builds a cluster that can outlive this process ([`NetnsCluster::detach`]): its files in
    /// `dir` (which must not exist or be empty) instead of a temp dir, its namespaces named
    /// `zbsx-<role>` (one such cluster per machine; the leftover sweep of test clusters leaves them
    /// alone), ZooKeeper and the daemons in sessions of their own.
    pub fn detached_in(mut self, dir: impl Into<PathBuf>) -> Self {
        self.detached_dir = Some(dir.into());
        self
    }

    /// Sets `health.probe.track_interface` (default true).
    pub fn track_interface(mut self, track_interface: bool) -> Self {
        self.options.config.health.probe.track_interface = track_interface;
        self
    }

    /// Builds the namespaces and links, starts ZooKeeper and every node, the VIP sampler and the
    /// client loop, and waits until every node serves and sees every member healthy, one leads,
    /// and it holds the VIP.
    pub fn start(self) -> Result<NetnsCluster> {
        let cluster = self.launch()?;
        if let Err(error) = cluster.wait_until_formed(cluster.start_timeout) {
            cluster.keep_dir.store(true, Ordering::Release);
            return Err(error);
        }
        Ok(cluster)
    }

    /// What [`NetnsClusterBuilder::start`] does, without waiting for the cluster to form: every
    /// daemon has been spawned when it returns.
    pub fn launch(self) -> Result<NetnsCluster> {
        let n_nodes = self.options.n_nodes;
        ensure!((1..=99).contains(&n_nodes), "a cluster has 1 to 99 nodes, not {n_nodes}");
        if let Some(reason) = skip_reason() {
            bail!("{reason}");
        }
        let binary = match &self.options.binary {
            Some(binary) => binary.clone(),
            None => daemon_binary()?,
        };
        remove_leftover_namespaces();
        let dir = match &self.detached_dir {
            Some(dir) => ClusterDir::Kept(detached::prepare_dir(dir)?),
            None => ClusterDir::Temp(
                tempfile::Builder::new().prefix("zbs-netns-").tempdir().context("create the cluster's temp dir")?,
            ),
        };
        let prefix = match &self.detached_dir {
            Some(_) => detached::NETNS_PREFIX.to_string(),
            None => {
                static SEQUENCE: AtomicU32 = AtomicU32::new(0);
                format!("{NETNS_PREFIX}{}-{}", std::process::id(), SEQUENCE.fetch_add(1, Ordering::Relaxed))
            }
        };
        let topology = Topology::build(&prefix, n_nodes, self.holds_second_vip())?;
        let zookeeper_builder = ZooKeeper::builder()
            .in_netns(&topology.zookeeper_ns, ZOOKEEPER_ADDRESS, ZOOKEEPER_PORT)
            .start_timeout(self.options.start_timeout);
        let zookeeper = match &dir {
            ClusterDir::Kept(path) => ClusterZooKeeper::Detached(
                zookeeper_builder
                    .start_detached(&path.join("zookeeper"))
                    .context("start ZooKeeper in its namespace")?,
            ),
            ClusterDir::Temp(_) => ClusterZooKeeper::Owned(Box::new(
                zookeeper_builder.start().context("start ZooKeeper in its namespace")?,
            )),
        };
        // Every node runs with authentication on, as a deployed one does: one token file for all.
        let token_path = dir.path().join("token");
        taskd::access::create_token_file(&token_path, None).context("write the cluster's API token")?;
        let token = taskd::access::ApiTokens::read(&token_path).context("read the API token")?.sent().to_string();
        let mut nodes = Vec::with_capacity(n_nodes);
        for index in 0..n_nodes {
            let spec = NodeSpec::plan(index, dir.path(), &topology)?;
            fs::create_dir_all(&spec.state_dir).with_context(|| format!("create {}", spec.state_dir.display()))?;
            let config = self.node_config(&spec, &token_path);
            write_daemon_config(&spec.config_path, "the zbs-taskd-rs network-namespace cluster fixture", &config)?;
            nodes.push(Node { spec });
        }
        let address_sockets = nodes
            .iter()
            .map(|node| AddressSocket::open_in(&node.spec.namespace).map(Mutex::new))
            .collect::<Result<Vec<_>>>()?;
        let address_sockets = Arc::new(address_sockets);
        let holder_sampler = HolderSampler::start(address_sockets.clone(), self.holder_sample_interval);
        let client = ClientLoop::start(&topology.client_ns, self.client_interval, self.client_timeout);
        let arp_watcher = ArpWatcher::start(&topology.switch_ns, MANAGEMENT_BRIDGE)?;
        let (second_holder_sampler, second_arp_watcher) = if self.holds_second_vip() {
            let sampler = HolderSampler::start_for(address_sockets.clone(), self.holder_sample_interval, SECOND_VIP);
            (Some(sampler), Some(ArpWatcher::start(&topology.switch_ns, SERVICE_BRIDGE)?))
        } else {
            (None, None)
        };
        let daemons = Daemons::new("netns fixture", nodes.iter().map(|node| node.spec.daemon_files()).collect());
        let daemons = if self.detached_dir.is_some() { daemons.outliving_this_process() } else { daemons };
        let cluster = NetnsCluster {
            daemons,
            nodes,
            arp_watcher,
            second_holder_sampler,
            second_arp_watcher,
            binary,
            address_sockets,
            holder_sampler,
            client,
            token,
            keep_dir: AtomicBool::new(false),
            dir: Some(dir),
            zookeeper: Some(zookeeper),
            start_timeout: self.options.start_timeout,
            keepalived: (0..n_nodes).map(|_| Mutex::new(None)).collect(),
            settings: self,
            topology: Some(topology),
            detached: false,
        };
        if let Err(error) = (0..cluster.nodes.len()).try_for_each(|node| cluster.spawn(node).map(drop)) {
            cluster.keep_dir.store(true, Ordering::Release);
            return Err(error);
        }
        Ok(cluster)
    }

    /// Node `spec`'s configuration: the cluster's, with the node's own keys and the VIP (or
    /// keepalived's VIP in `[api] listen_also`) over it.
    fn node_config(&self, spec: &NodeSpec, token_path: &Path) -> DaemonConfig {
        let mut config = self.options.config.clone();
        config.node_id = Some(spec.node_id.clone());
        config.zookeeper_hosts = Some(format!("{ZOOKEEPER_ADDRESS}:{ZOOKEEPER_PORT}"));
        config.management_address = Some(spec.management_address.into());
        config.data_address = Some(spec.data_address.into());
        config.dispatcher_port = Some(DISPATCHER_PORT);
        config.runner_port = Some(RUNNER_PORT);
        config.state_dir = Some(spec.state_dir.clone());
        config.log.file = Some(spec.log_path.clone());
        config.api.token_file = Some(token_path.to_path_buf());
        if !self.vip {
            config.api.listen_also = Some(vec![VIP.into()]);
        }
        config.vip = match (&self.vip_setting, self.vip) {
            (Some((address, interface)), _) => {
                Some(VipSection::One(VipConfig::new(address.as_str(), interface.as_str())))
            }
            (None, true) if self.second_vip => Some(VipSection::Many(vec![
                VipConfig::new(format!("{VIP}/{VIP_PREFIX}"), MANAGEMENT_INTERFACE),
                VipConfig {
                    service: SECOND_VIP_SERVICE.to_string(),
                    ..VipConfig::new(format!("{SECOND_VIP}/{SECOND_VIP_PREFIX}"), SERVICE_INTERFACE)
                },
            ])),
            (None, true) => Some(VipSection::One(VipConfig::new(format!("{VIP}/{VIP_PREFIX}"), MANAGEMENT_INTERFACE))),
            (None, false) => None,
        };
        config
    }
}

/// Where one node lives.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub index: usize,
    pub node_id: String,
    /// Its network namespace.
    pub namespace: String,
    /// Its address on the management network (`mgmt0`).
    pub management_address: Ipv4Addr,
    /// Its address on the data network (`data0`).
    pub data_address: Ipv4Addr,
    /// The switch-side veths of its two links.
    pub management_port: String,
    pub data_port: String,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub stderr_path: PathBuf,
    pub state_dir: PathBuf,
}

impl NodeSpec {
    fn plan(index: usize, root: &Path, topology: &Topology) -> Result<NodeSpec> {
        let dir = root.join(format!("n{}", index + 1));
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(NodeSpec {
            index,
            node_id: format!("node-{}", index + 1),
            namespace: topology.node_ns[index].clone(),
            management_address: node_address(MANAGEMENT_NET, index),
            data_address: node_address(DATA_NET, index),
            management_port: format!("m{}", index + 1),
            data_port: format!("d{}", index + 1),
            config_path: dir.join("taskd.toml"),
            log_path: dir.join("taskd.log"),
            stderr_path: dir.join("stderr.log"),
            state_dir: dir.join("state"),
            dir,
        })
    }

    /// The status URL on the node's own management address.
    pub fn status_url(&self) -> String {
        format!("http://{}:{DISPATCHER_PORT}/api/v1/status", self.management_address)
    }
}

/// The IPv6 address on the management network of the host whose IPv4 address is `address`.
pub fn management_address6(address: Ipv4Addr) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::new(0xfd00, 0x213, 1, 0, 0, 0, 0, u16::from(address.octets()[3]))
}

fn node_address(net: [u8; 3], index: usize) -> Ipv4Addr {
    Ipv4Addr::new(net[0], net[1], net[2], index as u8 + 1)
}

struct Node {
    spec: NodeSpec,
}

impl NodeSpec {
    fn daemon_files(&self) -> DaemonFiles {
        DaemonFiles {
            node_id: self.node_id.clone(),
            dir: self.dir.clone(),
            state_dir: self.state_dir.clone(),
            log_path: self.log_path.clone(),
            stderr_path: self.stderr_path.clone(),
        }
    }
}

/// ZooKeeper plus N `zbs-taskd` processes in network namespaces; see the module documentation.
pub struct NetnsCluster {
    settings: NetnsClusterBuilder,
    nodes: Vec<Node>,
    daemons: Daemons,
    binary: PathBuf,
    address_sockets: Arc<Vec<Mutex<AddressSocket>>>,
    holder_sampler: HolderSampler,
    client: ClientLoop,
    /// The API token every node accepts.
    token: String,
    arp_watcher: ArpWatcher,
    /// With `second_vip(true)`: the second VIP's sampler and the service bridge's ARP watcher.
    second_holder_sampler: Option<HolderSampler>,
    second_arp_watcher: Option<ArpWatcher>,
    start_timeout: Duration,
    keep_dir: AtomicBool,
    dir: Option<ClusterDir>,
    zookeeper: Option<ClusterZooKeeper>,
    topology: Option<Topology>,
    keepalived: Vec<Mutex<Option<Child>>>,
    /// Set by [`NetnsCluster::detach`]: the drop leaves everything running.
    detached: bool,
}

impl NetnsCluster {
    /// A cluster with the [`NetnsClusterBuilder`] defaults.
    pub fn start() -> Result<NetnsCluster> {
        NetnsClusterBuilder::new().start()
    }

    /// The builder, to change the defaults.
    pub fn builder() -> NetnsClusterBuilder {
        NetnsClusterBuilder::new()
    }

    /// The API token every node accepts (sent by [`NetnsCluster::http`]).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Where the node lives.
    pub fn node(&self, node: usize) -> &NodeSpec {
        &self.nodes[node].spec
    }

    /// The cluster's dir (a temp dir unless detachable).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map(ClusterDir::path).unwrap_or(Path::new("/"))
    }

    /// The settings the cluster was started with.
    pub fn settings(&self) -> &NetnsClusterBuilder {
        &self.settings
    }

    /// The session timeout the nodes were configured with.
    pub fn session_timeout(&self) -> Duration {
        self.settings.options.session_timeout()
    }

    /// The `zbs-taskd` binary the nodes run.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Keeps the dir when the cluster is dropped, even without a panic.
    pub fn keep_dir_on_drop(&self) {
        self.keep_dir.store(true, Ordering::Release);
    }

    /// The namespaces: switch, ZooKeeper, client.
    pub fn switch_namespace(&self) -> &str {
        &self.topology().switch_ns
    }
    pub fn zookeeper_namespace(&self) -> &str {
        &self.topology().zookeeper_ns
    }
    pub fn client_namespace(&self) -> &str {
        &self.topology().client_ns
    }

    fn topology(&self) -> &Topology {
        self.topology.as_ref().expect("the topology lives until the cluster is dropped")
    }

    /// ZooKeeper's log.
    pub fn zookeeper_log(&self) -> String {
        self.zookeeper.as_ref().map(|zookeeper| read_lossy(&zookeeper.log_path())).unwrap_or_default()
    }

    /// The background VIP sampler.
    pub fn holder_sampler(&self) -> &HolderSampler {
        &self.holder_sampler
    }

    /// The client loop that keeps asking the VIP for a status.
    pub fn client(&self) -> &ClientLoop {
        &self.client
    }

    /// The ARP frames seen on the switch's management bridge.
    pub fn arp_watcher(&self) -> &ArpWatcher {
        &self.arp_watcher
    }

    /// The second VIP's holder sampler (`second_vip(true)`), like [`NetnsCluster::holder_sampler`].
    pub fn second_holder_sampler(&self) -> Option<&HolderSampler> {
        self.second_holder_sampler.as_ref()
    }

    /// The ARP frames seen on the service bridge (`second_vip(true)`).
    pub fn second_arp_watcher(&self) -> Option<&ArpWatcher> {
        self.second_arp_watcher.as_ref()
    }

    /// How many gratuitous ARPs announcing [`SECOND_VIP`] at the node's `svc0` MAC the switch's
    /// service bridge saw since `since` (`second_vip(true)`).
    pub fn second_vip_announcements_since(&self, node: usize, since: Instant) -> Result<usize> {
        let watcher = self.second_arp_watcher.as_ref().ok_or_else(|| anyhow!("built without second_vip(true)"))?;
        let text = ip(&["-n", &self.nodes[node].spec.namespace, "-o", "link", "show", SERVICE_INTERFACE])?;
        let mac = word_after(&text, "link/ether").ok_or_else(|| anyhow!("no MAC in {text:?}"))?;
        let mac = vip::arp_capture::parse_mac(&mac).ok_or_else(|| anyhow!("not a MAC: {mac:?}"))?;
        Ok(watcher.frames_since(since).iter().filter(|seen| seen.frame.announces(SECOND_VIP, mac)).count())
    }

    /// Deletes the node's `svc0` (the veth pair goes with it), as an interface that vanishes
    /// (`second_vip(true)`).
    pub fn delete_service_interface(&self, node: usize) -> Result<()> {
        ip(&["-n", &self.nodes[node].spec.namespace, "link", "del", SERVICE_INTERFACE]).map(drop)
    }

    /// Creates the node's `svc0` again after [`NetnsCluster::delete_service_interface`]: the veth
    /// pair, on the service bridge, with the node's address, up.
    pub fn restore_service_interface(&self, node: usize) -> Result<()> {
        let namespace = &self.nodes[node].spec.namespace;
        let port = format!("s{}", node + 1);
        let switch = self.switch_namespace();
        ip(&[
            "-n",
            switch,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            SERVICE_INTERFACE,
            "netns",
            namespace,
        ])?;
        ip(&["-n", switch, "link", "set", &port, "master", SERVICE_BRIDGE, "up"])?;
        let address = format!("{}/24", node_address(SERVICE_NET, node));
        ip(&["-n", namespace, "addr", "add", &address, "dev", SERVICE_INTERFACE])?;
        ip(&["-n", namespace, "link", "set", SERVICE_INTERFACE, "up"]).map(drop)
    }

    /// How many gratuitous ARPs announcing the VIP at the node's management MAC the switch saw
    /// since `since`.
    pub fn vip_announcements_since(&self, node: usize, since: Instant) -> Result<usize> {
        self.announcements_since(node, VIP, since)
    }

    /// How many gratuitous ARPs announcing `address` at the node's management MAC the switch saw
    /// since `since`.
    pub fn announcements_since(&self, node: usize, address: Ipv4Addr, since: Instant) -> Result<usize> {
        let mac = self.management_mac(node)?;
        let mac = vip::arp_capture::parse_mac(&mac).ok_or_else(|| anyhow!("not a MAC: {mac:?}"))?;
        Ok(self.arp_watcher.frames_since(since).iter().filter(|seen| seen.frame.announces(address, mac)).count())
    }

    /// Sends an HTTP request with an optional JSON body from the client namespace; the status
    /// and the JSON answer (`null` when the body is not JSON), 4xx and 5xx included.
    pub fn http(&self, method: &str, url: &str, body: Option<&serde_json::Value>) -> Result<(u16, serde_json::Value)> {
        let (method, url, body, token) = (method.to_string(), url.to_string(), body.cloned(), self.token.clone());
        in_netns(self.client_namespace(), move || -> Result<(u16, serde_json::Value)> {
            let request =
                status_agent(Duration::from_secs(10)).request(&method, &url).set(taskd::access::TOKEN_HEADER, &token);
            crate::http::json_answer(request, body.as_ref())
        })?
    }

    /// A `GET` of a text answer (`/metrics`) from the client namespace: the status and the body.
    pub fn http_text(&self, url: &str) -> Result<(u16, String)> {
        let (url, token) = (url.to_string(), self.token.clone());
        in_netns(self.client_namespace(), move || -> Result<(u16, String)> {
            let request = status_agent(Duration::from_secs(10)).get(&url).set(taskd::access::TOKEN_HEADER, &token);
            let response = match request.call() {
                Ok(response) | Err(ureq::Error::Status(_, response)) => response,
                Err(error) => return Err(anyhow!("GET {url}: {error}")),
            };
            let status = response.status();
            Ok((status, response.into_string().with_context(|| format!("read the answer of {url}"))?))
        })?
    }

    /// The dispatcher API's URL of `path` at the node's own management address.
    pub fn api_url(&self, node: usize, path: &str) -> String {
        format!("http://{}:{DISPATCHER_PORT}{path}", self.nodes[node].spec.management_address)
    }

    fn spawn(&self, node: usize) -> Result<u32> {
        let spec = &self.nodes[node].spec;
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &spec.namespace]).arg(&self.binary).arg("--config").arg(&spec.config_path);
        self.daemons.spawn(node, command)
    }

    /// Waits until every node serves, sees every member and has a valid health of its own, one
    /// node leads and it alone holds the VIP: the state after start-up, and before each trial of
    /// a benchmark.
    pub fn wait_formed(&self, timeout: Duration) -> Result<()> {
        self.wait_until_formed(timeout)
    }

    fn wait_until_formed(&self, timeout: Duration) -> Result<()> {
        self.wait_formed_holding_vip(timeout, self.settings.vip)
    }

    /// [`NetnsCluster::wait_formed`] for daemons whose configs were rewritten
    /// ([`NetnsCluster::rewrite_configs`]): `daemons_hold_vip` says whether the leader must hold
    /// the VIP (the rewritten settings' `vip`), instead of the settings the cluster started with.
    pub fn wait_formed_holding_vip(&self, timeout: Duration, daemons_hold_vip: bool) -> Result<()> {
        let n_nodes = self.nodes.len();
        self.wait_until(timeout, "every node serving, seeing every member healthy, one leader holding the VIP", || {
            let statuses = self.statuses();
            // Every node's own health valid as well: until it is proved (`rise` good rounds) a node
            // is no candidate, and the leader would keep the VIP through a cut (whole-outage guard).
            // Each node's own status is asked: the members' `healthy` in a status is the cached
            // membership's and can be stale.
            let formed = statuses.iter().all(|status| {
                status
                    .as_ref()
                    .is_some_and(|status| status.members.len() == n_nodes && !status.stopping && health_valid(status))
            });
            let leaders: Vec<usize> =
                (0..n_nodes).filter(|&node| statuses[node].as_ref().is_some_and(|status| status.leader)).collect();
            formed
                && leaders.len() == 1
                && (!daemons_hold_vip || self.vip_holders().ok().as_deref() == Some(&leaders[..]))
                && (!daemons_hold_vip
                    || !self.settings.holds_second_vip()
                    || self.address_holders(SECOND_VIP).ok().as_deref() == Some(&leaders[..]))
        })
        .with_context(|| format!("form a cluster of {n_nodes} (its dir is kept: {})", self.dir().display()))?;
        Ok(())
    }

    /// Writes every node's `taskd.toml` anew from `settings` (which must have this cluster's
    /// number of nodes): the running daemons read it at their next start, so a benchmark can run
    /// several configurations in the same namespaces, stopping and restarting the daemons between
    /// them. Only the config files change: the fixture's own view (its [`NetnsCluster::settings`],
    /// the start-up wait) stays the one it started with.
    pub fn rewrite_configs(&self, settings: &NetnsClusterBuilder) -> Result<()> {
        ensure!(
            settings.options.n_nodes == self.nodes.len(),
            "the settings are for {} nodes, the cluster has {}",
            settings.options.n_nodes,
            self.nodes.len()
        );
        let token_path = self.dir().join("token");
        for node in &self.nodes {
            let spec = &node.spec;
            let config = settings.node_config(spec, &token_path);
            write_daemon_config(&spec.config_path, "the zbs-taskd-rs network-namespace cluster fixture", &config)?;
        }
        Ok(())
    }

    /// Starts a node whose process has exited; returns its pid (it does not wait for it to serve).
    pub fn restart(&self, node: usize) -> Result<u32> {
        self.spawn(node)
    }

    /// Which nodes' namespaces hold the VIP now (netlink address dump in each, in node order).
    pub fn vip_holders(&self) -> Result<Vec<usize>> {
        vip_holders(&self.address_sockets)
    }

    /// Deletes the VIP from the node's management interface (a crashed keeper's leftover that
    /// its restart does not clear); no-op when it is not there.
    pub fn remove_vip_from(&self, node: usize) -> Result<()> {
        if !self.vip_holders()?.contains(&node) {
            return Ok(());
        }
        let vip = format!("{VIP}/{VIP_PREFIX}");
        ip(&["-n", &self.nodes[node].spec.namespace, "addr", "del", &vip, "dev", MANAGEMENT_INTERFACE])?;
        Ok(())
    }

    /// Which nodes' namespaces have the IPv6 `address` on their management interface now.
    pub fn address6_holders(&self, address: std::net::Ipv6Addr) -> Result<Vec<usize>> {
        let wanted = format!("inet6 {address}/");
        let mut holders = Vec::new();
        for node in 0..self.nodes.len() {
            let text = ip(&["-n", &self.nodes[node].spec.namespace, "-6", "-o", "addr", "show", MANAGEMENT_INTERFACE])?;
            if text.contains(&wanted) {
                holders.push(node);
            }
        }
        Ok(holders)
    }

    /// The MAC the client's neighbour table has for the IPv6 `address`, if it has one.
    pub fn client_neighbour6(&self, address: std::net::Ipv6Addr) -> Result<Option<String>> {
        let text = ip(&["-n", self.client_namespace(), "-6", "neigh", "show", &address.to_string()])?;
        Ok(word_after(&text, "lladdr"))
    }

    /// Which nodes' namespaces have `address` now (a VIP set at run time, say).
    pub fn address_holders(&self, address: Ipv4Addr) -> Result<Vec<usize>> {
        let mut holders = Vec::new();
        for (node, socket) in self.address_sockets.iter().enumerate() {
            if lock(socket).ipv4_addresses()?.contains(&address) {
                holders.push(node);
            }
        }
        Ok(holders)
    }

    /// Waits until exactly one node holds the VIP and it is not `except`; returns it.
    pub fn wait_for_vip_holder(&self, except: Option<usize>, timeout: Duration) -> Result<usize> {
        let mut holder = None;
        self.wait_until(timeout, &format!("one VIP holder other than {except:?}"), || {
            holder = match self.vip_holders().ok().as_deref() {
                Some(&[node]) if Some(node) != except => Some(node),
                _ => None,
            };
            holder.is_some()
        })?;
        holder.ok_or_else(|| anyhow!("no VIP holder"))
    }

    /// `ip -4 -o addr show` in the node's namespace, for messages and cross-checks.
    pub fn ip_addresses(&self, node: usize) -> Result<String> {
        ip(&["-n", &self.nodes[node].spec.namespace, "-4", "-o", "addr", "show"])
    }

    /// The MAC address of the node's management interface.
    pub fn management_mac(&self, node: usize) -> Result<String> {
        let text = ip(&["-n", &self.nodes[node].spec.namespace, "-o", "link", "show", MANAGEMENT_INTERFACE])?;
        word_after(&text, "link/ether").ok_or_else(|| anyhow!("no MAC in {text:?}"))
    }

    /// The MAC the client's neighbour table has for the VIP, if it has one.
    pub fn client_vip_neighbour(&self) -> Result<Option<String>> {
        let text = ip(&["-n", self.client_namespace(), "neigh", "show", &VIP.to_string()])?;
        Ok(word_after(&text, "lladdr"))
    }

    /// Cuts one of the node's links.
    pub fn cut(&self, node: usize, network: Network, cut: Cut) -> Result<()> {
        let spec = &self.nodes[node].spec;
        let (interface, port) = match network {
            Network::Management => (MANAGEMENT_INTERFACE, spec.management_port.as_str()),
            Network::Data => (DATA_INTERFACE, spec.data_port.as_str()),
        };
        match cut {
            Cut::InterfaceDown => ip(&["-n", &spec.namespace, "link", "set", interface, "down"]).map(drop),
            Cut::Detach => ip(&["-n", self.switch_namespace(), "link", "set", port, "nomaster"]).map(drop),
        }
        .with_context(|| format!("cut the {network:?} link of {} ({cut:?})", spec.node_id))
    }

    /// Restores one of the node's links after either kind of cut: the interface up, the
    /// switch-side veth back on its bridge.
    pub fn restore(&self, node: usize, network: Network) -> Result<()> {
        let spec = &self.nodes[node].spec;
        let (interface, port, bridge) = match network {
            Network::Management => (MANAGEMENT_INTERFACE, spec.management_port.as_str(), MANAGEMENT_BRIDGE),
            Network::Data => (DATA_INTERFACE, spec.data_port.as_str(), DATA_BRIDGE),
        };
        ip(&["-n", self.switch_namespace(), "link", "set", port, "master", bridge])
            .and_then(|_| ip(&["-n", &spec.namespace, "link", "set", interface, "up"]))
            .map(drop)
            .with_context(|| format!("restore the {network:?} link of {}", spec.node_id))
    }

    /// Cuts the node's data link by setting its interface down.
    pub fn cut_data_link(&self, node: usize) -> Result<()> {
        self.cut(node, Network::Data, Cut::InterfaceDown)
    }

    /// Cuts the node's data link silently: detached from the bridge, the interface stays up.
    pub fn cut_data_link_silently(&self, node: usize) -> Result<()> {
        self.cut(node, Network::Data, Cut::Detach)
    }

    /// Restores the node's data link.
    pub fn restore_data_link(&self, node: usize) -> Result<()> {
        self.restore(node, Network::Data)
    }

    /// Cuts the node's management link (ZooKeeper, API and clients unreachable) silently, so the
    /// VIP's interface stays up and the daemon can only learn of it from ZooKeeper.
    pub fn cut_management_link(&self, node: usize) -> Result<()> {
        self.cut(node, Network::Management, Cut::Detach)
    }

    /// Restores the node's management link.
    pub fn restore_management_link(&self, node: usize) -> Result<()> {
        self.restore(node, Network::Management)
    }

    /// Takes the node off both networks at once, as a power loss looks to its peers: both of its
    /// switch-side veths are detached from their bridges by one `ip -batch` in the switch
    /// namespace (back to back, no process start between them). The node's own interfaces stay
    /// up and its processes keep running, cut off from everything: whatever it still holds (the
    /// VIP) is what a host that is partitioned rather than dead would hold.
    pub fn cut_host(&self, node: usize) -> Result<()> {
        let spec = &self.nodes[node].spec;
        let batch = format!("link set {} nomaster\nlink set {} nomaster\n", spec.management_port, spec.data_port);
        ip_batch(self.switch_namespace(), &batch).with_context(|| format!("cut both links of {}", spec.node_id))
    }

    /// Puts both of the node's links back after [`NetnsCluster::cut_host`].
    pub fn restore_host(&self, node: usize) -> Result<()> {
        let spec = &self.nodes[node].spec;
        let batch = format!(
            "link set {} master {MANAGEMENT_BRIDGE}\nlink set {} master {DATA_BRIDGE}\n",
            spec.management_port, spec.data_port
        );
        ip_batch(self.switch_namespace(), &batch).with_context(|| format!("restore both links of {}", spec.node_id))
    }

    /// Starts keepalived in every node's namespace as the VIP's keeper (for a cluster built with
    /// `vip(false)`): VRRP on the management interface (`advert_int 1`, equal priorities, so no
    /// fail-back), `track_interface` on the data interface, and a `vrrp_script` that pings the
    /// peers' data addresses (interval 1, fall 2, rise 2; a failure is FAULT). Its log is the
    /// node's `keepalived.log`.
    pub fn start_keepalived(&self) -> Result<()> {
        ensure!(
            !self.settings.vip,
            "keepalived and the daemons would both hold the VIP: build the cluster with vip(false)"
        );
        for node in 0..self.nodes.len() {
            self.start_keepalived_on(node)?;
        }
        Ok(())
    }

    /// Starts keepalived on one node (it must not run there) with the config
    /// [`NetnsCluster::start_keepalived`] describes.
    pub fn start_keepalived_on(&self, node: usize) -> Result<u32> {
        let spec = &self.nodes[node].spec;
        let script = self.write_keepalived_check_script(node)?;
        let config = format!(
            "global_defs {{\n  router_id {node_id}\n}}\n\
             vrrp_script data_peers {{\n  script \"{script}\"\n  interval 1\n  timeout 2\n  fall 2\n  rise 2\n}}\n\
             vrrp_instance VI_1 {{\n  state BACKUP\n  interface {MANAGEMENT_INTERFACE}\n  virtual_router_id 51\n  priority 100\n  advert_int 1\n\
             \x20 track_interface {{\n    {DATA_INTERFACE}\n  }}\n  track_script {{\n    data_peers\n  }}\n\
             \x20 virtual_ipaddress {{\n    {VIP}/{VIP_PREFIX} dev {MANAGEMENT_INTERFACE} label {MANAGEMENT_INTERFACE}:vip\n  }}\n}}\n",
            node_id = spec.node_id,
            script = script.display(),
        );
        self.start_keepalived_with(node, &config, false)
    }

    /// Writes the node's `check-data-peers.sh` (exit 0 when any peer's data address answers a
    /// ping within 1 s) and returns its path, for a keepalived `vrrp_script`.
    pub fn write_keepalived_check_script(&self, node: usize) -> Result<PathBuf> {
        let spec = &self.nodes[node].spec;
        // The peers are pinged in parallel, so that one unreachable peer does not make the script
        // take its ping's timeout before the next peer is asked: good when any peer answers.
        let mut text = String::from("#!/bin/sh\n");
        let mut waits = Vec::new();
        for (position, other) in (0..self.nodes.len()).filter(|&other| other != node).enumerate() {
            text.push_str(&format!(
                "ping -c1 -W1 {} >/dev/null 2>&1 &\np{position}=$!\n",
                self.nodes[other].spec.data_address
            ));
            waits.push(format!("wait $p{position} && exit 0"));
        }
        text.push_str(&waits.join("\n"));
        text.push_str("\nexit 1\n");
        let script = spec.dir.join("check-data-peers.sh");
        fs::write(&script, text).with_context(|| format!("write {}", script.display()))?;
        fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .with_context(|| format!("make {} executable", script.display()))?;
        Ok(script)
    }

    /// Starts keepalived on one node (it must not run there) with `config` as its
    /// `keepalived.conf`, its VRRP subsystem and, when `bfd`, its BFD subsystem. The caller
    /// chooses the config (a benchmark's tuned profiles); it must not make the daemons and
    /// keepalived both hold the VIP. Its log is the node's `keepalived.log`, appended to.
    pub fn start_keepalived_with(&self, node: usize, config: &str, bfd: bool) -> Result<u32> {
        let spec = &self.nodes[node].spec;
        let mut slot = lock(&self.keepalived[node]);
        if let Some(child) = slot.as_mut() {
            if child.try_wait().ok().flatten().is_none() {
                bail!("keepalived already runs on {}", spec.node_id);
            }
        }
        let config_path = spec.dir.join("keepalived.conf");
        fs::write(&config_path, config).with_context(|| format!("write {}", config_path.display()))?;
        let log_path = spec.dir.join("keepalived.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        let log_for_stderr = log.try_clone().context("duplicate the log file handle")?;
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &spec.namespace, "keepalived", "--dont-fork", "--log-console", "--log-detail"]);
        // `--vrrp` runs VRRP alone; without it keepalived starts each subsystem its config has
        // (VRRP and BFD here: no virtual servers, so no checker).
        if bfd {
            command.arg("--bfd_pid").arg(spec.dir.join("keepalived-bfd.pid"));
        } else {
            command.arg("--vrrp");
        }
        command
            .arg("--use-file")
            .arg(&config_path)
            .arg("--pid")
            .arg(spec.dir.join("keepalived.pid"))
            .arg("--vrrp_pid")
            .arg(spec.dir.join("keepalived-vrrp.pid"))
            .current_dir(&spec.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr);
        die_with_parent(&mut command, false);
        let child = command.spawn().with_context(|| format!("start keepalived on {}", spec.node_id))?;
        let pid = child.id();
        *slot = Some(child);
        Ok(pid)
    }

    /// The node's keepalived log (every run, appended); empty when keepalived never ran there.
    pub fn keepalived_log(&self, node: usize) -> String {
        read_lossy(&self.nodes[node].spec.dir.join("keepalived.log"))
    }

    /// Sends `signal` to the node's keepalived, without waiting.
    pub fn signal_keepalived(&self, node: usize, signal: Signal) -> Result<()> {
        let slot = lock(&self.keepalived[node]);
        let child =
            slot.as_ref().ok_or_else(|| anyhow!("keepalived does not run on {}", self.nodes[node].spec.node_id))?;
        kill(Pid::from_raw(child.id() as i32), signal).with_context(|| format!("send {signal} to keepalived"))
    }

    /// Crashes the node's keepalived as a SIGKILL of the whole service would: its child
    /// processes (VRRP, BFD, checkers) first, so that none hears of its parent's death and says
    /// goodbye, then the parent, which is reaped; no-op when it does not run. Only the pids this
    /// fixture started and their children are signalled.
    pub fn kill_keepalived(&self, node: usize) -> Result<()> {
        let mut slot = lock(&self.keepalived[node]);
        let Some(mut child) = slot.take() else { return Ok(()) };
        let parent = child.id();
        let children_path = format!("/proc/{parent}/task/{parent}/children");
        let children: Vec<i32> = fs::read_to_string(&children_path)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect();
        for pid in children {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = child.kill();
        child.wait().with_context(|| format!("reap keepalived on {}", self.nodes[node].spec.node_id))?;
        // The children, orphaned, are reaped by init whenever it gets to them; until then their
        // pids exist and a restarted keepalived that finds them in its pid files says "daemon is
        // already running" and exits. Every one of them was SIGKILLed: their pid files go.
        let dir = &self.nodes[node].spec.dir;
        for pid_file in ["keepalived.pid", "keepalived-vrrp.pid", "keepalived-bfd.pid"] {
            let _ = fs::remove_file(dir.join(pid_file));
        }
        Ok(())
    }

    /// Sends `signal` to the node's keepalived and waits (up to 10 s, then SIGKILL) for it to
    /// exit; no-op when it does not run.
    pub fn stop_keepalived(&self, node: usize, signal: Signal) -> Result<()> {
        let mut slot = lock(&self.keepalived[node]);
        let Some(mut child) = slot.take() else { return Ok(()) };
        if child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        // It may be exiting already (a signal sent before): then the signal finds no process.
        let _ = kill(Pid::from_raw(child.id() as i32), signal);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if child.try_wait().ok().flatten().is_some() {
                return Ok(());
            }
            thread::sleep(POLL_INTERVAL);
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("keepalived on {} did not exit within 10 s of {signal}", self.nodes[node].spec.node_id)
    }

    /// Stops every running node: SIGTERM to all at once, SIGKILL to those still running after `grace`.
    pub fn stop_all(&self, grace: Duration) {
        self.daemons.stop_all(grace)
    }
}

impl NodeControl for NetnsCluster {
    fn daemons(&self) -> &Daemons {
        &self.daemons
    }

    /// The node's status, asked from the client namespace at the node's own address.
    fn status(&self, node: usize) -> Result<NodeStatus> {
        let url = self.nodes[node].spec.status_url();
        in_netns(self.client_namespace(), move || fetch_status(&status_agent(STATUS_TIMEOUT), &url))?
            .with_context(|| format!("status of {}", self.nodes[node].spec.node_id))
    }

    /// Every node's status (None when it does not answer), asked in parallel from one thread in
    /// the client namespace.
    fn statuses(&self) -> Vec<Option<NodeStatus>> {
        let urls: Vec<String> = self.nodes.iter().map(|node| node.spec.status_url()).collect();
        in_netns(self.client_namespace(), move || {
            let agent = status_agent(STATUS_TIMEOUT);
            urls.iter().map(|url| fetch_status(&agent, url).ok()).collect()
        })
        .unwrap_or_else(|_| vec![None; self.nodes.len()])
    }
}

impl Drop for NetnsCluster {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        self.client.stop();
        self.holder_sampler.stop();
        self.arp_watcher.stop();
        if let Some(sampler) = &mut self.second_holder_sampler {
            sampler.stop();
        }
        if let Some(watcher) = &mut self.second_arp_watcher {
            watcher.stop();
        }
        for node in 0..self.keepalived.len() {
            let _ = self.stop_keepalived(node, Signal::SIGTERM);
        }
        self.stop_all(STOP_GRACE);
        match self.zookeeper.take() {
            Some(ClusterZooKeeper::Detached(zookeeper)) => {
                if let Err(error) = zookeeper.stop() {
                    eprintln!("netns fixture: cannot stop ZooKeeper: {error:#}");
                }
            }
            owned => drop(owned),
        }
        if thread::panicking() || self.keep_dir.load(Ordering::Acquire) {
            match self.dir.take() {
                Some(ClusterDir::Temp(dir)) => {
                    let kept = dir.keep();
                    eprintln!("netns fixture: the nodes' dirs and logs are kept in {}", kept.display());
                }
                Some(ClusterDir::Kept(dir)) => eprintln!("netns fixture: the nodes' logs are in {}", dir.display()),
                None => {}
            }
        } else if let Some(ClusterDir::Kept(dir)) = self.dir.take() {
            let _ = fs::remove_dir_all(dir);
        }
        // Last: the namespaces, with their veths and bridges.
        drop(self.topology.take());
    }
}

/// Where a cluster keeps its files.
enum ClusterDir {
    /// A temp dir, removed on drop unless kept.
    Temp(tempfile::TempDir),
    /// A dir of the caller's, for a cluster that may be detached.
    Kept(PathBuf),
}

impl ClusterDir {
    fn path(&self) -> &Path {
        match self {
            ClusterDir::Temp(dir) => dir.path(),
            ClusterDir::Kept(dir) => dir,
        }
    }
}

/// The cluster's ZooKeeper: owned (stopped on drop) or detached (recorded in its dir).
enum ClusterZooKeeper {
    Owned(Box<ZooKeeper>),
    Detached(crate::zk::DetachedZooKeeper),
}

impl ClusterZooKeeper {
    fn log_path(&self) -> PathBuf {
        match self {
            ClusterZooKeeper::Owned(zookeeper) => zookeeper.log_path(0),
            ClusterZooKeeper::Detached(zookeeper) => {
                zookeeper.servers.first().map(|server| server.log_path.clone()).unwrap_or_default()
            }
        }
    }
}

/// The namespaces of one cluster and the links between them; deleting the namespaces (on drop)
/// destroys every veth and bridge in them.
struct Topology {
    switch_ns: String,
    zookeeper_ns: String,
    client_ns: String,
    node_ns: Vec<String>,
    created: Vec<String>,
}

impl Topology {
    fn build(prefix: &str, n_nodes: usize, service_links: bool) -> Result<Topology> {
        let mut topology = Topology {
            switch_ns: format!("{prefix}-sw"),
            zookeeper_ns: format!("{prefix}-zk"),
            client_ns: format!("{prefix}-cl"),
            node_ns: (1..=n_nodes).map(|node| format!("{prefix}-n{node}")).collect(),
            created: Vec::new(),
        };
        // On an error the partly built topology is dropped, which deletes what was created.
        let mut all = vec![topology.switch_ns.clone(), topology.zookeeper_ns.clone(), topology.client_ns.clone()];
        all.extend(topology.node_ns.iter().cloned());
        for namespace in &all {
            ip(&["netns", "add", namespace])?;
            topology.created.push(namespace.clone());
            ip(&["-n", namespace, "link", "set", "lo", "up"])?;
        }
        let switch = topology.switch_ns.clone();
        let bridges: &[&str] = if service_links {
            &[MANAGEMENT_BRIDGE, DATA_BRIDGE, SERVICE_BRIDGE]
        } else {
            &[MANAGEMENT_BRIDGE, DATA_BRIDGE]
        };
        for &bridge in bridges {
            ip(&["-n", &switch, "link", "add", bridge, "type", "bridge"])?;
            ip(&["-n", &switch, "link", "set", bridge, "up"])?;
        }
        let mut links: Vec<(String, &str, String, &str, Ipv4Addr)> = Vec::new();
        for (index, namespace) in topology.node_ns.iter().enumerate() {
            links.push((
                namespace.clone(),
                MANAGEMENT_INTERFACE,
                format!("m{}", index + 1),
                MANAGEMENT_BRIDGE,
                node_address(MANAGEMENT_NET, index),
            ));
            links.push((
                namespace.clone(),
                DATA_INTERFACE,
                format!("d{}", index + 1),
                DATA_BRIDGE,
                node_address(DATA_NET, index),
            ));
            if service_links {
                links.push((
                    namespace.clone(),
                    SERVICE_INTERFACE,
                    format!("s{}", index + 1),
                    SERVICE_BRIDGE,
                    node_address(SERVICE_NET, index),
                ));
            }
        }
        links.push((
            topology.zookeeper_ns.clone(),
            MANAGEMENT_INTERFACE,
            "mzk".to_string(),
            MANAGEMENT_BRIDGE,
            ZOOKEEPER_ADDRESS,
        ));
        links.push((
            topology.client_ns.clone(),
            MANAGEMENT_INTERFACE,
            "mcl".to_string(),
            MANAGEMENT_BRIDGE,
            CLIENT_ADDRESS,
        ));
        for (namespace, interface, port, bridge, address) in links {
            ip(&["-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", interface, "netns", &namespace])?;
            ip(&["-n", &switch, "link", "set", &port, "master", bridge, "up"])?;
            ip(&["-n", &namespace, "addr", "add", &format!("{address}/24"), "dev", interface])?;
            // The management network has IPv6 too (for an IPv6 VIP): `fd00:213:1::<last octet>`,
            // without duplicate address detection, so it is usable at once.
            if interface == MANAGEMENT_INTERFACE {
                let address6 = management_address6(address);
                ip(&["-n", &namespace, "addr", "add", &format!("{address6}/64"), "dev", interface, "nodad"])?;
            }
            ip(&["-n", &namespace, "link", "set", interface, "up"])?;
        }
        Ok(topology)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for namespace in self.created.iter().rev() {
            if let Err(error) = ip(&["netns", "del", namespace]) {
                eprintln!("netns fixture: cannot delete namespace {namespace}: {error:#}");
            }
        }
    }
}

/// Deletes namespaces `zbs-<pid>-<seq>-<role>` whose `<pid>` no longer runs: leftovers of a run
/// that crashed before its drop (its processes died with it: they get SIGKILL when their parent
/// dies).
fn remove_leftover_namespaces() {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else { continue };
        let mut parts = rest.splitn(3, '-');
        let (Some(pid), Some(sequence), Some(_role)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (Ok(pid), Ok(_)) = (pid.parse::<i32>(), sequence.parse::<u32>()) else { continue };
        if pid <= 0 || pid as u32 == std::process::id() {
            continue;
        }
        if kill(Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH) {
            eprintln!("netns fixture: deleting namespace {name}, left by pid {pid} which is gone");
            if let Err(error) = ip(&["netns", "del", &name]) {
                eprintln!("netns fixture: cannot delete namespace {name}: {error:#}");
            }
        }
    }
}

/// Runs `ip -n <namespace> -batch -` with `commands` (one a line) on its stdin: several link
/// changes from one process, back to back.
pub fn ip_batch(namespace: &str, commands: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["-n", namespace, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("run ip -batch")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(commands.as_bytes()).context("write ip -batch's commands")?;
    }
    let output = child.wait_with_output().context("wait for ip -batch")?;
    ensure!(
        output.status.success(),
        "ip -n {namespace} -batch failed ({}): {}; commands: {commands:?}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Runs `ip` with `args`; its stdout, or an error with its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run ip {}", args.join(" ")))?;
    ensure!(
        output.status.success(),
        "ip {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn word_after(text: &str, key: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.find(|word| *word == key)?;
    words.next().map(str::to_string)
}

/// Moves the calling thread into the named network namespace (for good: use a thread of its own).
pub fn enter_netns(namespace: &str) -> Result<()> {
    let path = Path::new(NETNS_DIR).join(namespace);
    let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: setns(2) on a valid namespace fd; it changes only this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    ensure!(rc == 0, "setns into {namespace}: {}", std::io::Error::last_os_error());
    Ok(())
}

/// Runs `f` on a new thread inside the named network namespace and returns its result.
pub fn in_netns<T: Send>(namespace: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    thread::scope(|scope| {
        scope
            .spawn(|| -> Result<T> {
                enter_netns(namespace)?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow!("a thread in namespace {namespace} panicked"))?
    })
}

/// A NETLINK_ROUTE socket opened inside one namespace: it keeps answering for that namespace,
/// whichever thread uses it.
struct AddressSocket {
    fd: OwnedFd,
    sequence: u32,
}

const NLMSG_HEADER_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

impl AddressSocket {
    fn open_in(namespace: &str) -> Result<AddressSocket> {
        in_netns(namespace, AddressSocket::open)?.with_context(|| format!("open a netlink socket in {namespace}"))
    }

    fn open() -> Result<AddressSocket> {
        // SAFETY: plain socket(2) and setsockopt(2) calls; the fd is owned at once.
        unsafe {
            let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE);
            ensure!(fd >= 0, "socket(AF_NETLINK): {}", std::io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(fd);
            let timeout = libc::timeval { tv_sec: 1, tv_usec: 0 };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            Ok(AddressSocket { fd, sequence: 0 })
        }
    }

    /// Every IPv4 address of the namespace (RTM_GETADDR dump).
    fn ipv4_addresses(&mut self) -> Result<Vec<Ipv4Addr>> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut request = [0u8; NLMSG_HEADER_LEN + IFADDRMSG_LEN];
        request[0..4].copy_from_slice(&((NLMSG_HEADER_LEN + IFADDRMSG_LEN) as u32).to_ne_bytes());
        request[4..6].copy_from_slice(&libc::RTM_GETADDR.to_ne_bytes());
        request[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
        request[8..12].copy_from_slice(&sequence.to_ne_bytes());
        request[NLMSG_HEADER_LEN] = libc::AF_INET as u8;
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid value (pid 0 = the kernel).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the buffer and address are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                request.as_ptr() as *const libc::c_void,
                request.len(),
                0,
                &kernel as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        ensure!(sent == request.len() as isize, "send RTM_GETADDR: {}", std::io::Error::last_os_error());
        let mut addresses = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: the buffer is valid for its length.
            let received =
                unsafe { libc::recv(self.fd.as_raw_fd(), buffer.as_mut_ptr() as *mut libc::c_void, buffer.len(), 0) };
            ensure!(received > 0, "receive the address dump: {}", std::io::Error::last_os_error());
            let mut message = &buffer[..received as usize];
            while message.len() >= NLMSG_HEADER_LEN {
                let length = u32::from_ne_bytes(message[0..4].try_into()?) as usize;
                let kind = u16::from_ne_bytes(message[4..6].try_into()?);
                let message_sequence = u32::from_ne_bytes(message[8..12].try_into()?);
                ensure!(length >= NLMSG_HEADER_LEN && length <= message.len(), "a malformed netlink message");
                if message_sequence == sequence {
                    match kind as i32 {
                        libc::NLMSG_DONE => return Ok(addresses),
                        libc::NLMSG_ERROR => bail!("the address dump failed"),
                        _ if kind == libc::RTM_NEWADDR => {
                            parse_address(&message[NLMSG_HEADER_LEN..length], &mut addresses)
                        }
                        _ => {}
                    }
                }
                let aligned = (length + 3) & !3;
                message = &message[aligned.min(message.len())..];
            }
        }
    }
}

fn parse_address(payload: &[u8], addresses: &mut Vec<Ipv4Addr>) {
    if payload.len() < IFADDRMSG_LEN || payload[0] != libc::AF_INET as u8 {
        return;
    }
    let mut attributes = &payload[IFADDRMSG_LEN..];
    while attributes.len() >= 4 {
        let length = u16::from_ne_bytes([attributes[0], attributes[1]]) as usize;
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]);
        if length < 4 || length > attributes.len() {
            return;
        }
        if (kind == IFA_LOCAL || kind == IFA_ADDRESS) && length == 8 {
            let address = Ipv4Addr::new(attributes[4], attributes[5], attributes[6], attributes[7]);
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
        let aligned = (length + 3) & !3;
        attributes = &attributes[aligned.min(attributes.len())..];
    }
}

fn holds_vip(socket: &Mutex<AddressSocket>) -> Result<bool> {
    holds_address(socket, VIP)
}

fn holds_address(socket: &Mutex<AddressSocket>, address: Ipv4Addr) -> Result<bool> {
    let mut socket = socket.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Ok(socket.ipv4_addresses()?.contains(&address))
}

fn vip_holders(sockets: &[Mutex<AddressSocket>]) -> Result<Vec<usize>> {
    let mut holders = Vec::new();
    for (node, socket) in sockets.iter().enumerate() {
        if holds_vip(socket)? {
            holders.push(node);
        }
    }
    Ok(holders)
}

/// One look at every node's namespace.
#[derive(Clone, Debug)]
pub struct HolderSample {
    pub at: Instant,
    /// Nodes that held the VIP throughout the sweep: each namespace is read twice, in node order
    /// and then in reverse, so that any two nodes' pairs of reads nest, and a node counts only
    /// when both its reads show the VIP. Two nodes here held it at one instant.
    pub holders: Vec<usize>,
    /// Nodes that showed the VIP in at least one of their two reads.
    pub seen: Vec<usize>,
}

/// A thread that looks for the VIP in every node's namespace every interval.
pub struct HolderSampler {
    samples: Arc<Mutex<Vec<HolderSample>>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HolderSampler {
    fn start(sockets: Arc<Vec<Mutex<AddressSocket>>>, interval: Duration) -> HolderSampler {
        HolderSampler::start_for(sockets, interval, VIP)
    }

    /// A sampler of `address` instead of [`VIP`].
    fn start_for(sockets: Arc<Vec<Mutex<AddressSocket>>>, interval: Duration, address: Ipv4Addr) -> HolderSampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, errors, stop) = (samples.clone(), errors.clone(), stop.clone());
            thread::Builder::new()
                .name("netns-vip-sampler".to_string())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        let started = Instant::now();
                        match sweep(&sockets, address) {
                            Ok(sample) => lock(&samples).push(sample),
                            Err(error) => lock(&errors).push(format!("{error:#}")),
                        }
                        thread::sleep(interval.saturating_sub(started.elapsed()));
                    }
                })
                .ok()
        };
        HolderSampler { samples, errors, stop, thread }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Every sample so far, oldest first.
    pub fn samples(&self) -> Vec<HolderSample> {
        lock(&self.samples).clone()
    }

    /// Samples taken at or after `since`.
    pub fn samples_since(&self, since: Instant) -> Vec<HolderSample> {
        let samples = lock(&self.samples);
        let start = samples.partition_point(|sample| sample.at < since);
        samples[start..].to_vec()
    }

    /// Samples in which two or more nodes held the VIP at once.
    pub fn two_holder_samples(&self) -> Vec<HolderSample> {
        lock(&self.samples).iter().filter(|sample| sample.holders.len() > 1).cloned().collect()
    }

    /// Sampling errors (a netlink dump that failed), if any.
    pub fn errors(&self) -> Vec<String> {
        lock(&self.errors).clone()
    }
}

impl Drop for HolderSampler {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sweep(sockets: &[Mutex<AddressSocket>], address: Ipv4Addr) -> Result<HolderSample> {
    let mut first = Vec::with_capacity(sockets.len());
    for socket in sockets {
        first.push(holds_address(socket, address)?);
    }
    let mut second = vec![false; sockets.len()];
    for (node, socket) in sockets.iter().enumerate().rev() {
        second[node] = holds_address(socket, address)?;
    }
    let holders = (0..sockets.len()).filter(|&node| first[node] && second[node]).collect();
    let seen = (0..sockets.len()).filter(|&node| first[node] || second[node]).collect();
    Ok(HolderSample { at: Instant::now(), holders, seen })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One ARP frame the switch saw.
#[derive(Clone, Debug)]
pub struct SeenArp {
    pub at: Instant,
    pub frame: vip::arp_capture::ArpFrame,
}

/// A thread in the switch namespace that reads every ARP frame on a bridge (an `AF_PACKET`
/// socket bound to it: broadcasts from any port reach the bridge itself) and keeps them.
pub struct ArpWatcher {
    frames: Arc<Mutex<Vec<SeenArp>>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ArpWatcher {
    /// Opens the socket before it returns, so that nothing sent after it is missed.
    fn start(namespace: &str, bridge: &str) -> Result<ArpWatcher> {
        let capture = in_netns(namespace, || {
            vip::arp_capture::ArpCapture::open(bridge, Duration::from_millis(100))
                .with_context(|| format!("capture ARP on {bridge} in {namespace}"))
        })??;
        let frames = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (frames, errors, stop) = (frames.clone(), errors.clone(), stop.clone());
            thread::Builder::new()
                .name("netns-arp-watcher".to_string())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        match capture.recv() {
                            Ok(Some(frame)) => lock(&frames).push(SeenArp { at: Instant::now(), frame }),
                            Ok(None) => {}
                            Err(error) => {
                                lock(&errors).push(format!("{error:#}"));
                                return;
                            }
                        }
                    }
                })
                .context("start the ARP watcher thread")?
        };
        Ok(ArpWatcher { frames, errors, stop, thread: Some(thread) })
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Frames seen at or after `since`, oldest first.
    pub fn frames_since(&self, since: Instant) -> Vec<SeenArp> {
        let frames = lock(&self.frames);
        let start = frames.partition_point(|seen| seen.at < since);
        frames[start..].to_vec()
    }

    /// Read errors, if any (the watcher stops at the first).
    pub fn errors(&self) -> Vec<String> {
        lock(&self.errors).clone()
    }
}

impl Drop for ArpWatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One request of the client loop.
#[derive(Clone, Debug)]
pub struct ClientSample {
    /// When the request was sent.
    pub sent: Instant,
    /// When it was answered or failed.
    pub at: Instant,
    /// The node id that answered, None when the request failed.
    pub answered_by: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

impl ClientSample {
    pub fn ok(&self) -> bool {
        self.answered_by.is_some()
    }
}

/// A period in which the client's requests failed: from the last answer before the first
/// failure to the first answer after it.
#[derive(Clone, Debug)]
pub struct Outage {
    pub from: Instant,
    pub to: Instant,
    pub n_failed: usize,
}

impl Outage {
    pub fn duration(&self) -> Duration {
        self.to.saturating_duration_since(self.from)
    }
}

/// A thread in the client namespace that asks `http://<VIP>:<dispatcher port>/api/v1/status`
/// every interval (a fresh connection each time) and keeps every outcome.
pub struct ClientLoop {
    samples: Arc<Mutex<Vec<ClientSample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ClientLoop {
    fn start(namespace: &str, interval: Duration, timeout: Duration) -> ClientLoop {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let namespace = namespace.to_string();
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            thread::Builder::new()
                .name("netns-client".to_string())
                .spawn(move || {
                    if let Err(error) = enter_netns(&namespace) {
                        eprintln!("netns fixture: the client loop cannot enter {namespace}: {error:#}");
                        return;
                    }
                    let address = SocketAddr::V4(SocketAddrV4::new(VIP, DISPATCHER_PORT));
                    while !stop.load(Ordering::Acquire) {
                        let sent = Instant::now();
                        let (answered_by, error) = match get_status_within(address, timeout) {
                            Ok(status) => (Some(status.node_id), None),
                            Err(error) => (None, Some(format!("{error:#}"))),
                        };
                        lock(&samples).push(ClientSample { sent, at: Instant::now(), answered_by, error });
                        thread::sleep(interval.saturating_sub(sent.elapsed()));
                    }
                })
                .ok()
        };
        ClientLoop { samples, stop, thread }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Every request so far, oldest first.
    pub fn samples(&self) -> Vec<ClientSample> {
        lock(&self.samples).clone()
    }

    /// Requests sent at or after `since`.
    pub fn samples_since(&self, since: Instant) -> Vec<ClientSample> {
        let samples = lock(&self.samples);
        let start = samples.partition_point(|sample| sample.sent < since);
        samples[start..].to_vec()
    }

    /// Failed requests sent at or after `since`.
    pub fn failures_since(&self, since: Instant) -> usize {
        self.samples_since(since).iter().filter(|sample| !sample.ok()).count()
    }

    /// The outages that began at or after `since`; one still going on ends at the last request.
    pub fn outages_since(&self, since: Instant) -> Vec<Outage> {
        let samples = lock(&self.samples);
        let start = samples.partition_point(|sample| sample.sent < since);
        let mut last_ok =
            samples[..start].iter().rev().find(|sample| sample.ok()).map(|sample| sample.at).unwrap_or(since);
        let mut outages = Vec::new();
        let mut current: Option<Outage> = None;
        for sample in &samples[start..] {
            if sample.ok() {
                if let Some(mut outage) = current.take() {
                    outage.to = sample.at;
                    outages.push(outage);
                }
                last_ok = sample.at;
            } else {
                let outage = current.get_or_insert(Outage { from: last_ok, to: sample.at, n_failed: 0 });
                outage.n_failed += 1;
                outage.to = sample.at;
            }
        }
        outages.extend(current);
        outages
    }

    /// The longest outage that began at or after `since`.
    pub fn longest_outage_since(&self, since: Instant) -> Option<Outage> {
        self.outages_since(since).into_iter().max_by_key(Outage::duration)
    }

    /// Waits until a request sent at or after `since` was answered by `node_id`.
    pub fn wait_answered_by(&self, node_id: &str, since: Instant, timeout: Duration) -> Result<Instant> {
        let started = Instant::now();
        loop {
            if let Some(sample) =
                self.samples_since(since).iter().find(|sample| sample.answered_by.as_deref() == Some(node_id))
            {
                return Ok(sample.at);
            }
            if started.elapsed() >= timeout {
                let last = self.samples().last().cloned();
                bail!("the client got no answer from {node_id} at the VIP within {timeout:?} (last request: {last:?})");
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for ClientLoop {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `GET /api/v1/status` on a fresh connection, with `timeout` as a hard bound on the whole
/// exchange (every connect, write and read gets only what is left of it), so that one request
/// caught in a hand-over cannot hide the client's next ones.
pub fn get_status_within(address: SocketAddr, timeout: Duration) -> Result<NodeStatus> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| anyhow!("timed out"))
    };
    let mut stream = TcpStream::connect_timeout(&address, left()?).with_context(|| format!("connect to {address}"))?;
    stream.set_write_timeout(Some(left()?))?;
    stream
        .write_all(format!("GET /api/v1/status HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes())
        .context("send the request")?;
    let mut response = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        stream.set_read_timeout(Some(left()?))?;
        let n_read = stream.read(&mut buffer).context("read the response")?;
        if n_read == 0 {
            break;
        }
        response.extend_from_slice(&buffer[..n_read]);
        if let Some(status) = parse_status_response(&response)? {
            return Ok(status);
        }
    }
    parse_status_response(&response)?.ok_or_else(|| anyhow!("the connection closed before a whole response"))
}

/// The status in a complete HTTP response; None while it is incomplete.
fn parse_status_response(response: &[u8]) -> Result<Option<NodeStatus>> {
    let Some(header_end) = response.windows(4).position(|window| window == b"\r\n\r\n") else { return Ok(None) };
    let head = String::from_utf8_lossy(&response[..header_end]);
    let status_line = head.lines().next().unwrap_or_default();
    ensure!(status_line.split_whitespace().nth(1) == Some("200"), "answer {status_line:?}");
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok()).flatten()
    });
    let body = &response[header_end + 4..];
    match length {
        Some(length) if body.len() < length => Ok(None),
        Some(length) => Ok(Some(serde_json::from_slice(&body[..length]).context("parse the status")?)),
        None => Ok(serde_json::from_slice(body).ok()),
    }
}

/// Whether a status says its node's data network is valid (`health.valid`).
pub fn health_valid(status: &NodeStatus) -> bool {
    status.health.get("valid").and_then(serde_json::Value::as_bool) == Some(true)
}

/// Whether a status says its node's data network is invalid (`health.state` is `Invalid`), which
/// is not the same as not valid: a node starts `Unknown`.
pub fn health_invalid(status: &NodeStatus) -> bool {
    status.health.get("state").and_then(serde_json::Value::as_str) == Some("Invalid")
}

/// An HTTP client that opens a fresh connection per request.
fn status_agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(timeout).max_idle_connections(0).max_idle_connections_per_host(0).build()
}

fn fetch_status(agent: &ureq::Agent, url: &str) -> Result<NodeStatus> {
    let body = agent.get(url).call().with_context(|| format!("GET {url}"))?.into_string().context("read the status")?;
    serde_json::from_str(&body).with_context(|| format!("parse the status {body:?}"))
}
