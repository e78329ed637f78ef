//! Parking and waking whichever kind of caller is running: a ThreadContext coroutine, a `may`
//! coroutine or a plain thread. Every blocking primitive of the crate is built on this.
//!
//! All three kinds follow the same token rule as `std::thread::park`: an `unpark` that comes
//! before the `park` makes that `park` return at once, and a `park` may also return spuriously,
//! so callers always re-check their condition in a loop.

use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use crate::context::{self, CoroutineState};

/// What kind of caller is running on this thread right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// A coroutine of a `ThreadContext` or `EventLoop` of this crate.
    Context,
    /// A coroutine of `may`'s global scheduler.
    May,
    /// A plain OS thread (including the thread of a context between two coroutines).
    Thread,
}

/// Tells what kind of caller is running.
pub fn caller_kind() -> CallerKind {
    if context::current_coroutine().is_some() {
        CallerKind::Context
    } else if may::coroutine::is_coroutine() {
        CallerKind::May
    } else {
        CallerKind::Thread
    }
}

/// A handle that wakes one parked caller; cheap to clone and `Send`.
#[derive(Clone)]
pub struct Unparker {
    target: Target,
}

#[derive(Clone)]
enum Target {
    Context(Arc<CoroutineState>),
    May(may::coroutine::Coroutine),
    Thread(std::thread::Thread),
}

impl Unparker {
    /// The unparker of the caller that is running now.
    pub fn current() -> Unparker {
        let target = if let Some(state) = context::current_coroutine() {
            Target::Context(state)
        } else if may::coroutine::is_coroutine() {
            Target::May(may::coroutine::current())
        } else {
            Target::Thread(std::thread::current())
        };
        Unparker { target }
    }

    /// Wakes the caller this handle belongs to (or makes its next `park` return at once).
    pub fn unpark(&self) {
        match &self.target {
            Target::Context(state) => state.unpark(),
            Target::May(coroutine) => coroutine.unpark(),
            Target::Thread(thread) => thread.unpark(),
        }
    }

    /// A `std::task::Waker` that unparks this caller, for polling futures.
    pub fn into_waker(self) -> Waker {
        Waker::from(Arc::new(self))
    }
}

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.unpark();
    }
}

/// Parks the running caller until it is unparked (or spuriously).
pub fn park() {
    if let Some(state) = context::current_coroutine() {
        context::park_current(&state);
    } else if may::coroutine::is_coroutine() {
        may::coroutine::park();
    } else {
        std::thread::park();
    }
}

/// Parks the running caller until it is unparked, the deadline passes, or spuriously.
pub fn park_until(deadline: Instant) {
    let now = Instant::now();
    if deadline <= now {
        return;
    }
    if let Some(state) = context::current_coroutine() {
        context::park_current_until(&state, deadline);
    } else if may::coroutine::is_coroutine() {
        may::coroutine::park_timeout(deadline - now);
    } else {
        std::thread::park_timeout(deadline - now);
    }
}

/// Parks the running caller for at least `duration`: only the coroutine when called from one,
/// the whole thread otherwise.
pub fn sleep(duration: Duration) {
    let deadline = Instant::now() + duration;
    match caller_kind() {
        CallerKind::Context => loop {
            if Instant::now() >= deadline {
                return;
            }
            park_until(deadline);
        },
        CallerKind::May => may::coroutine::sleep(duration),
        CallerKind::Thread => std::thread::sleep(duration),
    }
}

/// Lets other coroutines of the same context (or other threads) run, then continues.
#[inline]
pub fn yield_now() {
    if !context::try_yield_current() {
        yield_outside_context();
    }
}

#[cold]
fn yield_outside_context() {
    match caller_kind() {
        CallerKind::May => may::coroutine::yield_now(),
        CallerKind::Context | CallerKind::Thread => std::thread::yield_now(),
    }
}

impl Unparker {
    /// True when this handle belongs to the context coroutine or plain thread running now.
    pub fn is_current(&self) -> bool {
        match &self.target {
            Target::Context(state) => context::current_coroutine().is_some_and(|current| Arc::ptr_eq(&current, state)),
            // `may` gives its coroutine handles no identity to compare; no caller of this
            // function holds the unparker of a `may` coroutine.
            Target::May(_) => false,
            Target::Thread(thread) => {
                context::current_coroutine().is_none()
                    && !may::coroutine::is_coroutine()
                    && std::thread::current().id() == thread.id()
            }
        }
    }
}
