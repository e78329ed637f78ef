//! `SyncPoint`, the original's `Sync`: a caller waits (`wait`, or `wait_and_reset` as the
//! original's `WaitAndReset`) until an asynchronous operation calls `done` — or `run`, the
//! original's `Closure::Run`, which is the same thing — optionally handing over a value.
//! Renamed so it does not shadow Rust's `Sync` marker trait.
//!
//! The state is shared (`Arc`), so a `done` that arrives after the waiter has gone away only
//! touches memory that is still alive: the original's "done on a destroyed waiter" race cannot
//! happen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::park::{self, Unparker};

/// A one-shot (or, with `wait_and_reset`, reusable) completion signal carrying a `T`.
///
/// # Examples
///
/// An operation on another thread hands its result to a waiting caller.
///
/// ```
/// use runtime::SyncPoint;
///
/// let answer = SyncPoint::<u64>::new();
/// let reply = answer.value_callback();
/// let worker = std::thread::spawn(move || reply(6 * 7));
/// assert_eq!(answer.wait_and_reset(), 42);
/// assert!(!answer.is_done(), "reset for the next round");
/// worker.join().unwrap();
/// ```
pub struct SyncPoint<T = ()> {
    inner: Arc<Mutex<State<T>>>,
}

struct State<T> {
    done: bool,
    /// Counts `done` calls, so a waiter notices a done that was reset before it woke.
    generation: u64,
    value: Option<T>,
    waiters: Vec<Unparker>,
}

impl<T> Clone for SyncPoint<T> {
    fn clone(&self) -> Self {
        SyncPoint { inner: self.inner.clone() }
    }
}

impl<T> Default for SyncPoint<T> {
    fn default() -> Self {
        SyncPoint::new()
    }
}

impl<T> std::fmt::Debug for SyncPoint<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncPoint").field("done", &self.is_done()).finish()
    }
}

impl SyncPoint<()> {
    /// Marks the operation done and wakes every waiter.
    pub fn done(&self) {
        self.done_with(());
    }

    /// The original's `Closure::Run`: the same as `done`. It never waits; `wait` does.
    pub fn run(&self) {
        self.done();
    }

    /// A closure that calls `done`, to hand to an asynchronous operation as its completion.
    pub fn callback(&self) -> impl FnOnce() + Send + 'static {
        let sync_point = self.clone();
        move || sync_point.done()
    }
}

impl<T> SyncPoint<T> {
    /// A signal that is not done yet.
    pub fn new() -> SyncPoint<T> {
        SyncPoint {
            inner: Arc::new(Mutex::new(State { done: false, generation: 0, value: None, waiters: Vec::new() })),
        }
    }

    /// Marks the operation done with `value` and wakes every waiter.
    pub fn done_with(&self, value: T) {
        let waiters = {
            let mut state = self.inner.lock();
            state.done = true;
            state.generation += 1;
            state.value = Some(value);
            std::mem::take(&mut state.waiters)
        };
        for waiter in waiters {
            waiter.unpark();
        }
    }

    /// A closure that calls `done_with`, for operations that complete with a value.
    pub fn value_callback(&self) -> impl FnOnce(T) + Send + 'static
    where
        T: Send + 'static,
    {
        let sync_point = self.clone();
        move |value| sync_point.done_with(value)
    }

    /// True once `done` has been called (and not reset since).
    pub fn is_done(&self) -> bool {
        self.inner.lock().done
    }

    /// Waits until the operation is done. Parks only the coroutine when called from one.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Waits until the operation is done or `timeout` passes; true when it is done.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Some(Instant::now() + timeout))
    }

    /// Waits for the next value, takes it and resets the signal for the next round.
    /// Each `done_with` is meant for one `wait_and_reset`.
    pub fn wait_and_reset(&self) -> T {
        loop {
            self.wait();
            let mut state = self.inner.lock();
            if let Some(value) = state.value.take() {
                state.done = false;
                return value;
            }
        }
    }

    /// Takes the value handed over by `done_with`, if it is there.
    pub fn take(&self) -> Option<T> {
        self.inner.lock().value.take()
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let start_generation = {
            let mut state = self.inner.lock();
            if state.done {
                return true;
            }
            state.waiters.push(Unparker::current());
            state.generation
        };
        loop {
            {
                let state = self.inner.lock();
                if state.done || state.generation != start_generation {
                    return true;
                }
            }
            match deadline {
                Some(deadline) if Instant::now() >= deadline => return false,
                Some(deadline) => park::park_until(deadline),
                None => park::park(),
            }
        }
    }
}
