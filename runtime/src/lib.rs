//! The coroutine runtime.
