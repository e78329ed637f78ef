//! The errors of the VIP service, each with the policy the daemon applies to it.
//!
//! # Policy
//!
//! There are two kinds, and [`VipError::is_permanent`] tells them apart:
//!
//! - **Permanent** (configuration) errors — [`VipError::BadRequest`], [`VipError::NotFound`], and
//!   a netlink or socket call refused for lack of privilege (`EPERM`/`EACCES`: the daemon lacks
//!   `CAP_NET_ADMIN` or `CAP_NET_RAW`). Retrying cannot help. The daemon stops its service with
//!   one clear log line naming the key or the missing thing (no core dump, no `exit` from the
//!   dispatcher), and never comes back as leader with the same configuration: holding the
//!   election node with a VIP it cannot bind would make the cluster unreachable.
//! - **Transient** errors — [`VipError::NetLink`], [`VipError::ArpBroadcastFailed`],
//!   [`VipError::Socket`], [`VipError::Interface`], [`VipError::Fenced`]. The caller retries with back-off
//!   ([`VipRetry`]); when `transient_failure_limit` calls in a row fail, the leader steps down
//!   (releasing the VIP first) so that a healthy node can take over. A node that stepped down
//!   for a transient error may become leader again later.
//!
//! [`VipRetry`]: crate::VipRetry

use std::io;
use std::time::Duration;

/// A VIP operation failed. See the module's policy.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    /// An invalid VIP configuration or request: not an IPv4 address, a bad prefix, a label the
    /// kernel would refuse, the VIP already on the interface with another prefix. Permanent.
    #[error("bad VIP request: {0}")]
    BadRequest(String),
    /// The configured interface does not exist, or it has no address in the VIP's subnet (the
    /// VIP is only ever added as a secondary address, see [`VipServer`]). Permanent.
    ///
    /// [`VipServer`]: crate::VipServer
    #[error("not found: {0}")]
    NotFound(String),
    /// A netlink request failed or its answer could not be read. Transient, unless the kernel
    /// refused it for lack of privilege.
    #[error("netlink: {context}: {source}")]
    NetLink {
        /// What was being done, like `add 10.0.0.100/24 to eth0`.
        context: String,
        /// The kernel's or the socket's error.
        #[source]
        source: io::Error,
    },
    /// A gratuitous ARP (IPv4) or unsolicited neighbour advertisement (IPv6) could not be sent.
    /// Transient.
    #[error("gratuitous ARP or neighbour advertisement for {vip} on {interface} failed: {source}")]
    ArpBroadcastFailed {
        /// The interface it was sent on.
        interface: String,
        /// The announced address.
        vip: std::net::IpAddr,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The interface exists but cannot carry the VIP now: it is down, has no carrier, vanished
    /// while this node was leader, or lost its address in the VIP's subnet. Transient.
    #[error("interface: {0}")]
    Interface(String),
    /// The VIP is fenced (`VipServer::set_fence`) and the fence grants no lifetime now: no
    /// confirmed contact with ZooKeeper in this term, or the last one is too old. Nothing was added
    /// or renewed; a VIP already there lapses by itself. Transient.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A netlink or packet socket could not be opened or configured. Transient, unless refused
    /// for lack of privilege.
    #[error("socket: {context}: {source}")]
    Socket {
        /// Which socket and what was being done.
        context: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl VipError {
    /// Whether retrying cannot help: the service stops and this node must not lead with the same
    /// configuration again. False for errors that retries with back-off may cure.
    pub fn is_permanent(&self) -> bool {
        match self {
            VipError::BadRequest(_) | VipError::NotFound(_) => true,
            VipError::NetLink { source, .. } | VipError::Socket { source, .. } => is_privilege_error(source),
            VipError::ArpBroadcastFailed { .. } | VipError::Interface(_) | VipError::Fenced(_) => false,
        }
    }

    pub(crate) fn netlink(context: impl Into<String>) -> impl FnOnce(io::Error) -> VipError {
        let context = context.into();
        move |source| VipError::NetLink { context, source }
    }

    pub(crate) fn socket(context: &'static str) -> impl FnOnce(io::Error) -> VipError {
        move |source| VipError::Socket { context, source }
    }
}

fn is_privilege_error(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

/// The VIP service's result.
pub type VipResult<T> = std::result::Result<T, VipError>;

/// What the caller of a VIP operation does next, by [`VipRetry`]'s policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipVerdict {
    /// The call succeeded; carry on at the normal pace.
    Healthy,
    /// A transient failure: call again after this delay.
    RetryAfter(Duration),
    /// Transient failures persisted for `transient_failure_limit` calls: the leader steps down
    /// (and releases the VIP) so that another node can take over.
    StepDown,
    /// A permanent error: stop the service with a clear log line and do not lead again with this
    /// configuration.
    StopService,
}

/// The error policy as a small state machine the leader's loop feeds with every VIP call's
/// result: exponential back-off from `retry_backoff_ms` up to `sync_interval_ms`, step-down
/// after `transient_failure_limit` failures in a row, stop at once on a permanent error.
#[derive(Debug, Clone)]
pub struct VipRetry {
    limit: u32,
    first_backoff: Duration,
    max_backoff: Duration,
    failures_in_a_row: u32,
}

impl VipRetry {
    /// A policy that steps down after `limit` transient failures in a row and backs off from
    /// `first_backoff`, doubling, up to `max_backoff` (`VipConfig::retry_policy` gives the
    /// configuration's).
    pub fn new(limit: u32, first_backoff: Duration, max_backoff: Duration) -> VipRetry {
        VipRetry {
            limit: limit.max(1),
            first_backoff,
            max_backoff: max_backoff.max(first_backoff),
            failures_in_a_row: 0,
        }
    }

    /// Records one call's result and says what to do next.
    pub fn record<T>(&mut self, result: &VipResult<T>) -> VipVerdict {
        match result {
            Ok(_) => {
                self.failures_in_a_row = 0;
                VipVerdict::Healthy
            }
            Err(error) if error.is_permanent() => VipVerdict::StopService,
            Err(_) => {
                self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
                if self.failures_in_a_row >= self.limit {
                    return VipVerdict::StepDown;
                }
                let doublings = (self.failures_in_a_row - 1).min(20);
                VipVerdict::RetryAfter((self.first_backoff * 2u32.pow(doublings)).min(self.max_backoff))
            }
        }
    }

    /// Transient failures recorded in a row so far.
    pub fn failures_in_a_row(&self) -> u32 {
        self.failures_in_a_row
    }

    /// Forgets past failures (a new term as leader).
    pub fn reset(&mut self) {
        self.failures_in_a_row = 0;
    }
}

#[cfg(test)]
mod tests;
