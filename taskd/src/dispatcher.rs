//! `TaskDispatcher`: the leader-only component on its own `ThreadContext` ("zbs-task-dispat").
//! Its periodic checks are the original's: `CheckSecondaryDataChannel` (every second) only
//! *publishes* the data network's health in an atomic flag and wakes the server's loop at once
//! when the health turns bad; `ConfigVIP`/`SyncVIP` for every VIP are the VIP keeper's
//! (`crate::vip_keeper`), which the dispatcher starts on its context. The dispatcher never stops,
//! joins or drops the server: the server's loop decides that, on its own thread. Stopping the
//! dispatcher releases every VIP.
//!
//! Scheduling (`scheduler`) runs on the same context once `start_scheduling` is called: the
//! `TaskDb` is opened there and never leaves it; blocking runner RPCs go to a second context,
//! "zbs-task-call" (`CALLER_THREADS` of them), so they never stall the dispatcher's thread.

pub mod placement;
pub mod scheduler;
pub mod submit;
pub mod volumes;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runtime::{ThreadContext, TimerHandle};
use vip::health::{HealthFlag, HealthState, Subscription};

pub use crate::vip_keeper::VipFailure;
use crate::vip_keeper::Vips;

pub use scheduler::{SchedulerHandle, SchedulerSetup};

/// The threads of the dispatcher's blocking runner RPCs.
pub const CALLER_THREAD_NAME: &str = "zbs-task-call";

/// How many: each RPC blocks its thread for a runner's claim (two ZooKeeper round trips), so
/// the execute calls of one dispatch pass go out on several threads at once.
pub const CALLER_THREADS: usize = 4;

/// How often the dispatcher publishes the data network's health (the original: every second).
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The dispatcher's thread name, as the original daemon's.
pub const DISPATCHER_THREAD_NAME: &str = "zbs-task-dispat";

/// What the dispatcher publishes for the server's loop.
#[derive(Clone)]
pub struct NetworkHealthFlag {
    healthy: Arc<AtomicBool>,
}

impl NetworkHealthFlag {
    /// A flag that says healthy.
    pub fn new() -> NetworkHealthFlag {
        NetworkHealthFlag { healthy: Arc::new(AtomicBool::new(true)) }
    }

    /// False once the dispatcher has published a failed data network.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Publishes the data network's health; the dispatcher's check does, and the server's loop
    /// when it learns of a failure before any dispatcher runs.
    pub fn publish(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
    }
}

impl Default for NetworkHealthFlag {
    fn default() -> Self {
        NetworkHealthFlag::new()
    }
}

/// The leader's dispatcher.
pub struct TaskDispatcher {
    context: ThreadContext,
    health_check: Option<TimerHandle>,
    vip_sync: Vec<TimerHandle>,
    vips: Vips,
    _early_wake: Subscription,
    callers: Vec<ThreadContext>,
    scheduler: Option<SchedulerHandle>,
}

impl TaskDispatcher {
    /// Starts the dispatcher's context and its periodic health check. `wake_server` is called
    /// (from a health source's thread or the dispatcher's) when the health turns bad; it must only
    /// post a message to the server's loop.
    pub fn start<W, F, L>(
        health: HealthFlag,
        published: NetworkHealthFlag,
        wake_server: W,
        vips: Vips,
        on_vip_failure: F,
        listen_on_vip: L,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> std::io::Result<TaskDispatcher>
    where
        W: Fn() + Send + Sync + 'static,
        F: Fn(VipFailure) + Send + Sync + 'static,
        L: Fn(std::net::IpAddr) + Send + Sync + 'static,
    {
        let context = ThreadContext::new(DISPATCHER_THREAD_NAME)?;
        let wake_server = Arc::new(wake_server);
        let published_by_check = published.clone();
        let health_by_check = health.clone();
        let wake_by_check = wake_server.clone();
        let health_check = TimerHandle::new(
            &context,
            move || {
                let healthy = !health_by_check.is_invalid();
                let was_healthy = published_by_check.is_healthy();
                published_by_check.publish(healthy);
                if was_healthy && !healthy {
                    tracing::warn!(reason = ?health_by_check.status().last_reason, "secondary data network invalid; published");
                    wake_by_check();
                }
            },
            HEALTH_CHECK_INTERVAL,
            true,
        )
        .map_err(|error| std::io::Error::other(error.to_string()))?;
        // The asynchronous callback of the first source document: the moment the health
        // changes, publish it — bad, and the server's loop is asked to look now rather than at
        // its next poll; good again, and the flag says so at once (not at the next check), so
        // the loop never stops the service for a failure that is already over.
        let published_early = published.clone();
        let early_wake = health.subscribe(move |change| {
            let healthy = change.to != HealthState::Invalid;
            let was_healthy = published_early.is_healthy();
            published_early.publish(healthy);
            if !healthy {
                tracing::warn!(reason = %change.reason, "secondary data network invalid; waking the server loop");
                wake_server();
            } else if !was_healthy {
                tracing::info!(state = %change.to, "secondary data network no longer invalid; published");
            }
        });
        published.publish(!health.is_invalid());
        let vip_sync =
            crate::vip_keeper::start(&context, &vips, Arc::new(on_vip_failure), Arc::new(listen_on_vip), metrics)?;
        tracing::info!(n_vips = vips.iter().count(), "dispatcher started");
        Ok(TaskDispatcher {
            context,
            health_check: Some(health_check),
            vip_sync,
            vips,
            _early_wake: early_wake,
            callers: Vec::new(),
            scheduler: None,
        })
    }

    /// Starts task scheduling on the dispatcher's context: opens the task database (rebuilding
    /// its cache from ZooKeeper) and checks for waiting tasks every 2 s and on demand.
    pub fn start_scheduling(&mut self, setup: SchedulerSetup) -> std::io::Result<SchedulerHandle> {
        if let Some(handle) = &self.scheduler {
            return Ok(handle.clone());
        }
        let callers = (0..CALLER_THREADS)
            .map(|_| ThreadContext::new(CALLER_THREAD_NAME))
            .collect::<std::io::Result<Vec<ThreadContext>>>()?;
        let handle =
            scheduler::start(&self.context.handle(), callers.iter().map(ThreadContext::handle).collect(), setup)
                .map_err(|error| std::io::Error::other(error.to_string()))?;
        self.callers = callers;
        self.scheduler = Some(handle.clone());
        Ok(handle)
    }

    /// The scheduler, once `start_scheduling` ran.
    pub fn scheduler(&self) -> Option<SchedulerHandle> {
        self.scheduler.clone()
    }

    /// Stops the periodic work and the context, waiting for its coroutines to finish. Called by
    /// the server's loop, never from the dispatcher's own thread.
    pub fn stop(mut self) {
        let started = std::time::Instant::now();
        if let Some(timer) = self.health_check.take() {
            timer.cancel();
        }
        for timer in std::mem::take(&mut self.vip_sync) {
            timer.cancel();
        }
        self.vips.release_all();
        for caller in std::mem::take(&mut self.callers) {
            caller.stop();
            if let Err(error) = caller.join() {
                tracing::error!(%error, "dispatcher caller context did not join");
            }
        }
        self.context.stop();
        match self.context.join() {
            Ok(()) => tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "dispatcher stopped"),
            Err(error) => tracing::error!(%error, "dispatcher context did not join"),
        }
    }
}
