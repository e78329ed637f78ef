//! The rpc benchmark; built in its own issue.

use anyhow::Result;

pub fn run() -> Result<()> {
    anyhow::bail!("the rpc benchmark is not built yet")
}
