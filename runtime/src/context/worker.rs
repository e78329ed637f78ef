//! The run loop's work on its own thread: take the coroutines other threads injected, fire the
//! timers that are due, resume the ready coroutines one at a time (each until it parks, yields
//! or ends), sleep when idle, and, at stop, cancel every coroutine left (see the context's
//! `# Stop`).

use std::panic::{catch_unwind, AssertUnwindSafe};

use generator::Gn;

use super::*;

impl Worker {
    pub(super) fn run(&self) {
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

    pub(super) fn is_alone(&self) -> bool {
        self.ready.borrow().is_empty()
            && !self.shared.has_injected.load(Ordering::Relaxed)
            && self.timers.borrow().is_empty()
            && !self.shared.is_stop_requested()
    }

    pub(super) fn take_injected(&self) {
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

    pub(super) fn fire_timers(&self) {
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

    pub(super) fn wait_idle(&self) {
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

    pub(super) fn new_coroutine(&self, job: Job) -> Box<Coroutine> {
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
    pub(super) fn resume(&self, mut coroutine: Box<Coroutine>) -> Option<Box<Coroutine>> {
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

    pub(super) fn finished(&self, coroutine: Coroutine, reusable: bool) {
        self.shared.n_live.fetch_sub(1, Ordering::AcqRel);
        let mut pool = self.stack_pool.borrow_mut();
        if reusable && pool.len() < STACK_POOL_CAPACITY {
            pool.push(coroutine.generator);
        }
    }

    /// Unwinds every coroutine that has not finished, on this thread, and drops refused work.
    pub(super) fn cancel_all(&self) {
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

    pub(super) fn cancel(&self, mut coroutine: Coroutine) {
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
