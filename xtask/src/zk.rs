//! `cargo xtask zk`: a local ZooKeeper for development under `target/zk/`, run by the same fixture the tests use.
//!
//! `start` leaves the server running after xtask exits and records it in `target/zk/`;
//! `status` and `stop` find it there. `stop` signals only the recorded pid, and only while
//! that pid is still a `java` process running the recorded config.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use tests::zk::{answers_imok, DetachedZooKeeper, ZooKeeperBuilder};

#[derive(Args)]
pub struct ZkArgs {
    #[command(subcommand)]
    pub command: ZkCommand,
}

#[derive(Subcommand)]
pub enum ZkCommand {
    /// Start ZooKeeper on free loopback ports and leave it running.
    Start(StartArgs),
    /// Say whether it runs, with its connect string; exit status 3 if it does not.
    Status,
    /// Stop the server `start` started and remove its dir.
    Stop,
}

#[derive(Args)]
pub struct StartArgs {
    /// Number of servers: 1 for a standalone server, 3 for an ensemble.
    #[arg(long, default_value_t = 1)]
    pub servers: usize,
    /// ZooKeeper's tickTime in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub tick_ms: u64,
    /// minSessionTimeout in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub min_session_ms: u64,
    /// maxSessionTimeout in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub max_session_ms: u64,
    /// Fsync the transaction log (forceSync=yes), as production does.
    #[arg(long)]
    pub force_sync: bool,
}

pub fn run(args: ZkArgs) -> Result<()> {
    let dir = zk_dir();
    match args.command {
        ZkCommand::Start(start_args) => start(dir, start_args),
        ZkCommand::Status => status(dir),
        ZkCommand::Stop => stop(dir),
    }
}

/// `target/zk/` of this workspace, or of `$CARGO_TARGET_DIR`.
fn zk_dir() -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        xtask_dir.parent().unwrap_or(xtask_dir).join("target")
    });
    target_dir.join("zk")
}

fn start(dir: PathBuf, args: StartArgs) -> Result<()> {
    if let Some(existing) = DetachedZooKeeper::load(&dir)? {
        if running(&existing)? {
            println!("ZooKeeper is already running at {} (dir {})", existing.connect_string(), existing.dir.display());
            return Ok(());
        }
        println!("removing the dir of a ZooKeeper that no longer runs: {}", existing.dir.display());
        existing.stop().context("clean up the previous ZooKeeper")?;
    } else if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove the leftover {}", dir.display()))?;
    }
    let started = ZooKeeperBuilder::new()
        .servers(args.servers)
        .tick_time(Duration::from_millis(args.tick_ms))
        .session_timeout_bounds(Duration::from_millis(args.min_session_ms), Duration::from_millis(args.max_session_ms))
        .force_sync(args.force_sync)
        .start_detached(&dir)?;
    let pids: Vec<String> = started.servers.iter().map(|server| server.pid.to_string()).collect();
    println!(
        "ZooKeeper is running at {} (pid {}, dir {})",
        started.connect_string(),
        pids.join(","),
        started.dir.display()
    );
    Ok(())
}

fn status(dir: PathBuf) -> Result<()> {
    let Some(detached) = DetachedZooKeeper::load(&dir)? else {
        println!("ZooKeeper is not running (no state in {})", dir.display());
        std::process::exit(3);
    };
    let mut all_running = true;
    for server in &detached.servers {
        let process_runs = server.is_running()?;
        let answers = process_runs && answers_imok(server.client_addr());
        all_running &= answers;
        let what = match (process_runs, answers) {
            (true, true) => "running, answers imok",
            (true, false) => "running, does not answer ruok",
            (false, _) => "not running",
        };
        println!(
            "server {} at {} (pid {}): {what}; log {}",
            server.id,
            server.client_addr(),
            server.pid,
            server.log_path.display()
        );
    }
    if all_running {
        println!("ZooKeeper is running at {}", detached.connect_string());
        Ok(())
    } else {
        println!("ZooKeeper is not running (fully) at {}", detached.connect_string());
        std::process::exit(3);
    }
}

fn stop(dir: PathBuf) -> Result<()> {
    let Some(detached) = DetachedZooKeeper::load(&dir)? else {
        println!("ZooKeeper is not running (no state in {})", dir.display());
        return Ok(());
    };
    let connect_string = detached.connect_string();
    let detached_dir = detached.dir.clone();
    detached.stop()?;
    println!("ZooKeeper at {connect_string} stopped; removed {}", detached_dir.display());
    Ok(())
}

fn running(detached: &DetachedZooKeeper) -> Result<bool> {
    for server in &detached.servers {
        if !server.is_running()? {
            return Ok(false);
        }
    }
    Ok(true)
}
