//! `cargo xtask zk`: a local ZooKeeper server for development, run by the same fixture the tests use.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct ZkArgs {
    /// start, stop or status
    pub action: String,
}

pub fn run(_args: ZkArgs) -> Result<()> {
    anyhow::bail!("not built yet")
}
