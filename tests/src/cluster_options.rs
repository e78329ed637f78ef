//! What the builders of the two cluster fixtures ([`crate::cluster`] on loopback, [`crate::netns`]
//! in network namespaces) share: the node count, how long start-up may take, the binary, and
//! every node's daemon configuration as one typed [`DaemonConfig`] (the daemon's own
//! `taskd::config::FileConfig`). The setters of [`ClusterSettings`] and its
//! [`ClusterSettings::configure`] change that configuration; each fixture fills in the node's own
//! keys (id, addresses, ports, files) and writes it with [`write_daemon_config`], the one writer of
//! a daemon's TOML, so a new key reaches every fixture at once.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

/// A daemon's configuration file, as the daemon itself reads it.
pub use taskd::config::FileConfig as DaemonConfig;

/// The settings both cluster builders hold.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub n_nodes: usize,
    /// How long start-up may take: ZooKeeper, then every node serving and one leader.
    pub start_timeout: Duration,
    /// The `zbs-taskd` binary; `None` is the one next to the running executable.
    pub binary: Option<PathBuf>,
    /// Every node's configuration but its own keys (id, addresses, ports, files).
    pub config: DaemonConfig,
}

impl ClusterOptions {
    /// Three nodes, a minute for start-up, the default binary, and `config`.
    pub fn new(config: DaemonConfig) -> ClusterOptions {
        ClusterOptions { n_nodes: 3, start_timeout: Duration::from_secs(60), binary: None, config }
    }

    /// The nodes' `session_timeout_ms` (the daemon's default, 6 s, when the config has none).
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.config.session_timeout_ms.unwrap_or(6_000))
    }
}

/// The builder setters both cluster fixtures have, over their [`ClusterOptions`].
pub trait ClusterSettings: Sized {
    /// The options the setters change.
    fn options_mut(&mut self) -> &mut ClusterOptions;

    /// Sets the number of daemons.
    fn nodes(mut self, n_nodes: usize) -> Self {
        self.options_mut().n_nodes = n_nodes;
        self
    }

    /// Sets `session_timeout_ms`.
    fn session_timeout(mut self, session_timeout: Duration) -> Self {
        self.options_mut().config.session_timeout_ms = Some(session_timeout.as_millis() as u64);
        self
    }

    /// Sets `drain_deadline_ms`.
    fn drain_deadline(mut self, drain_deadline: Duration) -> Self {
        self.options_mut().config.drain_deadline_ms = Some(drain_deadline.as_millis() as u64);
        self
    }

    /// Sets the health source's `fall` and `rise` rounds.
    fn health_fall_rise(mut self, fall: u32, rise: u32) -> Self {
        let health = &mut self.options_mut().config.health;
        health.fall = fall;
        health.rise = rise;
        self
    }

    /// Sets `step_down_requires_healthy_peer` (the whole-outage guard).
    fn step_down_requires_healthy_peer(mut self, required: bool) -> Self {
        self.options_mut().config.step_down_requires_healthy_peer = Some(required);
        self
    }

    /// Sets the daemons' log filter (`log.level`).
    fn log_level(mut self, level: impl Into<String>) -> Self {
        self.options_mut().config.log.level = Some(level.into());
        self
    }

    /// Sets how long start-up may take.
    fn start_timeout(mut self, timeout: Duration) -> Self {
        self.options_mut().start_timeout = timeout;
        self
    }

    /// Uses this `zbs-taskd` binary instead of the one next to the running executable.
    fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.options_mut().binary = Some(binary.into());
        self
    }

    /// Changes every node's configuration, e.g. `.configure(|config| config.runner_slots =
    /// Some(2))`; the fixture sets each node's own keys over it.
    fn configure(mut self, change: impl FnOnce(&mut DaemonConfig)) -> Self {
        change(&mut self.options_mut().config);
        self
    }
}

/// Writes `config` to `path` as TOML under a comment line naming its writer (`written_by`).
pub fn write_daemon_config(path: &Path, written_by: &str, config: &DaemonConfig) -> Result<()> {
    let toml = config.to_toml().with_context(|| format!("write the configuration of {}", path.display()))?;
    fs::write(path, format!("# Written by {written_by}.\n{toml}")).with_context(|| format!("write {}", path.display()))
}
