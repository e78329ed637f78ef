//! `cargo xtask bench tasks`: the Task Center measured through a real three-node cluster.

use anyhow::Result;

pub fn run() -> Result<()> {
    anyhow::bail!("bench tasks is being built")
}
