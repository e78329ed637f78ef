//! The daemon's configuration: a TOML file (default `/etc/zbs/taskd.toml`) overridden by one
//! command-line flag per key, validated into a `Config` whose errors name the offending key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod api;
mod tasks;

use crate::runner::lease::{TimerRule, TimerRuleError};
use clap::{Parser, ValueEnum};
use serde::Deserialize;
use vip::health::{HealthConfig, MissingFile, SourceKind};
use vip::VipConfig;

pub use api::ApiConfig;
pub use tasks::TasksConfig;

/// Where the daemon looks for its file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/zbs/taskd.toml";

/// The dispatcher API's port when the configuration names none.
pub const DEFAULT_DISPATCHER_PORT: u16 = 10_600;

/// The default log filter: `may` logs every connection's epoll registration at info.
pub const DEFAULT_LOG_LEVEL: &str = "info,may=warn";

/// The shortest `early_takeover_ms` other than 0 (off).
pub const MIN_EARLY_TAKEOVER_MS: u64 = 200;

/// The exit code for a configuration error (`EX_CONFIG` from sysexits.h).
pub const EXIT_CONFIG: i32 = 78;

/// A configuration problem, naming the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl ConfigError {
    fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { key, message: message.into() }
    }
}

/// What the daemon does when this node's data network fails while it leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkFailureAction {
    /// Stop the service, keep the process, rejoin as a follower once healthy (the default).
    Stay,
    /// Exit with code 75 (no core), unless the exit counter says systemd would give up.
    Exit,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// `I1123 20:17:43.026106  4351 file.rs:698] message`, as the original daemons write.
    Glog,
    /// tracing's human-readable format.
    Plain,
    /// One JSON object per line.
    Json,
}

/// The daemon's command line: `--config` plus one flag per configuration key. A flag given
/// on the command line wins over the file.
#[derive(Debug, Default, Parser)]
#[command(name = "zbs-taskd", version, about = "The Task Center daemon of a zbs storage cluster")]
pub struct CommandLine {
    /// Configuration file (TOML). Missing is an error only when given explicitly.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// This node's unique id in the cluster [default: the host name].
    #[arg(long)]
    pub node_id: Option<String>,
    /// ZooKeeper connect string, `host:port[,host:port...]` [default: 127.0.0.1:2181].
    #[arg(long)]
    pub zookeeper_hosts: Option<String>,
    /// ZooKeeper session timeout in milliseconds, 1000..=60000 [default: 6000].
    #[arg(long)]
    pub session_timeout_ms: Option<u64>,
    /// Take over a leader every healthy member has lost on both networks for this many ms,
    /// without waiting for its session; 0 is off. Needs the probe health source; 200 to half the
    /// session timeout [default: 0, off].
    #[arg(long)]
    pub early_takeover_ms: Option<u64>,
    /// Management network address: ZooKeeper, API and VIP side [default: 127.0.0.1].
    #[arg(long)]
    pub management_address: Option<IpAddr>,
    /// Data (secondary) network address, probed by peers for health [default: 127.0.0.1].
    #[arg(long)]
    pub data_address: Option<IpAddr>,
    /// Port of the dispatcher API on the management address [default: 10600].
    #[arg(long)]
    pub dispatcher_port: Option<u16>,
    /// Port of the runner API on the management address [default: 10601].
    #[arg(long)]
    pub runner_port: Option<u16>,
    /// Directory for the task cache and the exit counter [default: /var/lib/zbs-taskd].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// How long in-flight requests and tasks may take to drain on stop, in ms [default: 10000].
    #[arg(long)]
    pub drain_deadline_ms: Option<u64>,
    /// What to do when the data network fails while leading [default: stay].
    #[arg(long, value_enum)]
    pub on_network_failure: Option<NetworkFailureAction>,
    /// Step down for a network failure only when another member reports healthy [default: true].
    #[arg(long)]
    pub step_down_requires_healthy_peer: Option<bool>,
    /// Exits allowed within `start_limit_interval_sec` in exit mode; match the unit's
    /// StartLimitBurst [default: 5].
    #[arg(long)]
    pub start_limit_burst: Option<u32>,
    /// The window of `start_limit_burst`, in seconds; match StartLimitIntervalSec [default: 10].
    #[arg(long)]
    pub start_limit_interval_sec: Option<u64>,
    /// Log line format [default: glog].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `info,quorum=debug` [default: info,may=warn].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Also append log lines to this file.
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// What decides this node's data-network health: probe, file or chunk [default: probe].
    #[arg(long, value_parser = ["probe", "file", "chunk"])]
    pub health_source: Option<String>,
    /// Bad health rounds in a row that make the data network invalid [default: 3].
    #[arg(long)]
    pub health_fall: Option<u32>,
    /// Good health rounds in a row that make it valid again [default: 5].
    #[arg(long)]
    pub health_rise: Option<u32>,
    /// SCHED_FIFO priority (1..=99) of the probe's prober and echo threads; 0 is off. Needs
    /// CAP_SYS_NICE or LimitRTPRIO; refused, they stay ordinary [default: 0].
    #[arg(long)]
    pub health_realtime_priority: Option<u8>,
    /// UDP echo port of the probe source, the same on every node [default: 10602].
    #[arg(long)]
    pub health_probe_port: Option<u16>,
    /// Milliseconds between two probe rounds [default: 200].
    #[arg(long)]
    pub health_probe_interval_ms: Option<u64>,
    /// Follow the data interface's link state [default: true].
    #[arg(long)]
    pub health_probe_track_interface: Option<bool>,
    /// The file of the file source [default: /run/zbs/taskd.health].
    #[arg(long, value_name = "PATH")]
    pub health_file: Option<PathBuf>,
    /// What a missing health file counts as: ok or fail [default: fail].
    #[arg(long, value_parser = ["ok", "fail"])]
    pub health_file_on_missing: Option<String>,
    /// Milliseconds between two reads of the health file [default: 200].
    #[arg(long)]
    pub health_file_interval_ms: Option<u64>,
    /// The chunk service's health URL, for the chunk source.
    #[arg(long)]
    pub health_chunk_url: Option<String>,
    /// The cluster's virtual IP with its prefix, e.g. 10.0.0.100/24; none by default.
    #[arg(long)]
    pub vip_address: Option<String>,
    /// The management interface that carries the VIP (required with --vip-address).
    #[arg(long)]
    pub vip_interface: Option<String>,
    /// Tasks this node's runner executes at once, 1..=64 [default: 4].
    #[arg(long)]
    pub runner_slots: Option<u32>,
    /// Absolute directories CopyVolume tasks may read and write, comma-separated
    /// [default: none, so every copy is refused].
    #[arg(long, value_name = "DIR,...", value_delimiter = ',')]
    pub allowed_roots: Option<Vec<PathBuf>>,
    /// Block devices CopyVolume may read and write, exact absolute paths, comma-separated
    /// [default: none].
    #[arg(long, value_name = "DEVICE,...", value_delimiter = ',')]
    pub allowed_devices: Option<Vec<PathBuf>>,
    /// Let CopyVolume use files with more than one hard link [default: false].
    #[arg(long)]
    pub allow_hard_links: Option<bool>,
    /// Failed runs after which a task stays failed, 1..=100 [default: 3].
    #[arg(long)]
    pub tasks_max_attempts: Option<u32>,
    /// Seconds after their last activity that finished tasks are purged [default: 604800, 7 days].
    #[arg(long)]
    pub tasks_retention_sec: Option<u64>,
    /// Milliseconds a runner has to claim a task it was handed [default: 10000].
    #[arg(long)]
    pub tasks_claim_grace_ms: Option<u64>,
    /// CopyVolume extent (the unit of progress, pause and resume) in MiB, 1..=4096 [default: 256].
    #[arg(long)]
    pub tasks_copy_extent_mib: Option<u64>,
    /// CopyVolume block (the unit of IO and of cancel) in KiB, a multiple of 4 [default: 256].
    #[arg(long)]
    pub tasks_copy_block_kib: Option<u64>,
    /// The most MiB per second one copy reads; 0 is unlimited [default: 0].
    #[arg(long)]
    pub tasks_copy_max_mib_per_s: Option<u64>,
    /// Milliseconds without confirmed contact with ZooKeeper after which a runner stops all task
    /// IO; with one block's write at most half the session timeout [default: a third of it].
    #[arg(long)]
    pub tasks_lease_ms: Option<u64>,
    /// Milliseconds between a task's first transient failure and its retry, 100..=86400000
    /// [default: 10000].
    #[arg(long)]
    pub tasks_retry_base_ms: Option<u64>,
    /// Each further retry waits this many times longer, 1..=10 [default: 2].
    #[arg(long)]
    pub tasks_retry_factor: Option<u32>,
    /// The longest wait before a retry, in ms, at least the base [default: 300000, 5 min].
    #[arg(long)]
    pub tasks_retry_max_ms: Option<u64>,
    /// The API token file (the same on every node): changes on either port need one of its
    /// tokens in `X-SmartX-Token` [default: none, every caller is let in].
    #[arg(long, value_name = "PATH")]
    pub api_token_file: Option<PathBuf>,
    /// Reads need the token too (except /healthz) [default: false].
    #[arg(long)]
    pub api_protect_reads: Option<bool>,
    /// Open connections per API port, all clients together [default: 1024].
    #[arg(long)]
    pub api_max_connections: Option<usize>,
    /// Open connections per API port from one client address [default: 64].
    #[arg(long)]
    pub api_max_connections_per_client: Option<usize>,
    /// How long a request's line and headers may take to arrive, in ms [default: 10000].
    #[arg(long)]
    pub api_header_timeout_ms: Option<u64>,
    /// More addresses the dispatcher API listens on, comma-separated: a VIP another tool moves
    /// (the daemon's own VIP needs none) [default: none].
    #[arg(long, value_name = "IP,...", value_delimiter = ',')]
    pub api_listen_also: Option<Vec<IpAddr>>,
    /// The status `GET /leader` answers on a node that does not lead (200 to 599) [default: 503].
    #[arg(long)]
    pub api_standby_status: Option<u16>,
}

/// The file's shape: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<String>,
    zookeeper_hosts: Option<String>,
    session_timeout_ms: Option<u64>,
    early_takeover_ms: Option<u64>,
    management_address: Option<IpAddr>,
    data_address: Option<IpAddr>,
    dispatcher_port: Option<u16>,
    runner_port: Option<u16>,
    state_dir: Option<PathBuf>,
    drain_deadline_ms: Option<u64>,
    on_network_failure: Option<NetworkFailureAction>,
    step_down_requires_healthy_peer: Option<bool>,
    runner_slots: Option<u32>,
    allowed_roots: Option<Vec<PathBuf>>,
    allowed_devices: Option<Vec<PathBuf>>,
    allow_hard_links: Option<bool>,
    #[serde(default)]
    exit_limit: FileExitLimit,
    #[serde(default)]
    log: FileLog,
    #[serde(default)]
    tasks: tasks::FileTasks,
    #[serde(default)]
    health: HealthConfig,
    vip: Option<VipConfig>,
    #[serde(default)]
    api: api::FileApi,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileExitLimit {
    start_limit_burst: Option<u32>,
    start_limit_interval_sec: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    format: Option<LogFormat>,
    level: Option<String>,
    file: Option<PathBuf>,
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub node_id: String,
    pub zookeeper_hosts: String,
    pub session_timeout: Duration,
    /// `early_takeover_ms`: how long every healthy member must have lost the leader on both
    /// networks before the next in line takes it over (`reach`); zero is off.
    pub early_takeover: Duration,
    pub management_address: IpAddr,
    pub data_address: IpAddr,
    pub dispatcher_port: u16,
    pub runner_port: u16,
    pub state_dir: PathBuf,
    pub drain_deadline: Duration,
    pub on_network_failure: NetworkFailureAction,
    pub step_down_requires_healthy_peer: bool,
    pub start_limit_burst: u32,
    pub start_limit_interval: Duration,
    pub log: LogConfig,
    pub health: HealthConfig,
    /// The cluster's virtual IP, held by the leader; `None` runs without one.
    pub vip: Option<VipConfig>,
    /// Tasks the runner executes at once.
    pub runner_slots: u32,
    /// Where CopyVolume tasks may read and write; empty refuses every copy.
    pub allowed_roots: Vec<PathBuf>,
    /// The block devices CopyVolume may use, by exact path; empty refuses every device.
    pub allowed_devices: Vec<PathBuf>,
    /// CopyVolume may use files with more than one hard link (a link may name a file outside
    /// the roots).
    pub allow_hard_links: bool,
    /// The `[tasks]` table: retries, retention, claim grace, copy sizes.
    pub tasks: TasksConfig,
    /// The `[api]` table: the token and the connection limits of both APIs.
    pub api: ApiConfig,
}

/// Where and how the daemon logs.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    pub file: Option<PathBuf>,
}

impl Config {
    /// Reads the file named by `--config` (or the default one, if it exists), applies the
    /// flags over it and validates the result, reading the API token file too: the daemon's
    /// configuration.
    pub fn load(command_line: &CommandLine) -> Result<Config, ConfigError> {
        Config::merge(Config::read(command_line)?, command_line, Secrets::Read)
    }

    /// Like `load`, without reading the token file: for clients that may not read it and need
    /// the addresses only.
    pub fn load_without_secrets(command_line: &CommandLine) -> Result<Config, ConfigError> {
        Config::merge(Config::read(command_line)?, command_line, Secrets::Skip)
    }

    fn read(command_line: &CommandLine) -> Result<FileConfig, ConfigError> {
        match &command_line.config {
            Some(path) => read_file(path),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => read_file(Path::new(DEFAULT_CONFIG_PATH)),
            None => Ok(FileConfig::default()),
        }
    }

    /// Parses TOML text as a config file and applies the flags over it (a token file it names
    /// is read); for tests and tools.
    pub fn from_toml(text: &str, command_line: &CommandLine) -> Result<Config, ConfigError> {
        let file = parse_file(text, Path::new("<inline>"))?;
        Config::merge(file, command_line, Secrets::Read)
    }

    /// Like `from_toml`, without reading the token file it names.
    pub fn from_toml_without_secrets(text: &str, command_line: &CommandLine) -> Result<Config, ConfigError> {
        let file = parse_file(text, Path::new("<inline>"))?;
        Config::merge(file, command_line, Secrets::Skip)
    }

    fn merge(file: FileConfig, cli: &CommandLine, secrets: Secrets) -> Result<Config, ConfigError> {
        let node_id = cli.node_id.clone().or(file.node_id).unwrap_or_else(host_name);
        let zookeeper_hosts =
            cli.zookeeper_hosts.clone().or(file.zookeeper_hosts).unwrap_or_else(|| "127.0.0.1:2181".to_string());
        let session_timeout_ms = cli.session_timeout_ms.or(file.session_timeout_ms).unwrap_or(6_000);
        let drain_deadline_ms = cli.drain_deadline_ms.or(file.drain_deadline_ms).unwrap_or(10_000);
        let start_limit_burst = cli.start_limit_burst.or(file.exit_limit.start_limit_burst).unwrap_or(5);
        let start_limit_interval_sec =
            cli.start_limit_interval_sec.or(file.exit_limit.start_limit_interval_sec).unwrap_or(10);
        let health = merge_health(file.health, cli);
        let vip = merge_vip(file.vip, cli)?;
        let tasks = TasksConfig::merge(file.tasks, cli)?;
        let api = ApiConfig::merge(file.api, cli, secrets == Secrets::Read)?;
        let config = Config {
            tasks,
            api,
            health,
            vip,
            node_id,
            zookeeper_hosts,
            session_timeout: Duration::from_millis(session_timeout_ms),
            early_takeover: Duration::from_millis(cli.early_takeover_ms.or(file.early_takeover_ms).unwrap_or(0)),
            management_address: cli
                .management_address
                .or(file.management_address)
                .unwrap_or(IpAddr::from([127, 0, 0, 1])),
            data_address: cli.data_address.or(file.data_address).unwrap_or(IpAddr::from([127, 0, 0, 1])),
            dispatcher_port: cli.dispatcher_port.or(file.dispatcher_port).unwrap_or(DEFAULT_DISPATCHER_PORT),
            runner_port: cli.runner_port.or(file.runner_port).unwrap_or(10_601),
            state_dir: cli.state_dir.clone().or(file.state_dir).unwrap_or_else(|| PathBuf::from("/var/lib/zbs-taskd")),
            drain_deadline: Duration::from_millis(drain_deadline_ms),
            on_network_failure: cli
                .on_network_failure
                .or(file.on_network_failure)
                .unwrap_or(NetworkFailureAction::Stay),
            step_down_requires_healthy_peer: cli
                .step_down_requires_healthy_peer
                .or(file.step_down_requires_healthy_peer)
                .unwrap_or(true),
            start_limit_burst,
            start_limit_interval: Duration::from_secs(start_limit_interval_sec),
            runner_slots: cli.runner_slots.or(file.runner_slots).unwrap_or(4),
            allowed_roots: cli.allowed_roots.clone().or(file.allowed_roots).unwrap_or_default(),
            allowed_devices: cli.allowed_devices.clone().or(file.allowed_devices).unwrap_or_default(),
            allow_hard_links: cli.allow_hard_links.or(file.allow_hard_links).unwrap_or(false),
            log: LogConfig {
                format: cli.log_format.or(file.log.format).unwrap_or(LogFormat::Glog),
                level: cli.log_level.clone().or(file.log.level).unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string()),
                file: cli.log_file.clone().or(file.log.file),
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// F: the runner's lease, `[tasks] lease_ms` or a third of the session timeout.
    pub fn runner_lease(&self) -> Duration {
        self.tasks.lease.unwrap_or(self.session_timeout / 3)
    }

    /// The one timer rule (`runner::lease::TimerRule`; ARCHITECTURE.md, `taskd`): a leader
    /// steps down after a third of the session timeout (quorum's default, which the daemon
    /// keeps), and a runner's lease plus one block's write is at most half of it.
    fn check_timer_rule(&self) -> Result<(), ConfigError> {
        let rule = TimerRule {
            session_timeout: self.session_timeout,
            step_down_after: self.session_timeout / 3,
            lease: self.runner_lease(),
            block_io: TimerRule::block_io_for(self.tasks.copy_block_bytes),
        };
        match rule.check() {
            Ok(()) => Ok(()),
            Err(TimerRuleError::Lease(message)) if self.tasks.lease.is_some() => {
                Err(ConfigError::invalid("tasks.lease_ms", message))
            }
            // With the derived lease only the block (or the session timeout) can break it.
            Err(TimerRuleError::Lease(message)) => Err(ConfigError::invalid(
                "tasks.copy_block_kib",
                format!("{message}: use smaller blocks or a longer session_timeout_ms"),
            )),
            Err(TimerRuleError::StepDown(message)) => Err(ConfigError::invalid("session_timeout_ms", message)),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        validate_node_id(&self.node_id)?;
        validate_zookeeper_hosts(&self.zookeeper_hosts)?;
        if !(1_000..=60_000).contains(&self.session_timeout.as_millis()) {
            return Err(ConfigError::invalid("session_timeout_ms", "must be between 1000 and 60000 ms"));
        }
        if self.management_address.is_unspecified() {
            return Err(ConfigError::invalid(
                "management_address",
                "must be this node's own management address, not a wildcard: the APIs listen there (and on \
                 the VIP while leading), never on every interface",
            ));
        }
        if self.dispatcher_port == 0 {
            return Err(ConfigError::invalid("dispatcher_port", "must not be 0"));
        }
        if self.runner_port == 0 {
            return Err(ConfigError::invalid("runner_port", "must not be 0"));
        }
        if self.dispatcher_port == self.runner_port {
            return Err(ConfigError::invalid("runner_port", "must differ from dispatcher_port"));
        }
        if self.state_dir.as_os_str().is_empty() || self.state_dir.is_relative() {
            return Err(ConfigError::invalid("state_dir", "must be an absolute path"));
        }
        if !(100..=600_000).contains(&self.drain_deadline.as_millis()) {
            return Err(ConfigError::invalid("drain_deadline_ms", "must be between 100 and 600000 ms"));
        }
        if !(1..=32).contains(&self.start_limit_burst) {
            return Err(ConfigError::invalid("start_limit_burst", "must be between 1 and 32"));
        }
        if self.start_limit_interval.is_zero() {
            return Err(ConfigError::invalid("start_limit_interval_sec", "must be at least 1 s"));
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::invalid("log.level", format!("not a log filter: {error}")));
        }
        self.check_timer_rule()?;
        if !(1..=64).contains(&self.runner_slots) {
            return Err(ConfigError::invalid("runner_slots", "must be between 1 and 64"));
        }
        if let Some(root) = self.allowed_roots.iter().find(|root| root.is_relative()) {
            return Err(ConfigError::invalid("allowed_roots", format!("{} is not an absolute path", root.display())));
        }
        let not_exact = |device: &&PathBuf| {
            device.is_relative() || device.components().any(|component| component == std::path::Component::ParentDir)
        };
        if let Some(device) = self.allowed_devices.iter().find(not_exact) {
            let message = format!("{} is not an absolute path without `..`", device.display());
            return Err(ConfigError::invalid("allowed_devices", message));
        }
        if let Some(file) = &self.log.file {
            if file.is_relative() {
                return Err(ConfigError::invalid("log.file", "must be an absolute path"));
            }
        }
        // The health section's own validation names its keys in full (`health.probe.port`).
        self.health.validate().map_err(|error| ConfigError::Invalid { key: "health", message: error.to_string() })?;
        if let Some(vip) = &self.vip {
            vip.validate().map_err(|error| ConfigError::Invalid { key: "vip", message: error.to_string() })?;
        }
        self.check_vip_fence()?;
        self.check_early_takeover()?;
        Ok(())
    }

    /// The early take-over's rule (ARCHITECTURE.md, the crash rule): off (0), or from
    /// [`MIN_EARLY_TAKEOVER_MS`] to half the session timeout — below, a connect timeout and a few
    /// probe rounds cannot tell a cut from a hiccup; above, the session's own expiry comes soon
    /// after and the option saves little. It needs the `probe` health source, whose per-peer view
    /// says whom this node cannot reach on the data network.
    fn check_early_takeover(&self) -> Result<(), ConfigError> {
        let wait_ms = self.early_takeover.as_millis() as u64;
        if wait_ms == 0 {
            return Ok(());
        }
        let most_ms = self.session_timeout.as_millis() as u64 / 2;
        if !(MIN_EARLY_TAKEOVER_MS..=most_ms).contains(&wait_ms) {
            return Err(ConfigError::invalid(
                "early_takeover_ms",
                format!(
                    "must be 0 (off) or from {MIN_EARLY_TAKEOVER_MS} ms to half of session_timeout_ms ({most_ms} ms), \
                     not {wait_ms}"
                ),
            ));
        }
        if self.health.source != SourceKind::Probe {
            return Err(ConfigError::invalid(
                "early_takeover_ms",
                "needs health.source = \"probe\": only the probe knows whom this node cannot reach on the data network",
            ));
        }
        Ok(())
    }

    /// The VIP's fence rule (`vip::FenceRule`; ARCHITECTURE.md, `vip`), with a `[vip]` only: the
    /// VIP's kernel lifetime ends by the last confirmed contact (the runner's lease probe, every
    /// quarter of the lease) plus S - 1.25 s, and a live leader renews it every
    /// `vip.sync_interval_ms` before it lapses.
    fn check_vip_fence(&self) -> Result<(), ConfigError> {
        let Some(vip) = &self.vip else { return Ok(()) };
        let rule = vip::FenceRule {
            session_timeout: self.session_timeout,
            contact_probe_interval: self.runner_lease() / 4,
            renew_interval: vip.sync_interval(),
        };
        rule.check().map_err(|message| {
            let key = if vip.sync_interval_ms == 1_000 { "session_timeout_ms" } else { "vip.sync_interval_ms" };
            ConfigError::invalid(key, message)
        })
    }

    /// The address peers probe and clients reach the dispatcher at.
    pub fn dispatcher_address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.management_address, self.dispatcher_port)
    }

    /// The runner API's address.
    pub fn runner_address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.management_address, self.runner_port)
    }
}

/// Whether loading a configuration reads the secrets it names (the API token file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secrets {
    Read,
    Skip,
}

fn merge_vip(file: Option<VipConfig>, cli: &CommandLine) -> Result<Option<VipConfig>, ConfigError> {
    match (file, &cli.vip_address, &cli.vip_interface) {
        (Some(mut vip), address, interface) => {
            if let Some(address) = address {
                vip.address = address.clone();
            }
            if let Some(interface) = interface {
                vip.interface = interface.clone();
            }
            Ok(Some(vip))
        }
        (None, Some(address), Some(interface)) => Ok(Some(VipConfig::new(address.as_str(), interface.as_str()))),
        (None, Some(_), None) => Err(ConfigError::invalid("vip.interface", "--vip-address needs --vip-interface")),
        (None, None, Some(_)) => Err(ConfigError::invalid("vip.address", "--vip-interface needs --vip-address")),
        (None, None, None) => Ok(None),
    }
}

fn merge_health(mut health: HealthConfig, cli: &CommandLine) -> HealthConfig {
    if let Some(source) = cli.health_source.as_deref() {
        health.source = match source {
            "file" => SourceKind::File,
            "chunk" => SourceKind::Chunk,
            _ => SourceKind::Probe,
        };
    }
    if let Some(fall) = cli.health_fall {
        health.fall = fall;
    }
    if let Some(rise) = cli.health_rise {
        health.rise = rise;
    }
    if let Some(priority) = cli.health_realtime_priority {
        health.realtime_priority = priority;
    }
    if let Some(port) = cli.health_probe_port {
        health.probe.port = port;
    }
    if let Some(interval_ms) = cli.health_probe_interval_ms {
        health.probe.interval_ms = interval_ms;
    }
    if let Some(track) = cli.health_probe_track_interface {
        health.probe.track_interface = track;
    }
    if let Some(path) = &cli.health_file {
        health.file.path = path.clone();
    }
    if let Some(on_missing) = cli.health_file_on_missing.as_deref() {
        health.file.on_missing = if on_missing == "ok" { MissingFile::Ok } else { MissingFile::Fail };
    }
    if let Some(interval_ms) = cli.health_file_interval_ms {
        health.file.interval_ms = interval_ms;
    }
    if let Some(url) = &cli.health_chunk_url {
        health.chunk.url = Some(url.clone());
    }
    health
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    parse_file(&text, path)
}

fn parse_file(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    // toml's message names the key and shows the offending line.
    toml::from_str(text).map_err(|error| ConfigError::Parse { path: path.to_path_buf(), message: error.to_string() })
}

fn validate_node_id(node_id: &str) -> Result<(), ConfigError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if node_id.is_empty() || node_id.len() > 64 || !node_id.chars().all(allowed) {
        return Err(ConfigError::invalid(
            "node_id",
            format!("{node_id:?} must be 1 to 64 characters of letters, digits, '-', '_' or '.'"),
        ));
    }
    Ok(())
}

fn validate_zookeeper_hosts(hosts: &str) -> Result<(), ConfigError> {
    let (servers, chroot) = match hosts.find('/') {
        Some(index) => (&hosts[..index], Some(&hosts[index..])),
        None => (hosts, None),
    };
    if servers.trim().is_empty() {
        return Err(ConfigError::invalid("zookeeper_hosts", "names no server"));
    }
    for server in servers.split(',') {
        let Some((host, port)) = server.trim().rsplit_once(':') else {
            return Err(ConfigError::invalid("zookeeper_hosts", format!("{server:?} is not host:port")));
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |port| port == 0) {
            return Err(ConfigError::invalid("zookeeper_hosts", format!("{server:?} is not host:port")));
        }
    }
    if let Some(chroot) = chroot {
        if chroot.len() < 2 || chroot.ends_with('/') || chroot.contains("//") {
            return Err(ConfigError::invalid("zookeeper_hosts", format!("chroot {chroot:?} is not a ZooKeeper path")));
        }
    }
    Ok(())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests;
