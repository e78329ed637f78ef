//! What a member's election driver shares with the handles on other threads: the driver's
//! mailbox (`Input`) and the member's published state (`ClusterShared`).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use futures::channel::mpsc;
use parking_lot::Mutex;
use runtime::SyncPoint;

use crate::member::Member;
use crate::zk::{NodeEvent, ZkSession, ZkSessionState};

/// What reaches the driver's mailbox.
pub(crate) enum Input {
    /// The state watcher of session number `epoch` saw a change.
    SessionState { epoch: u64, state: ZkSessionState },
    /// The watch armed as number `generation` fired.
    WatchFired { generation: u64, event: NodeEvent },
    /// The member's health changed; it is published in its election node.
    SetHealth(bool),
    /// Leave the quorum (see `# Shutdown`).
    Leave,
}

/// What the driver shares with handles on other threads. Locks here are never held across a park.
pub(crate) struct ClusterShared {
    pub(crate) sender: mpsc::UnboundedSender<Input>,
    pub(crate) leader: AtomicBool,
    /// The election node's sequence, -1 without one.
    pub(crate) sequence: AtomicI64,
    pub(crate) session: Mutex<Option<Arc<ZkSession>>>,
    pub(crate) members: Mutex<Vec<Member>>,
    pub(crate) stopped: SyncPoint,
    pub(crate) joined: AtomicBool,
    pub(crate) service_path: String,
}

impl ClusterShared {
    pub(crate) fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Release);
    }

    pub(crate) fn set_sequence(&self, sequence: Option<i64>) {
        self.sequence.store(sequence.unwrap_or(-1), Ordering::Release);
    }
}
