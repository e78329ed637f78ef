//! The configuration file's shape, both ways: the daemon parses its TOML into a [`FileConfig`]
//! (every key optional, unknown keys refused), and the tools that write configurations for it —
//! the test fixtures, `cargo xtask cluster` — fill one in and write it with
//! [`FileConfig::to_toml`], so a new key reaches every writer at once.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vip::health::HealthConfig;

use super::api::FileApi;
use super::tasks::FileTasks;
use super::vips::VipSection;
use super::{ConfigError, LogFormat, NetworkFailureAction};

/// The whole file: every key optional, unknown keys refused. A key left `None` (a table left at
/// its default) is not written, so the daemon applies its own default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zookeeper_hosts: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_takeover_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub management_address: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_address: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatcher_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_deadline_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_network_failure: Option<NetworkFailureAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_down_requires_healthy_peer: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner_slots: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_roots: Option<Vec<PathBuf>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_devices: Option<Vec<PathBuf>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_hard_links: Option<bool>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub exit_limit: FileExitLimit,
    #[serde(default, skip_serializing_if = "is_default")]
    pub log: FileLog,
    #[serde(default, skip_serializing_if = "is_default")]
    pub tasks: FileTasks,
    #[serde(default, skip_serializing_if = "is_default")]
    pub health: HealthConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vip: Option<VipSection>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub api: FileApi,
}

/// The `[exit_limit]` table: how many exits the exit mode allows in a window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileExitLimit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_limit_burst: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_limit_interval_sec: Option<u64>,
}

/// The `[log]` table: format, filter and file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

impl FileConfig {
    /// Reads and parses the file at `path`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] when it cannot be read, [`ConfigError::Parse`] when it is not a
    /// configuration (the message names the key and shows the line).
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        FileConfig::parse(&text, path)
    }

    /// Parses `text`; `path` names it in the error.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] for TOML that is no configuration: a syntax error, a value of the
    /// wrong type, an unknown key.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        // toml's message names the key and shows the offending line.
        toml::from_str(text)
            .map_err(|error| ConfigError::Parse { path: path.to_path_buf(), message: error.to_string() })
    }

    /// The file as TOML: top-level keys first, then one table per section; what is `None` (or a
    /// table at its default) is left out.
    ///
    /// # Errors
    ///
    /// When a value has no TOML form (a path that is not UTF-8).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}
