//! `cargo xtask bench`: runs one benchmark (or all) and writes its JSON report under
//! `target/bench/`. Benchmarks are measurements, never pass/fail tests. `bench all` runs every
//! one and then writes `target/bench/report.md` (`bench report` rewrites it from the JSON files
//! alone).

mod copy;
mod failover;
mod plot;
mod quorum;
pub(crate) mod report;
mod rpc;
mod runtime;
mod stepdown;
mod tasks;

use anyhow::Result;
use clap::{Args, ValueEnum};

#[derive(Args)]
pub struct BenchArgs {
    /// Which benchmark to run.
    #[arg(value_enum)]
    pub which: Which,
    /// Trials per system and trial type (the failover benchmark).
    #[arg(long, default_value_t = failover::DEFAULT_TRIALS)]
    pub trials: usize,
    /// The failover benchmark's systems, comma-separated, run in this order (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub systems: Vec<failover::System>,
    /// The failover benchmark's trial types, comma-separated (default: every one; host_down
    /// alone for taskd_early_takeover).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub trial_types: Vec<failover::TrialType>,
    /// The failover benchmark's quiet watch per system under CPU load, in minutes (0: none).
    #[arg(long, default_value_t = failover::DEFAULT_QUIET_MINUTES)]
    pub quiet_minutes: f64,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Which {
    /// Coroutine runtime costs next to `may`, `generator` and `std::thread`.
    Runtime,
    /// RPC server throughput, latency and drain next to a reference server.
    Rpc,
    /// Leader hand-over time after stop and after SIGKILL.
    Quorum,
    /// zbs-taskd leader step-down: health failure or SIGTERM to the next leader, real processes.
    Stepdown,
    /// CopyVolume on a 2 GiB sparse file next to `cp --sparse=always`.
    Copy,
    /// Task Center: submit throughput and latency, cache queries, copy throughput, dispatcher memory.
    Tasks,
    /// VIP failover in a network-namespace cluster, ours and keepalived, defaults and tuned: data
    /// link down, silent cut, SIGTERM, crash, host down, and a quiet watch under load (root).
    Failover,
    /// Every benchmark above, one after the other (failover only as root with keepalived
    /// installed), then `report`.
    All,
    /// Write target/bench/report.md and its plots from the JSON reports already there.
    Report,
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.which {
        Which::Runtime => runtime::run(),
        Which::Rpc => rpc::run(),
        Which::Quorum => quorum::run(),
        Which::Stepdown => stepdown::run(),
        Which::Copy => copy::run(),
        Which::Tasks => tasks::run(),
        Which::Failover => failover::run(&failover::Options {
            systems: args.systems,
            trial_types: args.trial_types,
            trials: args.trials,
            quiet_minutes: args.quiet_minutes,
        }),
        Which::All => all(args.trials),
        Which::Report => write_report(&[]),
    }
}

/// Runs every benchmark, goes on past one that fails (saying so), then writes the report. Fails
/// at the end when any benchmark did.
fn all(trials: usize) -> Result<()> {
    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut failed = Vec::new();
    let runs: [(&str, &dyn Fn() -> Result<()>); 6] = [
        ("runtime", &runtime::run),
        ("rpc", &rpc::run),
        ("quorum", &quorum::run),
        ("stepdown", &stepdown::run),
        ("copy", &copy::run),
        ("tasks", &tasks::run),
    ];
    for (name, run) in runs {
        println!("\n=== bench {name}");
        if let Err(error) = run() {
            eprintln!("bench {name} failed: {error:#}");
            failed.push(name);
            skipped.push((name.to_string(), format!("the last `bench all` failed here: {error}")));
        }
    }
    match failover_unavailable() {
        Some(why) => {
            println!("\n=== bench failover: skipped ({why})");
            skipped.push(("failover".to_string(), why));
        }
        None => {
            println!("\n=== bench failover");
            if let Err(error) = failover::run(&failover::Options::full(trials)) {
                eprintln!("bench failover failed: {error:#}");
                failed.push("failover");
            }
        }
    }
    write_report(&skipped)?;
    anyhow::ensure!(failed.is_empty(), "these benchmarks failed: {}", failed.join(", "));
    Ok(())
}

/// Why the failover benchmark cannot run here, if it cannot: it needs root (network
/// namespaces) and keepalived (its side-by-side peer).
fn failover_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root for its network namespaces".to_string());
    }
    // As root the benchmark installs keepalived, ping and stress-ng itself; it is skipped only
    // when keepalived or ping cannot be installed (stress-ng has a fallback).
    let missing: Vec<&str> = failover::ensure_tools().into_iter().filter(|package| *package != "stress-ng").collect();
    if !missing.is_empty() {
        return Some(format!(
            "{} not installed and not installable now (`apt-get install {}`)",
            missing.join(", "),
            missing.join(" ")
        ));
    }
    None
}

fn write_report(skipped: &[(String, String)]) -> Result<()> {
    let path = report::summary::write(&report::bench_dir(), skipped)?;
    println!("report: {}", path.display());
    Ok(())
}
