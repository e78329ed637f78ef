//! The `zbs-task` client's command line (clap definitions), public so that `cargo xtask dist`
//! generates its man page and shell completions from the same definition the binary parses, and
//! so they cannot drift from the flags.

use clap::{Parser, Subcommand};

use crate::task::TaskState;

pub mod tables;

#[derive(Parser)]
#[command(name = "zbs-task", version, about = "Client of the zbs Task Center")]
pub struct Cli {
    /// The dispatcher (the VIP or any node: a follower names the leader), `host:port`. Default:
    /// the VIP of the daemon's configuration file (`--config`), else its management address and
    /// dispatcher port, else 127.0.0.1:10600.
    #[arg(long, global = true, env = "ZBS_TASK_SERVER")]
    pub server: Option<String>,
    /// A file holding the cluster's API token (its first token is sent). Default: the token in
    /// `ZBS_TASK_TOKEN`, else the `[api] token_file` of the daemon's configuration file.
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
    /// The daemon's configuration file, read for the default `--server` and token.
    #[arg(long, global = true, value_name = "PATH", default_value = crate::config::DEFAULT_CONFIG_PATH)]
    pub config: std::path::PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// How much the tables show: `table`, or `wide` for every column.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = tables::Output::Table)]
    pub output: tables::Output,
    /// Request timeout in seconds.
    #[arg(long, global = true, default_value_t = 15)]
    pub timeout_sec: u64,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The dispatcher to ask: `--server` (or `ZBS_TASK_SERVER`), else where the configuration
    /// file says clients reach the leader; an unreadable or invalid file is an error, a missing
    /// one means this host's default port.
    pub fn server_address(&self) -> Result<String, String> {
        if let Some(server) = &self.server {
            return Ok(server.clone());
        }
        if !self.config.exists() {
            return Ok(format!("127.0.0.1:{}", crate::config::DEFAULT_DISPATCHER_PORT));
        }
        let command_line = crate::config::CommandLine { config: Some(self.config.clone()), ..Default::default() };
        let config = crate::config::Config::load_without_secrets(&command_line).map_err(|error| {
            format!("cannot find the dispatcher in {}: {error}; give --server", self.config.display())
        })?;
        Ok(server_of(&config))
    }
}

impl Cli {
    /// The token to send: `--token-file`, else `ZBS_TASK_TOKEN`, else the configuration file's
    /// `[api] token_file` when this user may read it; `None` when there is none (reads still
    /// work; a change is answered 401, and the CLI says where a token comes from).
    pub fn token(&self) -> Result<Option<String>, String> {
        if let Some(path) = &self.token_file {
            return read_token(path).map(Some);
        }
        if let Ok(token) = std::env::var(TOKEN_ENV) {
            let token = token.trim().to_string();
            if !crate::access::is_valid_token(&token) {
                return Err(format!("{TOKEN_ENV} does not hold a token (32 to 256 visible ASCII characters)"));
            }
            return Ok(Some(token));
        }
        if !self.config.exists() {
            return Ok(None);
        }
        let command_line = crate::config::CommandLine { config: Some(self.config.clone()), ..Default::default() };
        let Ok(config) = crate::config::Config::load_without_secrets(&command_line) else { return Ok(None) };
        match config.api.token_file {
            // A user outside the daemon's group cannot read it: go on without, and let the server say.
            Some(path) => Ok(read_token(&path).ok()),
            None => Ok(None),
        }
    }
}

/// The environment variable that holds the token for `zbs-task`.
pub const TOKEN_ENV: &str = "ZBS_TASK_TOKEN";

/// The token a token file sends (its first). The CLI does not insist on the daemon's mode rule:
/// that is the daemon's to enforce on its own file.
fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("cannot read token file {}: {error}", path.display()))?;
    crate::access::ApiTokens::parse(&text)
        .map(|tokens| tokens.sent().to_string())
        .map_err(|error| format!("token file {}: no usable token ({error:?})", path.display()))
}

/// Where clients reach the leader by a configuration: its main VIP (the service `default`'s, or
/// the first; without the prefix) at the
/// dispatcher port, or, without a VIP, this node's dispatcher address (a follower names the
/// leader).
pub fn server_of(config: &crate::config::Config) -> String {
    let vip_host = config
        .main_vip()
        .and_then(|vip| vip.address.split('/').next().and_then(|host| host.parse::<std::net::IpAddr>().ok()));
    match vip_host {
        Some(host) => std::net::SocketAddr::new(host, config.dispatcher_port).to_string(),
        None => config.dispatcher_address().to_string(),
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Tasks: create, show, list, list_by_status, cancel, pause, resume, set_runtime, watch.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Runners: list, drain, undrain.
    #[command(subcommand)]
    Runner(RunnerCommand),
    /// The cluster: leader, members, health, VIP.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// The VIPs, one per service: show them, set one or clean one (kept in ZooKeeper, over the
    /// configuration file's `[[vip]]`).
    #[command(subcommand)]
    Vip(VipCommand),
}

#[derive(Subcommand)]
pub enum TaskCommand {
    /// Copy a volume (file or block device) to a destination.
    #[command(name = "copy_volume")]
    CopyVolume {
        source: String,
        destination: String,
        #[arg(long)]
        io_depth: Option<u32>,
        /// Copy over a destination that already holds data (refused with 409 otherwise).
        #[arg(long)]
        overwrite: bool,
    },
    /// A test task that sleeps for `ms` milliseconds.
    Sleep {
        ms: u64,
        /// Fail at the end instead of succeeding.
        #[arg(long)]
        fail: bool,
    },
    Show {
        task_id: String,
    },
    List {
        #[arg(long)]
        state: Option<TaskState>,
        /// YYYY-MM-DD, local time.
        #[arg(long)]
        date: Option<String>,
    },
    /// The original's listing: `unfinished` (pending, running, paused, interrupted) or
    /// `finished` (succeeded, failed, cancelled) tasks.
    #[command(name = "list_by_status")]
    ListByStatus {
        status: FinishedStatus,
    },
    Cancel {
        task_id: String,
    },
    Pause {
        task_id: String,
    },
    Resume {
        task_id: String,
    },
    /// The daily window the task may run in; `0 0 0 0` lifts it.
    #[command(name = "set_runtime")]
    SetRuntime {
        task_id: String,
        start_hour: u32,
        start_min: u32,
        end_hour: u32,
        end_min: u32,
    },
    /// A live progress bar until the task ends.
    Watch {
        task_id: String,
    },
}

/// `task list_by_status`'s argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FinishedStatus {
    Unfinished,
    Finished,
}

#[derive(Subcommand)]
pub enum RunnerCommand {
    List,
    Drain { node_id: String },
    Undrain { node_id: String },
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    Show,
    /// The leadership history: each election and step-down with its reason, time and node.
    Events {
        /// The latest this many (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Subcommand)]
pub enum VipCommand {
    /// Every VIP, one per service: the VIP served now, where it comes from (configuration file or
    /// stored), whether the answering node holds it, and the leader's latest error with it.
    /// `--service` shows one in detail.
    Show {
        /// Only this service's VIP, in detail.
        #[arg(long)]
        service: Option<String>,
    },
    /// Sets a service's VIP, like `10.0.0.100/24 eth0`; the leader moves to it within a second.
    /// `--clear` goes back to the configuration file's table (the same as `vip clean`).
    Set {
        /// The service whose VIP this is [default: default].
        #[arg(long, default_value = vip::DEFAULT_SERVICE)]
        service: String,
        /// The VIP with its prefix length.
        #[arg(required_unless_present = "clear", conflicts_with = "clear")]
        address: Option<String>,
        /// The interface that carries it on every node.
        #[arg(required_unless_present = "clear", conflicts_with = "clear")]
        interface: Option<String>,
        /// Remove the stored VIP: the configuration file's applies again (`vip clean`).
        #[arg(long)]
        clear: bool,
    },
    /// Removes a service's stored VIP, so the configuration file's applies again (the
    /// original's verb; `vip set --clear` does the same).
    Clean {
        /// The service whose stored VIP goes [default: default].
        #[arg(long, default_value = vip::DEFAULT_SERVICE)]
        service: String,
    },
}

#[cfg(test)]
mod tests;
