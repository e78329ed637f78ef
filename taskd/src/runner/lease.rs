//! The runner's lease on its tasks' IO: the last time the runner had confirmed contact with
//! ZooKeeper, and the rule that stops every task IO once that contact is older than the lease.
//!
//! # Why a probe, not the session state
//! The client's session state says `SyncConnected` until the client itself notices the
//! connection is gone. A process stopped (SIGSTOP, a long swap-in) past the session timeout
//! wakes up with the state still `SyncConnected` while the server has already expired its
//! session and deleted its owner nodes: the state cannot tell "connected" from "has not looked
//! yet". So the runner probes: a cheap `exists` every `lease / 4` on its session, and a probe
//! that is answered confirms contact *as of the moment it was sent* (the server heard from the
//! session at or after that moment, so its expiry clock restarted no earlier). A copy or sleep
//! asks [`RunnerLease::holds`] before every block it writes (and every step it sleeps); the
//! monotonic clock runs on while the process is stopped, so the first check after a wake-up
//! sees the lapse.
//!
//! # The timer rule
//! [`TimerRule::check`] is the one rule between the timers, checked when the configuration
//! loads (ARCHITECTURE.md, `taskd`, states it in words).

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The slowest a block write is assumed to take, per byte: 64 MiB/s. A block of 256 KiB is then
/// 4 ms, the largest block (64 MiB) 1 s; see `TimerRule`.
pub const MIN_WRITE_BYTES_PER_S: u64 = 64 << 20;

/// The floor of one block's write time in the rule, whatever its size (a syscall, a page fault).
pub const MIN_BLOCK_IO: Duration = Duration::from_millis(50);

/// The shortest lease: probes are sent every quarter of it.
pub const MIN_LEASE: Duration = Duration::from_millis(200);

/// The longest a runner may write without confirmed contact: a third of the session timeout
/// the server granted, or the configured lease if shorter. (The server may grant less than was
/// asked for, so the rule is applied to the granted timeout too.)
pub fn effective_lease(configured: Duration, granted_session_timeout: Duration) -> Duration {
    configured.min(granted_session_timeout / 3)
}

/// True while a task claimed with `session_id` may do IO at `now`: the latest confirmed contact
/// was with that very session (a new session does not confirm the old one's ownership) and is
/// less than `lease` old.
pub fn lease_holds(contact: Option<(i64, Instant)>, session_id: i64, lease: Duration, now: Instant) -> bool {
    match contact {
        Some((contact_session, at)) => contact_session == session_id && now.saturating_duration_since(at) < lease,
        None => false,
    }
}

/// The runner's latest confirmed contact with ZooKeeper (see the module documentation).
#[derive(Debug)]
pub struct RunnerLease {
    /// The configured lease (`[tasks] lease_ms`, by default a third of the session timeout).
    lease: Duration,
    /// The session and the send time of the latest answered probe.
    contact: Mutex<Option<(i64, Instant)>>,
}

impl RunnerLease {
    pub fn new(lease: Duration) -> RunnerLease {
        RunnerLease { lease, contact: Mutex::new(None) }
    }

    /// The configured lease.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How often the runner probes: four probes per lease, so that one slow answer does not
    /// lapse it.
    pub fn probe_interval(&self) -> Duration {
        self.lease / 4
    }

    /// A probe sent at `sent_at` on `session_id` was answered. Contact never moves back in time
    /// for one session; a new session replaces the old one's contact.
    pub fn confirm(&self, session_id: i64, sent_at: Instant) {
        let mut contact = self.contact.lock();
        match *contact {
            Some((current, at)) if current == session_id && at >= sent_at => {}
            _ => *contact = Some((session_id, sent_at)),
        }
    }

    /// Whether a task claimed with `session_id`, whose session the server granted
    /// `session_timeout`, may do IO now.
    pub fn holds(&self, session_id: i64, session_timeout: Duration) -> bool {
        let contact = *self.contact.lock();
        lease_holds(contact, session_id, effective_lease(self.lease, session_timeout), Instant::now())
    }

    /// One IO check of a task claimed with `session_id`: whether it may do IO now, and until
    /// when IO was allowed as of this check — the lease's end, or now when the latest contact is
    /// another session's. No IO of the task begins after the bound of its last check.
    pub fn check_io(&self, session_id: i64, session_timeout: Duration) -> IoCheck {
        let contact = *self.contact.lock();
        let lease = effective_lease(self.lease, session_timeout);
        let now = Instant::now();
        let until = match contact {
            Some((contact_session, at)) if contact_session == session_id => at + lease,
            _ => now,
        };
        IoCheck { allowed: lease_holds(contact, session_id, lease, now), until }
    }

    /// The send time of the latest answered probe on `session_id`; `None` when the latest contact
    /// is another session's (the leader's VIP fence counts only its own session's contact).
    pub fn contact_of(&self, session_id: i64) -> Option<Instant> {
        match *self.contact.lock() {
            Some((contact_session, at)) if contact_session == session_id => Some(at),
            _ => None,
        }
    }
}

/// What one IO check found (see [`RunnerLease::check_io`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoCheck {
    pub allowed: bool,
    /// No IO begins after this, by this check's contact.
    pub until: Instant,
}

/// The timers whose order keeps a runner from writing after its owner node can expire, and a
/// leader from leading after its election node can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerRule {
    /// S: the ZooKeeper session timeout.
    pub session_timeout: Duration,
    /// D: a disconnected leader steps down after this (quorum's `step_down_after_disconnect`).
    pub step_down_after: Duration,
    /// F: a runner stops all task IO after this long without confirmed contact.
    pub lease: Duration,
    /// B: the longest one block's write is assumed to take once it has passed its check.
    pub block_io: Duration,
}

/// Which timer breaks the rule, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerRuleError {
    /// The lease is shorter than `MIN_LEASE` or, with one block's write, reaches past half the
    /// session timeout.
    Lease(String),
    /// A disconnected leader would lead past a third of the session timeout.
    StepDown(String),
}

impl TimerRule {
    /// B for blocks of `block_bytes`: their write at `MIN_WRITE_BYTES_PER_S`, at least
    /// `MIN_BLOCK_IO`.
    pub fn block_io_for(block_bytes: u64) -> Duration {
        let micros = block_bytes.saturating_mul(1_000_000) / MIN_WRITE_BYTES_PER_S;
        Duration::from_micros(micros).max(MIN_BLOCK_IO)
    }

    /// `D <= S/3` and `MIN_LEASE <= F` and `F + B <= S/2`: a runner has stopped writing (its
    /// last check at most F after its last confirmed contact, its last write at most B after
    /// that) by half the session timeout, while the server expires its owner nodes no earlier
    /// than S after that contact. The other half is the margin for clock-rate differences and
    /// scheduling delays of the probe.
    pub fn check(&self) -> Result<(), TimerRuleError> {
        let s = self.session_timeout;
        if self.step_down_after > s / 3 {
            return Err(TimerRuleError::StepDown(format!(
                "a leader steps down {} ms after losing ZooKeeper, past a third of the session timeout ({} ms)",
                self.step_down_after.as_millis(),
                s.as_millis()
            )));
        }
        if self.lease < MIN_LEASE {
            return Err(TimerRuleError::Lease(format!(
                "{} ms is shorter than the minimum {} ms",
                self.lease.as_millis(),
                MIN_LEASE.as_millis()
            )));
        }
        if self.lease + self.block_io > s / 2 {
            return Err(TimerRuleError::Lease(format!(
                "the lease ({} ms) plus one block's write ({} ms) must be at most half the session timeout \
                 ({} ms of session_timeout_ms = {}), so that a runner has stopped writing before its owner node \
                 can expire",
                self.lease.as_millis(),
                self.block_io.as_millis(),
                (s / 2).as_millis(),
                s.as_millis()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
