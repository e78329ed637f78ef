//! A cluster of real `zbs-taskd` processes for the integration tests and `cargo xtask bench`: one ZooKeeper from [`crate::zk`] plus N daemons on loopback, each in its own dir with its config, `file` health source, log and stderr.
//!
//! Node `i` (0-based) is `node-{i+1}` on `127.0.0.{i+1}` (management and data address) with
//! free ports, in `<dir>/n{i+1}/`: `taskd.toml`, `health` (the file its health source reads),
//! `taskd.log` (glog lines), `stderr.log`, `state/`. The daemon runs with that dir as its working
//! directory and with the core-size limit raised, so that a crash would leave a `core` file there
//! (this machine's `core_pattern` is relative) for [`Cluster::core_files`] to find.
//!
//! A background sampler (`cluster/sampler.rs`) polls every node's `/api/v1/status` every few
//! milliseconds and keeps each answer with its time, so that a test can assert that two nodes
//! never led at one instant ([`Sampler::definite_overlaps`]) and a benchmark can see when a new
//! leader appeared.
//!
//! Dropping the cluster stops every daemon it started (SIGTERM, then SIGKILL after a grace) and
//! then ZooKeeper. When the thread is panicking (a failed test) the dir is kept and its path
//! printed. Daemons die with the thread that started them (`PR_SET_PDEATHSIG`): start and
//! restart nodes on the thread that owns the cluster.
//!
//! The `zbs-taskd` binary is the one next to the running executable (`target/debug` for the
//! test binary, with the tests' `debug-hooks` feature, brought up to date by `cargo build` once
//! per process; `target/release` for xtask, built when missing or older than the sources);
//! `ZBS_TASKD_BIN` overrides it.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, ensure, Context, Result};
use chrono::TimeZone;
use serde::Deserialize;

use taskd::config::{FileExitLimit, LogFormat, NetworkFailureAction};
use vip::health::SourceKind;

use crate::cluster_options::{write_daemon_config, ClusterOptions, ClusterSettings, DaemonConfig};
use crate::daemon::{DaemonFiles, Daemons};
use crate::node_control::NodeControl;

mod sampler;

use crate::zk::ZooKeeper;
pub use sampler::{Observation, Overlap, Sample, Sampler};

/// The signals [`Cluster::signal`] sends, re-exported so that users need no `nix` of their own.
pub use nix::sys::signal::Signal;

/// How long a daemon gets to exit after SIGTERM when the cluster is dropped, before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(8);

/// How long one status request may take before it counts as no answer.
const STATUS_TIMEOUT: Duration = Duration::from_millis(1000);

/// The environment variable that names a `zbs-taskd` binary to use instead of building one.
pub const BINARY_ENV: &str = "ZBS_TASKD_BIN";

/// What a daemon does when its data network fails while it leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnNetworkFailure {
    /// Stop the service, keep the process (the default).
    Stay,
    /// Exit with 75 while the exit counter allows `start_limit_burst` exits per `start_limit_interval_sec`.
    Exit { start_limit_burst: u32, start_limit_interval_sec: u64 },
}

/// A step run on one node's files before it starts.
type PrepareNode = fn(&NodeSpec) -> Result<()>;

/// Settings for starting a cluster; every node gets the same ones. The setters both fixtures
/// share (node count, session timeout, `configure`, ...) are [`ClusterSettings`]'.
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    options: ClusterOptions,
    sample_interval: Duration,
    /// Run on a node's files before it starts (`prepare_node`).
    prepare: Vec<(usize, PrepareNode)>,
    /// ZooKeeper servers: 1 standalone, 3 an ensemble (`zookeeper_servers`).
    zookeeper_servers: usize,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        let mut config = DaemonConfig {
            session_timeout_ms: Some(6_000),
            drain_deadline_ms: Some(2_000),
            on_network_failure: Some(NetworkFailureAction::Stay),
            step_down_requires_healthy_peer: Some(true),
            ..DaemonConfig::default()
        };
        config.log.format = Some(LogFormat::Glog);
        config.log.level = Some("info".to_string());
        config.health.source = SourceKind::File;
        config.health.fall = 2;
        config.health.rise = 3;
        config.health.file.interval_ms = 100;
        config.api.protect_reads = Some(false);
        // Retries 1 s apart, doubling: the daemon's default (10 s) would make every test that
        // watches a task fail and retry wait for minutes. A test may set its own.
        config.tasks.retry_base_ms = Some(1_000);
        ClusterBuilder {
            options: ClusterOptions::new(config),
            sample_interval: Duration::from_millis(20),
            prepare: Vec::new(),
            zookeeper_servers: 1,
        }
    }
}

impl ClusterSettings for ClusterBuilder {
    fn options_mut(&mut self) -> &mut ClusterOptions {
        &mut self.options
    }
}

impl ClusterBuilder {
    /// Three nodes, 6 s sessions (the daemon's default), `file` health polled every 100 ms with
    /// fall 2 / rise 3, stay mode with the whole-outage guard on, a status sample every 20 ms.
    pub fn new() -> Self {
        Self::default()
    }

    /// The settings both fixtures share, every node's configuration among them.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// Sets how often the health file is read (`health.file.interval_ms`).
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.options.config.health.file.interval_ms = interval.as_millis() as u64;
        self
    }

    /// Sets `on_network_failure` (and the `[exit_limit]` section in exit mode).
    pub fn on_network_failure(mut self, action: OnNetworkFailure) -> Self {
        let config = &mut self.options.config;
        match action {
            OnNetworkFailure::Stay => {
                config.on_network_failure = Some(NetworkFailureAction::Stay);
                config.exit_limit = FileExitLimit::default();
            }
            OnNetworkFailure::Exit { start_limit_burst, start_limit_interval_sec } => {
                config.on_network_failure = Some(NetworkFailureAction::Exit);
                config.exit_limit = FileExitLimit {
                    start_limit_burst: Some(start_limit_burst),
                    start_limit_interval_sec: Some(start_limit_interval_sec),
                };
            }
        }
        self
    }

    /// Sets how often the sampler polls every node's status.
    pub fn sample_interval(mut self, interval: Duration) -> Self {
        self.sample_interval = interval;
        self
    }

    /// Reads need the API token too (`[api] protect_reads`).
    pub fn protect_reads(mut self, protect: bool) -> Self {
        self.options.config.api.protect_reads = Some(protect);
        self
    }

    /// Runs `prepare` on node `index`'s files after they are written and before it starts, e.g.
    /// to break its state dir.
    pub fn prepare_node(mut self, index: usize, prepare: fn(&NodeSpec) -> Result<()>) -> Self {
        self.prepare.push((index, prepare));
        self
    }

    /// Runs ZooKeeper as an ensemble of `n_servers` (1, the default, is a standalone server);
    /// the nodes get every server in their connect string, and the servers' faults are
    /// [`Cluster::zookeeper`]'s.
    pub fn zookeeper_servers(mut self, n_servers: usize) -> Self {
        self.zookeeper_servers = n_servers;
        self
    }

    /// Starts ZooKeeper and every node (all at once), then waits until each answers its status,
    /// sees every member, and exactly one leads.
    pub fn start(self) -> Result<Cluster> {
        let n_nodes = self.options.n_nodes;
        ensure!((1..=254).contains(&n_nodes), "a cluster has 1 to 254 nodes, not {n_nodes}");
        let binary = match &self.options.binary {
            Some(binary) => binary.clone(),
            None => daemon_binary()?,
        };
        let zookeeper =
            ZooKeeper::builder().servers(self.zookeeper_servers).start().context("start ZooKeeper for the cluster")?;
        let dir = tempfile::Builder::new().prefix("zbs-cluster-").tempdir().context("create the cluster's temp dir")?;
        // Every node runs with authentication on, as a deployed one does: one token file for all.
        let token_path = dir.path().join("token");
        taskd::access::create_token_file(&token_path, None).context("write the cluster's API token")?;
        let token = taskd::access::ApiTokens::read(&token_path).context("read the API token")?.sent().to_string();
        let mut specs = Vec::with_capacity(n_nodes);
        for index in 0..n_nodes {
            let spec = NodeSpec::plan(index, dir.path())?;
            fs::create_dir_all(&spec.state_dir).with_context(|| format!("create {}", spec.state_dir.display()))?;
            write_health(&spec.health_path, true)?;
            let config = self.node_config(&spec, &zookeeper.connect_string(), &token_path);
            write_daemon_config(&spec.config_path, "the zbs-taskd-rs cluster fixture", &config)?;
            for (_, prepare) in self.prepare.iter().filter(|(node, _)| *node == index) {
                prepare(&spec).with_context(|| format!("prepare {}", spec.node_id))?;
            }
            specs.push(spec);
        }
        let agent = status_agent();
        let sampler =
            Sampler::start(specs.iter().map(NodeSpec::status_url).collect(), self.sample_interval, token.clone());
        let cluster = Cluster {
            daemons: Daemons::new("cluster fixture", specs.iter().map(NodeSpec::daemon_files).collect()),
            nodes: specs.into_iter().map(|spec| Node { spec }).collect(),
            binary,
            agent,
            sampler,
            token,
            token_path,
            dir: Some(dir),
            zookeeper: Some(zookeeper),
            start_timeout: self.options.start_timeout,
            keep_dir: AtomicBool::new(false),
            settings: self,
        };
        let started = (0..cluster.nodes.len()).try_for_each(|node| cluster.spawn(node).map(drop));
        if let Err(error) = started.and_then(|()| cluster.wait_until_formed(cluster.start_timeout)) {
            cluster.keep_dir.store(true, Ordering::Release);
            return Err(error);
        }
        Ok(cluster)
    }

    /// Node `spec`'s configuration: the cluster's, with the node's own keys over it.
    fn node_config(&self, spec: &NodeSpec, zookeeper_hosts: &str, token_path: &Path) -> DaemonConfig {
        let mut config = self.options.config.clone();
        config.node_id = Some(spec.node_id.clone());
        config.zookeeper_hosts = Some(zookeeper_hosts.to_string());
        config.management_address = Some(spec.address.into());
        config.data_address = Some(spec.address.into());
        config.dispatcher_port = Some(spec.dispatcher_port);
        config.runner_port = Some(spec.runner_port);
        config.state_dir = Some(spec.state_dir.clone());
        config.log.file = Some(spec.log_path.clone());
        config.health.file.path = spec.health_path.clone();
        config.api.token_file = Some(token_path.to_path_buf());
        config
    }
}

/// Where one node lives and listens.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub index: usize,
    pub node_id: String,
    /// Its management and data address, `127.0.0.{index+1}`.
    pub address: Ipv4Addr,
    pub dispatcher_port: u16,
    pub runner_port: u16,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub health_path: PathBuf,
    pub log_path: PathBuf,
    pub stderr_path: PathBuf,
    pub state_dir: PathBuf,
}

impl NodeSpec {
    fn plan(index: usize, root: &Path) -> Result<NodeSpec> {
        let address = Ipv4Addr::new(127, 0, 0, index as u8 + 1);
        let ports = free_ports(address, 2)?;
        let dir = root.join(format!("n{}", index + 1));
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(NodeSpec {
            index,
            node_id: format!("node-{}", index + 1),
            address,
            dispatcher_port: ports[0],
            runner_port: ports[1],
            config_path: dir.join("taskd.toml"),
            health_path: dir.join("health"),
            log_path: dir.join("taskd.log"),
            stderr_path: dir.join("stderr.log"),
            state_dir: dir.join("state"),
            dir,
        })
    }

    /// `http://<address>:<dispatcher port>/api/v1/status`.
    pub fn status_url(&self) -> String {
        format!("http://{}:{}/api/v1/status", self.address, self.dispatcher_port)
    }
}

/// A node's `/api/v1/status` answer.
#[derive(Clone, Debug, Deserialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub pid: u32,
    pub role: String,
    pub leader: bool,
    #[serde(default)]
    pub sequence: Option<i64>,
    #[serde(default)]
    pub stopping: bool,
    /// `running`, `stopping` or `stopped` (a stopped service's stand-in answers).
    #[serde(default)]
    pub state: String,
    /// A stopped service's reason, what it waits for and when it tries again.
    #[serde(default)]
    pub stopped: serde_json::Value,
    /// The leader a stopped service found in ZooKeeper.
    #[serde(default)]
    pub leader_id: Option<String>,
    #[serde(default)]
    pub leader_address: Option<String>,
    #[serde(default)]
    pub health: serde_json::Value,
    #[serde(default)]
    pub members: Vec<MemberStatus>,
}

impl NodeStatus {
    /// True while the service runs: neither stopping nor stopped (a stand-in answering).
    pub fn is_serving(&self) -> bool {
        !self.stopping && self.state != "stopped"
    }

    /// True when the node's service is stopped and its stand-in answers.
    pub fn is_stopped(&self) -> bool {
        self.state == "stopped"
    }
}

/// One member as a node's status lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct MemberStatus {
    pub id: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub sequence: Option<i64>,
    #[serde(default)]
    pub healthy: bool,
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

/// ZooKeeper plus N `zbs-taskd` processes; see the module documentation.
pub struct Cluster {
    settings: ClusterBuilder,
    nodes: Vec<Node>,
    daemons: Daemons,
    binary: PathBuf,
    agent: ureq::Agent,
    sampler: Sampler,
    /// The API token every node accepts, and its file.
    token: String,
    token_path: PathBuf,
    start_timeout: Duration,
    /// Keep the dir on drop even when not panicking (start-up failed).
    keep_dir: AtomicBool,
    dir: Option<tempfile::TempDir>,
    zookeeper: Option<ZooKeeper>,
}

impl Cluster {
    /// A cluster of three nodes with the [`ClusterBuilder`] defaults.
    pub fn start() -> Result<Cluster> {
        ClusterBuilder::new().start()
    }

    /// The builder, to change the defaults.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::new()
    }

    /// The API token every node accepts (send it in `X-SmartX-Token`).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The file that holds it (`zbs-task --token-file`).
    pub fn token_path(&self) -> &Path {
        &self.token_path
    }

    /// Where the node lives and listens.
    pub fn node(&self, node: usize) -> &NodeSpec {
        &self.nodes[node].spec
    }

    /// The cluster's temp dir (one `n<i>/` per node).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map(|dir| dir.path()).unwrap_or(Path::new("/"))
    }

    /// The `zbs-taskd` binary the nodes run.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The settings the cluster was started with.
    pub fn settings(&self) -> &ClusterBuilder {
        &self.settings
    }

    /// Keeps the dir when the cluster is dropped, even without a panic (a benchmark that failed).
    pub fn keep_dir_on_drop(&self) {
        self.keep_dir.store(true, Ordering::Release);
    }

    /// The session timeout the nodes were configured with.
    pub fn session_timeout(&self) -> Duration {
        self.settings.options.session_timeout()
    }

    /// The ZooKeeper the nodes use.
    pub fn zookeeper(&self) -> &ZooKeeper {
        self.zookeeper.as_ref().expect("ZooKeeper runs until the cluster is dropped")
    }

    /// The background status sampler.
    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// Starts the node's process (which must not be running), with its config; stderr and
    /// stdout are appended to its `stderr.log`.
    fn spawn(&self, node: usize) -> Result<u32> {
        let mut command = Command::new(&self.binary);
        command.arg("--config").arg(&self.nodes[node].spec.config_path);
        self.daemons.spawn(node, command)
    }

    fn wait_until_formed(&self, timeout: Duration) -> Result<()> {
        let n_nodes = self.nodes.len();
        self.wait_until(timeout, "every node serving, seeing every member, one leader", || {
            let statuses: Vec<Option<NodeStatus>> = (0..n_nodes).map(|node| self.try_status(node)).collect();
            statuses
                .iter()
                .all(|status| status.as_ref().is_some_and(|status| status.members.len() == n_nodes && !status.stopping))
                && statuses.iter().flatten().filter(|status| status.leader).count() == 1
        })
        .with_context(|| format!("form a cluster of {n_nodes} (its dir is kept: {})", self.dir().display()))?;
        Ok(())
    }

    /// Starts a node whose process has exited (or was never started), with the same config and
    /// dirs; returns its pid. It does not wait for it to serve: see [`NodeControl::wait_serving`].
    pub fn restart(&self, node: usize) -> Result<u32> {
        self.spawn(node)
    }

    /// Waits until exactly one node leads and it is not `old`; returns it.
    pub fn wait_for_new_leader(&self, old: usize, timeout: Duration) -> Result<usize> {
        let mut leader = None;
        self.wait_until(timeout, &format!("a leader other than {}", self.nodes[old].spec.node_id), || {
            leader = self.leader().filter(|&leader| leader != old);
            leader.is_some()
        })?;
        leader.ok_or_else(|| anyhow!("no new leader"))
    }

    /// Writes `ok` or `fail` into the node's health file (to a temp name, then renamed over it,
    /// so that the daemon never reads half a file).
    pub fn set_health(&self, node: usize, ok: bool) -> Result<()> {
        write_health(&self.nodes[node].spec.health_path, ok)
    }

    /// The members as ZooKeeper holds them now (each one's published health included), read
    /// through a session of the test's own.
    pub fn members_in_zookeeper(&self) -> Result<Vec<quorum::MemberInfo>> {
        let config = quorum::ZkConfig::new(self.zookeeper().connect_string(), Duration::from_secs(6));
        let session = quorum::ZkSession::connect(&config).context("connect to ZooKeeper")?;
        let root = taskd::task_server::QUORUM_PATH;
        let mut names = session.children(root).with_context(|| format!("list {root}"))?;
        names.sort();
        let mut members = Vec::new();
        for name in names {
            let path = format!("{root}/{name}");
            if let Some((data, _)) = session.get_data(&path).with_context(|| format!("read {path}"))? {
                members.push(quorum::MemberInfo::decode(&path, &data).with_context(|| format!("decode {path}"))?);
            }
        }
        Ok(members)
    }
}

impl NodeControl for Cluster {
    fn daemons(&self) -> &Daemons {
        &self.daemons
    }

    fn status(&self, node: usize) -> Result<NodeStatus> {
        fetch_status(&self.agent, &self.nodes[node].spec.status_url(), &self.token)
            .with_context(|| format!("status of {}", self.nodes[node].spec.node_id))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.sampler.stop();
        self.stop_all(STOP_GRACE);
        if thread::panicking() || self.keep_dir.load(Ordering::Acquire) {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("cluster fixture: the nodes' dirs and logs are kept in {}", kept.display());
            }
        }
        // ZooKeeper last, after every session was closed.
        drop(self.zookeeper.take());
    }
}

/// An HTTP client that opens a fresh connection per request: an idle keep-alive connection
/// would hold up a stopping daemon's drain.
fn status_agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(STATUS_TIMEOUT).max_idle_connections(0).max_idle_connections_per_host(0).build()
}

/// A node's status, with the cluster's token (needed where reads are protected).
fn fetch_status(agent: &ureq::Agent, url: &str, token: &str) -> Result<NodeStatus> {
    let body = agent
        .get(url)
        .set(taskd::access::TOKEN_HEADER, token)
        .call()
        .with_context(|| format!("GET {url}"))?
        .into_string()
        .context("read the status")?;
    serde_json::from_str(&body).with_context(|| format!("parse the status {body:?}"))
}

fn write_health(path: &Path, ok: bool) -> Result<()> {
    let temp = path.with_extension("tmp");
    fs::write(&temp, if ok { "ok\n" } else { "fail injected by the test\n" })
        .with_context(|| format!("write {}", temp.display()))?;
    fs::rename(&temp, path).with_context(|| format!("rename {} to {}", temp.display(), path.display()))
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_micros() as u64).unwrap_or(0)
}

/// The time in a glog line's header (`I1123 22:27:52.483311 20637 file.rs:220] ...`): local
/// wall-clock time without a year, taken as the latest such moment not after tomorrow.
pub fn glog_time(line: &str) -> Option<SystemTime> {
    let mut words = line.split_whitespace();
    let level_and_date = words.next()?;
    let time = words.next()?;
    let month_day = level_and_date.get(1..5)?;
    if !level_and_date.starts_with(['I', 'W', 'E', 'F']) || !month_day.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let now = chrono::Local::now();
    let year = chrono::Datelike::year(&now);
    for year in [year, year - 1] {
        let naive =
            chrono::NaiveDateTime::parse_from_str(&format!("{year}{month_day} {time}"), "%Y%m%d %H:%M:%S%.f").ok()?;
        let local = chrono::Local.from_local_datetime(&naive).earliest()?;
        if local <= now + chrono::Duration::days(1) {
            return Some(SystemTime::from(local));
        }
    }
    None
}

/// `n` distinct TCP ports that were free on `address` a moment ago (all bound at once, then released).
fn free_ports(address: Ipv4Addr, n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind(SocketAddrV4::new(address, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("bind a free port on {address}"))?;
    listeners.iter().map(|listener| Ok(listener.local_addr().context("read a bound port")?.port())).collect()
}

/// The `zbs-taskd` binary next to the running executable, built once per process when missing
/// or older than the sources (see the module documentation).
pub fn daemon_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| find_or_build_binary().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(|error| anyhow!(error))
}

fn find_or_build_binary() -> Result<PathBuf> {
    if let Some(binary) = std::env::var_os(BINARY_ENV) {
        let binary = PathBuf::from(binary);
        ensure!(binary.is_file(), "{BINARY_ENV}={} is not a file", binary.display());
        return Ok(binary);
    }
    let exe = std::env::current_exe().context("find the running executable")?;
    let mut profile_dir = exe.parent().context("the executable has no dir")?.to_path_buf();
    if profile_dir.file_name().is_some_and(|name| name == "deps" || name == "examples") {
        profile_dir.pop();
    }
    let binary = profile_dir.join("zbs-taskd");
    let release = profile_dir.file_name().is_some_and(|name| name == "release");
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // A release binary (xtask's cluster and benchmarks) is rebuilt only when older than the
    // sources. A debug one (the tests') is always handed to cargo, which rebuilds it only when
    // needed, with the tests' debug routes: a binary from a plain `cargo build` is just as new
    // and lacks them.
    if release {
        let built_at = fs::metadata(&binary).and_then(|metadata| metadata.modified()).ok();
        let sources_at = newest_source(&workspace);
        if built_at.is_some_and(|built| sources_at.is_none_or(|sources| built >= sources)) {
            return Ok(binary);
        }
    }
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.args(["build", "--quiet", "--package", "taskd", "--bin", "zbs-taskd"]).current_dir(&workspace);
    if release {
        command.arg("--release");
    } else {
        command.args(["--features", "debug-hooks"]);
    }
    // Build into the dir this executable runs from, wherever the target dir is.
    if let Some(target_dir) = profile_dir.parent() {
        command.env("CARGO_TARGET_DIR", target_dir);
    }
    eprintln!(
        "cluster fixture: building {} if needed ({})",
        binary.display(),
        if release { "release" } else { "debug" }
    );
    let status = command.status().context("run cargo build for zbs-taskd")?;
    ensure!(status.success(), "cargo build of zbs-taskd failed ({status})");
    ensure!(binary.is_file(), "cargo build did not produce {}", binary.display());
    Ok(binary)
}

/// The newest modification time of the daemon's sources: the crates it is built from and the lock file.
fn newest_source(workspace: &Path) -> Option<SystemTime> {
    fn walk(path: &Path, newest: &mut Option<SystemTime>) {
        let Ok(metadata) = fs::metadata(path) else { return };
        if metadata.is_dir() {
            if let Ok(entries) = fs::read_dir(path) {
                for entry in entries.flatten() {
                    walk(&entry.path(), newest);
                }
            }
        } else if path.extension().is_some_and(|extension| extension == "rs" || extension == "toml")
            || path.file_name().is_some_and(|name| name == "Cargo.lock")
        {
            if let Ok(modified) = metadata.modified() {
                *newest = Some(newest.map_or(modified, |newest: SystemTime| newest.max(modified)));
            }
        }
    }
    let mut newest = None;
    for crate_name in ["taskd", "runtime", "quorum", "vip"] {
        walk(&workspace.join(crate_name).join("src"), &mut newest);
        walk(&workspace.join(crate_name).join("Cargo.toml"), &mut newest);
    }
    walk(&workspace.join("Cargo.lock"), &mut newest);
    newest
}

#[cfg(test)]
mod tests;
