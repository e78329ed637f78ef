//! What the demo needs of the local cluster that `cargo xtask cluster up` started: its nodes
//! (read from `target/cluster/cluster.json`), the leader's dispatcher address, and a directory
//! every node lets CopyVolume read and write (`allowed_roots`).
//!
//! `cluster up` writes `allowed_roots = [target/cluster/volumes]` and small copy extents with a
//! rate limit into every node's config, so the progress bar moves extent by extent. A cluster
//! started before it did (no common allowed root) is mended here: the demo adds those settings
//! to each node's config and restarts the nodes through `cluster up`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Deserialize;

use crate::cluster;

/// The copy settings the demo gives the nodes when it adds the allowed root: 16 MiB extents
/// (the unit of progress) read at most at 64 MiB/s, a few seconds for the demo volume's data.
const DEMO_COPY_SETTINGS: &str = "tasks.copy_extent_mib = 16\ntasks.copy_max_mib_per_s = 64\n";

/// `cargo xtask cluster up --nodes N`, through its command line so that its checks (a
/// network-namespace cluster already up) and defaults apply as when typed.
pub fn cluster_up(n_nodes: usize) -> Result<()> {
    cluster::run(cluster_up_args(n_nodes)?)
}

fn cluster_up_args(n_nodes: usize) -> Result<cluster::ClusterArgs> {
    use clap::{Args, FromArgMatches};
    let command = cluster::ClusterArgs::augment_args(clap::Command::new("cluster"));
    let n_nodes = n_nodes.to_string();
    let matches = command
        .try_get_matches_from(["cluster", "up", "--nodes", n_nodes.as_str()])
        .context("the cluster's command line")?;
    cluster::ClusterArgs::from_arg_matches(&matches).context("the cluster's command line")
}

/// The fields of `cluster.json` the demo reads (the file has more).
#[derive(Debug, Deserialize)]
pub struct ClusterFile {
    pub dir: PathBuf,
    pub binary: PathBuf,
    pub nodes: Vec<NodeFile>,
}

#[derive(Debug, Deserialize)]
pub struct NodeFile {
    pub node_id: String,
    pub pid: u32,
    pub address: std::net::Ipv4Addr,
    pub dispatcher_port: u16,
    pub config_path: PathBuf,
    pub health_path: PathBuf,
}

impl NodeFile {
    pub fn dispatcher(&self) -> String {
        format!("{}:{}", self.address, self.dispatcher_port)
    }
}

pub fn load(dir: &Path) -> Result<ClusterFile> {
    let path = dir.join("cluster.json");
    let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// The node whose status API says it leads (waiting up to 30 s for one to).
pub fn leader(cluster: &ClusterFile) -> Result<&NodeFile> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(1)).max_idle_connections(0).build();
    let started = Instant::now();
    loop {
        for node in &cluster.nodes {
            let url = format!("http://{}/api/v1/status", node.dispatcher());
            let status: Option<serde_json::Value> =
                agent.get(&url).call().ok().and_then(|response| response.into_json().ok());
            if status.is_some_and(|status| status["leader"] == true) {
                return Ok(node);
            }
        }
        ensure!(started.elapsed() < Duration::from_secs(30), "no node of the cluster leads after 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The allowed roots in a node's config file.
fn allowed_roots(config_path: &Path) -> Result<Vec<PathBuf>> {
    let text = fs::read_to_string(config_path).with_context(|| format!("read {}", config_path.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("parse {}", config_path.display()))?;
    Ok(table
        .get("allowed_roots")
        .and_then(toml::Value::as_array)
        .map(|roots| roots.iter().filter_map(toml::Value::as_str).map(PathBuf::from).collect())
        .unwrap_or_default())
}

/// A directory every node allows CopyVolume to use, made so if none is.
pub fn prepare_allowed_root(dir: &Path) -> Result<PathBuf> {
    let cluster = load(dir)?;
    let first = cluster.nodes.first().context("the cluster has no nodes")?;
    for root in allowed_roots(&first.config_path)? {
        let mut everywhere = true;
        for node in &cluster.nodes[1..] {
            everywhere &= allowed_roots(&node.config_path)?.contains(&root);
        }
        if everywhere {
            fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
            return Ok(root);
        }
    }
    let root = cluster.dir.join("volumes");
    fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
    let copy_settings =
        if daemon_knows(&cluster.binary, "--tasks-copy-max-mib-per-s")? { DEMO_COPY_SETTINGS } else { "" };
    println!("demo: the nodes allow no common CopyVolume root; adding {} and restarting them", root.display());
    for node in &cluster.nodes {
        let text =
            fs::read_to_string(&node.config_path).with_context(|| format!("read {}", node.config_path.display()))?;
        let text = with_demo_settings(&text, &root, copy_settings)
            .with_context(|| format!("add the demo's settings to {}", node.config_path.display()))?;
        fs::write(&node.config_path, text).with_context(|| format!("write {}", node.config_path.display()))?;
        stop_node(node)?;
    }
    cluster_up(cluster.nodes.len())?;
    Ok(root)
}

/// A node's config with `allowed_roots = [root]` and `copy_settings` added: prepended, since
/// top-level keys must come before the first table. Refuses a config that sets either already.
fn with_demo_settings(config: &str, root: &Path, copy_settings: &str) -> Result<String> {
    let table: toml::Table = config.parse().context("parse the config")?;
    ensure!(
        !table.contains_key("allowed_roots") && !table.contains_key("tasks"),
        "it sets allowed_roots or [tasks] already; the demo will not edit it"
    );
    let root_line = format!("allowed_roots = [{}]\n", toml::Value::String(root.display().to_string()));
    Ok(format!("# Added by `cargo xtask demo`:\n{root_line}{copy_settings}{config}"))
}

/// Whether `binary --help` lists `flag`.
fn daemon_knows(binary: &Path, flag: &str) -> Result<bool> {
    let output =
        Command::new(binary).arg("--help").output().with_context(|| format!("run {} --help", binary.display()))?;
    Ok(String::from_utf8_lossy(&output.stdout).contains(flag))
}

/// SIGTERM to the node, then waits (up to 30 s) until it has exited.
fn stop_node(node: &NodeFile) -> Result<()> {
    if !cluster::is_our_daemon(node.pid, &node.config_path)? {
        return Ok(());
    }
    kill(Pid::from_raw(node.pid as i32), Signal::SIGTERM)
        .with_context(|| format!("send SIGTERM to {} (pid {})", node.node_id, node.pid))?;
    let started = Instant::now();
    while cluster::is_our_daemon(node.pid, &node.config_path)? {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{} (pid {}) did not stop within 30 s of SIGTERM", node.node_id, node.pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_asks_for_a_loopback_cluster_of_its_size() {
        let args = cluster_up_args(3).expect("parse");
        let cluster::ClusterCommand::Up(up) = args.command else { panic!("not `cluster up`") };
        assert_eq!(up.nodes, 3);
    }

    /// The settings the demo adds make a config the daemon accepts, with the root and the copy
    /// settings in force (when this build of the daemon has the `[tasks]` table).
    #[test]
    fn the_demo_settings_make_a_valid_daemon_config() {
        let config = "node_id = \"node-1\"\nstate_dir = \"/tmp/x\"\n\n[log]\nlevel = \"info\"\n";
        let root = Path::new("/srv/volumes \"quoted\"");
        let command_line = <taskd::config::CommandLine as clap::Parser>::parse_from(["zbs-taskd"]);
        let knows_tasks = <taskd::config::CommandLine as clap::CommandFactory>::command()
            .get_arguments()
            .any(|argument| argument.get_long() == Some("tasks-copy-max-mib-per-s"));
        let settings = if knows_tasks { DEMO_COPY_SETTINGS } else { "" };
        let text = with_demo_settings(config, root, settings).expect("add the settings");
        let parsed = taskd::config::Config::from_toml(&text, &command_line).expect("the daemon accepts it");
        assert_eq!(parsed.allowed_roots, vec![root.to_path_buf()]);
        assert_eq!(parsed.node_id, "node-1");
        assert!(with_demo_settings(&text, root, "").is_err(), "a second pass must refuse, not duplicate keys");
    }
}
