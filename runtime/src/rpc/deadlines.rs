//! The deadline sweeper of one server cycle: a plain thread that, every tick, looks at what each
//! open connection is doing and shuts down the socket of one that has waited past its idle,
//! header, request, write or linger deadline (see `ConnectionShared::enforce`). It replaces
//! `may`'s IO timeouts, which race with may's selector (see the note in `connection.rs`); a
//! deadline is therefore enforced up to one tick late. A sweep reads one small mutex per open
//! connection and the connection limits bound how many are open, so thousands of connections
//! cost well under a millisecond a tick.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::connection_state::{Registry, Shared};
use crate::{JoinError, SyncPoint, Thread};

/// The sweeper's period is a quarter of the shortest deadline, within these bounds.
const MIN_TICK: Duration = Duration::from_millis(5);
const MAX_TICK: Duration = Duration::from_millis(250);

/// A running sweeper; `stop` ends and joins it.
pub(crate) struct DeadlineSweeper {
    stop: SyncPoint,
    thread: Thread<()>,
}

impl DeadlineSweeper {
    /// Starts sweeping a cycle's `connections`; the thread holds only a weak reference, so a
    /// cycle that is dropped without a stop also ends it.
    pub(crate) fn start(connections: &Arc<Registry>, shared: Arc<Shared>) -> std::io::Result<DeadlineSweeper> {
        let stop = SyncPoint::new();
        let tick = tick_for(&shared);
        let (stop_seen, connections) = (stop.clone(), Arc::downgrade(connections));
        let thread = Thread::spawn(&format!("{}-deadlines", shared.name()), move || {
            sweep_until_stopped(&connections, &shared, tick, &stop_seen)
        })?;
        Ok(DeadlineSweeper { stop, thread })
    }

    /// Ends and joins the sweeper (as dropping it does).
    pub(crate) fn stop(self) {}
}

impl Drop for DeadlineSweeper {
    /// A cycle dropped without a stop ends its sweeper at once too; on its own thread (the
    /// sweeper held the last reference to the cycle) the thread is left to return by itself.
    fn drop(&mut self) {
        self.stop.done();
        match self.thread.join() {
            Ok(()) | Err(JoinError::SelfJoin) | Err(JoinError::AlreadyJoined) => {}
            Err(error) => tracing::error!(%error, "the deadline sweeper ended abnormally"),
        }
    }
}

fn tick_for(shared: &Shared) -> Duration {
    let shortest = shared.shortest_deadline();
    (shortest / 4).clamp(MIN_TICK, MAX_TICK)
}

fn sweep_until_stopped(connections: &Weak<Registry>, shared: &Shared, tick: Duration, stop: &SyncPoint) {
    while !stop.wait_timeout(tick) {
        let Some(connections) = connections.upgrade() else { return };
        let now = Instant::now();
        // The registry stays locked while sockets are shut down: a connection leaves it before
        // closing its fd, so every fd seen here is still that connection's.
        for connection in connections.lock().values() {
            if let Some(missed) = connection.missed_deadline(now, shared) {
                connection.enforce(missed, shared.name());
            }
        }
    }
}
