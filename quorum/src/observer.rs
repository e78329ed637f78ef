//! A hook that times a session's ZooKeeper requests without this crate knowing who keeps the
//! figures: the daemon installs an `OperationObserver` in its `ZkConfig` (as `runtime`'s RPC
//! servers take a `RequestObserver`), and every request of a session made with that config
//! reports its operation and how long it waited for the answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Told of each finished ZooKeeper request (answered, failed or timed out), on the thread or
/// coroutine that made it: it must be quick and must not call ZooKeeper.
pub trait OperationObserver: Send + Sync + 'static {
    /// `operation` is a short fixed name (`exists`, `get_data`, `create`, `multi`, ...; the
    /// pipelined batches are `get_data_batch` and `set_data_batch`).
    fn finished(&self, operation: &'static str, elapsed: Duration);
}

/// An optional observer, cheap to clone, printable (for the configs that carry it).
#[derive(Clone, Default)]
pub struct ZkObserver(Option<Arc<dyn OperationObserver>>);

impl ZkObserver {
    pub fn new(observer: Arc<dyn OperationObserver>) -> ZkObserver {
        ZkObserver(Some(observer))
    }

    /// Reports `operation`, started at `started`, if anyone listens.
    pub(crate) fn finished(&self, operation: &'static str, started: Instant) {
        if let Some(observer) = &self.0 {
            observer.finished(operation, started.elapsed());
        }
    }
}

impl std::fmt::Debug for ZkObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "ZkObserver(installed)" } else { "ZkObserver(none)" })
    }
}
