//! `cargo xtask cluster status` and `cluster logs`: what the running local cluster says about
//! itself (each node's status, its role and health, ZooKeeper's) and the tails of its logs.

use super::*;

pub(super) fn status(dir: &Path) -> Result<()> {
    let Some(state) = load_state(dir)? else {
        println!("no cluster (no {} in {}); `cargo xtask cluster up` starts one", STATE_FILE, dir.display());
        std::process::exit(3);
    };
    let zookeeper = if zookeeper_runs(&state)? { "running" } else { "NOT running" };
    println!("ZooKeeper at {}: {zookeeper}", state.zookeeper_hosts);
    let agent = status_agent();
    let mut all_up = zookeeper == "running";
    for node in &state.nodes {
        let health_file = fs::read_to_string(&node.health_path)
            .map(|text| text.trim().to_string())
            .unwrap_or_else(|_| "missing".to_string());
        if !node.is_running()? {
            all_up = false;
            println!("{:<8} pid {:<7} not running (health file: {health_file})", node.node_id, node.pid);
            continue;
        }
        match fetch_status(&agent, node) {
            Ok(status) if status.is_stopped() => {
                all_up = false;
                println!(
                    "{:<8} pid {:<7} STOPPED   {} (waiting for {}, next attempt in {} ms; leader {}) {}",
                    node.node_id,
                    node.pid,
                    status.stopped["reason"].as_str().unwrap_or("?"),
                    status.stopped["waiting_for"].as_str().unwrap_or("?"),
                    status.stopped["next_attempt_in_ms"],
                    status.leader_id.as_deref().unwrap_or("unknown"),
                    node.status_url()
                );
            }
            Ok(status) => {
                let valid = status.health.get("valid").and_then(serde_json::Value::as_bool);
                let health = match valid {
                    Some(true) => "healthy",
                    Some(false) => "UNHEALTHY",
                    None => "health unknown",
                };
                println!(
                    "{:<8} pid {:<7} {:<9} {health:<9} members {} {}(health file: {health_file}) {}",
                    node.node_id,
                    node.pid,
                    status.role,
                    status.members.len(),
                    if status.stopping { "STOPPING " } else { "" },
                    node.status_url()
                );
            }
            Err(_) => {
                all_up = false;
                println!(
                    "{:<8} pid {:<7} runs, API not answering: starting, or between two servers (health file: {health_file}; see `cargo xtask cluster logs {}`)",
                    node.node_id,
                    node.pid,
                    node.node_id
                );
            }
        }
    }
    if !all_up {
        std::process::exit(3);
    }
    Ok(())
}

pub(super) fn logs(dir: &Path, args: LogsArgs) -> Result<()> {
    let state = load_state(dir)?.with_context(|| format!("no cluster (no {STATE_FILE} in {})", dir.display()))?;
    let selected: Vec<&NodeState> = match args.node.as_deref() {
        None => state.nodes.iter().collect(),
        Some("zk") => {
            let zookeeper = DetachedZooKeeper::load(&state.zookeeper_dir)?.context("ZooKeeper's state is gone")?;
            for server in &zookeeper.servers {
                print_tail(&server.log_path, args.lines, &format!("zk-{}", server.id));
            }
            return Ok(());
        }
        Some(name) => {
            let wanted = name.strip_prefix("node-").unwrap_or(name);
            let node =
                state.nodes.iter().find(|node| node.node_id.strip_prefix("node-") == Some(wanted)).with_context(
                    || format!("no node {name:?}: the cluster has node-1 to node-{}, and zk", state.nodes.len()),
                )?;
            print_stderr_extra(node, args.lines);
            vec![node]
        }
    };
    for node in selected {
        print_tail(&node.log_path, args.lines, &node.node_id);
    }
    Ok(())
}

/// The daemon writes its glog lines to stderr too: show only what its log file lacks (a
/// configuration error, a panic).
fn print_stderr_extra(node: &NodeState, n_lines: usize) {
    let read =
        |path: &Path| fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default();
    let log = read(&node.log_path);
    let stderr = read(&node.stderr_path);
    let extra: Vec<&str> = stderr.lines().filter(|line| !log.contains(line)).collect();
    if !extra.is_empty() {
        println!("==> {} stderr, lines not in its log: {} <==", node.node_id, node.stderr_path.display());
        for line in &extra[extra.len().saturating_sub(n_lines)..] {
            println!("{line}");
        }
    }
}

pub(super) fn print_tail(path: &Path, n_lines: usize, label: &str) {
    let text = fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    println!("==> {label}: {} <==", path.display());
    for line in &lines[lines.len().saturating_sub(n_lines)..] {
        println!("{line}");
    }
}
