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
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::ThreadId;
use std::time::Instant;

use crossbeam::queue::SegQueue;
use generator::{Generator, Gn, Scope};
use parking_lot::{Condvar, Mutex};

use crate::sync_point::SyncPoint;
use crate::thread::{JoinError, Thread};

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

impl Worker {
    fn run(&self) {
        loop {
            self.take_injected();
            self.fire_timers();
            if self.shared.is_stop_requested() {
                return;
            }
            let n_ready = self.ready.borrow().len();
            if n_ready == 0 {
                self.wait_idle();
                continue;
            }
            for _ in 0..n_ready {
                let Some(mut coroutine) = self.ready.borrow_mut().pop_front() else { break };
                // A coroutine that yields while nothing else could run (no other ready coroutine,
                // no injected work, no timer, no stop) is resumed at once, skipping the queue.
                while let Some(yielded) = self.resume(coroutine) {
                    if self.is_alone() {
                        coroutine = yielded;
                    } else {
                        self.ready.borrow_mut().push_back(yielded);
                        break;
                    }
                }
                if self.shared.is_stop_requested() {
                    return;
                }
            }
        }
    }

    fn is_alone(&self) -> bool {
        self.ready.borrow().is_empty()
            && !self.shared.has_injected.load(Ordering::Relaxed)
            && self.timers.borrow().is_empty()
            && !self.shared.is_stop_requested()
    }

    fn take_injected(&self) {
        // A push that lands after the swap sets the flag again, so it is taken next round.
        if !self.shared.has_injected.load(Ordering::Relaxed) || !self.shared.has_injected.swap(false, Ordering::Acquire)
        {
            return;
        }
        while let Some(runnable) = self.shared.injected.pop() {
            match runnable {
                Runnable::Spawn(job) => {
                    let coroutine = self.new_coroutine(job);
                    self.ready.borrow_mut().push_back(coroutine);
                }
                Runnable::Wake(state) => {
                    if let Some(coroutine) = self.parked.borrow_mut().remove(&state.id) {
                        self.ready.borrow_mut().push_back(coroutine);
                    }
                }
            }
        }
    }

    fn fire_timers(&self) {
        if self.timers.borrow().is_empty() {
            return;
        }
        let now = Instant::now();
        loop {
            let entry = {
                let mut timers = self.timers.borrow_mut();
                match timers.peek() {
                    Some(entry) if entry.deadline <= now => timers.pop(),
                    _ => None,
                }
            };
            match entry {
                Some(entry) => {
                    if let Some(state) = entry.coroutine.upgrade() {
                        state.unpark();
                    }
                }
                None => break,
            }
        }
        // Wakes of our own coroutines went through the injected queue; take them now.
        self.take_injected();
    }

    fn wait_idle(&self) {
        // A cross-thread wake-up through the condition variable costs ~10 us here; work that
        // arrives within a few microseconds (the answer to a request this context just sent)
        // is picked up by a short spin instead.
        let spin_until = Instant::now() + IDLE_SPIN;
        loop {
            for _ in 0..64 {
                if self.shared.has_injected.load(Ordering::Acquire) || self.shared.is_stop_requested() {
                    return;
                }
                std::hint::spin_loop();
            }
            if Instant::now() >= spin_until {
                break;
            }
        }
        let deadline = self.timers.borrow().peek().map(|entry| entry.deadline);
        let mut guard = self.shared.idle.lock();
        self.shared.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.shared.injected.is_empty() && !self.shared.is_stop_requested() {
            match deadline {
                Some(deadline) => {
                    self.shared.idle_wakeup.wait_until(&mut guard, deadline);
                }
                None => self.shared.idle_wakeup.wait(&mut guard),
            }
        }
        self.shared.sleeping.store(false, Ordering::SeqCst);
    }

    fn new_coroutine(&self, job: Job) -> Box<Coroutine> {
        let shared = self.shared.clone();
        shared.n_live.fetch_add(1, Ordering::AcqRel);
        let body = move |mut scope: Scope<'_, 'static, (), ()>| {
            with_worker(|worker| worker.running_scope.set(&mut scope as *mut Scope<'_, 'static, (), ()> as *mut ()));
            job();
        };
        let generator = match self.stack_pool.borrow_mut().pop() {
            Some(mut generator) => {
                generator.scoped_init(body);
                generator
            }
            None => Gn::<()>::new_scoped_opt(self.shared.stack_size / std::mem::size_of::<usize>(), body),
        };
        let id = self.shared.next_coroutine_id.fetch_add(1, Ordering::Relaxed);
        // Boxed: the run queue moves one pointer per switch instead of the whole struct.
        Box::new(Coroutine {
            generator,
            scope: std::ptr::null_mut(),
            state: Arc::new(CoroutineState {
                id,
                state: AtomicU8::new(RUNNING),
                scheduler: Arc::downgrade(&self.shared),
            }),
        })
    }

    /// Runs the coroutine until it yields, parks or finishes; gives it back when it yielded.
    fn resume(&self, mut coroutine: Box<Coroutine>) -> Option<Box<Coroutine>> {
        self.running.set(&coroutine.state);
        self.running_scope.set(coroutine.scope);
        self.yield_reason.set(YieldReason::Yield);
        let outcome = catch_unwind(AssertUnwindSafe(|| coroutine.generator.resume()));
        self.running.set(std::ptr::null());
        coroutine.scope = self.running_scope.replace(std::ptr::null_mut());
        match outcome {
            Err(panic) => {
                tracing::error!(
                    context = %self.shared.name,
                    panic = %panic_message(&*panic),
                    "a coroutine panicked; it is dropped and the context goes on"
                );
                self.finished(*coroutine, false);
                None
            }
            Ok(_) if coroutine.generator.is_done() => {
                self.finished(*coroutine, true);
                None
            }
            Ok(_) => match self.yield_reason.get() {
                YieldReason::Yield => Some(coroutine),
                YieldReason::Park => {
                    let parked = coroutine
                        .state
                        .state
                        .compare_exchange(RUNNING, PARKED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok();
                    if parked {
                        self.parked.borrow_mut().insert(coroutine.state.id, coroutine);
                    } else {
                        // Unparked between its park and now: run it again.
                        self.ready.borrow_mut().push_back(coroutine);
                    }
                    None
                }
            },
        }
    }

    fn finished(&self, coroutine: Coroutine, reusable: bool) {
        self.shared.n_live.fetch_sub(1, Ordering::AcqRel);
        let mut pool = self.stack_pool.borrow_mut();
        if reusable && pool.len() < STACK_POOL_CAPACITY {
            pool.push(coroutine.generator);
        }
    }

    /// Unwinds every coroutine that has not finished, on this thread, and drops refused work.
    fn cancel_all(&self) {
        let mut n_cancelled = 0usize;
        loop {
            let next = self.ready.borrow_mut().pop_front().or_else(|| {
                let mut parked = self.parked.borrow_mut();
                let id = parked.keys().next().copied();
                id.and_then(|id| parked.remove(&id))
            });
            let Some(coroutine) = next else { break };
            n_cancelled += 1;
            self.cancel(*coroutine);
            // Destructors of cancelled coroutines may have scheduled or woken others.
            while let Some(runnable) = self.shared.injected.pop() {
                if let Runnable::Spawn(job) = runnable {
                    drop(job);
                }
            }
        }
        let mut n_dropped = 0usize;
        while let Some(runnable) = self.shared.injected.pop() {
            if let Runnable::Spawn(job) = runnable {
                n_dropped += 1;
                drop(job);
            }
        }
        self.timers.borrow_mut().clear();
        self.stack_pool.borrow_mut().clear();
        if n_cancelled > 0 || n_dropped > 0 {
            tracing::debug!(
                context = %self.shared.name,
                n_cancelled,
                n_dropped,
                "context stopped with unfinished coroutines"
            );
        }
    }

    fn cancel(&self, mut coroutine: Coroutine) {
        // The coroutine's destructors run as that coroutine, so they see it as the caller.
        self.running.set(&coroutine.state);
        self.running_scope.set(coroutine.scope);
        let outcome = catch_unwind(AssertUnwindSafe(|| coroutine.generator.cancel()));
        self.running.set(std::ptr::null());
        self.running_scope.set(std::ptr::null_mut());
        self.shared.n_live.fetch_sub(1, Ordering::AcqRel);
        if let Err(panic) = outcome {
            tracing::error!(
                context = %self.shared.name,
                panic = %panic_message(&*panic),
                "a coroutine panicked while being cancelled"
            );
        }
        if !coroutine.generator.is_done() {
            // It parked again while unwinding; it can never be resumed, so leak its stack
            // rather than let generator's drop assert.
            tracing::error!(context = %self.shared.name, "a coroutine parked while being cancelled; its stack is leaked");
            std::mem::forget(coroutine.generator);
        }
    }
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
