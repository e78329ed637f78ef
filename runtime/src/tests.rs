//! Tests of the coroutine primitives, ported from the original runtime's scenarios. They assert
//! orderings and counts; time bounds are generous so a busy 2-core machine does not flake them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::*;

const GENEROUS: Duration = Duration::from_secs(20);

/// Runs `f` on a fresh thread and fails the test if it has not returned within `GENEROUS`. The
/// thread is joined when it answers in time; a hung one is left behind only because the test
/// is failing anyway.
fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = crossbeam::channel::bounded(1);
    let runner = std::thread::spawn(move || {
        let _ = sender.send(f());
    });
    let value =
        receiver.recv_timeout(GENEROUS).unwrap_or_else(|_| panic!("{what} did not finish within {GENEROUS:?}: hung"));
    runner.join().expect("the deadline thread ended without panicking");
    value
}

#[test]
fn thread_join_from_itself_returns_self_join_at_once() {
    let slot: Arc<Mutex<Option<Arc<Thread<()>>>>> = Arc::new(Mutex::new(None));
    let seen = SyncPoint::<Result<(), JoinError>>::new();
    let (slot_in_thread, seen_in_thread) = (slot.clone(), seen.clone());
    let thread = Arc::new(
        Thread::spawn("self-joiner", move || {
            let me = loop {
                if let Some(me) = slot_in_thread.lock().clone() {
                    break me;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            seen_in_thread.done_with(me.join());
        })
        .expect("spawn thread"),
    );
    *slot.lock() = Some(thread.clone());
    let result = within_deadline("self join", move || seen.wait_and_reset());
    assert_eq!(result, Err(JoinError::SelfJoin));
    slot.lock().take();
    assert_eq!(thread.join(), Ok(()), "the owner's join succeeds after the refused self-join");
    assert_eq!(thread.join(), Err(JoinError::AlreadyJoined));
}

#[test]
fn thread_join_reports_a_panic() {
    let thread = Thread::spawn("panicker", || panic!("boom")).expect("spawn thread");
    match thread.join() {
        Err(JoinError::Panicked(message)) => assert!(message.contains("boom"), "{message}"),
        other => panic!("expected a panic, got {other:?}"),
    }
}

#[test]
fn context_join_from_its_own_coroutine_returns_self_join() {
    let context = Arc::new(ThreadContext::new("ctx-selfjoin").expect("context"));
    let seen = SyncPoint::<Result<(), JoinError>>::new();
    let (inner, seen_inner) = (context.clone(), seen.clone());
    context.sched(move || seen_inner.done_with(inner.join())).expect("sched");
    assert_eq!(within_deadline("context self join", move || seen.wait_and_reset()), Err(JoinError::SelfJoin));
    context.stop();
    assert_eq!(context.join(), Ok(()));
}

#[test]
fn dropping_a_context_from_its_own_coroutine_neither_hangs_nor_kills() {
    let context = ThreadContext::new("ctx-selfdrop").expect("context");
    let owner_handle = context.handle();
    let slot = Arc::new(Mutex::new(Some(context)));
    let after_drop = SyncPoint::new();
    let (slot_inner, after_drop_inner) = (slot.clone(), after_drop.clone());
    owner_handle
        .sched(move || {
            let context = slot_inner.lock().take();
            drop(context); // The original daemon's crash: destroying the context on its own thread.
            after_drop_inner.done(); // Still alive: the coroutine carries on after the drop.
        })
        .expect("sched");
    within_deadline("drop on own thread", {
        let after_drop = after_drop.clone();
        move || after_drop.wait()
    });
    assert!(after_drop.is_done());
    assert!(owner_handle.is_stopped(), "the drop asked the context to stop");
    assert_eq!(within_deadline("owner join", move || owner_handle.join()), Ok(()));
}

#[test]
fn a_coroutine_never_leaves_its_thread() {
    let context = ThreadContext::new("ctx-pinned").expect("context");
    let observed = SyncPoint::<(std::thread::ThreadId, usize)>::new();
    let observed_inner = observed.clone();
    context
        .sched(move || {
            let first = std::thread::current().id();
            let mut same = 0;
            for round in 0..1_000 {
                if round % 10 == 0 {
                    sleep(Duration::from_micros(50));
                } else {
                    yield_now();
                }
                if std::thread::current().id() == first {
                    same += 1;
                }
            }
            observed_inner.done_with((first, same));
        })
        .expect("sched");
    // Other coroutines compete for the same thread meanwhile.
    for _ in 0..8 {
        context
            .sched(|| {
                for _ in 0..200 {
                    yield_now();
                }
            })
            .expect("sched");
    }
    let (thread_id, same) = within_deadline("1000 yields", move || observed.wait_and_reset());
    assert_eq!(same, 1_000);
    assert_ne!(thread_id, std::thread::current().id());
}

#[test]
fn sync_point_hands_a_value_across_contexts() {
    let producer = ThreadContext::new("ctx-producer").expect("context");
    let consumer = ThreadContext::new("ctx-consumer").expect("context");
    let handoff = SyncPoint::<String>::new();
    let result = SyncPoint::<(String, bool)>::new();
    let (handoff_consumer, result_consumer) = (handoff.clone(), result.clone());
    let consumer_handle = consumer.handle();
    consumer
        .sched(move || {
            let value = handoff_consumer.wait_and_reset();
            result_consumer.done_with((value, consumer_handle.is_current()));
        })
        .expect("sched");
    let handoff_producer = handoff.clone();
    producer
        .sched(move || {
            sleep(Duration::from_millis(20));
            handoff_producer.done_with("from the producer".to_string());
        })
        .expect("sched");
    let (value, on_consumer_thread) = within_deadline("handoff", move || result.wait_and_reset());
    assert_eq!(value, "from the producer");
    assert!(on_consumer_thread, "the consumer coroutine resumed on its own context");
    assert!(!handoff.is_done(), "wait_and_reset reset the point");
}

#[test]
fn sync_point_done_after_the_waiter_is_gone_is_harmless() {
    let point = SyncPoint::new();
    let callback = point.callback();
    assert!(!point.wait_timeout(Duration::from_millis(10)));
    drop(point);
    callback(); // The original's race: done on a destroyed waiter.
}

#[test]
fn co_mutex_keeps_an_exact_count_under_yields_inside_the_lock() {
    let contexts =
        [ThreadContext::new("ctx-lock-a").expect("context"), ThreadContext::new("ctx-lock-b").expect("context")];
    let counter = Arc::new(CoMutex::new(0u64));
    let finished = Arc::new(AtomicUsize::new(0));
    let all_done = SyncPoint::new();
    const N_COROUTINES: usize = 200;
    const N_INCREMENTS: u64 = 50;
    for index in 0..N_COROUTINES {
        let (counter, finished, all_done) = (counter.clone(), finished.clone(), all_done.clone());
        contexts[index % 2]
            .sched(move || {
                for _ in 0..N_INCREMENTS {
                    let mut guard = counter.lock();
                    let seen = *guard;
                    yield_now(); // Other coroutines run while we hold the lock.
                    *guard = seen + 1;
                }
                if finished.fetch_add(1, Ordering::AcqRel) + 1 == N_COROUTINES {
                    all_done.done();
                }
            })
            .expect("sched");
    }
    within_deadline("200 coroutines", move || all_done.wait());
    assert_eq!(*counter.try_lock().expect("unlocked at the end"), N_COROUTINES as u64 * N_INCREMENTS);
}

#[test]
fn co_mutex_grants_in_arrival_order() {
    let context = ThreadContext::new("ctx-fifo").expect("context");
    let mutex = Arc::new(CoMutex::new(Vec::new()));
    let done = SyncPoint::new();
    let (mutex_inner, done_inner, handle) = (mutex.clone(), done.clone(), context.handle());
    context
        .sched(move || {
            let guard = mutex_inner.lock();
            let finished = Arc::new(AtomicUsize::new(0));
            for waiter in 0..10 {
                let (mutex, finished, done) = (mutex_inner.clone(), finished.clone(), done_inner.clone());
                handle
                    .sched(move || {
                        mutex.lock().push(waiter);
                        if finished.fetch_add(1, Ordering::AcqRel) == 9 {
                            done.done();
                        }
                    })
                    .expect("sched");
                // Let that waiter queue up before the next one starts.
                yield_now();
                yield_now();
            }
            drop(guard);
        })
        .expect("sched");
    within_deadline("fifo", move || done.wait());
    assert_eq!(*mutex.try_lock().expect("free"), (0..10).collect::<Vec<_>>());
}

#[test]
fn co_mutex_parks_only_the_coroutine() {
    // One context thread: if the waiting coroutine blocked its thread, the holder could never
    // run again to release the lock, and this would hang.
    let context = ThreadContext::new("ctx-onethread").expect("context");
    let mutex = Arc::new(CoMutex::new(()));
    let done = SyncPoint::new();
    let (holder_mutex, waiter_mutex, done_inner) = (mutex.clone(), mutex.clone(), done.clone());
    context
        .sched(move || {
            let _guard = holder_mutex.lock();
            sleep(Duration::from_millis(50));
        })
        .expect("sched");
    context
        .sched(move || {
            let _guard = waiter_mutex.lock();
            done_inner.done();
        })
        .expect("sched");
    within_deadline("lock hand-over on one thread", move || done.wait());
}

#[test]
fn repeating_timer_keeps_a_fixed_rate_and_stops_on_cancel() {
    let context = ThreadContext::new("ctx-timer").expect("context");
    let ticks = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let ticks_inner = ticks.clone();
    let start = Instant::now();
    let timer =
        TimerHandle::new(&context, move || ticks_inner.lock().push(Instant::now()), Duration::from_millis(50), true)
            .expect("timer");
    std::thread::sleep(Duration::from_millis(1_025));
    timer.cancel();
    let n_at_cancel = ticks.lock().len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ticks.lock().len(), n_at_cancel, "no tick after cancel returned");
    // 20 ticks are due in 1.025 s; allow a loaded machine to lose a few, never to gain any.
    assert!((14..=20).contains(&n_at_cancel), "{n_at_cancel} ticks in ~1 s at 50 ms");
    let ticks = ticks.lock();
    // Fixed rate: tick k is due at start + (k+1) * 50 ms and never runs early.
    for (index, tick) in ticks.iter().enumerate() {
        let due = start + Duration::from_millis(50 * (index as u64 + 1));
        assert!(*tick + Duration::from_millis(1) >= due, "tick {index} ran early");
    }
}

#[test]
fn dropping_a_timer_handle_cancels_it() {
    let context = ThreadContext::new("ctx-timerdrop").expect("context");
    let fired = Arc::new(AtomicUsize::new(0));
    let fired_inner = fired.clone();
    let timer = TimerHandle::new(
        &context,
        move || {
            fired_inner.fetch_add(1, Ordering::AcqRel);
        },
        Duration::from_millis(100),
        false,
    )
    .expect("timer");
    drop(timer);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fired.load(Ordering::Acquire), 0);
}

#[test]
fn one_shot_timer_fires_once() {
    let context = ThreadContext::new("ctx-oneshot").expect("context");
    let fired = Arc::new(AtomicUsize::new(0));
    let fired_inner = fired.clone();
    let timer = TimerHandle::new(
        &context,
        move || {
            fired_inner.fetch_add(1, Ordering::AcqRel);
        },
        Duration::from_millis(20),
        false,
    )
    .expect("timer");
    let deadline = Instant::now() + GENEROUS;
    while !timer.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(fired.load(Ordering::Acquire), 1);
}

#[test]
fn cancel_waits_for_a_running_tick_and_cancel_inside_a_tick_returns() {
    let context = ThreadContext::new("ctx-tickcancel").expect("context");
    let in_tick = SyncPoint::new();
    let tick_finished = Arc::new(AtomicBool::new(false));
    let (in_tick_inner, finished_inner) = (in_tick.clone(), tick_finished.clone());
    let timer = TimerHandle::new(
        &context,
        move || {
            in_tick_inner.done();
            sleep(Duration::from_millis(100)); // Parks the timer coroutine mid-tick.
            finished_inner.store(true, Ordering::Release);
        },
        Duration::from_millis(1),
        true,
    )
    .expect("timer");
    within_deadline("first tick", {
        let in_tick = in_tick.clone();
        move || in_tick.wait()
    });
    timer.cancel();
    assert!(tick_finished.load(Ordering::Acquire), "cancel returned while a tick was still running");

    // A callback that cancels its own timer must not wait for itself.
    let slot: Arc<Mutex<Option<TimerHandle>>> = Arc::new(Mutex::new(None));
    let cancelled_itself = SyncPoint::new();
    let (slot_inner, cancelled_inner) = (slot.clone(), cancelled_itself.clone());
    let self_cancelling = TimerHandle::new(
        &context,
        move || {
            if let Some(timer) = slot_inner.lock().as_ref() {
                timer.cancel();
                cancelled_inner.done();
            }
        },
        Duration::from_millis(5),
        true,
    )
    .expect("timer");
    *slot.lock() = Some(self_cancelling);
    within_deadline("self cancel", move || cancelled_itself.wait());
}

#[test]
fn timers_on_a_stopped_context_do_not_fire() {
    let context = ThreadContext::new("ctx-stopped").expect("context");
    let fired = Arc::new(AtomicUsize::new(0));
    let fired_inner = fired.clone();
    let armed = TimerHandle::new(
        &context,
        move || {
            fired_inner.fetch_add(1, Ordering::AcqRel);
        },
        Duration::from_millis(50),
        true,
    )
    .expect("timer");
    context.stop();
    context.join().expect("join");
    assert!(
        TimerHandle::new(&context, || {}, Duration::from_millis(1), false).is_err(),
        "a stopped context refuses timers"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(fired.load(Ordering::Acquire), 0);
    drop(armed); // Cancelling a timer whose coroutine was unwound returns at once.
}

#[test]
fn stop_unwinds_parked_coroutines_on_their_own_thread() {
    struct RecordDrop(Arc<Mutex<Option<std::thread::ThreadId>>>);
    impl Drop for RecordDrop {
        fn drop(&mut self) {
            *self.0.lock() = Some(std::thread::current().id());
        }
    }
    let context = ThreadContext::new("ctx-unwind").expect("context");
    let dropped_on = Arc::new(Mutex::new(None));
    let ran_on = SyncPoint::<std::thread::ThreadId>::new();
    let (dropped_inner, ran_inner) = (dropped_on.clone(), ran_on.clone());
    context
        .sched(move || {
            let _record = RecordDrop(dropped_inner);
            ran_inner.done_with(std::thread::current().id());
            SyncPoint::<()>::new().wait(); // Never done: parked until the context stops.
        })
        .expect("sched");
    let thread_id = within_deadline("start", move || ran_on.wait_and_reset());
    assert_eq!(context.handle().n_live_coroutines(), 1);
    context.stop();
    context.join().expect("join");
    assert_eq!(*dropped_on.lock(), Some(thread_id));
    assert_eq!(context.handle().n_live_coroutines(), 0);
    assert_eq!(context.sched(|| {}), Err(SchedError::Stopped));
}

#[test]
fn a_panicking_coroutine_does_not_take_down_its_context() {
    let context = ThreadContext::new("ctx-panic").expect("context");
    context.sched(|| panic!("coroutine bug")).expect("sched");
    let after = SyncPoint::new();
    let after_inner = after.clone();
    context.sched(move || after_inner.done()).expect("sched");
    within_deadline("after panic", move || after.wait());
}

#[test]
fn event_loop_runs_on_the_calling_thread_until_unloop() {
    let event_loop = Arc::new(EventLoop::new("main-loop"));
    let ran_on = Arc::new(Mutex::new(None));
    let (ran_inner, loop_inner) = (ran_on.clone(), event_loop.clone());
    event_loop
        .sched(move || {
            sleep(Duration::from_millis(10));
            *ran_inner.lock() = Some(std::thread::current().id());
            loop_inner.unloop();
        })
        .expect("sched");
    let caller = std::thread::current().id();
    event_loop.run().expect("run");
    assert_eq!(*ran_on.lock(), Some(caller));
    assert_eq!(event_loop.run(), Err(RunError::Stopped), "a loop runs once");
    assert_eq!(event_loop.handle().join(), Ok(()));
}

#[test]
fn event_loop_refuses_to_nest() {
    let outer = Arc::new(EventLoop::new("outer"));
    let result = Arc::new(Mutex::new(None));
    let (outer_inner, result_inner) = (outer.clone(), result.clone());
    outer
        .sched(move || {
            let inner = EventLoop::new("inner");
            *result_inner.lock() = Some(inner.run());
            outer_inner.unloop();
        })
        .expect("sched");
    outer.run().expect("run");
    assert_eq!(*result.lock(), Some(Err(RunError::Nested)));
}

/// A future that completes when another thread says so, to check wake-ups. The future joins
/// that thread once it has its value, so no thread outlives the test.
fn future_done_by_thread(delay: Duration) -> impl std::future::Future<Output = u32> {
    let (sender, receiver) = futures::channel::oneshot::channel();
    let completer = std::thread::spawn(move || {
        std::thread::sleep(delay);
        let _ = sender.send(7);
    });
    async move {
        let value = receiver.await.unwrap_or(0);
        completer.join().expect("the completing thread ended without panicking");
        value
    }
}

#[test]
fn primitives_work_from_all_three_kinds_of_caller() {
    may::config().set_worker_pin(false);
    let context = ThreadContext::new("ctx-kinds").expect("context");
    let results = Arc::new(Mutex::new(Vec::new()));

    type Observed = Arc<Mutex<Vec<(&'static str, CallerKind, u32, u64)>>>;
    let exercise = |kind: &'static str, results: Observed| {
        move || {
            let observed_kind = caller_kind();
            let value = block_on(future_done_by_thread(Duration::from_millis(20)));
            let mutex = CoMutex::new(0u64);
            *mutex.lock() += 1;
            let start = Instant::now();
            sleep(Duration::from_millis(20));
            assert!(start.elapsed() >= Duration::from_millis(20));
            let point = SyncPoint::<u64>::new();
            let point_other = point.clone();
            let signaller = std::thread::spawn(move || point_other.done_with(41));
            let sum = point.wait_and_reset() + *mutex.lock();
            signaller.join().expect("the signalling thread ended without panicking");
            results.lock().push((kind, observed_kind, value, sum));
        }
    };

    let done = SyncPoint::new();
    let (results_ctx, done_ctx) = (results.clone(), done.clone());
    let body = exercise("context", results_ctx);
    context
        .sched(move || {
            body();
            done_ctx.done();
        })
        .expect("sched");
    within_deadline("context caller", move || done.wait());

    let body = exercise("may", results.clone());
    // SAFETY: (may's spawn contract) the body keeps no thread-local across a park; its stack is
    // may's default, ample for the primitives it exercises.
    let handle = unsafe { may::coroutine::spawn(body) };
    within_deadline("may caller", move || handle.join().is_ok());

    exercise("thread", results.clone())();

    let results = results.lock();
    assert_eq!(
        *results,
        vec![
            ("context", CallerKind::Context, 7, 42),
            ("may", CallerKind::May, 7, 42),
            ("thread", CallerKind::Thread, 7, 42),
        ]
    );
}

#[test]
fn block_on_timeout_gives_up() {
    let never = std::future::pending::<()>();
    assert_eq!(block_on_timeout(never, Duration::from_millis(30)), None);
    assert_eq!(block_on_timeout(async { 3 }, Duration::from_millis(30)), Some(3));
}

#[test]
fn sync_point_run_is_the_original_closure_run_and_signals() {
    // The original's pattern: the coroutine calls `sync.Run()`, the caller `WaitAndReset()`s.
    let context = ThreadContext::new("ctx-closure-run").expect("context");
    let sync = SyncPoint::new();
    let sync_inner = sync.clone();
    let work_done = Arc::new(AtomicBool::new(false));
    let work_inner = work_done.clone();
    context
        .sched(move || {
            sleep(Duration::from_millis(10));
            work_inner.store(true, Ordering::Release);
            sync_inner.run();
        })
        .expect("sched");
    within_deadline("closure run", {
        let sync = sync.clone();
        move || sync.wait_and_reset()
    });
    assert!(work_done.load(Ordering::Acquire), "wait_and_reset returned after the work");
    assert!(!sync.is_done(), "and reset the point");
}
