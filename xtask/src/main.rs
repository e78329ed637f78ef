//! `cargo xtask`: the project's developer commands: demo, tests, benchmarks, a chaos run, a local ZooKeeper and a local cluster, dist and deploy.

mod bench;
mod chaos;
mod cluster;
mod demo;
mod deploy;
mod dist;
mod test;
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
    /// A Jepsen-style run: a seeded nemesis of faults (kills, pauses, health flaps, ZooKeeper
    /// server faults) against a workload of tasks, then a checker over the whole history;
    /// writes target/bench/chaos.json and fails with the seed on any violation.
    Chaos(chaos::ChaosArgs),
    /// A local cluster on loopback: ZooKeeper plus N zbs-taskd nodes under target/cluster/
    /// (`up [--nodes N]`, `status`, `logs [node]`, `down`).
    Cluster(cluster::ClusterArgs),
    /// Start the local cluster and copy a sparse demo volume with a CopyVolume task, with a
    /// progress bar (`--crash-only`: the runtime demo of the original crash, no cluster).
    Demo(demo::DemoArgs),
    /// Install the dist tarball's files into a root directory (never `/` without --yes).
    Deploy(deploy::DeployArgs),
    /// Build target/dist/zbs-taskd-<version>-<arch>.tar.gz: release binaries, systemd unit,
    /// default config, man page, completions, SHA256SUMS.
    Dist(dist::DistArgs),
    /// Install what the tests need (as root) and run every test of the workspace, as CI does.
    Test,
    /// Start, stop or inspect a local ZooKeeper server for development.
    Zk(zk::ZkArgs),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,may_minihttp=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Bench(args) => bench::run(args),
        Command::Chaos(args) => chaos::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Deploy(args) => deploy::run(args),
        Command::Dist(args) => dist::run(args),
        Command::Test => test::run(),
        Command::Zk(args) => zk::run(args),
    }
}
