//! The `[health]` configuration section: which source decides, the hysteresis, and each
//! source's settings, all with defaults.
//!
//! ```toml
//! [health]
//! source = "probe"          # "probe" | "file" | "chunk"
//! fall = 3                  # bad rounds in a row that make the state invalid
//! rise = 5                  # good rounds in a row that make it valid again
//! realtime_priority = 0     # SCHED_FIFO priority of the probe's threads, 1 to 99; 0 is off
//!
//! [health.probe]
//! port = 10602              # UDP echo port on every node's data address
//! interval_ms = 200         # one round every 200 ms
//! timeout_ms = 100          # how long a round waits for answers
//! respond = true            # answer the peers' probes on this node's data address
//! track_interface = true    # follow the data interface's link state through netlink
//! # interface = "eth1"      # default: the interface that carries the data address
//!
//! [health.file]
//! path = "/run/zbs/taskd.health"
//! interval_ms = 200
//! on_missing = "fail"       # "ok" | "fail": a missing or unreadable file counts as this
//!
//! [health.chunk]
//! # url = "http://127.0.0.1:…/health"   # no default: required for source = "chunk"
//! interval_ms = 200
//! timeout_ms = 150
//! ```
//!
//! Every section rejects unknown keys, so a misspelt key is an error rather than a silently
//! ignored setting. [`HealthConfig::validate`] names the offending key in full.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::{HealthError, Result};

/// Which check decides the data network's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// UDP echo probes to every peer's data address plus the data link's state.
    #[default]
    Probe,
    /// A file whose content says `ok` or `fail` (keepalived's `track_file`).
    File,
    /// The co-located chunk service's health URL (`sec_valid`).
    Chunk,
}

/// The `[health]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Which source decides.
    pub source: SourceKind,
    /// Bad rounds in a row that make the state invalid (default 3).
    pub fall: u32,
    /// Good rounds in a row that make the state valid (default 5).
    pub rise: u32,
    /// The `SCHED_FIFO` priority of the probe source's prober and echo responder threads, 1 to
    /// 99; 0 (the default) leaves them ordinary. Refused without `CAP_SYS_NICE` (logged once).
    pub realtime_priority: u8,
    /// Settings of the `probe` source.
    pub probe: ProbeConfig,
    /// Settings of the `file` source.
    pub file: FileConfig,
    /// Settings of the `chunk` source.
    pub chunk: ChunkConfig,
}

impl Default for HealthConfig {
    fn default() -> HealthConfig {
        HealthConfig {
            source: SourceKind::Probe,
            fall: 3,
            rise: 5,
            realtime_priority: 0,
            probe: ProbeConfig::default(),
            file: FileConfig::default(),
            chunk: ChunkConfig::default(),
        }
    }
}

/// The `[health.probe]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// The UDP echo port, the same on every node (default 10602, beside the dispatcher's 10600
    /// and the runner's 10601).
    pub port: u16,
    /// Time between the starts of two rounds, in milliseconds (default 200).
    pub interval_ms: u64,
    /// How long a round waits for answers, in milliseconds (default 100); below `interval_ms`.
    pub timeout_ms: u64,
    /// Whether this node answers the peers' probes (default true). Turn it off only when the
    /// echo is answered by something else.
    pub respond: bool,
    /// Whether the data interface's link state is followed (default true).
    pub track_interface: bool,
    /// The data interface's name; by default the interface that carries the data address.
    pub interface: Option<String>,
}

impl Default for ProbeConfig {
    fn default() -> ProbeConfig {
        ProbeConfig {
            port: 10602,
            interval_ms: 200,
            timeout_ms: 100,
            respond: true,
            track_interface: true,
            interface: None,
        }
    }
}

impl ProbeConfig {
    /// `interval_ms` as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// `timeout_ms` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// What a missing or unreadable health file counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MissingFile {
    /// A bad round (default): the file is the operator's statement of health, and no file is
    /// no statement.
    #[default]
    Fail,
    /// A good round.
    Ok,
}

/// The `[health.file]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// The file to read (default `/run/zbs/taskd.health`).
    pub path: PathBuf,
    /// Time between two reads, in milliseconds (default 200).
    pub interval_ms: u64,
    /// What a missing or unreadable file counts as (default `fail`).
    pub on_missing: MissingFile,
}

impl Default for FileConfig {
    fn default() -> FileConfig {
        FileConfig { path: PathBuf::from("/run/zbs/taskd.health"), interval_ms: 200, on_missing: MissingFile::Fail }
    }
}

impl FileConfig {
    /// `interval_ms` as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

/// The `[health.chunk]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkConfig {
    /// The chunk service's health URL (`http://…`); required when `source = "chunk"`, because
    /// a guessed default that points nowhere would only ever say "bad".
    pub url: Option<String>,
    /// Time between the starts of two requests, in milliseconds (default 200).
    pub interval_ms: u64,
    /// The whole request's deadline, in milliseconds (default 150).
    pub timeout_ms: u64,
}

impl Default for ChunkConfig {
    fn default() -> ChunkConfig {
        ChunkConfig { url: None, interval_ms: 200, timeout_ms: 150 }
    }
}

impl ChunkConfig {
    /// `interval_ms` as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// `timeout_ms` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Longest accepted interval: a health check slower than a minute is no longer a health check.
const MAX_INTERVAL_MS: u64 = 60_000;
/// Longest accepted fall/rise count, for the same reason.
const MAX_ROUNDS: u32 = 1000;

impl HealthConfig {
    /// Checks every value the chosen source uses (and the hysteresis); the error names the key.
    pub fn validate(&self) -> Result<()> {
        check_rounds("health.fall", self.fall)?;
        check_rounds("health.rise", self.rise)?;
        if self.realtime_priority > super::realtime::MAX_REALTIME_PRIORITY {
            return Err(HealthError::config(
                "health.realtime_priority",
                format!(
                    "must be 0 (off) or a SCHED_FIFO priority from 1 to {}, not {}",
                    super::realtime::MAX_REALTIME_PRIORITY,
                    self.realtime_priority
                ),
            ));
        }
        match self.source {
            SourceKind::Probe => self.probe.validate(),
            SourceKind::File => self.file.validate(),
            SourceKind::Chunk => self.chunk.validate(),
        }
    }
}

impl ProbeConfig {
    /// Checks the probe settings.
    pub fn validate(&self) -> Result<()> {
        if self.port == 0 {
            return Err(HealthError::config("health.probe.port", "must be a port number from 1 to 65535"));
        }
        check_interval("health.probe.interval_ms", self.interval_ms)?;
        if self.timeout_ms == 0 || self.timeout_ms >= self.interval_ms {
            return Err(HealthError::config(
                "health.probe.timeout_ms",
                format!("must be at least 1 and less than health.probe.interval_ms ({})", self.interval_ms),
            ));
        }
        if let Some(interface) = &self.interface {
            // IFNAMSIZ is 16 including the terminating zero.
            if interface.is_empty() || interface.len() > 15 || interface.contains(['/', ' ', '\0']) {
                return Err(HealthError::config(
                    "health.probe.interface",
                    format!("{interface:?} is not an interface name (1 to 15 bytes, no '/' or spaces)"),
                ));
            }
        }
        Ok(())
    }
}

impl FileConfig {
    /// Checks the file settings.
    pub fn validate(&self) -> Result<()> {
        if self.path.as_os_str().is_empty() {
            return Err(HealthError::config("health.file.path", "must not be empty"));
        }
        check_interval("health.file.interval_ms", self.interval_ms)
    }
}

impl ChunkConfig {
    /// Checks the chunk settings.
    pub fn validate(&self) -> Result<()> {
        match &self.url {
            None => return Err(HealthError::config("health.chunk.url", "is required when health.source = \"chunk\"")),
            Some(url) if !url.starts_with("http://") && !url.starts_with("https://") => {
                return Err(HealthError::config(
                    "health.chunk.url",
                    format!("{url:?} must start with http:// or https://"),
                ))
            }
            Some(_) => {}
        }
        check_interval("health.chunk.interval_ms", self.interval_ms)?;
        if self.timeout_ms == 0 || self.timeout_ms > self.interval_ms {
            return Err(HealthError::config(
                "health.chunk.timeout_ms",
                format!("must be at least 1 and at most health.chunk.interval_ms ({})", self.interval_ms),
            ));
        }
        Ok(())
    }
}

fn check_rounds(key: &str, value: u32) -> Result<()> {
    if value == 0 || value > MAX_ROUNDS {
        return Err(HealthError::config(key, format!("must be from 1 to {MAX_ROUNDS}, not {value}")));
    }
    Ok(())
}

fn check_interval(key: &str, value: u64) -> Result<()> {
    if value == 0 || value > MAX_INTERVAL_MS {
        return Err(HealthError::config(key, format!("must be from 1 to {MAX_INTERVAL_MS} milliseconds, not {value}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
