//! `cargo xtask bench`: runs one benchmark (or all) and writes its JSON report under
//! `target/bench/`. Benchmarks are measurements, never pass/fail tests.

mod copy;
mod failover;
mod quorum;
mod report;
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
    /// Trials per scenario (the failover benchmark).
    #[arg(long, default_value_t = failover::DEFAULT_TRIALS)]
    pub trials: usize,
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
    /// VIP failover in a network-namespace cluster: data link down, silent cut, SIGTERM (root).
    Failover,
    /// Every benchmark above but failover, one after the other.
    All,
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.which {
        Which::Runtime => runtime::run(),
        Which::Rpc => rpc::run(),
        Which::Quorum => quorum::run(),
        Which::Stepdown => stepdown::run(),
        Which::Copy => copy::run(),
        Which::Tasks => tasks::run(),
        Which::Failover => failover::run(args.trials),
        Which::All => {
            runtime::run()?;
            rpc::run()?;
            quorum::run()?;
            copy::run()?;
            stepdown::run()
        }
    }
}
