//! `TaskDispatcher`: the leader-only component on its own `ThreadContext` ("zbs-task-dispat").
//! Its periodic checks are the original's: `CheckSecondaryDataChannel` (every second) only
//! *publishes* the data network's health in an atomic flag and wakes the server's loop at once
//! when the health turns bad; `ConfigVIP`/`SyncVIP` bind the VIP on start and keep it bound
//! (re-added if someone removed it, re-announced) every `sync_interval_ms`. VIP failures are
//! reported to the server's loop with the error's policy (permanent or transient). The VIP is
//! fenced for the term (`vip_fence`, set by the server before the dispatcher starts): every
//! `ConfigVIP`/`SyncVIP` renews its kernel lifetime up to the runner's last confirmed contact on
//! the leading session plus the fence's window, so a frozen leader's VIP lapses by itself. The
//! dispatcher never stops, joins or drops the server: the server's loop decides that, on its own
//! thread. Stopping the dispatcher releases the VIP.
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

use parking_lot::Mutex;
use runtime::{ThreadContext, TimerHandle};
use vip::health::{HealthFlag, HealthState, Subscription};
use vip::{Retarget, VipRetry, VipServer, VipStoreError, VipVerdict};

use crate::runner::lease::RunnerLease;

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

/// A VIP failure the server's loop must act on: `permanent` stops the service for good (the
/// configuration cannot work), otherwise the leader steps down and may lead again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipFailure {
    pub permanent: bool,
    pub message: String,
}

/// The leader's dispatcher.
pub struct TaskDispatcher {
    context: ThreadContext,
    health_check: Option<TimerHandle>,
    vip_sync: Option<TimerHandle>,
    vip: Option<Arc<VipServer>>,
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
        vip: Option<Arc<VipServer>>,
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
        let vip_sync = match &vip {
            Some(vip) => {
                Some(start_vip(&context, vip.clone(), Arc::new(on_vip_failure), Arc::new(listen_on_vip), metrics)?)
            }
            None => None,
        };
        tracing::info!(vip = vip.is_some(), "dispatcher started");
        Ok(TaskDispatcher {
            context,
            health_check: Some(health_check),
            vip_sync,
            vip,
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
        if let Some(timer) = self.vip_sync.take() {
            timer.cancel();
        }
        if let Some(vip) = &self.vip {
            release_vip(vip);
        }
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

/// Binds the VIP (ConfigVIP) and keeps it (SyncVIP) on the dispatcher's context; failures go
/// through `VipRetry`, whose verdict the server's loop acts on. Before each, the VIP stored in
/// ZooKeeper (`zbs-task vip set`) is read, so a new leader takes the stored VIP and a leader
/// moves to a newly set one within one `sync_interval_ms`.
/// Holds the VIP while leading: bound at takeover, then checked and repaired every sync interval.
/// `listen_on_vip` is told the VIP's address before it is added (at takeover and whenever the
/// stored VIP moves it), so that the dispatcher API listens there before clients are sent to it.
fn start_vip(
    context: &ThreadContext,
    vip: Arc<VipServer>,
    on_failure: Arc<dyn Fn(VipFailure) + Send + Sync>,
    listen_on_vip: Arc<dyn Fn(std::net::IpAddr) + Send + Sync>,
    metrics: Arc<crate::metrics::Metrics>,
) -> std::io::Result<TimerHandle> {
    let retry = Arc::new(Mutex::new(vip.config().retry_policy()));
    let report = move |retry: &Mutex<VipRetry>, result: &vip::VipResult<()>| {
        if let Err(error) = result {
            metrics.vip_error(error);
        }
        let verdict = retry.lock().record(result);
        let message = match result {
            Err(error) => error.to_string(),
            Ok(()) => return,
        };
        match verdict {
            VipVerdict::StopService => on_failure(VipFailure { permanent: true, message }),
            VipVerdict::StepDown => on_failure(VipFailure { permanent: false, message }),
            VipVerdict::RetryAfter(_) | VipVerdict::Healthy => {
                tracing::warn!(%message, "vip operation failed; retrying");
            }
        }
    };
    let report = Arc::new(report);
    let (config_vip, config_retry, config_report) = (vip.clone(), retry.clone(), report.clone());
    let config_listen = listen_on_vip.clone();
    context
        .sched(move || {
            // The file's VIP first, so a store that cannot be read delays nothing.
            config_listen(config_vip.vip().ip);
            if let Err(error) = refresh_stored_vip(&config_vip) {
                config_report(&config_retry, &Err(error));
            }
            config_listen(config_vip.vip().ip);
            let result = config_vip.config_vip().map(|presence| {
                tracing::info!(vip = %config_vip.vip(), ?presence, "vip bound on takeover");
            });
            config_report(&config_retry, &result);
        })
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    let interval = vip.config().sync_interval();
    TimerHandle::new(
        context,
        move || {
            let refreshed = refresh_stored_vip(&vip);
            listen_on_vip(vip.vip().ip);
            if let Err(error) = refreshed {
                report(&retry, &Err(error));
                return;
            }
            let result = vip.sync_vip().map(|report| {
                if report.re_added {
                    tracing::warn!(vip = %vip.vip(), "the vip had disappeared; added it back");
                }
            });
            report(&retry, &result);
        },
        interval,
        true,
    )
    .map_err(|error| std::io::Error::other(error.to_string()))
}

/// Serves the stored VIP if it changed. Only a stored VIP that cannot be taken here is an error
/// for the retry policy; an unreadable store (no session, ZooKeeper slow) keeps the current VIP,
/// and an invalid stored VIP is logged once by the server and ignored.
fn refresh_stored_vip(vip: &VipServer) -> vip::VipResult<()> {
    match vip.refresh_stored() {
        Ok(Retarget::Moved) => {
            tracing::info!(vip = %vip.vip(), interface = %vip.interface(), "the leader moved to the stored vip");
            Ok(())
        }
        Ok(Retarget::Changed | Retarget::Unchanged) | Err(VipStoreError::Corrupt(_)) => Ok(()),
        Err(VipStoreError::Vip(error)) => Err(error),
        Err(error) => {
            tracing::debug!(%error, "cannot read the stored vip; keeping the current one");
            Ok(())
        }
    }
}

/// The VIP's fence for a term that leads on `session` (see `vip::VipServer::set_fence`): the
/// runner's latest confirmed contact on that very session (a later session's contact proves
/// nothing of this term's election node) plus the fence's window for the session timeout the
/// server granted, or the configured one if shorter. Without a session or a runner the fence
/// never opens: the VIP is not held, and the VIP loop's failures make the leader step down.
pub fn vip_fence(
    lease: Option<Arc<RunnerLease>>,
    session: Option<&quorum::ZkSession>,
    configured_session_timeout: Duration,
) -> vip::HoldUntil {
    let (Some(lease), Some(session)) = (lease, session) else {
        tracing::error!("no runner or no session for the vip's fence: the vip cannot be held in this term");
        return Arc::new(|| None);
    };
    let session_id = session.session_id();
    let window = vip::fence_window(configured_session_timeout.min(session.session_timeout()));
    Arc::new(move || lease.contact_of(session_id).map(|contact| contact + window))
}

/// Releases the VIP; idempotent, logged.
pub fn release_vip(vip: &VipServer) {
    match vip.clean_vip() {
        Ok(true) => tracing::info!(vip = %vip.vip(), "vip released"),
        Ok(false) => {}
        Err(error) => tracing::error!(vip = %vip.vip(), %error, "cannot release the vip"),
    }
}
