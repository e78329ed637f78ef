//! fbthrift's `ServerStatus` and the atomic cell whose compare-and-swap transitions make every
//! start-up and tear-down stage run once, however many threads ask for it.

use std::sync::atomic::{AtomicU8, Ordering};

/// Where a server is in its life, exactly fbthrift's `ServerStatus`.
///
/// `NotRunning → PreStarting → Starting → Running → PreStopping → Stopping →
/// DrainingUntilStopped → NotRunning`. Established connections are still served while
/// `PreStopping` and `Stopping`; a request that arrives while `DrainingUntilStopped` gets a
/// 503 "server stopping" answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ServerStatus {
    NotRunning = 0,
    PreStarting = 1,
    Starting = 2,
    Running = 3,
    PreStopping = 4,
    Stopping = 5,
    DrainingUntilStopped = 6,
}

impl ServerStatus {
    fn from_u8(value: u8) -> ServerStatus {
        match value {
            1 => ServerStatus::PreStarting,
            2 => ServerStatus::Starting,
            3 => ServerStatus::Running,
            4 => ServerStatus::PreStopping,
            5 => ServerStatus::Stopping,
            6 => ServerStatus::DrainingUntilStopped,
            _ => ServerStatus::NotRunning,
        }
    }

    /// The stable lower-case name used in logs and health answers.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerStatus::NotRunning => "not_running",
            ServerStatus::PreStarting => "pre_starting",
            ServerStatus::Starting => "starting",
            ServerStatus::Running => "running",
            ServerStatus::PreStopping => "pre_stopping",
            ServerStatus::Stopping => "stopping",
            ServerStatus::DrainingUntilStopped => "draining_until_stopped",
        }
    }
}

impl std::fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `ServerStatus` that threads change only by compare-and-swap (or a plain store where
/// fbthrift stores).
#[derive(Debug)]
pub(crate) struct AtomicStatus(AtomicU8);

impl AtomicStatus {
    pub(crate) fn new(status: ServerStatus) -> AtomicStatus {
        AtomicStatus(AtomicU8::new(status as u8))
    }

    pub(crate) fn load(&self) -> ServerStatus {
        ServerStatus::from_u8(self.0.load(Ordering::Acquire))
    }

    pub(crate) fn store(&self, status: ServerStatus) {
        self.0.store(status as u8, Ordering::Release);
    }

    /// Moves from `from` to `to`; on failure returns the status found instead.
    pub(crate) fn transition(&self, from: ServerStatus, to: ServerStatus) -> Result<(), ServerStatus> {
        self.0
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(ServerStatus::from_u8)
    }
}
