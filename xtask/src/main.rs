//! `cargo xtask`: the project's developer commands (benchmarks and a local ZooKeeper now; dist, deploy and the local cluster in later issues).

mod bench;
mod zk;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Developer commands for zbs-taskd-rs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a benchmark and write its JSON report under target/bench/.
    Bench(bench::BenchArgs),
    /// Start, stop or inspect a local ZooKeeper server for development.
    Zk(zk::ZkArgs),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Bench(args) => bench::run(args),
        Command::Zk(args) => zk::run(args),
    }
}
