//! The scheduler core: a run queue of `generator` coroutines driven by one OS thread, so a
//! coroutine never migrates (thread-locals and `Rc` stay valid), plus the handle other threads
//! use to schedule work on it. `EventLoop` drives it on the calling thread; `ThreadContext`
//! drives it on a thread of its own.
//!
//! # Stop
//! Once stop is requested the loop finishes the coroutine that is running (at its next park or
//! yield), runs nothing else, and cancels every coroutine that has not finished: each is
//! unwound on the context's own thread, so its destructors run where its `Rc`s live. Work
//! scheduled after the stop is refused with [`SchedError::Stopped`].

use std::cell::{Cell, RefCell};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::ThreadId;
use std::time::Instant;

use crossbeam::queue::SegQueue;
use generator::{Generator, Scope};
use parking_lot::{Condvar, Mutex};

use crate::sync_point::SyncPoint;
use crate::thread::{JoinError, Thread};

mod worker;

/// Stack size of a context coroutine, in bytes, unless the context is built with another.
pub const DEFAULT_STACK_SIZE: usize = 128 * 1024;

/// How long an idle context spins for new work before it sleeps.
const IDLE_SPIN: std::time::Duration = std::time::Duration::from_micros(20);

/// How many finished coroutine stacks a context keeps for reuse.
const STACK_POOL_CAPACITY: usize = 256;

/// Why `sched` refused a closure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SchedError {
    #[error("the context has been stopped")]
    Stopped,
}

type Job = Box<dyn FnOnce() + Send + 'static>;

enum Runnable {
    Spawn(Job),
    Wake(Arc<CoroutineState>),
}

const RUNNING: u8 = 0;
const NOTIFIED: u8 = 1;
const PARKED: u8 = 2;

/// The part of a coroutine that wakers hold: its id and its park state.
pub(crate) struct CoroutineState {
    id: u64,
    state: AtomicU8,
    scheduler: Weak<Shared>,
}

impl CoroutineState {
    /// Makes the coroutine runnable again, or its next park return at once.
    pub(crate) fn unpark(self: &Arc<Self>) {
        if self.state.swap(NOTIFIED, Ordering::AcqRel) == PARKED {
            if let Some(shared) = self.scheduler.upgrade() {
                shared.inject(Runnable::Wake(self.clone()));
            }
        }
    }
}

/// What the scheduler shares with every thread that schedules work on it.
pub(crate) struct Shared {
    name: String,
    stack_size: usize,
    injected: SegQueue<Runnable>,
    /// Set after every push to `injected`, so the loop polls one flag instead of the queue.
    has_injected: AtomicBool,
    stop_requested: AtomicBool,
    running_thread: Mutex<Option<ThreadId>>,
    idle: Mutex<()>,
    idle_wakeup: Condvar,
    sleeping: AtomicBool,
    next_coroutine_id: AtomicU64,
    n_live: AtomicUsize,
    /// Set when the loop has finished cancelling its coroutines and returned.
    exited: SyncPoint,
    /// The OS thread that runs this scheduler, when a `ThreadContext` owns one.
    thread: Mutex<Option<Thread<()>>>,
}

impl Shared {
    fn inject(&self, runnable: Runnable) {
        self.injected.push(runnable);
        self.has_injected.store(true, Ordering::Release);
        self.wake_thread();
    }

    fn wake_thread(&self) {
        // Pairs with the fence in `wait_idle`: either the loop sees our push, or we see it asleep.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            let _guard = self.idle.lock();
            self.idle_wakeup.notify_one();
        }
    }

    fn is_stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Acquire)
    }
}

/// A cheap, cloneable, `Send + Sync` handle to a context: schedules coroutines on it, stops it,
/// joins the thread that runs it.
#[derive(Clone)]
pub struct ContextHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for ContextHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextHandle").field("name", &self.shared.name).finish()
    }
}

impl ContextHandle {
    pub(crate) fn new(name: &str, stack_size: usize) -> ContextHandle {
        ContextHandle {
            shared: Arc::new(Shared {
                name: name.to_string(),
                stack_size,
                injected: SegQueue::new(),
                has_injected: AtomicBool::new(false),
                stop_requested: AtomicBool::new(false),
                running_thread: Mutex::new(None),
                idle: Mutex::new(()),
                idle_wakeup: Condvar::new(),
                sleeping: AtomicBool::new(false),
                next_coroutine_id: AtomicU64::new(1),
                n_live: AtomicUsize::new(0),
                exited: SyncPoint::new(),
                thread: Mutex::new(None),
            }),
        }
    }

    /// The context's name (also its thread's name when it has its own thread).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Runs `f` as a new coroutine on this context; callable from any thread or coroutine.
    ///
    /// # Errors
    ///
    /// [`SchedError::Stopped`] once the context has been asked to stop.
    pub fn sched<F>(&self, f: F) -> Result<(), SchedError>
    where
        F: FnOnce() + Send + 'static,
    {
        if self.shared.is_stop_requested() {
            return Err(SchedError::Stopped);
        }
        self.shared.inject(Runnable::Spawn(Box::new(f)));
        Ok(())
    }

    /// Asks the context to finish: see the module's `# Stop` section. Returns at once.
    pub fn stop(&self) {
        if !self.shared.stop_requested.swap(true, Ordering::AcqRel) {
            tracing::debug!(context = %self.shared.name, "stop requested");
        }
        self.shared.wake_thread();
    }

    /// True once `stop` has been called.
    pub fn is_stopped(&self) -> bool {
        self.shared.is_stop_requested()
    }

    /// True when the caller runs on the thread that drives this context.
    pub fn is_current(&self) -> bool {
        *self.shared.running_thread.lock() == Some(std::thread::current().id())
    }

    /// Coroutines started on this context that have neither finished nor been cancelled.
    pub fn n_live_coroutines(&self) -> usize {
        self.shared.n_live.load(Ordering::Acquire)
    }

    /// Waits until the context has stopped and, when it owns a thread, joins that thread.
    /// From the context's own thread this returns `JoinError::SelfJoin` at once: the thread
    /// cannot wait for itself, and the join is left to whoever owns a handle.
    ///
    /// # Errors
    ///
    /// [`JoinError::SelfJoin`] from the context's own thread, [`JoinError::Panicked`] when its
    /// thread panicked outside a coroutine.
    pub fn join(&self) -> Result<(), JoinError> {
        if self.is_current() {
            return Err(JoinError::SelfJoin);
        }
        let thread = self.shared.thread.lock().take();
        match thread {
            Some(thread) => {
                self.shared.exited.wait();
                thread.join()
            }
            // A loop driven by a caller's own thread: wait until `run` returned, if it ran.
            None => {
                if self.shared.running_thread.lock().is_some() {
                    self.shared.exited.wait();
                }
                Ok(())
            }
        }
    }

    pub(crate) fn set_thread(&self, thread: Thread<()>) {
        *self.shared.thread.lock() = Some(thread);
    }

    pub(crate) fn has_exited(&self) -> bool {
        self.shared.exited.is_done()
    }
}

/// Why the running coroutine gave control back to the loop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum YieldReason {
    Yield,
    Park,
}

struct Coroutine {
    generator: Generator<'static, (), ()>,
    state: Arc<CoroutineState>,
    /// The generator's `Scope`, on the coroutine's own stack; null until its first run.
    scope: *mut (),
}

/// The scope type every coroutine body receives; yielding through it skips generator's dynamic
/// type check of the yielded value.
type CoroutineScope = Scope<'static, 'static, (), ()>;

struct TimerEntry {
    deadline: Instant,
    sequence: u64,
    coroutine: Weak<CoroutineState>,
}

impl PartialEq for TimerEntry {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline && self.sequence == other.sequence
    }
}
impl Eq for TimerEntry {}
impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerEntry {
    // Reversed, so that the std max-heap pops the earliest deadline first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.deadline, other.sequence).cmp(&(self.deadline, self.sequence))
    }
}

/// The run loop's own state; lives on the stack of the thread that drives the context.
struct Worker {
    shared: Arc<Shared>,
    ready: RefCell<VecDeque<Box<Coroutine>>>,
    parked: RefCell<HashMap<u64, Box<Coroutine>>>,
    timers: RefCell<BinaryHeap<TimerEntry>>,
    timer_sequence: Cell<u64>,
    stack_pool: RefCell<Vec<Generator<'static, (), ()>>>,
    /// The state of the coroutine being resumed: points into `resume`'s (or `cancel`'s) frame,
    /// null between coroutines. A raw pointer so that a switch costs no reference counting.
    running: Cell<*const Arc<CoroutineState>>,
    /// The running coroutine's `Scope`, to yield from any depth of its stack.
    running_scope: Cell<*mut ()>,
    yield_reason: Cell<YieldReason>,
}

thread_local! {
    static WORKER: Cell<*const Worker> = const { Cell::new(std::ptr::null()) };
}

fn with_worker<R>(f: impl FnOnce(&Worker) -> R) -> Option<R> {
    let worker = WORKER.with(|w| w.get());
    if worker.is_null() {
        None
    } else {
        // SAFETY: the pointer is set only while `run_loop` (which owns the Worker) is on this thread's stack.
        Some(f(unsafe { &*worker }))
    }
}

/// The state of the context coroutine running on this thread, if one is.
pub(crate) fn current_coroutine() -> Option<Arc<CoroutineState>> {
    with_worker(|worker| {
        let running = worker.running.get();
        // SAFETY: non-null only while the coroutine it points to is being resumed on this thread.
        (!running.is_null()).then(|| unsafe { (*running).clone() })
    })
    .flatten()
}

/// The handle of the context whose loop this thread is driving, if any.
pub fn current_context() -> Option<ContextHandle> {
    with_worker(|worker| ContextHandle { shared: worker.shared.clone() })
}

fn switch_out(reason: YieldReason) {
    let scope = with_worker(|worker| {
        worker.yield_reason.set(reason);
        worker.running_scope.get()
    });
    yield_through(scope.unwrap_or(std::ptr::null_mut()));
}

#[inline]
fn yield_through(scope: *mut ()) {
    if scope.is_null() {
        // Only reachable when a caller bypassed the `running` check; nothing to yield to.
        return;
    }
    // SAFETY: the scope lives on this coroutine's stack, which is the stack we are running on.
    unsafe { (*(scope as *mut CoroutineScope)).yield_with(()) }
}

/// Yields the running context coroutine, if there is one; false when the caller is not one.
#[inline]
pub(crate) fn try_yield_current() -> bool {
    let scope = with_worker(|worker| {
        if worker.running.get().is_null() {
            return std::ptr::null_mut();
        }
        worker.yield_reason.set(YieldReason::Yield);
        worker.running_scope.get()
    });
    match scope {
        Some(scope) if !scope.is_null() => {
            yield_through(scope);
            true
        }
        _ => false,
    }
}

/// Parks the running context coroutine (token semantics, see `park`).
pub(crate) fn park_current(state: &Arc<CoroutineState>) {
    if state.state.compare_exchange(NOTIFIED, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_ok() {
        return;
    }
    switch_out(YieldReason::Park);
    state.state.store(RUNNING, Ordering::Release);
}

/// Parks the running context coroutine until unparked or until `deadline`.
pub(crate) fn park_current_until(state: &Arc<CoroutineState>, deadline: Instant) {
    with_worker(|worker| {
        let sequence = worker.timer_sequence.get();
        worker.timer_sequence.set(sequence + 1);
        worker.timers.borrow_mut().push(TimerEntry { deadline, sequence, coroutine: Arc::downgrade(state) });
    });
    park_current(state);
}

/// Why `run_loop` could not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("this thread is already driving a context loop; loops cannot nest")]
    Nested,
    #[error("the loop is already running on another thread")]
    AlreadyRunning,
    #[error("the loop was stopped and cannot run again")]
    Stopped,
}

/// Drives the context on the calling thread until stop is requested, then cancels what is left.
pub(crate) fn run_loop(handle: &ContextHandle) -> Result<(), RunError> {
    if with_worker(|_| ()).is_some() || may::coroutine::is_coroutine() {
        return Err(RunError::Nested);
    }
    {
        let mut running_thread = handle.shared.running_thread.lock();
        if running_thread.is_some() {
            return Err(RunError::AlreadyRunning);
        }
        if handle.has_exited() {
            return Err(RunError::Stopped);
        }
        *running_thread = Some(std::thread::current().id());
    }
    let worker = Worker {
        shared: handle.shared.clone(),
        ready: RefCell::new(VecDeque::new()),
        parked: RefCell::new(HashMap::new()),
        timers: RefCell::new(BinaryHeap::new()),
        timer_sequence: Cell::new(0),
        stack_pool: RefCell::new(Vec::new()),
        running: Cell::new(std::ptr::null()),
        running_scope: Cell::new(std::ptr::null_mut()),
        yield_reason: Cell::new(YieldReason::Yield),
    };
    WORKER.with(|w| w.set(&worker));
    worker.run();
    worker.cancel_all();
    WORKER.with(|w| w.set(std::ptr::null()));
    drop(worker);
    *handle.shared.running_thread.lock() = None;
    handle.shared.exited.done();
    Ok(())
}

/// True when a caught panic payload is the unwind that cancels a coroutine whose context is
/// stopping. Code that catches panics inside a coroutine must let this one go on
/// (`std::panic::resume_unwind`), or the coroutine cannot be cancelled.
pub fn is_cancel_unwind(payload: &(dyn std::any::Any + Send)) -> bool {
    payload.is::<generator::Error>()
}

/// The message of a caught panic payload (a `&str` or a `String`, as `panic!` makes them).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}
