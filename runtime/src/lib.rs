//! The coroutine runtime every daemon of the project stands on: named threads, per-thread
//! coroutine contexts, event loops, timers, wait points, a coroutine mutex, signal flags and
//! the exit counter. It knows nothing of ZooKeeper or tasks.

pub mod exit_counter;
pub mod signals;

pub use exit_counter::ExitCounter;
