//! `Pacer`: keeps one copy's reads at or below a configured rate (`[tasks] copy_max_mib_per_s`),
//! so a copy cannot starve the node's other IO. The block coroutines reserve each block's bytes
//! before reading it and sleep until the reservation falls due, in short steps so that a cancel
//! or interrupt still takes effect at the next block.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest single sleep: how soon a paced block coroutine sees a stop request.
const STEP: Duration = Duration::from_millis(20);

/// A rate limit shared by the block coroutines of one copy run.
#[derive(Debug)]
pub struct Pacer {
    started: Instant,
    bytes_per_s: u64,
    /// Bytes handed out since `started`.
    reserved: AtomicU64,
}

impl Pacer {
    /// A pacer that lets `bytes_per_s` through each second, counted from now.
    pub fn new(bytes_per_s: u64) -> Pacer {
        Pacer { started: Instant::now(), bytes_per_s: bytes_per_s.max(1), reserved: AtomicU64::new(0) }
    }

    /// Reserves `bytes` and returns when they may be read: the moment the bytes reserved before
    /// them would have taken at the configured rate.
    pub fn reserve(&self, bytes: u64) -> Instant {
        let before = self.reserved.fetch_add(bytes, Ordering::AcqRel);
        let due = Duration::from_secs_f64(before as f64 / self.bytes_per_s as f64);
        self.started + due
    }

    /// Sleeps (parking only the calling coroutine) until `due`, in steps; returns early, false,
    /// as soon as `stop` says so.
    pub fn wait_until(due: Instant, stop: impl Fn() -> bool) -> bool {
        loop {
            if stop() {
                return false;
            }
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            runtime::sleep(left.min(STEP));
        }
    }
}
