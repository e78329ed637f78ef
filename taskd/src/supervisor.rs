//! The supervisor: the daemon's main thread. It owns the health monitor, builds a `TaskServer`,
//! runs it on the server's own thread and watches two things: the signal flag (then it stops the
//! server from the main thread, joins, drops and exits 0) and the server's own stop (a network
//! failure: it joins, drops, and builds a fresh server once this node's health is valid again
//! and the re-entry back-off has passed). The process never exits for a network failure unless
//! `on_network_failure = "exit"` and the exit counter says systemd would not give up on it.
//!
//! # The ports across a restart
//! While the service is stopped, a `StoppedService` answers on both ports (status, probes,
//! metrics, 503 to every task route). It binds as soon as the stopping server has closed its
//! listeners (stop stage 1), while that server still drains, and it is dropped right before the
//! next server binds. So the ports are closed only between stage 1 and the stand-in's bind (one
//! `WATCH_INTERVAL` poll, a few ms) and between the stand-in's close and the new server's bind
//! (no wait in between); a signal closes them for good, as the process exits.
//!
//! The process's `Metrics` are built here, once, and handed to every server and stand-in.
//! Before all that it takes the state directory's lock (`state_lock`) and keeps it to the end:
//! a second daemon on the same state directory exits 1 at once, and every server it builds knows
//! it is its node's only live incarnation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::{ExitCounter, StopFlag};
use vip::health::HealthMonitor;

use crate::config::{Config, NetworkFailureAction};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::reentry::ReentryBackoff;
use crate::runner_client::RunnerClient;
use crate::state_lock::{SoleIncarnation, StateDirLock};
use crate::stopped_service::{StoppedService, Waiting};
use crate::task_server::{StopReason, TaskServer};

/// Exit code after a network failure in exit mode (`EX_TEMPFAIL`): not a crash, no core.
pub const EXIT_NETWORK_FAILURE: i32 = 75;
/// Exit code when the daemon could not start at all.
pub const EXIT_START_FAILURE: i32 = 1;

/// How often the main thread looks at the signal flag and the server.
const WATCH_INTERVAL: Duration = Duration::from_millis(5);

/// The main thread's loop around the service.
pub struct Supervisor {
    config: Arc<Config>,
    stop_flag: StopFlag,
    notifier: Notifier,
    backoff: ReentryBackoff,
    /// Half of `WATCHDOG_USEC`, read once; `None` without a systemd watchdog.
    watchdog_interval: Option<Duration>,
    last_watchdog_ping: std::cell::Cell<Option<Instant>>,
    metrics: Arc<Metrics>,
    /// What answers on the ports while the service is stopped (see `# The ports across a restart`).
    stopped: Option<StoppedService>,
    /// The stand-in's worker pool and runner client, built on the first stop and kept.
    stopped_pool: Option<(Arc<runtime::rpc::WorkerPool>, RunnerClient)>,
}

impl Supervisor {
    pub fn new(config: Config, stop_flag: StopFlag) -> Supervisor {
        let notifier = Notifier::from_env();
        Supervisor {
            config: Arc::new(config),
            stop_flag,
            watchdog_interval: notifier.watchdog_interval(),
            last_watchdog_ping: std::cell::Cell::new(None),
            notifier,
            backoff: ReentryBackoff::new(Duration::from_secs(1), Duration::from_secs(30), Duration::from_secs(300)),
            metrics: Metrics::new(),
            stopped: None,
            stopped_pool: None,
        }
    }

    /// The process's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Runs until a signal (returns 0) or, in exit mode, a network failure (returns 75).
    pub fn run(mut self) -> i32 {
        if let Err(error) = std::fs::create_dir_all(&self.config.state_dir) {
            tracing::error!(state_dir = %self.config.state_dir.display(), %error, "cannot create the state directory");
            return EXIT_START_FAILURE;
        }
        // First, before anything that acts for this node: one daemon per state directory, and
        // the proof that the previous incarnation is dead (see `state_lock`).
        let state_lock = match StateDirLock::acquire(&self.config.state_dir) {
            Ok(lock) => lock,
            Err(error) => {
                tracing::error!(%error, "cannot take the state directory's lock; not starting");
                eprintln!("zbs-taskd: {error}");
                return EXIT_START_FAILURE;
            }
        };
        tracing::info!(lock = %state_lock.path().display(), "state directory locked for this process's life");
        let incarnation = state_lock.sole_incarnation();
        crate::run_log::install(&self.config.state_dir);
        self.read_exit_counter();
        let health = match HealthMonitor::start(&self.config.health, self.config.data_address) {
            Ok(monitor) => Arc::new(monitor),
            Err(error) => {
                tracing::error!(%error, "cannot start the health monitor");
                return EXIT_START_FAILURE;
            }
        };
        let mut first_start = true;
        loop {
            // The stand-in gives the ports back right before the new server binds them.
            self.stopped.take();
            let server = match self.start_server(&health, incarnation) {
                Ok(server) => server,
                Err(error) if first_start => {
                    tracing::error!(error = %error, "cannot start the task server");
                    return EXIT_START_FAILURE;
                }
                Err(error) => {
                    let wait = self.backoff.stopped(Instant::now());
                    self.metrics.supervisor_backoff_seconds.set(wait.as_secs_f64());
                    tracing::error!(error = %error, wait_ms = wait.as_millis() as u64, "cannot restart the task server; retrying");
                    self.answer_while_stopped(
                        &health,
                        &format!("cannot restart: {error}"),
                        Waiting::Backoff { until: Instant::now() + wait },
                    );
                    if self.wait_or_signal(wait) {
                        return 0;
                    }
                    continue;
                }
            };
            if first_start {
                self.notifier.ready();
                first_start = false;
            }
            self.backoff.started(Instant::now());
            while !server.has_stopped() {
                if self.stop_flag.is_set() {
                    server.stop(StopReason::Requested);
                }
                // A stop of its own (not a signal's) leaves the process up: answer for the
                // service as soon as its listeners are closed, while it still drains.
                if self.stopped.is_none() && !self.stop_flag.is_set() && server.has_stopped_listening() {
                    if let Some(reason) = server.stop_reason().filter(|reason| *reason != StopReason::Requested) {
                        self.answer_while_stopped(&health, &describe(&reason), Waiting::DataNetwork);
                    }
                }
                std::thread::sleep(WATCH_INTERVAL);
            }
            let reason = server.stop_reason();
            if let Err(error) = server.join() {
                tracing::error!(%error, "task server thread did not join");
            }
            drop(server);
            match reason {
                _ if self.stop_flag.is_set() => {
                    tracing::info!("stopped on a signal; exiting");
                    return 0;
                }
                Some(ref reason) if self.stopped.is_none() => {
                    // Stopped before the watch saw its listeners close: answer from now on.
                    self.answer_while_stopped(&health, &describe(reason), Waiting::DataNetwork);
                }
                _ => {}
            }
            match reason {
                Some(StopReason::NetworkFailure(reason)) => {
                    tracing::warn!(%reason, "the service stopped itself for a network failure; the process stays");
                    if self.config.on_network_failure == NetworkFailureAction::Exit && self.exit_allowed() {
                        return EXIT_NETWORK_FAILURE;
                    }
                }
                Some(StopReason::VipFailure(failure)) if failure.permanent => {
                    tracing::error!(
                        message = %failure.message,
                        "the vip configuration cannot work on this node: the service stays stopped \
                         (never leader again with this configuration); fix it and restart the daemon"
                    );
                    self.notifier.status("stopped: the vip cannot be held with this configuration");
                    if let Some(stopped) = &self.stopped {
                        stopped.set_waiting(Waiting::Restart);
                    }
                    while !self.wait_or_signal(Duration::from_secs(60)) {}
                    return 0;
                }
                Some(StopReason::VipFailure(failure)) => {
                    tracing::warn!(message = %failure.message, "the vip failed repeatedly; rejoining later as a follower");
                }
                Some(StopReason::DispatcherFailed(reason)) => {
                    tracing::warn!(%reason, "this node could not run the dispatcher and handed leadership over; rejoining later");
                }
                Some(StopReason::Requested) | None => {
                    tracing::warn!("the service stopped without a signal; rebuilding it");
                }
            }
            let wait = self.backoff.stopped(Instant::now());
            self.metrics.supervisor_backoff_seconds.set(wait.as_secs_f64());
            if let Some(stopped) = &self.stopped {
                stopped.set_waiting(Waiting::Backoff { until: Instant::now() + wait });
            }
            tracing::info!(
                wait_ms = wait.as_millis() as u64,
                n_failures = self.backoff.n_failures(),
                "re-entry: waiting for the back-off and for the data network to be valid"
            );
            self.notifier.status("follower-to-be: waiting for a healthy data network");
            if self.wait_or_signal(wait) {
                return 0;
            }
            if let Some(stopped) = &self.stopped {
                stopped.set_waiting(Waiting::DataNetwork);
            }
            if self.wait_for_health(&health) {
                return 0;
            }
            self.metrics.supervisor_reentries.inc();
            tracing::info!("data network valid again; rejoining the cluster as a new member");
        }
    }

    fn start_server(
        &self,
        health: &Arc<HealthMonitor>,
        incarnation: SoleIncarnation,
    ) -> Result<TaskServer, crate::task_server::ServerError> {
        let server = TaskServer::new(
            self.config.clone(),
            health.clone(),
            self.notifier.clone(),
            self.metrics.clone(),
            incarnation,
        )?;
        server.initialize()?;
        server.start()?;
        Ok(server)
    }

    /// Sets `exit_counter_exits` from the counter's file, when there is one (it is not created
    /// here: only an exit in exit mode creates it).
    fn read_exit_counter(&self) {
        let path = self.config.state_dir.join("exit-counter");
        if !path.exists() {
            return;
        }
        match ExitCounter::open(&path, self.config.start_limit_interval, self.config.start_limit_burst)
            .and_then(|counter| counter.recent_exits())
        {
            Ok(n_exits) => {
                self.metrics.exit_counter_exits.set(i64::from(n_exits));
            }
            Err(error) => tracing::warn!(%error, "cannot read the exit counter"),
        }
    }

    /// Starts the stand-in that answers on the ports while the service is stopped (see
    /// `stopped_service`); one that cannot bind is logged and the ports stay closed.
    fn answer_while_stopped(&mut self, health: &Arc<HealthMonitor>, reason: &str, waiting: Waiting) {
        if let Some(stopped) = &self.stopped {
            stopped.set_waiting(waiting);
            return;
        }
        if self.stopped_pool.is_none() {
            let pool = runtime::rpc::WorkerPool::new("taskd-stopped", 2);
            let client = RunnerClient::new(self.config.api.sent_token());
            match (pool, client) {
                (Ok(pool), Ok(client)) => self.stopped_pool = Some((pool, client)),
                (Err(error), _) => return tracing::error!(%error, "cannot start the stopped service's workers"),
                (_, Err(error)) => return tracing::error!(%error, "cannot start the stopped service's client"),
            }
        }
        let Some((pool, client)) = &self.stopped_pool else { return };
        match StoppedService::start(
            self.config.clone(),
            self.metrics.clone(),
            health.flag(),
            pool.clone(),
            client.clone(),
            reason.to_string(),
            waiting,
        ) {
            Ok(stopped) => self.stopped = Some(stopped),
            Err(error) => {
                tracing::error!(%error, "the stopped service cannot listen: the ports stay closed until the rejoin")
            }
        }
    }

    /// In exit mode: true (and the exit is recorded) when exiting keeps within systemd's start
    /// limit; false, logged, when it would not, so the daemon stays up instead.
    fn exit_allowed(&self) -> bool {
        let path = self.config.state_dir.join("exit-counter");
        let counter = match ExitCounter::open(&path, self.config.start_limit_interval, self.config.start_limit_burst) {
            Ok(counter) => counter,
            Err(error) => {
                tracing::error!(%error, "cannot read the exit counter; staying up rather than risk systemd's start limit");
                return false;
            }
        };
        match counter.try_record_exit() {
            Ok(Some(n_exits)) => {
                self.metrics.exit_counter_exits.set(i64::from(n_exits));
                tracing::warn!(
                    n_exits,
                    window_sec = self.config.start_limit_interval.as_secs(),
                    "exiting for the network failure (exit mode)"
                );
                true
            }
            Ok(None) => {
                tracing::warn!(
                    limit = self.config.start_limit_burst,
                    window_sec = self.config.start_limit_interval.as_secs(),
                    "exit mode: exiting again would exceed systemd's start limit; staying up instead"
                );
                false
            }
            Err(error) => {
                tracing::error!(%error, "cannot update the exit counter; staying up");
                false
            }
        }
    }

    /// Waits `duration`, pinging the watchdog; true when a signal came meanwhile.
    fn wait_or_signal(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            if self.stop_flag.is_set() {
                return true;
            }
            self.ping_watchdog();
            std::thread::sleep(WATCH_INTERVAL.min(deadline.saturating_duration_since(Instant::now())));
        }
        self.stop_flag.is_set()
    }

    /// Waits until the health monitor says valid (`rise` good rounds in a row); true on a signal.
    fn wait_for_health(&self, health: &HealthMonitor) -> bool {
        let flag = health.flag();
        while !flag.is_valid() {
            if self.stop_flag.is_set() {
                return true;
            }
            self.ping_watchdog();
            std::thread::sleep(WATCH_INTERVAL);
        }
        self.stop_flag.is_set()
    }

    /// Between servers no loop pings the watchdog, so the supervisor does.
    /// The waits poll every few milliseconds; the pings go out at the watchdog's own interval.
    fn ping_watchdog(&self) {
        let Some(interval) = self.watchdog_interval else { return };
        let now = Instant::now();
        if self.last_watchdog_ping.get().is_none_or(|last| now.duration_since(last) >= interval) {
            self.last_watchdog_ping.set(Some(now));
            self.notifier.watchdog();
        }
    }
}

/// A stop's reason as the stopped service reports it.
fn describe(reason: &StopReason) -> String {
    match reason {
        StopReason::Requested => "stop requested".to_string(),
        StopReason::NetworkFailure(reason) => format!("data network failed: {reason}"),
        StopReason::VipFailure(failure) => format!("vip failed: {}", failure.message),
        StopReason::DispatcherFailed(reason) => format!("dispatcher failed: {reason}"),
    }
}
