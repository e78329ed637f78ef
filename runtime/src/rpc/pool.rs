//! `WorkerPool`, the original's ThreadManager: a fixed set of `ThreadContext`s that run the
//! CPU-heavy handlers of every server that shares it. A caller hands a job over and parks on
//! a `SyncPoint` until the job's answer comes back.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::error::RpcError;
use crate::context::panic_message;
use crate::sync_point::SyncPoint;
use crate::thread_context::ThreadContext;

/// Worker contexts shared by any number of servers (pass the same `Arc<WorkerPool>` to each
/// server's config). Dropping the last `Arc` stops and joins its threads.
pub struct WorkerPool {
    name: String,
    contexts: Mutex<Vec<ThreadContext>>,
    handles: Vec<crate::context::ContextHandle>,
    next: AtomicUsize,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool").field("name", &self.name).field("n_threads", &self.handles.len()).finish()
    }
}

impl WorkerPool {
    /// Starts `n_threads` (at least one) contexts named `<name>-<i>`.
    ///
    /// # Errors
    ///
    /// [`RpcError::Spawn`] when a context's thread cannot be started; the contexts started so far
    /// are stopped and joined.
    pub fn new(name: &str, n_threads: usize) -> Result<std::sync::Arc<WorkerPool>, RpcError> {
        let n_threads = n_threads.max(1);
        let mut contexts = Vec::with_capacity(n_threads);
        for index in 0..n_threads {
            let context_name = format!("{name}-{index}");
            let context = ThreadContext::new(&context_name)
                .map_err(|source| RpcError::Spawn { what: context_name.clone(), source })?;
            contexts.push(context);
        }
        let handles = contexts.iter().map(ThreadContext::handle).collect();
        Ok(std::sync::Arc::new(WorkerPool {
            name: name.to_string(),
            contexts: Mutex::new(contexts),
            handles,
            next: AtomicUsize::new(0),
        }))
    }

    /// One context per CPU.
    ///
    /// # Errors
    ///
    /// As [`WorkerPool::new`].
    pub fn with_default_size(name: &str) -> Result<std::sync::Arc<WorkerPool>, RpcError> {
        let n_threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        WorkerPool::new(name, n_threads)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn n_threads(&self) -> usize {
        self.handles.len()
    }

    /// True when the caller runs on one of the pool's threads.
    pub fn is_current(&self) -> bool {
        self.handles.iter().any(|handle| handle.is_current())
    }

    /// True once `stop` has been called.
    pub fn is_stopped(&self) -> bool {
        self.handles.iter().all(|handle| handle.is_stopped())
    }

    /// Runs `job` on one of the pool's contexts (round robin) and waits for its result; only
    /// the calling coroutine parks. A panic in the job is returned as `JobPanicked`; a pool
    /// that is stopped (before or during the job) gives `PoolStopped`.
    ///
    /// # Errors
    ///
    /// [`RpcError::JobPanicked`] with the panic's message; [`RpcError::PoolStopped`] when the pool
    /// is stopped before the job ran or while it ran.
    pub fn run<T, F>(&self, job: F) -> Result<T, RpcError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let answer: SyncPoint<Result<T, RpcError>> = SyncPoint::new();
        let guard = AnswerOnDrop { answer: answer.clone(), pool: self.name.clone() };
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        let scheduled = self.handles[index].sched(move || {
            let guard = guard;
            let outcome =
                catch_unwind(AssertUnwindSafe(job)).map_err(|panic| RpcError::JobPanicked(panic_message(&*panic)));
            guard.answer.done_with(outcome);
        });
        if scheduled.is_err() {
            return Err(RpcError::PoolStopped(self.name.clone()));
        }
        answer.wait();
        answer.take().unwrap_or_else(|| Err(RpcError::PoolStopped(self.name.clone())))
    }

    /// Stops every context and joins its thread; jobs parked at that moment are unwound
    /// (their callers get `PoolStopped`). Idempotent; from one of the pool's own threads it
    /// stops without joining and leaves the join to the pool's drop.
    pub fn stop(&self) {
        for handle in &self.handles {
            handle.stop();
        }
        if self.is_current() {
            tracing::warn!(pool = %self.name, "worker pool stopped from its own thread; joined later");
            return;
        }
        let contexts = std::mem::take(&mut *self.contexts.lock());
        drop(contexts); // Each ThreadContext joins its thread on drop.
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Answers the waiting caller with `PoolStopped` if the job is dropped before it answered
/// (refused by a stopped context, or unwound by a stop while parked).
struct AnswerOnDrop<T> {
    answer: SyncPoint<Result<T, RpcError>>,
    pool: String,
}

impl<T> Drop for AnswerOnDrop<T> {
    fn drop(&mut self) {
        if !self.answer.is_done() {
            self.answer.done_with(Err(RpcError::PoolStopped(self.pool.clone())));
        }
    }
}
