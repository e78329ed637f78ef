//! A named, joinable OS thread whose join from the thread itself is an error, not a deadlock.
//!
//! The original daemon called `exit()` on its dispatcher thread; the destructors then tried to
//! join that thread from itself, `pthread_join` failed with `EDEADLK` ("Resource deadlock
//! avoided") and the process aborted. Here that join returns [`JoinError::SelfJoin`] at once.

use std::io;
use std::thread::{JoinHandle, ThreadId};

use parking_lot::Mutex;

use crate::context::panic_message;
use crate::sync_point::SyncPoint;

/// Why a join did not give the thread's result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The caller runs on the thread it tried to join.
    #[error("a thread cannot join itself (Resource deadlock avoided)")]
    SelfJoin,
    /// The thread's function panicked; the message is kept.
    #[error("the thread panicked: {0}")]
    Panicked(String),
    /// Somebody joined this thread already.
    #[error("the thread has already been joined")]
    AlreadyJoined,
}

/// A named OS thread; dropping it joins it (or, from the thread itself, leaves it detached).
pub struct Thread<T> {
    name: String,
    id: ThreadId,
    handle: Mutex<Option<JoinHandle<T>>>,
    finished: SyncPoint,
}

impl<T: Send + 'static> Thread<T> {
    /// Starts `f` on a new OS thread called `name` (Linux shows the first 15 bytes).
    ///
    /// # Errors
    ///
    /// The OS error when the thread cannot be created (out of memory or threads).
    pub fn spawn<F>(name: &str, f: F) -> io::Result<Thread<T>>
    where
        F: FnOnce() -> T + Send + 'static,
    {
        let finished = SyncPoint::new();
        let finished_by_thread = finished.clone();
        let handle = std::thread::Builder::new().name(name.to_string()).spawn(move || {
            // Signals the end even when `f` panics, so joiners never wait forever.
            let _finished = FinishOnDrop(finished_by_thread);
            f()
        })?;
        Ok(Thread { name: name.to_string(), id: handle.thread().id(), handle: Mutex::new(Some(handle)), finished })
    }
}

impl<T> Thread<T> {
    /// The name the thread was given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The thread's id.
    pub fn id(&self) -> ThreadId {
        self.id
    }

    /// True when the caller runs on this thread.
    pub fn is_current(&self) -> bool {
        std::thread::current().id() == self.id
    }

    /// True once the thread's function has returned or panicked.
    pub fn is_finished(&self) -> bool {
        self.finished.is_done()
    }

    /// Waits for the thread to finish and returns its result. A coroutine caller is parked,
    /// not its thread. From the thread itself: `JoinError::SelfJoin`, at once.
    ///
    /// # Errors
    ///
    /// [`JoinError::SelfJoin`] from the thread itself, [`JoinError::Panicked`] with the panic's
    /// message, [`JoinError::AlreadyJoined`] when somebody joined it before.
    pub fn join(&self) -> Result<T, JoinError> {
        if self.is_current() {
            return Err(JoinError::SelfJoin);
        }
        let handle = self.handle.lock().take().ok_or(JoinError::AlreadyJoined)?;
        self.finished.wait();
        handle.join().map_err(|panic| JoinError::Panicked(panic_message(&*panic)))
    }
}

impl<T> Drop for Thread<T> {
    fn drop(&mut self) {
        if self.handle.lock().is_none() {
            return;
        }
        if self.is_current() {
            tracing::debug!(thread = %self.name, "thread handle dropped on its own thread; the thread is left detached");
            return;
        }
        match self.join() {
            Ok(_) | Err(JoinError::AlreadyJoined) => {}
            Err(error) => tracing::error!(thread = %self.name, %error, "joined a thread that failed"),
        }
    }
}

struct FinishOnDrop(SyncPoint);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.done();
    }
}
