//! The `[api]` table: who may call the two APIs (the token file, whether reads need it) and how
//! much of the node one caller may hold (connections per server and per client address, the
//! deadline for a request's headers) and where the dispatcher API listens besides the management
//! address. Each key has a flag (`--api-token-file`, ...) and a check whose error names it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CommandLine, ConfigError};
use crate::access::{AccessPolicy, ApiTokens};

/// The `[api]` table as written: every key optional, unknown keys refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileApi {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protect_reads: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_client: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_also: Option<Vec<IpAddr>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standby_status: Option<u16>,
}

/// The validated `[api]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// The token file; `None` lets every caller in (see `crate::access`).
    pub token_file: Option<PathBuf>,
    /// The token file's tokens, read when the daemon loads its configuration (`None` without a
    /// token file, or where the configuration was read without its secrets, as the CLI does).
    pub tokens: Option<Arc<ApiTokens>>,
    /// Reads need the token too (except `/healthz`).
    pub protect_reads: bool,
    /// Open connections per server (each port), all clients together.
    pub max_connections: usize,
    /// Open connections per server from one client address.
    pub max_connections_per_client: usize,
    /// How long a request's line and headers may take to arrive.
    pub header_timeout: Duration,
    /// More addresses the dispatcher API listens on (bound with `IP_FREEBIND`): a VIP that
    /// another tool moves. The daemon's own VIP needs no entry.
    pub listen_also: Vec<IpAddr>,
    /// What `GET /leader` answers on a node that does not lead (a load balancer's health check
    /// finds the leader by it); the leader answers 200.
    pub standby_status: u16,
}

impl ApiConfig {
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
    pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 64;
    pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
    pub const DEFAULT_STANDBY_STATUS: u16 = 503;

    /// The file's values with the flags over them, checked; the token file is read only when
    /// `read_tokens`.
    pub(super) fn merge(file: FileApi, cli: &CommandLine, read_tokens: bool) -> Result<ApiConfig, ConfigError> {
        let token_file = cli.api_token_file.clone().or(file.token_file);
        let max_connections = cli.api_max_connections.or(file.max_connections).unwrap_or(Self::DEFAULT_MAX_CONNECTIONS);
        let max_connections_per_client = cli
            .api_max_connections_per_client
            .or(file.max_connections_per_client)
            .unwrap_or(Self::DEFAULT_MAX_CONNECTIONS_PER_CLIENT);
        let header_timeout_ms =
            cli.api_header_timeout_ms.or(file.header_timeout_ms).unwrap_or(Self::DEFAULT_HEADER_TIMEOUT_MS);
        if let Some(path) = &token_file {
            if path.is_relative() {
                return Err(ConfigError::invalid("api.token_file", "must be an absolute path"));
            }
        }
        if !(16..=65_536).contains(&max_connections) {
            return Err(ConfigError::invalid("api.max_connections", "must be between 16 and 65536"));
        }
        if !(1..=max_connections).contains(&max_connections_per_client) {
            return Err(ConfigError::invalid(
                "api.max_connections_per_client",
                format!("must be between 1 and api.max_connections ({max_connections})"),
            ));
        }
        let listen_also = cli.api_listen_also.clone().or(file.listen_also).unwrap_or_default();
        if let Some(address) = listen_also.iter().find(|address| address.is_unspecified() || address.is_multicast()) {
            return Err(ConfigError::invalid(
                "api.listen_also",
                format!("{address} is not an address of one host: the APIs never listen on a wildcard"),
            ));
        }
        if !(100..=60_000).contains(&header_timeout_ms) {
            return Err(ConfigError::invalid("api.header_timeout_ms", "must be between 100 and 60000 ms"));
        }
        let standby_status = cli.api_standby_status.or(file.standby_status).unwrap_or(Self::DEFAULT_STANDBY_STATUS);
        if !(200..=599).contains(&standby_status) {
            return Err(ConfigError::invalid("api.standby_status", "must be an HTTP status between 200 and 599"));
        }
        let tokens = match (&token_file, read_tokens) {
            (Some(path), true) => Some(Arc::new(
                ApiTokens::read(path).map_err(|error| ConfigError::invalid("api.token_file", error.to_string()))?,
            )),
            _ => None,
        };
        Ok(ApiConfig {
            token_file,
            tokens,
            protect_reads: cli.api_protect_reads.or(file.protect_reads).unwrap_or(false),
            max_connections,
            max_connections_per_client,
            header_timeout: Duration::from_millis(header_timeout_ms),
            listen_also,
            standby_status,
        })
    }

    /// The rule the servers' guard applies.
    pub fn access_policy(&self) -> AccessPolicy {
        AccessPolicy::new(self.tokens.clone(), self.protect_reads)
    }

    /// `server` with this table's limits.
    pub fn limit(&self, server: runtime::rpc::ServerConfig) -> runtime::rpc::ServerConfig {
        server
            .max_connections(self.max_connections)
            .max_connections_per_client(self.max_connections_per_client)
            .header_timeout(self.header_timeout)
    }

    /// The token this node sends to the others (the dispatcher to the runners).
    pub fn sent_token(&self) -> Option<String> {
        self.tokens.as_ref().map(|tokens| tokens.sent().to_string())
    }
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            token_file: None,
            tokens: None,
            protect_reads: false,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: Self::DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            header_timeout: Duration::from_millis(Self::DEFAULT_HEADER_TIMEOUT_MS),
            listen_also: Vec::new(),
            standby_status: Self::DEFAULT_STANDBY_STATUS,
        }
    }
}
