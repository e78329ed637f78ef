//! The configuration of one quorum member: where ZooKeeper is, the service it joins, what it
//! publishes about itself and the deadlines of its election.

use std::time::Duration;

use crate::error::QuorumError;
use crate::member::MemberInfo;
use crate::zk::ZkConfig;

/// Everything a member needs to join a quorum.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    /// The ZooKeeper session.
    pub zk: ZkConfig,
    /// The service's election path, for example `/zbs/taskd/quorum`; created when missing.
    pub service_path: String,
    /// What this member publishes in its election node.
    pub member: MemberInfo,
    /// When true a member with a strictly higher priority takes leadership over when it joins.
    pub use_priority: bool,
    /// A disconnected leader steps down after this long, and always before a third of the
    /// negotiated session timeout: long before the server can expire its session and let another
    /// member lead.
    pub step_down_after_disconnect: Duration,
    /// How long leaving waits for the session to report `Closed`.
    pub close_timeout: Duration,
    /// Pause between two attempts after a failed connect or election step.
    pub retry_backoff: Duration,
    /// The member's id is this process's alone (the daemon holds a lock proving that its
    /// earlier incarnations are dead): before it creates its election node, election nodes with
    /// its id and another session are deleted, so a restarted member does not leave its dead
    /// predecessor's node leading (or ahead in line) until that session expires.
    pub remove_stale_own_nodes: bool,
}

impl QuorumConfig {
    /// A configuration with the defaults derived from the session timeout.
    pub fn new(zk: ZkConfig, service_path: impl Into<String>, member: MemberInfo) -> QuorumConfig {
        let session_timeout = zk.session_timeout;
        QuorumConfig {
            zk,
            service_path: service_path.into(),
            member,
            use_priority: false,
            step_down_after_disconnect: session_timeout / 3,
            close_timeout: session_timeout,
            retry_backoff: Duration::from_millis(200),
            remove_stale_own_nodes: false,
        }
    }

    /// See [`QuorumConfig::remove_stale_own_nodes`]: only for a member whose id no other live
    /// process can hold.
    pub fn with_stale_own_nodes_removed(mut self, remove: bool) -> QuorumConfig {
        self.remove_stale_own_nodes = remove;
        self
    }

    /// Enables or disables priority take-over.
    pub fn with_priority(mut self, use_priority: bool) -> QuorumConfig {
        self.use_priority = use_priority;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), QuorumError> {
        let path = &self.service_path;
        if !path.starts_with('/') || path.ends_with('/') || path.contains("//") {
            return Err(QuorumError::BadConfig(format!(
                "service path {path:?} must be absolute, without a trailing or doubled slash"
            )));
        }
        if self.zk.connect_string.trim().is_empty() {
            return Err(QuorumError::BadConfig("the ZooKeeper connect string is empty".to_string()));
        }
        if self.zk.session_timeout.is_zero() {
            return Err(QuorumError::BadConfig("the session timeout is zero".to_string()));
        }
        Ok(())
    }
}
