//! `cargo xtask demo --crash-only`: the original crash and its fix, played with the runtime alone.
//!
//! A "dispatcher" context publishes the data network's health; the "server" loop polls that
//! flag on a timer and stops itself from its own thread; the main thread joins the server,
//! drops it and builds a fresh one, as the daemon's supervisor will. The dispatcher also tries
//! what the original daemon did — join its own thread — and gets an error instead of a core.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use runtime::{EventLoop, JoinError, SyncPoint, Thread, ThreadContext, TimerHandle};

/// Builds the server `rounds` times; each fails, stops itself and is rebuilt.
pub fn run(rounds: usize) -> Result<()> {
    let start = Instant::now();
    let say = move |what: &str| println!("[{:>7.3} s] {what}", start.elapsed().as_secs_f64());
    for round in 1..=rounds {
        say(&format!("round {round}: building a fresh server"));
        let server = DemoServer::start(round).context("start the demo server")?;
        let thread = server.thread;
        let outcome = thread.join();
        say(&format!(
            "round {round}: server thread joined by main ({:?}); ticks of the health timer: {}",
            outcome,
            server.n_health_checks.load(Ordering::Acquire)
        ));
        if let Some(self_join) = server.dispatcher_self_join.take() {
            say(&format!("round {round}: the dispatcher's attempt to join itself returned {self_join:?}"));
            if self_join != Err(JoinError::SelfJoin) {
                anyhow::bail!("the dispatcher's self-join did not return SelfJoin");
            }
        }
    }
    say("the process is still alive: the service stopped, the program did not");
    Ok(())
}

struct DemoServer {
    thread: Thread<()>,
    n_health_checks: Arc<AtomicUsize>,
    dispatcher_self_join: SyncPoint<Result<(), JoinError>>,
}

impl DemoServer {
    fn start(round: usize) -> Result<DemoServer> {
        let n_health_checks = Arc::new(AtomicUsize::new(0));
        let dispatcher_self_join = SyncPoint::new();
        let (checks, self_join) = (n_health_checks.clone(), dispatcher_self_join.clone());
        let thread = Thread::spawn("demo-server", move || {
            if let Err(error) = serve(round, checks, self_join) {
                eprintln!("demo server failed: {error:#}");
            }
        })
        .context("spawn the server thread")?;
        Ok(DemoServer { thread, n_health_checks, dispatcher_self_join })
    }
}

/// The server thread: an event loop with a dispatcher context and a health-polling timer.
fn serve(round: usize, n_health_checks: Arc<AtomicUsize>, self_join: SyncPoint<Result<(), JoinError>>) -> Result<()> {
    let event_loop = EventLoop::new("demo-server");
    let dispatcher = Arc::new(ThreadContext::new("zbs-task-dispat").context("start the dispatcher context")?);
    let network_healthy = Arc::new(AtomicBool::new(true));

    // The dispatcher only publishes health: after ~600 ms the "data network" fails.
    let healthy = network_healthy.clone();
    let _health_source = TimerHandle::new(
        dispatcher.as_ref(),
        move || {
            println!(
                "          dispatcher (thread {:?}): data network unreachable, publishing the flag",
                std::thread::current().name()
            );
            healthy.store(false, Ordering::Release);
        },
        Duration::from_millis(600),
        false,
    )?;

    // What the original did next, from the dispatcher thread: tear down, joining itself.
    let dispatcher_for_itself = dispatcher.clone();
    dispatcher.sched(move || {
        runtime::sleep(Duration::from_millis(700));
        self_join.done_with(dispatcher_for_itself.join());
    })?;

    // The server loop polls the flag (the daemon uses 1 s) and stops from its own thread.
    let loop_handle = event_loop.handle();
    let dispatcher_for_stop = dispatcher.clone();
    let _health_poll = TimerHandle::new(
        &event_loop,
        move || {
            n_health_checks.fetch_add(1, Ordering::AcqRel);
            if !network_healthy.load(Ordering::Acquire) && !loop_handle.is_stopped() {
                println!(
                    "          server loop (thread {:?}): flag seen; stopping dispatcher, then unlooping",
                    std::thread::current().name()
                );
                dispatcher_for_stop.stop();
                match dispatcher_for_stop.join() {
                    Ok(()) => println!("          server loop: dispatcher joined from the server thread"),
                    Err(error) => println!("          server loop: dispatcher join failed: {error}"),
                }
                loop_handle.stop();
            }
        },
        Duration::from_millis(250),
        true,
    )?;

    println!("          round {round}: server loop running");
    event_loop.run()?;
    println!("          round {round}: server loop returned");
    Ok(())
}
