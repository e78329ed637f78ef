//! `QuorumCluster`: one member's membership of one service's quorum, with its own `EventLoop` on
//! which the election driver runs and delivers its events; `QuorumHandle` reaches it from anywhere.
//!
//! # Shutdown
//! `QuorumHandle::leave` (any thread, any number of times) posts `Leave` to the driver, which
//! steps down, gives up its election node, lets the handler stop its components, closes the
//! ZooKeeper session, delivers `Stopped` and unloops (see `election`'s `# Shutdown`). A cluster
//! whose driver never started is simply unlooped.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use parking_lot::Mutex;
use runtime::{ContextHandle, EventLoop, SyncPoint};

use crate::config::QuorumConfig;
use crate::election::{Election, QuorumHandler};
use crate::error::{QuorumError, ZkError};
use crate::member::Member;
use crate::shared::{ClusterShared, Input};
use crate::zk::ZkSession;

/// One member of one service's quorum, with the loop its election runs on.
pub struct QuorumCluster {
    config: QuorumConfig,
    event_loop: EventLoop,
    shared: Arc<ClusterShared>,
    mailbox: Mutex<Option<mpsc::UnboundedReceiver<Input>>>,
}

impl std::fmt::Debug for QuorumCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumCluster")
            .field("service_path", &self.config.service_path)
            .field("member", &self.config.member.id)
            .finish()
    }
}

impl QuorumCluster {
    /// A member that has not joined yet; its loop is called `quorum-<member id>`.
    pub fn new(config: QuorumConfig) -> Result<QuorumCluster, QuorumError> {
        config.validate()?;
        let (sender, mailbox) = mpsc::unbounded();
        let loop_name: String = format!("quorum-{}", config.member.id).chars().take(15).collect();
        Ok(QuorumCluster {
            event_loop: EventLoop::new(&loop_name),
            shared: Arc::new(ClusterShared {
                sender,
                leader: AtomicBool::new(false),
                sequence: AtomicI64::new(-1),
                session: Mutex::new(None),
                members: Mutex::new(Vec::new()),
                stopped: SyncPoint::new(),
                joined: AtomicBool::new(false),
                service_path: config.service_path.clone(),
            }),
            mailbox: Mutex::new(Some(mailbox)),
            config,
        })
    }

    /// The configuration the member was built with.
    pub fn config(&self) -> &QuorumConfig {
        &self.config
    }

    /// The loop's handle: a daemon schedules its own coroutines and timers here.
    pub fn context(&self) -> ContextHandle {
        self.event_loop.handle()
    }

    /// A handle to query the member and make it leave, from any thread.
    pub fn handle(&self) -> QuorumHandle {
        QuorumHandle { shared: self.shared.clone(), context: self.event_loop.handle() }
    }

    /// Schedules the election driver on the loop; it connects and joins once the loop runs.
    /// `handler` receives every event, on the loop.
    pub fn join<H: QuorumHandler>(&self, handler: H) -> Result<(), QuorumError> {
        let mailbox = self.mailbox.lock().take().ok_or(QuorumError::AlreadyInitialized)?;
        let election = Election::new(
            self.config.clone(),
            self.shared.clone(),
            mailbox,
            self.event_loop.handle(),
            Box::new(handler),
        );
        self.shared.joined.store(true, Ordering::Release);
        self.event_loop.sched(move || election.run()).map_err(|_| QuorumError::LoopStopped)
    }

    /// Runs the loop on the calling thread until the member has left (or the loop is unlooped).
    pub fn run(&self) -> Result<(), QuorumError> {
        self.event_loop.run()?;
        Ok(())
    }

    /// Asks the member to leave; see `QuorumHandle::leave`.
    pub fn leave(&self) {
        self.handle().leave();
    }
}

/// A cloneable, `Send + Sync` handle to a quorum member.
#[derive(Clone)]
pub struct QuorumHandle {
    shared: Arc<ClusterShared>,
    context: ContextHandle,
}

impl std::fmt::Debug for QuorumHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumHandle").field("leader", &self.is_leader()).finish()
    }
}

impl QuorumHandle {
    /// Asks the member to leave the quorum: returns at once, from any thread, including the loop
    /// itself; any number of times. `Stopped` is the last event.
    pub fn leave(&self) {
        if !self.shared.joined.load(Ordering::Acquire) {
            // No driver to leave through: nothing joined, so just end the loop.
            self.shared.stopped.done();
            self.context.stop();
            return;
        }
        if self.shared.sender.unbounded_send(Input::Leave).is_err() {
            // The driver is gone already (it left, or the loop was unlooped under it).
            self.context.stop();
        }
    }

    /// True while the member acts as leader.
    pub fn is_leader(&self) -> bool {
        self.shared.leader.load(Ordering::Acquire)
    }

    /// The member's election node sequence number, while it has one.
    pub fn sequence(&self) -> Option<i64> {
        let sequence = self.shared.sequence.load(Ordering::Acquire);
        (sequence >= 0).then_some(sequence)
    }

    /// The members as last seen, sorted by sequence.
    pub fn members(&self) -> Vec<Member> {
        self.shared.members.lock().clone()
    }

    /// The members as ZooKeeper holds them now (a follower's `members` is only as fresh as its
    /// last evaluation, and nobody watches the members' data). Blocks the caller for one listing
    /// and one pipelined read; corrupt nodes are skipped with a warning.
    pub fn read_members(&self) -> Result<Vec<Member>, ZkError> {
        let session = self.session().ok_or_else(|| ZkError::SessionClosed {
            operation: "read members",
            path: self.shared.service_path.clone(),
        })?;
        crate::member::read_members(&session, &self.shared.service_path)
    }

    /// The current ZooKeeper session, for a daemon's own ZooKeeper work. A new one replaces it
    /// after `SessionLost`; it is closed when the member leaves (hold it only briefly).
    pub fn session(&self) -> Option<Arc<ZkSession>> {
        self.shared.session.lock().clone()
    }

    /// Publishes the member's health in its election node (read by others through `members`);
    /// it does not change roles by itself: giving way on bad health is the daemon's decision.
    pub fn set_health(&self, healthy: bool) {
        let _ = self.shared.sender.unbounded_send(Input::SetHealth(healthy));
    }

    /// Announces that this member is leaving (`takeover`'s marker, with its own session), so
    /// that no peer takes its refused ports for a crash: call it before closing any port.
    /// `Ok(false)` when the member has no election node (nothing to protect).
    pub fn announce_leaving(&self) -> Result<bool, ZkError> {
        let (Some(session), Some(sequence)) = (self.session(), self.sequence()) else { return Ok(false) };
        let node_name = crate::takeover::member_node_name(sequence);
        crate::takeover::announce_leaving(&session, &self.shared.service_path, &node_name)?;
        Ok(true)
    }

    /// The service's election path.
    pub fn service_path(&self) -> &str {
        &self.shared.service_path
    }

    /// True once the member has left (after `Stopped`).
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.is_done()
    }

    /// Waits until the member has left; false on timeout. Never call it from the event handler:
    /// the driver that would finish leaving is the caller.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        self.shared.stopped.wait_timeout(timeout)
    }

    /// The handle of the loop the member runs on.
    pub fn context(&self) -> ContextHandle {
        self.context.clone()
    }
}
