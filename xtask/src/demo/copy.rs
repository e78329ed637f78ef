//! The copy demo: cluster up, a sparse volume, a CopyVolume task followed by its progress
//! records to the end, the copy's checksum against the source's, and what to try next.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use taskd::client::Client;
use taskd::task::{TaskRecord, TaskState};

use super::{nodes, volume};
use crate::cluster;

/// The demo cluster's size, as `cluster up`'s default.
const NODES: usize = 3;

/// How long the copy may take before the demo gives up on it.
const COPY_TIMEOUT: Duration = Duration::from_secs(600);

/// How long the dispatcher may stay unreachable (a leader hand-over) while the demo polls it.
const UNREACHABLE_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(volume_mib: u64) -> Result<()> {
    let dir = cluster::cluster_dir();
    step("starting the local cluster: ZooKeeper and 3 zbs-taskd nodes on loopback (cargo xtask cluster up)");
    nodes::cluster_up(NODES)?;
    let root = nodes::prepare_allowed_root(&dir)?;
    let cluster = nodes::load(&dir)?;
    let client_binary = build_client(&cluster.binary)?;

    let source = root.join("demo-source.img");
    let destination = root.join("demo-copy.img");
    step(&format!("making a sparse demo volume of {volume_mib} MiB: {}", source.display()));
    let data = volume::create(&source, volume_mib)?;
    let (length, allocated) = volume::sizes(&source)?;
    println!("  {} MiB long, {} MiB of data, {} MiB allocated on disk", length >> 20, data >> 20, allocated >> 20);
    match std::fs::remove_file(&destination) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("remove the old {}", destination.display())),
    }

    let leader = nodes::leader(&cluster)?;
    let server = leader.dispatcher();
    step(&format!("submitting a CopyVolume task to the leader {} at {server}", leader.node_id));
    // The cluster's nodes let changes in only with its token (`[api] token_file`).
    let token_file = crate::cluster::token_path(&dir);
    let token = taskd::access::ApiTokens::read(&token_file)
        .map_err(|error| anyhow!("the cluster's API token: {error}"))?
        .sent()
        .to_string();
    let client = Client::new(server.clone(), Duration::from_secs(15)).with_token(Some(token));
    let record = client
        .create_copy_volume(&path_text(&source)?, &path_text(&destination)?, None, false)
        .map_err(|error| anyhow!("create the CopyVolume task at {server}: {error}"))?;
    println!("  task {} is {}", record.task_id, record.state);
    let record = follow(&client, &record.task_id.to_string())?;
    println!(
        "  {} on runner {} in {} attempt(s), {} extents",
        record.state,
        record.runner_addr.as_deref().unwrap_or("-"),
        record.attempts.max(1),
        record.progress.n_extents
    );

    step("checking the copy against the source (SHA-256)");
    let source_sum = volume::sha256(&source)?;
    let copy_sum = volume::sha256(&destination)?;
    let (copy_length, copy_allocated) = volume::sizes(&destination)?;
    println!("  source {source_sum}  {}", source.display());
    println!("  copy   {copy_sum}  {}", destination.display());
    ensure!(source_sum == copy_sum, "the copy differs from the source");
    ensure!(copy_length == length, "the copy is {copy_length} bytes long, the source {length}");
    println!(
        "  identical: {} MiB, {} MiB allocated on disk (the holes stayed holes)",
        copy_length >> 20,
        copy_allocated >> 20
    );

    print_next(&dir, &client_binary, &server, &record, &source, &cluster)?;
    Ok(())
}

fn step(what: &str) {
    println!("\n==> {what}");
}

fn path_text(path: &Path) -> Result<String> {
    path.to_str().map(str::to_string).with_context(|| format!("{} is not UTF-8", path.display()))
}

/// Polls the task until it ends, drawing its progress records as a bar. Returns the record
/// once it succeeded; a failed or cancelled task is an error naming its last error.
fn follow(client: &Client, task_id: &str) -> Result<TaskRecord> {
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template(
            "  {msg:9} [{elapsed_precise}] [{bar:40.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .context("the progress bar's template")?
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut unreachable_since: Option<Instant> = None;
    loop {
        match client.show(task_id) {
            Ok(record) => {
                unreachable_since = None;
                if record.progress.bytes_total > 0 {
                    bar.set_length(record.progress.bytes_total);
                    bar.set_position(record.progress.bytes_done);
                }
                bar.set_message(record.state.as_str().to_string());
                if record.state == TaskState::Succeeded {
                    bar.set_position(record.progress.bytes_total.max(1));
                    bar.finish();
                    return Ok(record);
                }
                if record.state.is_finished() {
                    bar.abandon();
                    bail!(
                        "task {task_id} ended {}: {}",
                        record.state,
                        record.last_error.as_deref().unwrap_or("no error recorded")
                    );
                }
            }
            Err(error) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > UNREACHABLE_TIMEOUT {
                    bar.abandon();
                    bail!("the dispatcher has not answered for {UNREACHABLE_TIMEOUT:?}: {error}");
                }
                bar.set_message("(waiting)");
            }
        }
        if started.elapsed() > COPY_TIMEOUT {
            bar.abandon();
            bail!("task {task_id} did not finish within {COPY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Builds `zbs-task` beside the cluster's `zbs-taskd` (same profile), for the tour.
fn build_client(daemon: &Path) -> Result<PathBuf> {
    let profile_dir = daemon.parent().context("the daemon binary has no dir")?;
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()));
    command.args(["build", "--quiet", "--package", "taskd", "--bin", "zbs-task"]);
    if profile_dir.file_name().is_some_and(|name| name == "release") {
        command.arg("--release");
    }
    let status = command.current_dir(env!("CARGO_MANIFEST_DIR")).status().context("run cargo build of zbs-task")?;
    ensure!(status.success(), "cargo build of zbs-task failed ({status})");
    Ok(profile_dir.join("zbs-task"))
}

fn print_next(
    dir: &Path,
    client_binary: &Path,
    server: &str,
    record: &TaskRecord,
    source: &Path,
    cluster: &nodes::ClusterFile,
) -> Result<()> {
    let here = std::env::current_dir().unwrap_or_default();
    let relative = |path: &Path| path.strip_prefix(&here).unwrap_or(path).display().to_string();
    let zbs_task = format!(
        "{} --token-file {} --server {server}",
        relative(client_binary),
        relative(&crate::cluster::token_path(dir))
    );
    let task_id = record.task_id.to_string();
    let another = source.with_file_name("demo-copy-2.img");
    let mut tries = vec![
        (format!("{zbs_task} task show {task_id}"), "the task's record".to_string()),
        (format!("{zbs_task} task list"), "every task, from the leader's cache".to_string()),
        (
            // Absolute: the daemon resolves the paths, not this shell.
            format!("{zbs_task} task copy_volume {} {}", source.display(), another.display()),
            "another copy (then `task watch <id>`, `task pause <id>`, `task resume <id>`)".to_string(),
        ),
        (format!("{zbs_task} runner list"), "the runners and their slots".to_string()),
        (format!("{zbs_task} cluster show"), "leader, members, health".to_string()),
        (format!("curl -s http://{server}/api/v1/status"), "a node's role, leader and health".to_string()),
        (format!("curl -s http://{server}{}/tasks/{task_id}", taskd::api::PREFIX), "the task API".to_string()),
    ];
    if let Some(leader) = cluster.nodes.iter().find(|node| node.dispatcher() == server) {
        tries.push((
            format!("echo fail > {}", relative(&leader.health_path)),
            format!("fail {}'s data network: it hands leadership over and stays up", leader.node_id),
        ));
    }
    tries.push(("cargo xtask cluster status".to_string(), "each node's role and health".to_string()));
    tries.push(("cargo xtask cluster logs 1".to_string(), "node-1's log (`logs zk`: ZooKeeper's)".to_string()));
    tries.push(("cargo xtask cluster down".to_string(), format!("stop the cluster and remove {}", relative(dir))));
    step("done; the cluster stays up. Try:");
    let width = tries.iter().map(|(command, _)| command.len()).max().unwrap_or(0).min(90);
    for (command, comment) in tries {
        println!("  {command:<width$}  # {comment}");
    }
    Ok(())
}
