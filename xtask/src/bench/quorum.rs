//! The quorum benchmark; built in its own issue.

use anyhow::Result;

pub fn run() -> Result<()> {
    anyhow::bail!("the quorum benchmark is not built yet")
}
