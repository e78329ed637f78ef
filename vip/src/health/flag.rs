//! `HealthFlag`: the cheap, shareable reader of a monitor's state, with change subscriptions.
//!
//! The state itself is one atomic, so the daemon's 1 s poll costs a load. Counters and the last
//! reason sit behind a small mutex for status pages. Subscribers are called on the thread that
//! recorded the change (a source thread), at once, so a leader can post a message to its event
//! loop instead of waiting for the next poll.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::state::{HealthChange, HealthSample, HealthState, Hysteresis};

type Callback = Arc<dyn Fn(&HealthChange) + Send + Sync>;

/// A snapshot of a monitor's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthStatus {
    /// The current state.
    pub state: HealthState,
    /// Good rounds in a row.
    pub good_streak: u32,
    /// Bad rounds in a row.
    pub bad_streak: u32,
    /// Rounds recorded since the start.
    pub rounds: u64,
    /// Bad rounds (failed probes, link down) recorded since the start.
    pub n_bad_rounds: u64,
    /// State changes since the start.
    pub n_changes: u64,
    /// The latest failure reason (kept after recovery, for the operator).
    pub last_reason: Option<String>,
    /// Why the data link is down, while it is.
    pub link_down: Option<String>,
    /// When the state last changed (or the monitor started).
    pub since: Instant,
}

pub(crate) struct Shared {
    state: AtomicU8,
    model: Mutex<Model>,
    changed: Condvar,
    subscribers: Mutex<BTreeMap<u64, Callback>>,
    next_subscriber: AtomicU64,
}

struct Model {
    hysteresis: Hysteresis,
    since: Instant,
}

impl Shared {
    pub(crate) fn new(fall: u32, rise: u32) -> Arc<Shared> {
        Arc::new(Shared {
            state: AtomicU8::new(HealthState::Unknown.to_u8()),
            model: Mutex::new(Model { hysteresis: Hysteresis::new(fall, rise), since: Instant::now() }),
            changed: Condvar::new(),
            subscribers: Mutex::new(BTreeMap::new()),
            next_subscriber: AtomicU64::new(0),
        })
    }

    /// Records one round and publishes a resulting change.
    pub(crate) fn record(&self, sample: HealthSample) -> Option<HealthChange> {
        self.apply(|hysteresis| hysteresis.record(sample))
    }

    /// Records the data link's state (`Some(reason)` = down).
    pub(crate) fn set_link_down(&self, down: Option<String>) -> Option<HealthChange> {
        self.apply(|hysteresis| hysteresis.set_link_down(down))
    }

    fn apply(&self, step: impl FnOnce(&mut Hysteresis) -> Option<HealthChange>) -> Option<HealthChange> {
        let change = {
            let mut model = self.model.lock();
            let change = step(&mut model.hysteresis);
            if let Some(change) = &change {
                model.since = Instant::now();
                self.state.store(change.to.to_u8(), Ordering::Release);
            }
            change
        };
        // Woken on every round, not only on changes, so `wait_until` can watch the counters.
        self.changed.notify_all();
        if let Some(change) = &change {
            log_change(change);
            // Cloned out of the lock so a callback may subscribe or unsubscribe without deadlock.
            let callbacks: Vec<Callback> = self.subscribers.lock().values().cloned().collect();
            for callback in callbacks {
                callback(change);
            }
        }
        change
    }
}

fn log_change(change: &HealthChange) {
    match change.to {
        HealthState::Invalid => {
            tracing::warn!(from = %change.from, reason = %change.reason, "data network health turned invalid")
        }
        HealthState::Valid => {
            tracing::info!(from = %change.from, reason = %change.reason, "data network health is valid")
        }
        HealthState::Unknown => tracing::info!(from = %change.from, "data network health is unknown"),
    }
}

/// A cheap, cloneable reader of a monitor's state; all clones see the same state.
#[derive(Clone)]
pub struct HealthFlag {
    shared: Arc<Shared>,
}

impl HealthFlag {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> HealthFlag {
        HealthFlag { shared }
    }

    /// The current state (one atomic load).
    pub fn state(&self) -> HealthState {
        HealthState::from_u8(self.shared.state.load(Ordering::Acquire))
    }

    /// True once the node has proved its data network healthy and until it fails. This is what
    /// a node publishes as "healthy candidate" and what the supervisor waits for before
    /// re-entering the election.
    pub fn is_valid(&self) -> bool {
        self.state() == HealthState::Valid
    }

    /// True once the data network has proved unhealthy and until it recovers. This, not
    /// `!is_valid()`, is what makes a leader step down: an unproved fresh start is no failure.
    pub fn is_invalid(&self) -> bool {
        self.state() == HealthState::Invalid
    }

    /// The counters and last reason.
    pub fn status(&self) -> HealthStatus {
        let model = self.shared.model.lock();
        let hysteresis = &model.hysteresis;
        HealthStatus {
            state: hysteresis.state(),
            good_streak: hysteresis.good_streak(),
            bad_streak: hysteresis.bad_streak(),
            rounds: hysteresis.rounds(),
            n_bad_rounds: hysteresis.n_bad_rounds(),
            n_changes: hysteresis.n_changes(),
            last_reason: hysteresis.last_reason().map(str::to_string),
            link_down: hysteresis.link_down().map(str::to_string),
            since: model.since,
        }
    }

    /// Calls `callback` on every state change, on the thread that recorded it, until the
    /// returned [`Subscription`] is dropped. The callback must be quick and must not block
    /// (post a message, set a flag): it runs on a health source's thread.
    pub fn subscribe<F>(&self, callback: F) -> Subscription
    where
        F: Fn(&HealthChange) + Send + Sync + 'static,
    {
        let id = self.shared.next_subscriber.fetch_add(1, Ordering::Relaxed);
        self.shared.subscribers.lock().insert(id, Arc::new(callback));
        Subscription { shared: self.shared.clone(), id }
    }

    /// Calls `callback` with the reason whenever the state turns invalid (see [`subscribe`]).
    ///
    /// [`subscribe`]: HealthFlag::subscribe
    pub fn on_invalid<F>(&self, callback: F) -> Subscription
    where
        F: Fn(&str) + Send + Sync + 'static,
    {
        self.subscribe(move |change| {
            if change.to == HealthState::Invalid {
                callback(&change.reason)
            }
        })
    }

    /// Blocks the calling thread until `condition` holds for the status, or `timeout` passes;
    /// returns whether it holds. Re-checked after every recorded round. For plain threads (the
    /// supervisor, tests): a coroutine calling it would stall its whole context.
    pub fn wait_until(&self, timeout: Duration, mut condition: impl FnMut(&HealthStatus) -> bool) -> bool {
        // A timeout too large to add to `now` means waiting for the condition alone.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if condition(&self.status()) {
                return true;
            }
            let mut model = self.shared.model.lock();
            let now = Instant::now();
            let remaining = match deadline {
                Some(deadline) if now >= deadline => return false,
                Some(deadline) => deadline - now,
                None => Duration::MAX,
            };
            // Short slices guard against a round recorded between `status()` and this wait.
            let slice = remaining.min(Duration::from_millis(50));
            self.shared.changed.wait_for(&mut model, slice);
        }
    }

    /// Blocks the calling thread until the state is `state` or `timeout` passes.
    pub fn wait_for_state(&self, state: HealthState, timeout: Duration) -> bool {
        self.wait_until(timeout, |status| status.state == state)
    }
}

impl std::fmt::Debug for HealthFlag {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("HealthFlag").field("state", &self.state()).finish()
    }
}

/// Keeps a [`HealthFlag::subscribe`] callback registered; dropping it unregisters the callback.
/// A call already under way on a source thread may still finish after the drop.
pub struct Subscription {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // The callback is dropped after the lock is released: it may own subscriptions itself.
        let callback = self.shared.subscribers.lock().remove(&self.id);
        drop(callback);
    }
}
