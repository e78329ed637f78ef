//! `cargo xtask bench`: runs a benchmark and writes its report under `target/bench/`.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct BenchArgs {
    /// Which benchmark to run.
    pub which: String,
}

pub fn run(_args: BenchArgs) -> Result<()> {
    anyhow::bail!("no benchmark is built yet")
}
