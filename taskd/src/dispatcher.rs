//! `TaskDispatcher`: the leader-only component on its own `ThreadContext` ("zbs-task-dispat").
//! Its periodic check (the original's `CheckSecondaryDataChannel`, every second) only
//! *publishes* the data network's health in an atomic flag, and wakes the server's loop at once
//! when the health turns bad. It never stops, joins or drops the server: the server's loop
//! decides that, on its own thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runtime::{ThreadContext, TimerHandle};
use vip::health::{HealthFlag, Subscription};

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
    _early_wake: Subscription,
}

impl TaskDispatcher {
    /// Starts the dispatcher's context and its periodic health check. `wake_server` is called
    /// (from a health source's thread or the dispatcher's) when the health turns bad; it must only
    /// post a message to the server's loop.
    pub fn start<W>(health: HealthFlag, published: NetworkHealthFlag, wake_server: W) -> std::io::Result<TaskDispatcher>
    where
        W: Fn() + Send + Sync + 'static,
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
        // The asynchronous callback of the first source document: the moment the health turns
        // bad, publish it and ask the server's loop to look now rather than at its next poll.
        let published_early = published.clone();
        let early_wake = health.on_invalid(move |reason| {
            published_early.publish(false);
            tracing::warn!(%reason, "secondary data network invalid; waking the server loop");
            wake_server();
        });
        published.publish(!health.is_invalid());
        tracing::info!("dispatcher started");
        Ok(TaskDispatcher { context, health_check: Some(health_check), _early_wake: early_wake })
    }

    /// Stops the periodic work and the context, waiting for its coroutines to finish. Called by
    /// the server's loop, never from the dispatcher's own thread.
    pub fn stop(mut self) {
        let started = std::time::Instant::now();
        if let Some(timer) = self.health_check.take() {
            timer.cancel();
        }
        self.context.stop();
        match self.context.join() {
            Ok(()) => tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "dispatcher stopped"),
            Err(error) => tracing::error!(%error, "dispatcher context did not join"),
        }
    }
}
