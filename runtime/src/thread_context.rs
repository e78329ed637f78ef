//! `ThreadContext`: a named OS thread that runs its own loop of coroutines. `sched(f)` runs `f`
//! as a coroutine there; a coroutine never leaves that thread.
//!
//! Dropping a `ThreadContext` stops and joins it. Dropped (or joined) from its own thread — the
//! original daemon's crash — it logs the error, does not wait for itself, kills nothing, and
//! leaves the join to any `ContextHandle` still held.

use std::io;

use crate::context::{self, ContextHandle, SchedError, DEFAULT_STACK_SIZE};
use crate::thread::{JoinError, Thread};

/// A named OS thread running a coroutine loop.
///
/// # Examples
///
/// A coroutine waiting on a [`SyncPoint`](crate::SyncPoint) parks only itself: another
/// coroutine of the same context runs on the same thread meanwhile and wakes it.
///
/// ```
/// use runtime::{SyncPoint, ThreadContext};
///
/// let context = ThreadContext::new("example")?;
/// let greeting = SyncPoint::<&'static str>::new();
/// let answer = SyncPoint::<String>::new();
/// let (waited, reply) = (greeting.clone(), answer.value_callback());
/// context.sched(move || {
///     let word = waited.wait_and_reset();
///     let thread = std::thread::current().name().unwrap_or_default().to_string();
///     reply(format!("{word} on {thread}"));
/// })?;
/// context.sched(move || greeting.done_with("hello"))?;
/// assert_eq!(answer.wait_and_reset(), "hello on example");
/// context.stop();
/// context.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ThreadContext {
    handle: ContextHandle,
}

impl ThreadContext {
    /// Starts a thread called `name` running an empty loop.
    ///
    /// # Errors
    ///
    /// The OS error when the thread cannot be created.
    pub fn new(name: &str) -> io::Result<ThreadContext> {
        ThreadContext::with_stack_size(name, DEFAULT_STACK_SIZE)
    }

    /// Like `new`, with coroutine stacks of `stack_size` bytes.
    ///
    /// # Errors
    ///
    /// The OS error when the thread cannot be created.
    pub fn with_stack_size(name: &str, stack_size: usize) -> io::Result<ThreadContext> {
        let handle = ContextHandle::new(name, stack_size);
        let loop_handle = handle.clone();
        let thread = Thread::spawn(name, move || {
            if let Err(error) = context::run_loop(&loop_handle) {
                tracing::error!(context = %loop_handle.name(), %error, "context loop did not run");
            }
        })?;
        handle.set_thread(thread);
        Ok(ThreadContext { handle })
    }

    /// The context's (and its thread's) name.
    pub fn name(&self) -> &str {
        self.handle.name()
    }

    /// Runs `f` as a coroutine on this context; callable from any thread or coroutine.
    ///
    /// # Errors
    ///
    /// [`SchedError::Stopped`] once the context has been asked to stop.
    pub fn sched<F>(&self, f: F) -> Result<(), SchedError>
    where
        F: FnOnce() + Send + 'static,
    {
        self.handle.sched(f)
    }

    /// Asks the context to finish; returns at once.
    pub fn stop(&self) {
        self.handle.stop();
    }

    /// Waits for the context's thread to finish (after `stop`). From the context's own thread
    /// it returns `JoinError::SelfJoin` at once.
    ///
    /// # Errors
    ///
    /// [`JoinError::SelfJoin`] from the context's own thread; [`JoinError::Panicked`] when its
    /// thread panicked outside a coroutine.
    pub fn join(&self) -> Result<(), JoinError> {
        self.handle.join()
    }

    /// True when the caller runs on this context's thread.
    pub fn is_current(&self) -> bool {
        self.handle.is_current()
    }

    /// A cloneable handle: schedule, stop and join from anywhere.
    pub fn handle(&self) -> ContextHandle {
        self.handle.clone()
    }
}

impl AsRef<ContextHandle> for ThreadContext {
    fn as_ref(&self) -> &ContextHandle {
        &self.handle
    }
}

impl AsRef<ContextHandle> for ContextHandle {
    fn as_ref(&self) -> &ContextHandle {
        self
    }
}

impl Drop for ThreadContext {
    fn drop(&mut self) {
        self.handle.stop();
        match self.handle.join() {
            Ok(()) | Err(JoinError::AlreadyJoined) => {}
            Err(JoinError::SelfJoin) => tracing::error!(
                context = %self.handle.name(),
                "ThreadContext dropped on its own thread: Resource deadlock avoided; \
                 the context stops after this coroutine and its owner's handle joins it"
            ),
            Err(error) => tracing::error!(context = %self.handle.name(), %error, "context thread failed"),
        }
    }
}
