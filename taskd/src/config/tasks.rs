//! The `[tasks]` table: how the Task Center retries (attempts and the back-off between them),
//! keeps and copies — settings the runner and the dispatcher read instead of constants, each
//! with a flag (`--tasks-max-attempts`, ...) and a range check whose error names the key.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CommandLine, ConfigError};
use crate::dispatcher::placement::RetryPolicy;

/// The `[tasks]` table as written: every key optional, unknown keys refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTasks {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_sec: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_grace_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_extent_mib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_block_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_max_mib_per_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_base_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_factor: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_max_ms: Option<u64>,
}

/// The validated `[tasks]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TasksConfig {
    /// Failed runs after which a task stays `Failed` (the first run counts).
    pub max_attempts: u32,
    /// Finished tasks are purged this long after their last activity.
    pub retention: Duration,
    /// How long a runner has to claim a task it was handed before the dispatcher interrupts it.
    pub claim_grace: Duration,
    /// Bytes per CopyVolume extent: the unit of progress, pause and resume.
    pub copy_extent_bytes: u64,
    /// Bytes per CopyVolume block: the unit of IO and of cancel.
    pub copy_block_bytes: u64,
    /// The most bytes per second one copy reads; `None` is unlimited.
    pub copy_max_bytes_per_s: Option<u64>,
    /// F, the runner's lease (`runner::lease`): no task IO after this long without confirmed
    /// contact with ZooKeeper. `None`: a third of the session timeout (`Config::runner_lease`).
    /// The timer rule between it and the session timeout is checked with the whole
    /// configuration (`Config::validate`).
    pub lease: Option<Duration>,
    /// The back-off between a transient failure and the next attempt: `retry_base_ms`, times
    /// `retry_factor` per further failure, at most `retry_max_ms`.
    pub retry: RetryPolicy,
}

impl TasksConfig {
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
    pub const DEFAULT_RETENTION_SEC: u64 = 7 * 24 * 3600;
    pub const DEFAULT_CLAIM_GRACE_MS: u64 = 10_000;
    pub const DEFAULT_COPY_EXTENT_MIB: u64 = 256;
    pub const DEFAULT_COPY_BLOCK_KIB: u64 = 256;

    /// The file's values with the flags over them, checked.
    pub(super) fn merge(file: FileTasks, cli: &CommandLine) -> Result<TasksConfig, ConfigError> {
        let max_attempts = cli.tasks_max_attempts.or(file.max_attempts).unwrap_or(Self::DEFAULT_MAX_ATTEMPTS);
        let retention_sec = cli.tasks_retention_sec.or(file.retention_sec).unwrap_or(Self::DEFAULT_RETENTION_SEC);
        let claim_grace_ms = cli.tasks_claim_grace_ms.or(file.claim_grace_ms).unwrap_or(Self::DEFAULT_CLAIM_GRACE_MS);
        let extent_mib = cli.tasks_copy_extent_mib.or(file.copy_extent_mib).unwrap_or(Self::DEFAULT_COPY_EXTENT_MIB);
        let block_kib = cli.tasks_copy_block_kib.or(file.copy_block_kib).unwrap_or(Self::DEFAULT_COPY_BLOCK_KIB);
        let max_mib_per_s = cli.tasks_copy_max_mib_per_s.or(file.copy_max_mib_per_s).unwrap_or(0);
        let lease_ms = cli.tasks_lease_ms.or(file.lease_ms);
        let default_retry = RetryPolicy::DEFAULT;
        let retry_base_ms =
            cli.tasks_retry_base_ms.or(file.retry_base_ms).unwrap_or(default_retry.base.as_millis() as u64);
        let retry_factor = cli.tasks_retry_factor.or(file.retry_factor).unwrap_or(default_retry.factor);
        let retry_max_ms = cli.tasks_retry_max_ms.or(file.retry_max_ms).unwrap_or(default_retry.cap.as_millis() as u64);
        if !(1..=100).contains(&max_attempts) {
            return Err(ConfigError::invalid("tasks.max_attempts", "must be between 1 and 100"));
        }
        // Ten seconds at least, so a client that just saw its task finish can still show it;
        // ten years at most, so the arithmetic on it never overflows.
        if !(10..=10 * 365 * 24 * 3600).contains(&retention_sec) {
            return Err(ConfigError::invalid("tasks.retention_sec", "must be between 10 and 315360000 s"));
        }
        if !(1_000..=600_000).contains(&claim_grace_ms) {
            return Err(ConfigError::invalid("tasks.claim_grace_ms", "must be between 1000 and 600000 ms"));
        }
        if !(1..=4096).contains(&extent_mib) {
            return Err(ConfigError::invalid("tasks.copy_extent_mib", "must be between 1 and 4096 MiB"));
        }
        if !(4..=65_536).contains(&block_kib) || !block_kib.is_multiple_of(4) {
            return Err(ConfigError::invalid(
                "tasks.copy_block_kib",
                "must be a multiple of 4 between 4 and 65536 KiB",
            ));
        }
        if !(extent_mib << 10).is_multiple_of(block_kib) {
            return Err(ConfigError::invalid(
                "tasks.copy_block_kib",
                format!("{block_kib} KiB does not divide the extent of {extent_mib} MiB (tasks.copy_extent_mib)"),
            ));
        }
        if max_mib_per_s > 1 << 20 {
            return Err(ConfigError::invalid("tasks.copy_max_mib_per_s", "must be at most 1048576 (0 = unlimited)"));
        }
        // A day at most, so a retry is never forgotten; 100 ms at least, so a failing task cannot
        // spin the dispatcher.
        if !(100..=86_400_000).contains(&retry_base_ms) {
            return Err(ConfigError::invalid("tasks.retry_base_ms", "must be between 100 and 86400000 ms"));
        }
        if !(1..=10).contains(&retry_factor) {
            return Err(ConfigError::invalid("tasks.retry_factor", "must be between 1 and 10"));
        }
        if !(retry_base_ms..=86_400_000).contains(&retry_max_ms) {
            return Err(ConfigError::invalid(
                "tasks.retry_max_ms",
                format!("must be between tasks.retry_base_ms ({retry_base_ms}) and 86400000 ms"),
            ));
        }
        Ok(TasksConfig {
            max_attempts,
            retention: Duration::from_secs(retention_sec),
            claim_grace: Duration::from_millis(claim_grace_ms),
            copy_extent_bytes: extent_mib << 20,
            copy_block_bytes: block_kib << 10,
            copy_max_bytes_per_s: (max_mib_per_s > 0).then_some(max_mib_per_s << 20),
            lease: lease_ms.map(Duration::from_millis),
            retry: RetryPolicy {
                base: Duration::from_millis(retry_base_ms),
                factor: retry_factor,
                cap: Duration::from_millis(retry_max_ms),
            },
        })
    }
}

impl Default for TasksConfig {
    fn default() -> TasksConfig {
        TasksConfig {
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            retention: Duration::from_secs(Self::DEFAULT_RETENTION_SEC),
            claim_grace: Duration::from_millis(Self::DEFAULT_CLAIM_GRACE_MS),
            copy_extent_bytes: Self::DEFAULT_COPY_EXTENT_MIB << 20,
            copy_block_bytes: Self::DEFAULT_COPY_BLOCK_KIB << 10,
            copy_max_bytes_per_s: None,
            lease: None,
            retry: RetryPolicy::DEFAULT,
        }
    }
}
