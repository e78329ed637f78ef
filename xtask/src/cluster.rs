//! `cargo xtask cluster up|status|logs|down`: a local cluster for trying the daemon by hand: a
//! real ZooKeeper plus N `zbs-taskd` processes on loopback, detached so that they outlive xtask.
//!
//! Everything lives in `target/cluster/`: `zk/` (the ZooKeeper of `tests::zk`, detached),
//! `n<i>/` per node (`taskd.toml`, `health`, `taskd.log`, `stderr.log`, `state/`), and
//! `cluster.json` with every pid, port and path. Node `i` is `node-i` on `127.0.0.i` with free
//! ports. Its data-network health comes from the `file` source reading `n<i>/health`, so that
//! writing `fail` there fails the node.
//!
//! With `--netns` the nodes run in network namespaces instead (see [`netns`]).
//!
//! `up` on a running cluster restarts the nodes whose process has exited. `down` signals only
//! the recorded pids, and only while each is still a `zbs-taskd` running the recorded config;
//! then it stops ZooKeeper the same way and removes `target/cluster/`.

use std::fs::{self, OpenOptions};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ::tests::cluster::{daemon_binary, NodeStatus};
use ::tests::zk::{DetachedZooKeeper, ZooKeeperBuilder, DEFAULT_ZOOKEEPER_JAR};
use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Subcommand};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use taskd::config::{FileConfig, LogFormat};
use vip::health::SourceKind;

/// The state file in `target/cluster/`.
const STATE_FILE: &str = "cluster.json";

/// How long `up` waits for every node to serve and one to lead.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// The nodes' drain deadline; `down` waits a little longer than it before SIGKILL.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);
const STOP_GRACE: Duration = Duration::from_secs(20);

#[derive(Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Start ZooKeeper and N nodes on 127.0.0.1..N (or restart the stopped nodes of a running cluster).
    Up(UpArgs),
    /// Each node's process, role and health, from its status API.
    Status,
    /// The last lines of one node's log (`1`, `node-1` or `zk`), or of every node's.
    Logs(LogsArgs),
    /// Stop what `up` started (only those pids) and remove target/cluster.
    Down,
}

#[derive(Args)]
pub struct UpArgs {
    /// Number of zbs-taskd nodes (1 to 254; 1 to 99 with --netns).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Run the nodes in network namespaces (management and data links, ZooKeeper and a client
    /// namespace, the leader holding the VIP), as the failover tests do. Needs root.
    #[arg(long)]
    pub netns: bool,
}

#[derive(Args)]
pub struct LogsArgs {
    /// `1`, `node-1` or `zk`; every node when left out.
    pub node: Option<String>,
    /// How many lines from the end of each log.
    #[arg(long, short = 'n', default_value_t = 40)]
    pub lines: usize,
}

/// `target/cluster/cluster.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ClusterState {
    dir: PathBuf,
    binary: PathBuf,
    zookeeper_dir: PathBuf,
    zookeeper_hosts: String,
    nodes: Vec<NodeState>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct NodeState {
    node_id: String,
    /// 0 until the process was started.
    pid: u32,
    address: Ipv4Addr,
    dispatcher_port: u16,
    runner_port: u16,
    dir: PathBuf,
    config_path: PathBuf,
    health_path: PathBuf,
    log_path: PathBuf,
    stderr_path: PathBuf,
    state_dir: PathBuf,
}

impl NodeState {
    fn status_url(&self) -> String {
        format!("http://{}:{}/api/v1/status", self.address, self.dispatcher_port)
    }

    fn is_running(&self) -> Result<bool> {
        is_our_daemon(self.pid, &self.config_path)
    }
}

pub fn run(args: ClusterArgs) -> Result<()> {
    let dir = cluster_dir();
    let netns_cluster = netns::load(&dir)?;
    match (args.command, netns_cluster) {
        (ClusterCommand::Up(up_args), _) if up_args.netns => netns::up(&dir, up_args.nodes),
        (ClusterCommand::Up(_), Some(_)) => {
            bail!("a network-namespace cluster is up in {}; `cargo xtask cluster down` first", dir.display())
        }
        (ClusterCommand::Up(up_args), None) => up(&dir, up_args.nodes),
        (ClusterCommand::Status, Some(cluster)) => netns::status(&cluster),
        (ClusterCommand::Status, None) => status(&dir),
        (ClusterCommand::Logs(logs_args), Some(cluster)) => {
            for node in &cluster.nodes {
                let wanted = logs_args.node.as_deref().map(|name| name.strip_prefix("node-").unwrap_or(name));
                if wanted.is_none_or(|wanted| node.node_id.strip_prefix("node-") == Some(wanted)) {
                    print_tail(&node.log_path, logs_args.lines, &node.node_id);
                }
            }
            Ok(())
        }
        (ClusterCommand::Logs(logs_args), None) => logs(&dir, logs_args),
        (ClusterCommand::Down, Some(cluster)) => netns::down(cluster),
        (ClusterCommand::Down, None) => down(&dir),
    }
}

/// `target/cluster/` of this workspace, or of `$CARGO_TARGET_DIR`.
pub fn cluster_dir() -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        xtask_dir.parent().unwrap_or(xtask_dir).join("target")
    });
    target_dir.join("cluster")
}

fn load_state(dir: &Path) -> Result<Option<ClusterState>> {
    let path = dir.join(STATE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("read {}", path.display())),
    };
    serde_json::from_str(&text).map(Some).with_context(|| format!("parse {}", path.display()))
}

fn save_state(state: &ClusterState) -> Result<()> {
    let path = state.dir.join(STATE_FILE);
    let temp = path.with_extension("json.tmp");
    fs::write(&temp, serde_json::to_string_pretty(state).context("encode the cluster state")?)
        .with_context(|| format!("write {}", temp.display()))?;
    fs::rename(&temp, &path).with_context(|| format!("rename {} to {}", temp.display(), path.display()))
}

pub fn up(dir: &Path, n_nodes: usize) -> Result<()> {
    ensure!((1..=254).contains(&n_nodes), "a cluster has 1 to 254 nodes, not {n_nodes}");
    if let Some(mut state) = load_state(dir)? {
        if zookeeper_runs(&state)? {
            let stopped: Vec<usize> =
                (0..state.nodes.len()).filter(|&node| !state.nodes[node].is_running().unwrap_or(false)).collect();
            if stopped.is_empty() {
                println!(
                    "the cluster is already up ({} nodes); `cargo xtask cluster down` first for a new one",
                    state.nodes.len()
                );
            } else {
                for &node in &stopped {
                    state.nodes[node].pid = spawn_node(&state.binary, &state.nodes[node])?;
                    save_state(&state)?;
                    println!("restarted {} (pid {})", state.nodes[node].node_id, state.nodes[node].pid);
                }
                wait_until_formed(&state)?;
            }
            return print_guide(&state);
        }
        println!("the recorded cluster's ZooKeeper is gone: cleaning up before a fresh start");
        down(dir)?;
    } else if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("remove the leftover {}", dir.display()))?;
    }

    if !Path::new(DEFAULT_ZOOKEEPER_JAR).exists() {
        crate::test::ensure_packages(&["zookeeper"]).context("ZooKeeper is needed for the local cluster")?;
    }
    let binary = daemon_binary().context("find or build zbs-taskd")?;
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let dir = fs::canonicalize(dir).with_context(|| format!("resolve {}", dir.display()))?;
    let zookeeper_dir = dir.join("zk");
    let zookeeper = ZooKeeperBuilder::new().start_detached(&zookeeper_dir).context("start ZooKeeper")?;
    let mut state = ClusterState {
        dir: dir.clone(),
        binary,
        zookeeper_dir,
        zookeeper_hosts: zookeeper.connect_string(),
        nodes: Vec::new(),
    };
    save_state(&state)?;
    let volumes = volumes_dir(&dir);
    fs::create_dir_all(&volumes).with_context(|| format!("create {}", volumes.display()))?;
    let token = token_path(&dir);
    if taskd::access::create_token_file(&token, None).with_context(|| format!("create {}", token.display()))? {
        println!("wrote the cluster's API token to {} (mode 0640)", relative(&token));
    }
    for index in 0..n_nodes {
        let node = plan_node(&dir, index)?;
        fs::create_dir_all(&node.state_dir).with_context(|| format!("create {}", node.state_dir.display()))?;
        fs::write(&node.health_path, "ok\n").with_context(|| format!("write {}", node.health_path.display()))?;
        fs::write(&node.config_path, config_toml(&node, &state.zookeeper_hosts, &volumes, &token)?)
            .with_context(|| format!("write {}", node.config_path.display()))?;
        state.nodes.push(node);
        // Recorded before and after the start, so that `down` finds whatever did start.
        save_state(&state)?;
        state.nodes[index].pid = spawn_node(&state.binary, &state.nodes[index])?;
        save_state(&state)?;
    }
    if let Err(error) = wait_until_formed(&state) {
        eprintln!("the nodes keep running; see `cargo xtask cluster logs`, stop them with `cargo xtask cluster down`");
        return Err(error);
    }
    print_guide(&state)
}

fn zookeeper_runs(state: &ClusterState) -> Result<bool> {
    let Some(zookeeper) = DetachedZooKeeper::load(&state.zookeeper_dir)? else { return Ok(false) };
    for server in &zookeeper.servers {
        if !server.is_running()? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn plan_node(dir: &Path, index: usize) -> Result<NodeState> {
    let address = Ipv4Addr::new(127, 0, 0, index as u8 + 1);
    let ports = free_ports(address, 2)?;
    let node_dir = dir.join(format!("n{}", index + 1));
    fs::create_dir_all(&node_dir).with_context(|| format!("create {}", node_dir.display()))?;
    Ok(NodeState {
        node_id: format!("node-{}", index + 1),
        pid: 0,
        address,
        dispatcher_port: ports[0],
        runner_port: ports[1],
        config_path: node_dir.join("taskd.toml"),
        health_path: node_dir.join("health"),
        log_path: node_dir.join("taskd.log"),
        stderr_path: node_dir.join("stderr.log"),
        state_dir: node_dir.join("state"),
        dir: node_dir,
    })
}

/// `path` relative to the current dir when under it, for commands a user copies.
fn relative(path: &Path) -> String {
    path.strip_prefix(std::env::current_dir().unwrap_or_default()).unwrap_or(path).display().to_string()
}

/// The local cluster's API token file (`[api] token_file` of every node), made by `up`.
pub fn token_path(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("token")
}

/// Where the local cluster's volumes live: every node may copy from and to it.
pub fn volumes_dir(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("volumes")
}

/// Node `node`'s configuration file: every node copies and moves volumes under `volumes`,
/// changes need the token in `token`, and its data network's health is the file it names.
fn config_toml(node: &NodeState, zookeeper_hosts: &str, volumes: &Path, token: &Path) -> Result<String> {
    let mut config = FileConfig {
        node_id: Some(node.node_id.clone()),
        zookeeper_hosts: Some(zookeeper_hosts.to_string()),
        management_address: Some(node.address.into()),
        data_address: Some(node.address.into()),
        dispatcher_port: Some(node.dispatcher_port),
        runner_port: Some(node.runner_port),
        state_dir: Some(node.state_dir.clone()),
        drain_deadline_ms: Some(DRAIN_DEADLINE.as_millis() as u64),
        allowed_roots: Some(vec![volumes.to_path_buf()]),
        ..FileConfig::default()
    };
    // Small extents and a rate limit, so that a copy's progress is visible on a laptop-sized
    // volume (a production node keeps the defaults: 256 MiB extents, no limit).
    config.tasks.copy_extent_mib = Some(16);
    config.tasks.copy_max_mib_per_s = Some(64);
    config.api.token_file = Some(token.to_path_buf());
    config.log.format = Some(LogFormat::Glog);
    config.log.level = Some("info,may=warn".to_string());
    config.log.file = Some(node.log_path.clone());
    config.health.source = SourceKind::File;
    config.health.fall = 2;
    config.health.rise = 3;
    config.health.file.path = node.health_path.clone();
    config.health.file.interval_ms = 200;
    let toml = config.to_toml().context("write the node's configuration")?;
    Ok(format!(
        "# Written by `cargo xtask cluster up`; see packaging/taskd.toml for every key.\n\
         # CopyVolume reads and writes only under allowed_roots; small extents and a rate limit make a\n\
         # copy's progress visible. Changes through either API need the token in [api] token_file\n\
         # (zbs-task --token-file, or X-SmartX-Token). Write `fail` into the [health.file] path to fail\n\
         # this node's data network, `ok` to heal it.\n\
         {toml}"
    ))
}

/// Starts the node in a session of its own (so that it outlives xtask and its terminal), with
/// stdout and stderr appended to its `stderr.log`; returns its pid.
fn spawn_node(binary: &Path, node: &NodeState) -> Result<u32> {
    let stderr = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.stderr_path)
        .with_context(|| format!("open {}", node.stderr_path.display()))?;
    let stdout = stderr.try_clone().context("duplicate the stderr file handle")?;
    let mut command = Command::new(binary);
    command
        .arg("--config")
        .arg(&node.config_path)
        .current_dir(&node.dir)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    // SAFETY: the closure runs between fork and exec and only calls setsid(2), which is async-signal-safe.
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
    let child = command.spawn().with_context(|| format!("start {} with {}", node.node_id, binary.display()))?;
    // Not waited for: the node is in its own session, and init reaps it once xtask has exited.
    Ok(child.id())
}

fn wait_until_formed(state: &ClusterState) -> Result<()> {
    let agent = status_agent();
    let started = Instant::now();
    let n_nodes = state.nodes.len();
    loop {
        let statuses: Vec<Option<NodeStatus>> =
            state.nodes.iter().map(|node| fetch_status(&agent, node).ok()).collect();
        let all_serving = statuses
            .iter()
            .all(|status| status.as_ref().is_some_and(|status| status.members.len() == n_nodes && !status.stopping));
        let n_leaders = statuses.iter().flatten().filter(|status| status.leader).count();
        if all_serving && n_leaders == 1 {
            return Ok(());
        }
        for node in &state.nodes {
            if !node.is_running()? {
                bail!(
                    "{} (pid {}) exited during start-up; its stderr is {}",
                    node.node_id,
                    node.pid,
                    node.stderr_path.display()
                );
            }
        }
        if started.elapsed() >= FORM_TIMEOUT {
            bail!("the cluster did not form within {FORM_TIMEOUT:?} (every node serving, seeing {n_nodes} members, one leader)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print_guide(state: &ClusterState) -> Result<()> {
    let agent = status_agent();
    println!("ZooKeeper at {} (dir {})", state.zookeeper_hosts, state.zookeeper_dir.display());
    let mut leader = None;
    for node in &state.nodes {
        let role = match fetch_status(&agent, node) {
            Ok(status) => {
                if status.leader {
                    leader = Some(node);
                }
                status.role
            }
            Err(_) => "no answer".to_string(),
        };
        println!("{:<8} pid {:<7} {:<9} curl {}", node.node_id, node.pid, role, node.status_url());
    }
    println!("\nstate: {}", relative(&state.dir.join(STATE_FILE)));
    let mut tries: Vec<(String, String)> =
        vec![("cargo xtask cluster status".to_string(), "each node's role and health".to_string())];
    if let Some(node) = state.nodes.first() {
        tries.push((
            format!("echo fail > {}", relative(&node.health_path)),
            format!("fail {}'s data network (`echo ok >` heals it): a failed leader hands over", node.node_id),
        ));
    }
    if let Some(leader) = leader {
        tries.push((
            format!("kill -TERM {}", leader.pid),
            format!("SIGTERM the leader ({}): a new one is elected, it drains and exits 0", leader.node_id),
        ));
    }
    tries.push((
        "cargo xtask cluster logs 1".to_string(),
        "node-1's glog lines (`logs zk` for ZooKeeper's)".to_string(),
    ));
    tries.push(("cargo xtask cluster up".to_string(), "restart the nodes that have exited".to_string()));
    tries.push(("cargo xtask cluster down".to_string(), format!("stop all of it and remove {}", relative(&state.dir))));
    let width = tries.iter().map(|(command, _)| command.len()).max().unwrap_or(0);
    println!("try:");
    for (command, comment) in tries {
        println!("  {command:<width$}  # {comment}");
    }
    if let Some(leader) = leader {
        // Absolute paths: the daemon resolves them, not this shell.
        let volumes = volumes_dir(&state.dir).display().to_string();
        println!("CopyVolume may use only {volumes} here; put a volume there and copy it:");
        println!(
            "  target/release/zbs-task --token-file {} --server {}:{} task copy_volume {volumes}/a.img {volumes}/b.img",
            relative(&token_path(&state.dir)),
            leader.address,
            leader.dispatcher_port
        );
    }
    Ok(())
}

fn down(dir: &Path) -> Result<()> {
    let Some(state) = load_state(dir)? else {
        println!("no cluster (no {STATE_FILE} in {})", dir.display());
        return Ok(());
    };
    let mut signalled = Vec::new();
    for node in &state.nodes {
        if node.is_running()? {
            kill(Pid::from_raw(node.pid as i32), Signal::SIGTERM)
                .with_context(|| format!("send SIGTERM to {} (pid {})", node.node_id, node.pid))?;
            signalled.push(node);
        } else if node.pid != 0 {
            println!(
                "{}: pid {} is not (or no longer) a zbs-taskd with {}; left alone",
                node.node_id,
                node.pid,
                node.config_path.display()
            );
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for node in signalled {
        while node.is_running()? && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if node.is_running()? {
            println!("{} (pid {}) did not stop within {STOP_GRACE:?}; sending SIGKILL", node.node_id, node.pid);
            kill(Pid::from_raw(node.pid as i32), Signal::SIGKILL)
                .with_context(|| format!("send SIGKILL to pid {}", node.pid))?;
        } else {
            println!("{} (pid {}) stopped", node.node_id, node.pid);
        }
    }
    match DetachedZooKeeper::load(&state.zookeeper_dir)? {
        Some(zookeeper) => {
            let hosts = zookeeper.connect_string();
            zookeeper.stop().context("stop ZooKeeper")?;
            println!("ZooKeeper at {hosts} stopped");
        }
        None => println!("ZooKeeper: nothing recorded in {}", state.zookeeper_dir.display()),
    }
    fs::remove_dir_all(&state.dir).with_context(|| format!("remove {}", state.dir.display()))?;
    println!("removed {}", state.dir.display());
    Ok(())
}

/// Whether `pid` is a live `zbs-taskd` process with `config_path` on its command line (a zombie
/// has an empty command line and counts as not running).
pub fn is_our_daemon(pid: u32, config_path: &Path) -> Result<bool> {
    if pid == 0 {
        return Ok(false);
    }
    let cmdline_path = format!("/proc/{pid}/cmdline");
    let cmdline = match fs::read(&cmdline_path) {
        Ok(cmdline) => cmdline,
        Err(error)
            if matches!(error.kind(), std::io::ErrorKind::NotFound) || error.raw_os_error() == Some(libc::ESRCH) =>
        {
            return Ok(false)
        }
        Err(error) => return Err(error).with_context(|| format!("read {cmdline_path}")),
    };
    let mut args = cmdline.split(|&byte| byte == 0).map(|arg| Path::new(std::ffi::OsStr::from_bytes(arg)));
    let is_taskd = args.next().and_then(Path::file_name).is_some_and(|name| name == "zbs-taskd");
    Ok(is_taskd && args.any(|arg| arg == config_path))
}

/// A fresh connection per request: a kept-alive idle connection would hold up a node's drain.
fn status_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(1))
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .build()
}

fn fetch_status(agent: &ureq::Agent, node: &NodeState) -> Result<NodeStatus> {
    let url = node.status_url();
    let body =
        agent.get(&url).call().with_context(|| format!("GET {url}"))?.into_string().context("read the status")?;
    serde_json::from_str(&body).with_context(|| format!("parse the status {body:?}"))
}

/// `n` distinct TCP ports that were free on `address` a moment ago (all bound at once, then released).
fn free_ports(address: Ipv4Addr, n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind(SocketAddrV4::new(address, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("bind a free port on {address}"))?;
    listeners.iter().map(|listener| Ok(listener.local_addr().context("read a bound port")?.port())).collect()
}

mod inspect;

use self::inspect::{logs, print_tail, status};
mod netns;

#[cfg(test)]
mod tests;
