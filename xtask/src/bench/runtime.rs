//! The runtime benchmark; being built.

use anyhow::Result;

pub fn run() -> Result<()> {
    anyhow::bail!("the runtime benchmark is not built yet")
}
