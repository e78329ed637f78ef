//! `cargo xtask demo`: the README's first command. It starts the local cluster (ZooKeeper plus
//! three `zbs-taskd` nodes on loopback, as `cargo xtask cluster up` does), makes a sparse demo
//! volume under the nodes' allowed root, copies it with a CopyVolume task submitted to the
//! leader's dispatcher, follows the task's progress records with a progress bar until it
//! succeeds, checks that the copy equals the source and says what to try next. The cluster
//! stays up for that; `cargo xtask cluster down` stops it.
//!
//! `--crash-only` plays the original crash and its fix with the runtime alone, no cluster.

mod copy;
mod crash;
mod nodes;
mod volume;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct DemoArgs {
    /// Only the runtime demo: a server stops itself from its own thread and is rebuilt (no cluster).
    #[arg(long)]
    pub crash_only: bool,
    /// With --crash-only: how many times the server is built, fails and is rebuilt.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// The demo volume's length in MiB (a quarter of it is data, the rest holes).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(64..=65536))]
    pub volume_mib: u64,
}

pub fn run(args: DemoArgs) -> Result<()> {
    if args.crash_only {
        return crash::run(args.rounds);
    }
    copy::run(args.volume_mib)
}
