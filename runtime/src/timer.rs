//! `TimerHandle`: a one-shot or fixed-rate repeating callback run as a coroutine on a context.
//! Cancelling (or dropping the handle) guarantees that no tick runs after `cancel` returns.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::context::{ContextHandle, SchedError};
use crate::park::{self, Unparker};
use crate::sync_point::SyncPoint;

const IDLE: u8 = 0;
const TICKING: u8 = 1;
/// Cancel was asked while a tick ran; the tick's end completes it.
const CANCEL_PENDING: u8 = 2;
const CANCELLED: u8 = 3;

struct TimerShared {
    state: AtomicU8,
    /// The timer's coroutine, to wake it on cancel and to recognise a cancel from inside a tick.
    coroutine: Mutex<Option<Unparker>>,
    /// Done when the timer can never tick again.
    finished: SyncPoint,
}

impl TimerShared {
    fn finish(&self) {
        self.state.store(CANCELLED, Ordering::Release);
        self.finished.done();
    }
}

/// A scheduled callback; cancelled when dropped.
///
/// # Examples
///
/// A repeating timer counts its ticks; once `cancel` returns, the count stays put.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use runtime::{ThreadContext, TimerHandle};
///
/// let context = ThreadContext::new("timers")?;
/// let ticks = Arc::new(AtomicU32::new(0));
/// let counter = ticks.clone();
/// let timer = TimerHandle::new(&context, move || {
///     counter.fetch_add(1, Ordering::SeqCst);
/// }, Duration::from_millis(10), true)?;
/// while ticks.load(Ordering::SeqCst) < 3 {
///     std::thread::sleep(Duration::from_millis(5));
/// }
/// timer.cancel();
/// let after_cancel = ticks.load(Ordering::SeqCst);
/// std::thread::sleep(Duration::from_millis(50));
/// assert_eq!(ticks.load(Ordering::SeqCst), after_cancel, "no tick after cancel returned");
/// assert!(timer.is_finished());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TimerHandle {
    shared: Arc<TimerShared>,
}

impl TimerHandle {
    /// Runs `callback` on `context` after `interval`, and then every `interval` if `repeat`
    /// (fixed rate: ticks keep their phase; ticks missed while the context was busy are skipped).
    ///
    /// # Errors
    ///
    /// [`SchedError::Stopped`] when `context` has been stopped: the timer would never run.
    pub fn new<C, F>(context: &C, callback: F, interval: Duration, repeat: bool) -> Result<TimerHandle, SchedError>
    where
        C: AsRef<ContextHandle> + ?Sized,
        F: FnMut() + Send + 'static,
    {
        let shared = Arc::new(TimerShared {
            state: AtomicU8::new(IDLE),
            coroutine: Mutex::new(None),
            finished: SyncPoint::new(),
        });
        let timer = shared.clone();
        context.as_ref().sched(move || run_timer(timer, callback, interval, repeat))?;
        Ok(TimerHandle { shared })
    }

    /// Stops the timer. When this returns no tick is running (unless `cancel` is called from
    /// the timer's own callback, which then finishes its tick) and none will run again.
    pub fn cancel(&self) {
        let shared = &self.shared;
        loop {
            match shared.state.load(Ordering::Acquire) {
                IDLE => {
                    if shared.state.compare_exchange(IDLE, CANCELLED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                        shared.finished.done();
                        if let Some(coroutine) = shared.coroutine.lock().as_ref() {
                            coroutine.unpark();
                        }
                        return;
                    }
                }
                TICKING => {
                    if shared
                        .state
                        .compare_exchange(TICKING, CANCEL_PENDING, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return self.wait_for_tick();
                    }
                }
                CANCEL_PENDING => return self.wait_for_tick(),
                _ => return,
            }
        }
    }

    /// True once the timer can never fire again (cancelled, or a one-shot that has fired).
    pub fn is_finished(&self) -> bool {
        self.shared.finished.is_done()
    }

    fn wait_for_tick(&self) {
        let from_own_tick = self.shared.coroutine.lock().as_ref().is_some_and(Unparker::is_current);
        if !from_own_tick {
            self.shared.finished.wait();
        }
    }
}

impl Drop for TimerHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}

fn run_timer<F: FnMut()>(timer: Arc<TimerShared>, mut callback: F, interval: Duration, repeat: bool) {
    *timer.coroutine.lock() = Some(Unparker::current());
    // If the context stops while this coroutine is parked, it is unwound; waiters must still learn
    // that no tick will come.
    let _finish_on_unwind = FinishOnDrop(&timer);
    let mut next_tick = Instant::now() + interval;
    loop {
        loop {
            if timer.state.load(Ordering::Acquire) != IDLE {
                return;
            }
            if Instant::now() >= next_tick {
                break;
            }
            park::park_until(next_tick);
        }
        if timer.state.compare_exchange(IDLE, TICKING, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return;
        }
        callback();
        if timer.state.compare_exchange(TICKING, IDLE, Ordering::AcqRel, Ordering::Acquire).is_err() || !repeat {
            return; // FinishOnDrop marks it cancelled and wakes the canceller.
        }
        next_tick += interval;
        let now = Instant::now();
        if next_tick <= now {
            let behind = (now - next_tick).as_nanos() / interval.as_nanos().max(1) + 1;
            next_tick += interval * u32::try_from(behind).unwrap_or(u32::MAX);
        }
    }
}

struct FinishOnDrop<'a>(&'a TimerShared);

impl Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}
