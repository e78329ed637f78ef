//! A cluster of real `zbs-taskd` processes for the integration tests and `cargo xtask bench`: one ZooKeeper from [`crate::zk`] plus N daemons on loopback, each in its own dir with its config, `file` health source, log and stderr.
//!
//! Node `i` (0-based) is `node-{i+1}` on `127.0.0.{i+1}` (management and data address) with
//! free ports, in `<dir>/n{i+1}/`: `taskd.toml`, `health` (the file its health source reads),
//! `taskd.log` (glog lines), `stderr.log`, `state/`. The daemon runs with that dir as its working
//! directory and with the core-size limit raised, so that a crash would leave a `core` file there
//! (this machine's `core_pattern` is relative) for [`Cluster::core_files`] to find.
//!
//! A background sampler polls every node's `/api/v1/status` every few milliseconds and keeps
//! each answer with its time, so that a test can assert that two nodes never led at one instant
//! ([`Sampler::definite_overlaps`]) and a benchmark can see when a new leader appeared.
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
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};
use chrono::TimeZone;
use serde::Deserialize;

use crate::daemon::{DaemonFiles, Daemons};
use crate::zk::ZooKeeper;

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

/// Settings for starting a cluster; every node gets the same ones.
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    n_nodes: usize,
    session_timeout: Duration,
    drain_deadline: Duration,
    health_fall: u32,
    health_rise: u32,
    health_interval: Duration,
    on_network_failure: OnNetworkFailure,
    step_down_requires_healthy_peer: bool,
    log_level: String,
    sample_interval: Duration,
    start_timeout: Duration,
    binary: Option<PathBuf>,
    /// Top-level TOML lines added to every node's config (`extra_config`).
    extra_config: String,
    /// `[api] protect_reads` of every node (the token itself is always on).
    protect_reads: bool,
    /// More `[api]` lines of every node (`api_config`).
    api_config: String,
    /// Run on a node's files before it starts (`prepare_node`).
    prepare: Vec<(usize, PrepareNode)>,
    /// ZooKeeper servers: 1 standalone, 3 an ensemble (`zookeeper_servers`).
    zookeeper_servers: usize,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            n_nodes: 3,
            session_timeout: Duration::from_millis(6000),
            drain_deadline: Duration::from_millis(2000),
            health_fall: 2,
            health_rise: 3,
            health_interval: Duration::from_millis(100),
            on_network_failure: OnNetworkFailure::Stay,
            step_down_requires_healthy_peer: true,
            log_level: "info".to_string(),
            sample_interval: Duration::from_millis(20),
            start_timeout: Duration::from_secs(60),
            binary: None,
            extra_config: String::new(),
            protect_reads: false,
            api_config: String::new(),
            prepare: Vec::new(),
            zookeeper_servers: 1,
        }
    }
}

impl ClusterBuilder {
    /// Three nodes, 6 s sessions (the daemon's default), `file` health polled every 100 ms with
    /// fall 2 / rise 3, stay mode with the whole-outage guard on, a status sample every 20 ms.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the number of daemons (1 to 254).
    pub fn nodes(mut self, n_nodes: usize) -> Self {
        self.n_nodes = n_nodes;
        self
    }

    /// Sets `session_timeout_ms`.
    pub fn session_timeout(mut self, session_timeout: Duration) -> Self {
        self.session_timeout = session_timeout;
        self
    }

    /// Sets `drain_deadline_ms`.
    pub fn drain_deadline(mut self, drain_deadline: Duration) -> Self {
        self.drain_deadline = drain_deadline;
        self
    }

    /// Sets the health source's `fall` and `rise` rounds.
    pub fn health_fall_rise(mut self, fall: u32, rise: u32) -> Self {
        self.health_fall = fall;
        self.health_rise = rise;
        self
    }

    /// Sets how often the health file is read (`health.file.interval_ms`).
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.health_interval = interval;
        self
    }

    /// Sets `on_network_failure` (and the `[exit_limit]` section in exit mode).
    pub fn on_network_failure(mut self, action: OnNetworkFailure) -> Self {
        self.on_network_failure = action;
        self
    }

    /// Sets `step_down_requires_healthy_peer` (the whole-outage guard).
    pub fn step_down_requires_healthy_peer(mut self, required: bool) -> Self {
        self.step_down_requires_healthy_peer = required;
        self
    }

    /// Sets the daemons' log filter (`log.level`).
    pub fn log_level(mut self, level: impl Into<String>) -> Self {
        self.log_level = level.into();
        self
    }

    /// Sets how often the sampler polls every node's status.
    pub fn sample_interval(mut self, interval: Duration) -> Self {
        self.sample_interval = interval;
        self
    }

    /// Sets how long start-up may take: ZooKeeper, then every node serving and one leader.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Uses this `zbs-taskd` binary instead of the one next to the running executable.
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = Some(binary.into());
        self
    }

    /// Adds top-level TOML lines (`key = value`, no section) to every node's config, e.g.
    /// `runner_slots = 2` or `allowed_roots = ["/tmp/x"]`.
    pub fn extra_config(mut self, toml_text: impl Into<String>) -> Self {
        let mut text = toml_text.into();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        self.extra_config.push_str(&text);
        self
    }

    /// Reads need the API token too (`[api] protect_reads`).
    pub fn protect_reads(mut self, protect: bool) -> Self {
        self.protect_reads = protect;
        self
    }

    /// Runs `prepare` on node `index`'s files after they are written and before it starts, e.g.
    /// to break its state dir.
    pub fn prepare_node(mut self, index: usize, prepare: fn(&NodeSpec) -> Result<()>) -> Self {
        self.prepare.push((index, prepare));
        self
    }

    /// More lines of every node's `[api]` table, e.g. `max_connections = 64`.
    pub fn api_config(mut self, toml_lines: impl Into<String>) -> Self {
        let mut lines = toml_lines.into();
        if !lines.ends_with('\n') {
            lines.push('\n');
        }
        self.api_config.push_str(&lines);
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
        ensure!((1..=254).contains(&self.n_nodes), "a cluster has 1 to 254 nodes, not {}", self.n_nodes);
        let binary = match &self.binary {
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
        let mut specs = Vec::with_capacity(self.n_nodes);
        for index in 0..self.n_nodes {
            let spec = NodeSpec::plan(index, dir.path())?;
            fs::create_dir_all(&spec.state_dir).with_context(|| format!("create {}", spec.state_dir.display()))?;
            write_health(&spec.health_path, true)?;
            fs::write(&spec.config_path, self.config_toml(&spec, &zookeeper.connect_string(), &token_path))
                .with_context(|| format!("write {}", spec.config_path.display()))?;
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
            start_timeout: self.start_timeout,
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

    fn config_toml(&self, spec: &NodeSpec, zookeeper_hosts: &str, token_path: &Path) -> String {
        let mut toml = format!(
            "# Written by the zbs-taskd-rs cluster fixture.\n\
             node_id = \"{node_id}\"\n\
             zookeeper_hosts = \"{zookeeper_hosts}\"\n\
             session_timeout_ms = {session_timeout_ms}\n\
             management_address = \"{address}\"\n\
             data_address = \"{address}\"\n\
             dispatcher_port = {dispatcher_port}\n\
             runner_port = {runner_port}\n\
             state_dir = \"{state_dir}\"\n\
             drain_deadline_ms = {drain_deadline_ms}\n\
             step_down_requires_healthy_peer = {guard}\n",
            node_id = spec.node_id,
            session_timeout_ms = self.session_timeout.as_millis(),
            address = spec.address,
            dispatcher_port = spec.dispatcher_port,
            runner_port = spec.runner_port,
            state_dir = spec.state_dir.display(),
            drain_deadline_ms = self.drain_deadline.as_millis(),
            guard = self.step_down_requires_healthy_peer,
        );
        toml.push_str(&self.extra_config);
        match self.on_network_failure {
            OnNetworkFailure::Stay => toml.push_str("on_network_failure = \"stay\"\n"),
            OnNetworkFailure::Exit { start_limit_burst, start_limit_interval_sec } => toml.push_str(&format!(
                "on_network_failure = \"exit\"\n\
                 [exit_limit]\n\
                 start_limit_burst = {start_limit_burst}\n\
                 start_limit_interval_sec = {start_limit_interval_sec}\n"
            )),
        }
        toml.push_str(&format!(
            "[log]\n\
             format = \"glog\"\n\
             level = \"{level}\"\n\
             file = \"{log}\"\n\
             [health]\n\
             source = \"file\"\n\
             fall = {fall}\n\
             rise = {rise}\n\
             [health.file]\n\
             path = \"{health}\"\n\
             interval_ms = {interval_ms}\n\
             [api]\n\
             token_file = \"{token}\"\n\
             protect_reads = {protect_reads}\n\
             {api_config}",
            api_config = self.api_config,
            token = token_path.display(),
            protect_reads = self.protect_reads,
            level = self.log_level,
            log = spec.log_path.display(),
            fall = self.health_fall,
            rise = self.health_rise,
            health = spec.health_path.display(),
            interval_ms = self.health_interval.as_millis(),
        ));
        toml
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

    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
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
        self.settings.session_timeout
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
        // Retries 1 s apart, doubling: the daemon's default (10 s) would make every test that
        // watches a task fail and retry wait for minutes. A test that sets `[tasks] retry_*`
        // keys itself keeps them (a flag would override the file).
        if !self.settings.extra_config.contains("retry_") {
            command.args(["--tasks-retry-base-ms", "1000"]);
        }
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
    /// dirs; returns its pid. It does not wait for it to serve: see [`Cluster::wait_serving`].
    pub fn restart(&self, node: usize) -> Result<u32> {
        self.spawn(node)
    }

    /// Waits until the node answers its status and is not stopping.
    pub fn wait_serving(&self, node: usize, timeout: Duration) -> Result<NodeStatus> {
        let mut last = None;
        self.wait_until(timeout, &format!("{} serving", self.nodes[node].spec.node_id), || {
            last = self.try_status(node).filter(NodeStatus::is_serving);
            last.is_some()
        })?;
        last.ok_or_else(|| anyhow!("no status"))
    }

    /// The node's status, or the reason it has none (not listening, bad answer).
    pub fn status(&self, node: usize) -> Result<NodeStatus> {
        fetch_status(&self.agent, &self.nodes[node].spec.status_url(), &self.token)
            .with_context(|| format!("status of {}", self.nodes[node].spec.node_id))
    }

    /// The node's status, or None when it does not answer.
    pub fn try_status(&self, node: usize) -> Option<NodeStatus> {
        self.status(node).ok()
    }

    /// The one node whose status says leader; None when none or more than one does.
    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> =
            (0..self.nodes.len()).filter(|&node| self.try_status(node).is_some_and(|status| status.leader)).collect();
        match leaders.as_slice() {
            [leader] => Some(*leader),
            _ => None,
        }
    }

    /// Waits until exactly one node says leader; returns it.
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<usize> {
        let mut leader = None;
        self.wait_until(timeout, "one leader", || {
            leader = self.leader();
            leader.is_some()
        })?;
        leader.ok_or_else(|| anyhow!("no leader"))
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

    /// Polls `done` every 10 ms until it says true; an error naming `what` after `timeout`.
    pub fn wait_until(&self, timeout: Duration, what: &str, done: impl FnMut() -> bool) -> Result<Duration> {
        crate::daemon::wait_until(timeout, what, done)
    }

    /// Writes `ok` or `fail` into the node's health file (to a temp name, then renamed over it,
    /// so that the daemon never reads half a file).
    pub fn set_health(&self, node: usize, ok: bool) -> Result<()> {
        write_health(&self.nodes[node].spec.health_path, ok)
    }

    /// Sends `signal` to the node's running process.
    pub fn signal(&self, node: usize, signal: Signal) -> Result<()> {
        self.daemons.signal(node, signal)
    }

    /// Waits for the node's process to exit and returns how it ended (it is not killed on timeout).
    pub fn wait_exit(&self, node: usize, timeout: Duration) -> Result<ExitStatus> {
        self.daemons.wait_exit(node, timeout)
    }

    /// SIGKILLs the node's process and reaps it; no-op when it is not running.
    pub fn kill(&self, node: usize) -> Result<()> {
        self.daemons.kill(node)
    }

    /// The pid of the node's running process; None once it has exited.
    pub fn pid(&self, node: usize) -> Option<u32> {
        self.daemons.pid(node)
    }

    /// True while the node's process runs.
    pub fn is_running(&self, node: usize) -> bool {
        self.pid(node).is_some()
    }

    /// How many times the node's process was started.
    pub fn n_starts(&self, node: usize) -> u32 {
        self.daemons.n_starts(node)
    }

    /// The node's log file (glog lines of every run, appended).
    pub fn log(&self, node: usize) -> String {
        self.daemons.log(node)
    }

    /// What the node's processes wrote to stderr and stdout (every run, appended).
    pub fn stderr(&self, node: usize) -> String {
        self.daemons.stderr(node)
    }

    /// The wall-clock times of the node's log lines that contain `needle`, from their glog
    /// header (local time, microseconds).
    pub fn log_times(&self, node: usize, needle: &str) -> Vec<SystemTime> {
        self.log(node).lines().filter(|line| line.contains(needle)).filter_map(glog_time).collect()
    }

    /// Files named `core` or `core.*` in any node's dir or state dir.
    pub fn core_files(&self) -> Vec<PathBuf> {
        self.daemons.core_files()
    }

    /// Log lines of every node that name a crash or a self-join: the original daemon's failure.
    pub fn crash_lines(&self) -> Vec<String> {
        self.daemons.crash_lines()
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

    /// Stops every running node: SIGTERM to all at once, SIGKILL to those still running after `grace`.
    pub fn stop_all(&self, grace: Duration) {
        self.daemons.stop_all(grace)
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

/// One answer (or no answer) of one node, as the sampler saw it.
#[derive(Clone, Debug)]
pub struct Observation {
    /// When the answer arrived (or the request failed).
    pub at: Instant,
    /// The same moment on the wall clock, microseconds since the Unix epoch.
    pub unix_micros: u64,
    pub node: usize,
    /// None when the node did not answer.
    pub status: Option<Sample>,
}

/// The part of a status the sampler keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub pid: u32,
    pub leader: bool,
    pub sequence: Option<i64>,
    pub stopping: bool,
}

impl Observation {
    pub fn is_leader(&self) -> bool {
        self.status.as_ref().is_some_and(|status| status.leader)
    }
}

/// Two nodes seen leading at one instant: `other` said leader at `at` while `node` said leader
/// (same process, same election node) both before and after it.
#[derive(Clone, Debug)]
pub struct Overlap {
    pub node: usize,
    pub other: usize,
    pub at: Instant,
    pub unix_micros: u64,
}

/// A thread that polls every node's status in turn and keeps every answer.
pub struct Sampler {
    observations: Arc<Mutex<Vec<Observation>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    fn start(urls: Vec<String>, interval: Duration, token: String) -> Sampler {
        let observations = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let observations = observations.clone();
            let stop = stop.clone();
            thread::Builder::new()
                .name("cluster-sampler".to_string())
                .spawn(move || {
                    let agent = status_agent();
                    while !stop.load(Ordering::Acquire) {
                        for (node, url) in urls.iter().enumerate() {
                            let status = fetch_status(&agent, url, &token).ok().map(|status| Sample {
                                pid: status.pid,
                                leader: status.leader,
                                sequence: status.sequence,
                                stopping: status.stopping,
                            });
                            let observation =
                                Observation { at: Instant::now(), unix_micros: unix_micros(), node, status };
                            observations.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(observation);
                        }
                        thread::sleep(interval);
                    }
                })
                .ok()
        };
        if thread.is_none() {
            eprintln!("cluster fixture: cannot start the status sampler thread");
        }
        Sampler { observations, stop, thread }
    }

    /// A sampler without a thread, holding these observations; for the fixture's own tests.
    #[cfg(test)]
    fn from_observations(observations: Vec<Observation>) -> Sampler {
        Sampler {
            observations: Arc::new(Mutex::new(observations)),
            stop: Arc::new(AtomicBool::new(true)),
            thread: None,
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn locked(&self) -> MutexGuard<'_, Vec<Observation>> {
        self.observations.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every observation so far, in the order they were made (and so by time: one thread makes them).
    pub fn observations(&self) -> Vec<Observation> {
        self.locked().clone()
    }

    /// Observations made at or after `since`.
    pub fn observations_since(&self, since: Instant) -> Vec<Observation> {
        let observations = self.locked();
        let start = observations.partition_point(|observation| observation.at < since);
        observations[start..].to_vec()
    }

    /// Proven moments of two leaders: node A said leader before and after node B said leader,
    /// with no observation of A in between saying otherwise and the same pid and election node
    /// throughout (a member's leadership on one election node does not come back once lost, so
    /// A led at that instant too). A hand-over between two polls of one sweep is not an overlap.
    pub fn definite_overlaps(&self) -> Vec<Overlap> {
        let observations = self.observations();
        let n_nodes = observations.iter().map(|observation| observation.node + 1).max().unwrap_or(0);
        let mut overlaps = Vec::new();
        for node in 0..n_nodes {
            for (first, last) in leadership_spans(&observations, node) {
                for other in &observations {
                    if other.node != node && other.is_leader() && other.at > first && other.at < last {
                        overlaps.push(Overlap {
                            node,
                            other: other.node,
                            at: other.at,
                            unix_micros: other.unix_micros,
                        });
                    }
                }
            }
        }
        overlaps
    }

    /// The first observation at or after `since` of a node other than `old` saying leader.
    pub fn first_leader_after(&self, since: Instant, old: usize) -> Option<Observation> {
        let observations = self.locked();
        let start = observations.partition_point(|observation| observation.at < since);
        observations[start..].iter().find(|observation| observation.node != old && observation.is_leader()).cloned()
    }

    /// Waits until the sampler has seen a node other than `old` lead at or after `since`.
    pub fn wait_for_leader_after(&self, since: Instant, old: usize, timeout: Duration) -> Result<Observation> {
        let started = Instant::now();
        loop {
            if let Some(observation) = self.first_leader_after(since, old) {
                return Ok(observation);
            }
            if started.elapsed() >= timeout {
                bail!("the sampler saw no leader other than node {old} within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// True when `node` said leader in an observation at or after `since`.
    pub fn led_since(&self, node: usize, since: Instant) -> bool {
        let observations = self.locked();
        let start = observations.partition_point(|observation| observation.at < since);
        observations[start..].iter().any(|observation| observation.node == node && observation.is_leader())
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `(first, last)` times of each run of `node`'s observations that all say leader with one pid
/// and one election node.
fn leadership_spans(observations: &[Observation], node: usize) -> Vec<(Instant, Instant)> {
    let mut spans = Vec::new();
    let mut current: Option<(Instant, Instant, u32, Option<i64>)> = None;
    for observation in observations.iter().filter(|observation| observation.node == node) {
        match (&observation.status, &mut current) {
            (Some(status), Some((_, last, pid, sequence)))
                if status.leader && status.pid == *pid && status.sequence == *sequence =>
            {
                *last = observation.at;
            }
            (Some(status), _) if status.leader => {
                if let Some((first, last, _, _)) = current.take() {
                    spans.push((first, last));
                }
                current = Some((observation.at, observation.at, status.pid, status.sequence));
            }
            _ => {
                if let Some((first, last, _, _)) = current.take() {
                    spans.push((first, last));
                }
            }
        }
    }
    if let Some((first, last, _, _)) = current {
        spans.push((first, last));
    }
    spans
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
