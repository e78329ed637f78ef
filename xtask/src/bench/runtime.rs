//! The runtime benchmark: costs of the coroutine primitives, measured side by side in one run
//! with `may`, raw `generator` and `std::thread`, so every figure is also a ratio.

#![allow(deprecated)] // generator's `Gn::new` is the plainest raw resume/yield loop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use runtime::{CoMutex, SyncPoint, ThreadContext};

use super::report::{percentile, Report};

/// Each measurement is repeated this many times; the report keeps the median.
const REPEATS: usize = 7;

pub fn run() -> Result<()> {
    may::config().set_worker_pin(false);
    let mut report = Report::new("runtime");

    let spawn_ctx = median_of(|| spawn_run_ctx(20_000))?;
    let spawn_may = median_of(|| Ok(spawn_run_may(20_000)))?;
    let spawn_thread = median_of(|| Ok(spawn_thread(300)))?;
    report.set("spawn_run_ns_ctx", spawn_ctx);
    report.set("spawn_run_ns_may", spawn_may);
    report.set("spawn_ns_thread", spawn_thread);
    report.set("spawn_run_ratio_ctx_to_may", spawn_ctx / spawn_may);

    let yield_ctx = median_of(|| yield_ctx(1_000_000))?;
    let resume_generator = median_of(|| Ok(resume_generator(1_000_000)))?;
    let yield_may = median_of(|| Ok(yield_may(1_000_000)))?;
    report.set("yield_ns_ctx", yield_ctx);
    report.set("resume_ns_generator", resume_generator);
    report.set("yield_ns_may", yield_may);
    report.set("yield_ratio_ctx_to_generator", yield_ctx / resume_generator);

    let (syncpoint_p50, syncpoint_p99) = syncpoint_round_trip(20_000)?;
    let (thread_p50, thread_p99) = thread_round_trip(20_000);
    report.set("syncpoint_rtt_us_p50", syncpoint_p50);
    report.set("syncpoint_rtt_us_p99", syncpoint_p99);
    report.set("thread_channel_rtt_us_p50", thread_p50);
    report.set("thread_channel_rtt_us_p99", thread_p99);

    let comutex_uncontended = median_of(|| comutex_uncontended(1_000_000))?;
    let std_mutex_uncontended = median_of(|| Ok(std_mutex_uncontended(1_000_000)))?;
    let comutex_contended = median_of(|| comutex_contended(8, 20_000))?;
    let std_mutex_contended = median_of(|| Ok(std_mutex_contended(2, 200_000)))?;
    report.set("comutex_uncontended_ns", comutex_uncontended);
    report.set("std_mutex_uncontended_ns", std_mutex_uncontended);
    report.set("comutex_contended_ns", comutex_contended);
    report.set("std_mutex_contended_ns", std_mutex_contended);

    report.note(format!("each figure is the median of {REPEATS} runs; rtt percentiles are over all round trips"));
    report.note(format!("spawn_run: sched + run of an empty coroutine, in batches of {SPAWN_BATCH} from a coroutine (ctx: on the same context; may: go! + join)"));
    report.note(
        "comutex_contended: 8 coroutines on 2 contexts, each lock held across one yield; std: 2 threads, no yield",
    );
    report.write()?;
    Ok(())
}

fn median_of(mut measure: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut samples = Vec::with_capacity(REPEATS);
    for _ in 0..REPEATS {
        samples.push(measure()?);
    }
    Ok(percentile(&mut samples, 0.5))
}

/// Runs `body` as a coroutine on a fresh context and waits for its result.
fn on_context<T: Send + 'static>(name: &str, body: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let context = ThreadContext::new(name).context("start a context")?;
    let result = SyncPoint::<T>::new();
    let result_inner = result.clone();
    context.sched(move || result_inner.done_with(body())).context("schedule the benchmark")?;
    Ok(result.wait_and_reset())
}

/// Coroutines are started in batches of this many and all run before the next batch, so
/// stacks are recycled as a daemon's short-lived coroutines are.
const SPAWN_BATCH: usize = 100;

fn spawn_run_ctx(n: usize) -> Result<f64> {
    on_context("bench-spawn", move || {
        let Some(handle) = runtime::current_context() else { return f64::NAN };
        let start = Instant::now();
        for _ in 0..n / SPAWN_BATCH {
            let finished = Arc::new(AtomicUsize::new(0));
            let all_ran = SyncPoint::new();
            for _ in 0..SPAWN_BATCH {
                let (finished, all_ran) = (finished.clone(), all_ran.clone());
                let _ = handle.sched(move || {
                    if finished.fetch_add(1, Ordering::Relaxed) + 1 == SPAWN_BATCH {
                        all_ran.done();
                    }
                });
            }
            all_ran.wait();
        }
        start.elapsed().as_nanos() as f64 / n as f64
    })
}

fn spawn_run_may(n: usize) -> f64 {
    let handle = may::go!(move || {
        let start = Instant::now();
        for _ in 0..n / SPAWN_BATCH {
            let children: Vec<_> = (0..SPAWN_BATCH).map(|_| may::go!(|| {})).collect();
            for child in children {
                let _ = child.join();
            }
        }
        start.elapsed().as_nanos() as f64 / n as f64
    });
    handle.join().unwrap_or(f64::NAN)
}

fn spawn_thread(n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        let _ = std::thread::spawn(|| {}).join();
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn yield_ctx(n: usize) -> Result<f64> {
    on_context("bench-yield", move || {
        let start = Instant::now();
        for _ in 0..n {
            runtime::yield_now();
        }
        start.elapsed().as_nanos() as f64 / n as f64
    })
}

fn resume_generator(n: usize) -> f64 {
    let mut generator = generator::Gn::<()>::new_scoped(|mut scope| loop {
        scope.yield_(());
    });
    let start = Instant::now();
    for _ in 0..n {
        generator.resume();
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn yield_may(n: usize) -> f64 {
    let handle = may::go!(move || {
        let start = Instant::now();
        for _ in 0..n {
            may::coroutine::yield_now();
        }
        start.elapsed().as_nanos() as f64 / n as f64
    });
    handle.join().unwrap_or(f64::NAN)
}

/// Ping-pong through two `SyncPoint`s between coroutines on two contexts; microseconds.
fn syncpoint_round_trip(rounds: usize) -> Result<(f64, f64)> {
    let ping = SyncPoint::<()>::new();
    let pong = SyncPoint::<()>::new();
    let echo_context = ThreadContext::new("bench-echo").context("start a context")?;
    let (ping_echo, pong_echo) = (ping.clone(), pong.clone());
    echo_context
        .sched(move || {
            for _ in 0..rounds {
                ping_echo.wait_and_reset();
                pong_echo.done();
            }
        })
        .context("schedule the echo")?;
    let mut samples = on_context("bench-ping", move || {
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let start = Instant::now();
            ping.done();
            pong.wait_and_reset();
            samples.push(start.elapsed().as_nanos() as f64 / 1_000.0);
        }
        samples
    })?;
    Ok((percentile(&mut samples, 0.5), percentile(&mut samples, 0.99)))
}

/// The same ping-pong between two plain threads over crossbeam channels; microseconds.
fn thread_round_trip(rounds: usize) -> (f64, f64) {
    let (ping_sender, ping_receiver) = crossbeam::channel::bounded::<()>(1);
    let (pong_sender, pong_receiver) = crossbeam::channel::bounded::<()>(1);
    let echo = std::thread::spawn(move || {
        for _ in 0..rounds {
            if ping_receiver.recv().is_err() || pong_sender.send(()).is_err() {
                return;
            }
        }
    });
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        if ping_sender.send(()).is_err() || pong_receiver.recv().is_err() {
            break;
        }
        samples.push(start.elapsed().as_nanos() as f64 / 1_000.0);
    }
    let _ = echo.join();
    (percentile(&mut samples, 0.5), percentile(&mut samples, 0.99))
}

fn comutex_uncontended(n: usize) -> Result<f64> {
    on_context("bench-lock", move || {
        let mutex = CoMutex::new(0u64);
        let start = Instant::now();
        for _ in 0..n {
            *mutex.lock() += 1;
        }
        std::hint::black_box(*mutex.lock());
        start.elapsed().as_nanos() as f64 / n as f64
    })
}

fn std_mutex_uncontended(n: usize) -> f64 {
    let mutex = std::sync::Mutex::new(0u64);
    let start = Instant::now();
    for _ in 0..n {
        *mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) += 1;
    }
    std::hint::black_box(&mutex);
    start.elapsed().as_nanos() as f64 / n as f64
}

/// `n_coroutines` spread over two contexts, each taking the lock `n_locks` times and yielding
/// while holding it, so every acquisition after the first waits in the queue; ns per lock.
fn comutex_contended(n_coroutines: usize, n_locks: usize) -> Result<f64> {
    let contexts = [
        ThreadContext::new("bench-contend-a").context("start a context")?,
        ThreadContext::new("bench-contend-b").context("start a context")?,
    ];
    let mutex = Arc::new(CoMutex::new(0u64));
    let finished = Arc::new(AtomicUsize::new(0));
    let all_done = SyncPoint::new();
    let start = Instant::now();
    for index in 0..n_coroutines {
        let (mutex, finished, all_done) = (mutex.clone(), finished.clone(), all_done.clone());
        contexts[index % 2]
            .sched(move || {
                for _ in 0..n_locks {
                    let mut guard = mutex.lock();
                    *guard += 1;
                    runtime::yield_now();
                }
                if finished.fetch_add(1, Ordering::AcqRel) + 1 == n_coroutines {
                    all_done.done();
                }
            })
            .context("schedule a contender")?;
    }
    if !all_done.wait_timeout(Duration::from_secs(120)) {
        anyhow::bail!("contended CoMutex benchmark did not finish in 120 s");
    }
    Ok(start.elapsed().as_nanos() as f64 / (n_coroutines * n_locks) as f64)
}

fn std_mutex_contended(n_threads: usize, n_locks: usize) -> f64 {
    let mutex = Arc::new(std::sync::Mutex::new(0u64));
    let start = Instant::now();
    let threads: Vec<_> = (0..n_threads)
        .map(|_| {
            let mutex = mutex.clone();
            std::thread::spawn(move || {
                for _ in 0..n_locks {
                    *mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) += 1;
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    start.elapsed().as_nanos() as f64 / (n_threads * n_locks) as f64
}
