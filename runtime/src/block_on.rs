//! `block_on`: awaits a future from synchronous code. In a coroutine only the coroutine parks
//! while the future is pending; on a plain thread the thread parks.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::park::{self, Unparker};

/// Polls `future` to completion, parking the caller between wake-ups.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Unparker::current().into_waker();
    let mut context = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        park::park();
    }
}

/// Like `block_on`, giving up (and dropping the future) after `timeout`.
pub fn block_on_timeout<F: Future>(future: F, timeout: Duration) -> Option<F::Output> {
    let deadline = Instant::now() + timeout;
    let mut future = pin!(future);
    let waker = Unparker::current().into_waker();
    let mut context = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return Some(output);
        }
        if Instant::now() >= deadline {
            return None;
        }
        park::park_until(deadline);
    }
}
