//! The loop every polling source runs on its own thread: one check per interval, at a fixed
//! rate, each result recorded in the shared state, until the stop signal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::Thread;

use super::error::{HealthError, Result};
use super::flag::Shared;
use super::state::HealthSample;
use super::stop::StopSignal;

/// Starts thread `name` that calls `check` every `interval` (the first call at once) and
/// records each sample it returns; `None` records nothing (nothing to check yet, or stopped).
pub(crate) fn spawn_rounds<F>(
    name: &str,
    shared: Arc<Shared>,
    interval: Duration,
    stop: StopSignal,
    mut check: F,
) -> Result<Thread<()>>
where
    F: FnMut(&StopSignal) -> Option<HealthSample> + Send + 'static,
{
    Thread::spawn(name, move || {
        let mut next_round = Instant::now();
        loop {
            if !stop.sleep_until(next_round) {
                return;
            }
            let started = Instant::now();
            let sample = check(&stop);
            if stop.is_stopped() {
                return;
            }
            if let Some(sample) = sample {
                shared.record(sample);
            }
            // Fixed rate; rounds missed while the machine was busy are skipped, not bunched.
            next_round += interval;
            if next_round < started {
                next_round = started + interval;
            }
        }
    })
    .map_err(HealthError::io("start a health source thread"))
}
