//! The coroutine runtime every daemon of the project stands on: named threads, per-thread
//! coroutine contexts, event loops, timers, wait points, a coroutine mutex, signal flags and
//! the exit counter. It knows nothing of ZooKeeper or tasks.
//!
//! Every blocking primitive here (`SyncPoint`, `CoMutex`, `TimerHandle` cancel, `sleep`,
//! `block_on`, joins) parks whichever caller it has: a `ThreadContext` coroutine (only the
//! coroutine parks), a `may` coroutine, or a plain thread.

mod block_on;
mod co_mutex;
mod context;
mod event_loop;
pub mod exit_counter;
mod park;
pub mod rpc;
pub mod signals;
mod sync_point;
mod thread;
mod thread_context;
mod timer;

pub use block_on::{block_on, block_on_timeout};
pub use co_mutex::{CoLockGuard, CoMutex};
pub use context::{
    current_context, is_cancel_unwind, panic_message, ContextHandle, RunError, SchedError, DEFAULT_STACK_SIZE,
};
pub use event_loop::EventLoop;
pub use exit_counter::ExitCounter;
pub use park::{caller_kind, park, park_until, sleep, yield_now, CallerKind, Unparker};
pub use signals::StopFlag;
pub use sync_point::SyncPoint;
pub use thread::{JoinError, Thread};
pub use thread_context::ThreadContext;
pub use timer::TimerHandle;

#[cfg(test)]
mod test_child;
#[cfg(test)]
mod tests;
