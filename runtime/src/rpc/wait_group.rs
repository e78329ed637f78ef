//! `WaitGroup`: a counter of live work (connections, worker-pool jobs) that any kind of caller
//! (thread, `may` coroutine, context coroutine) can wait on until it reaches zero.

use std::time::Instant;

use parking_lot::Mutex;

use crate::park::{self, Unparker};

/// Counts work in flight; `wait_zero` parks until none is left or a deadline passes.
#[derive(Default)]
pub(crate) struct WaitGroup {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    count: usize,
    waiters: Vec<Unparker>,
}

impl WaitGroup {
    pub(crate) fn new() -> WaitGroup {
        WaitGroup::default()
    }

    pub(crate) fn add(&self) {
        self.state.lock().count += 1;
    }

    pub(crate) fn done(&self) {
        let waiters = {
            let mut state = self.state.lock();
            state.count = state.count.saturating_sub(1);
            if state.count > 0 {
                return;
            }
            std::mem::take(&mut state.waiters)
        };
        for waiter in waiters {
            waiter.unpark();
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.state.lock().count
    }

    /// Waits until the count is zero; true if it is, false if `deadline` passed first.
    pub(crate) fn wait_zero(&self, deadline: Option<Instant>) -> bool {
        loop {
            {
                let mut state = self.state.lock();
                if state.count == 0 {
                    return true;
                }
                if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    return false;
                }
                state.waiters.push(Unparker::current());
            }
            match deadline {
                Some(deadline) => park::park_until(deadline),
                None => park::park(),
            }
        }
    }
}

/// Calls `done` on drop, so a panicking or cancelled worker still leaves the count.
pub(crate) struct DoneOnDrop<'a>(pub(crate) &'a WaitGroup);

impl Drop for DoneOnDrop<'_> {
    fn drop(&mut self) {
        self.0.done();
    }
}
