//! `QuorumServer`, the base of the project's daemons: a quorum member plus the thread that drives
//! its loop, with the lifecycle new → `initialize` → `run` (or `start`) → `stop` → drop.
//!
//! A daemon supplies a [`QuorumHandler`] (its reaction to events, and its own stop in `on_stop`)
//! and runs its own components on the same loop through [`QuorumServer::context`].
//!
//! # Shutdown
//! `stop` (idempotent, from any thread, including the loop itself) asks the member to leave:
//! step down → give up the election node (the successor's watch fires: the hand-over) →
//! `on_stop` → close the ZooKeeper session → `Stopped` → unloop. `run` then returns. Dropping the
//! server stops it and waits for its loop to finish (joining the thread `start` made); dropped on
//! the loop's own thread it does not wait for itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use runtime::{ContextHandle, JoinError, Thread};

use crate::cluster::{QuorumCluster, QuorumHandle};
use crate::config::QuorumConfig;
use crate::election::QuorumHandler;
use crate::error::QuorumError;

/// A quorum member with its loop's thread: the base of a daemon.
pub struct QuorumServer {
    cluster: std::sync::Arc<QuorumCluster>,
    thread: Mutex<Option<Thread<()>>>,
    initialized: AtomicBool,
    /// Set when the loop has been given a thread (by `run` or `start`).
    running: AtomicBool,
}

impl std::fmt::Debug for QuorumServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumServer").field("cluster", &self.cluster).finish()
    }
}

impl QuorumServer {
    /// A server that has not joined yet.
    pub fn new(config: QuorumConfig) -> Result<QuorumServer, QuorumError> {
        Ok(QuorumServer {
            cluster: std::sync::Arc::new(QuorumCluster::new(config)?),
            thread: Mutex::new(None),
            initialized: AtomicBool::new(false),
            running: AtomicBool::new(false),
        })
    }

    /// Installs the daemon's handler and schedules the join; nothing runs until `run`/`start`.
    pub fn initialize<H: QuorumHandler>(&self, handler: H) -> Result<(), QuorumError> {
        self.cluster.join(handler)?;
        self.initialized.store(true, Ordering::Release);
        Ok(())
    }

    /// Runs the loop on the calling thread until the server is stopped.
    pub fn run(&self) -> Result<(), QuorumError> {
        if !self.initialized.load(Ordering::Acquire) {
            return Err(QuorumError::NotInitialized);
        }
        self.running.store(true, Ordering::Release);
        let started = std::time::Instant::now();
        let result = self.cluster.run();
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "quorum server loop returned");
        result
    }

    /// Runs the loop on a thread of its own (named after the loop); `stop` ends it, drop joins it.
    pub fn start(&self) -> Result<(), QuorumError> {
        if !self.initialized.load(Ordering::Acquire) {
            return Err(QuorumError::NotInitialized);
        }
        let mut thread = self.thread.lock();
        if thread.is_some() || self.running.load(Ordering::Acquire) {
            return Err(QuorumError::Run(runtime::RunError::AlreadyRunning));
        }
        self.running.store(true, Ordering::Release);
        let cluster = self.cluster.clone();
        let name = self.cluster.context().name().to_string();
        *thread = Some(Thread::spawn(&name, move || {
            if let Err(error) = cluster.run() {
                tracing::error!(%error, "the quorum server loop did not run");
            }
        })?);
        Ok(())
    }

    /// Leaves the quorum and ends the loop; returns at once (see `# Shutdown`). Idempotent.
    pub fn stop(&self) {
        self.cluster.leave();
    }

    /// Waits until the loop has finished: joins the thread `start` made, or waits for `run` to
    /// return on its thread. From the loop's own thread: `JoinError::SelfJoin`, at once.
    pub fn join(&self) -> Result<(), JoinError> {
        let thread = self.thread.lock().take();
        match thread {
            Some(thread) => thread.join(),
            None if self.running.load(Ordering::Acquire) => self.cluster.context().join(),
            None => Ok(()),
        }
    }

    /// Waits up to `timeout` for the member to have left; false on timeout.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        self.cluster.handle().wait_stopped(timeout)
    }

    /// A handle to query the member (leader? members? session) from anywhere.
    pub fn handle(&self) -> QuorumHandle {
        self.cluster.handle()
    }

    /// The loop's handle: the daemon's own coroutines and timers run here.
    pub fn context(&self) -> ContextHandle {
        self.cluster.context()
    }

    /// True while this member acts as leader.
    pub fn is_leader(&self) -> bool {
        self.cluster.handle().is_leader()
    }
}

impl Drop for QuorumServer {
    fn drop(&mut self) {
        self.stop();
        if !self.running.load(Ordering::Acquire) {
            return;
        }
        match self.join() {
            Ok(()) | Err(JoinError::AlreadyJoined) => {}
            Err(JoinError::SelfJoin) => tracing::error!(
                "QuorumServer dropped on its own loop thread: Resource deadlock avoided; the loop \
                 ends after this coroutine"
            ),
            Err(error) => tracing::error!(%error, "the quorum server thread failed"),
        }
    }
}
