//! Flap damping for re-entry into the cluster: after the service stopped itself for a network
//! failure, the supervisor waits (besides a valid health, which takes `rise` good rounds in a
//! row) for an exponential back-off that grows with each failure and resets after a stable
//! period.

use std::time::{Duration, Instant};

/// The back-off between consecutive re-entries of one process.
#[derive(Debug, Clone)]
pub struct ReentryBackoff {
    initial: Duration,
    maximum: Duration,
    stable_period: Duration,
    n_failures: u32,
    last_start: Option<Instant>,
}

impl ReentryBackoff {
    /// Waits grow `initial`, `2×initial`, … up to `maximum`; a service that stayed up for
    /// `stable_period` starts the series again.
    pub fn new(initial: Duration, maximum: Duration, stable_period: Duration) -> ReentryBackoff {
        ReentryBackoff { initial, maximum: maximum.max(initial), stable_period, n_failures: 0, last_start: None }
    }

    /// Records that the service started at `now`.
    pub fn started(&mut self, now: Instant) {
        self.last_start = Some(now);
    }

    /// Records that the service stopped itself at `now`; returns how long to wait before the
    /// next start (on top of the health requirement).
    pub fn stopped(&mut self, now: Instant) -> Duration {
        let ran_for = self.last_start.map(|start| now.saturating_duration_since(start));
        if ran_for.is_some_and(|ran_for| ran_for >= self.stable_period) {
            self.n_failures = 0;
        }
        let exponent = self.n_failures.min(16);
        self.n_failures = self.n_failures.saturating_add(1);
        self.initial.saturating_mul(1u32 << exponent).min(self.maximum)
    }

    /// Consecutive self-stops that were not separated by a stable period.
    pub fn n_failures(&self) -> u32 {
        self.n_failures
    }
}

#[cfg(test)]
mod tests;
