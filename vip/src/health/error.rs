//! The errors of the health sources: configuration, start-up and netlink failures.
//!
//! Failures of a single check round are not errors: they become a bad [`HealthSample`] with a
//! reason, because a failing check is exactly what a health source exists to report.
//!
//! [`HealthSample`]: super::HealthSample

use std::io;
use std::net::{IpAddr, SocketAddr};

/// A health source could not be configured or started.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// A configuration key has a bad value; `key` is its full name (`health.probe.port`).
    #[error("invalid configuration: {key}: {message}")]
    Config {
        /// The full key, like `health.probe.timeout_ms`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A UDP socket (echo responder or prober) could not be bound.
    #[error("cannot bind the {what} socket on {addr}: {source}")]
    Bind {
        /// `echo responder` or `prober`.
        what: &'static str,
        /// The address it tried.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A netlink request failed or its answer could not be read.
    #[error("netlink: {context}: {source}")]
    NetLink {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No local interface carries the data address, so its link cannot be followed.
    #[error("no local interface carries the data address {ip}; set health.probe.interface")]
    NoInterface {
        /// The data address.
        ip: IpAddr,
    },
    /// Some other operating-system call failed (thread start, eventfd, socket options).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl HealthError {
    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> HealthError {
        HealthError::Config { key: key.into(), message: message.into() }
    }

    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> HealthError {
        move |source| HealthError::Io { context, source }
    }

    pub(crate) fn netlink(context: &'static str) -> impl FnOnce(io::Error) -> HealthError {
        move |source| HealthError::NetLink { context, source }
    }
}

/// The health module's result.
pub type Result<T> = std::result::Result<T, HealthError>;
