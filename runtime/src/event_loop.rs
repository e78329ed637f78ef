//! `EventLoop`, the original's `Loop()`/`Unloop()`: drives a context's coroutines on the calling
//! thread until `unloop`. A `ThreadContext` runs one on its own thread; a daemon's main thread
//! or server thread can run one directly.

use crate::context::{self, ContextHandle, RunError, SchedError, DEFAULT_STACK_SIZE};

/// A coroutine loop driven by whichever thread calls `run`.
pub struct EventLoop {
    handle: ContextHandle,
}

impl EventLoop {
    /// A loop that has not run yet; work can be scheduled on it before `run`.
    pub fn new(name: &str) -> EventLoop {
        EventLoop::with_stack_size(name, DEFAULT_STACK_SIZE)
    }

    /// Like `new`, with coroutine stacks of `stack_size` bytes.
    pub fn with_stack_size(name: &str, stack_size: usize) -> EventLoop {
        EventLoop { handle: ContextHandle::new(name, stack_size) }
    }

    /// Runs the loop on the calling thread until `unloop` is called, then cancels the coroutines
    /// that have not finished (see `context`'s `# Stop`). A loop runs once; it cannot nest inside
    /// another loop or a coroutine.
    ///
    /// # Errors
    ///
    /// [`RunError::Nested`] inside another loop or a coroutine, [`RunError::AlreadyRunning`] while
    /// another thread runs it, [`RunError::Stopped`] when it ran (or was unlooped) before.
    pub fn run(&self) -> Result<(), RunError> {
        context::run_loop(&self.handle)
    }

    /// Asks the loop to return from `run`; callable from any thread or coroutine, any number of
    /// times.
    pub fn unloop(&self) {
        self.handle.stop();
    }

    /// True once `unloop` has been called.
    pub fn is_unlooped(&self) -> bool {
        self.handle.is_stopped()
    }

    /// Runs `f` as a coroutine on this loop.
    ///
    /// # Errors
    ///
    /// [`SchedError::Stopped`] once `unloop` has been called.
    pub fn sched<F>(&self, f: F) -> Result<(), SchedError>
    where
        F: FnOnce() + Send + 'static,
    {
        self.handle.sched(f)
    }

    /// A cloneable handle to schedule work on this loop from elsewhere.
    pub fn handle(&self) -> ContextHandle {
        self.handle.clone()
    }
}

impl AsRef<ContextHandle> for EventLoop {
    fn as_ref(&self) -> &ContextHandle {
        &self.handle
    }
}
