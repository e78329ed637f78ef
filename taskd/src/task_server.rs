//! `TaskServer`: one per process, a quorum member whose loop (on its own thread) runs the
//! server's decisions. Every node serves the runner API; the leader also runs the dispatcher.
//! A failed data network is *published* by the dispatcher; this loop polls it on a 1 s timer
//! (and is woken at once when it turns bad) and stops the service from its own thread.
//!
//! # Start-up
//! `new` (nothing runs) → `initialize` (bind the RPC servers, install the quorum handler, arm
//! the health poll and the watchdog on the loop) → `start` (the loop runs on its own thread and
//! joins the election).
//!
//! # Shutdown
//! `stop(reason)` runs once, from any thread (the supervisor for a signal, the loop itself for a
//! network failure), and each stage is logged with its duration:
//! 1. the member announces leaving (`quorum::takeover`), then the RPC servers stop listening
//!    (established connections are still served); when the announcement fails they listen until
//!    stage 8, so a live member's port never refuses while its election node could be taken
//!    for a crashed one's (`crash_watch`);
//! 2. the VIP is released, before the quorum is left, so the next leader never fights for it;
//! 3. the quorum is left: the leader steps down and gives up its election node, so the next
//!    leader is elected through ZooKeeper's watch while this node still drains;
//! 4. RPC requests in flight drain, up to the drain deadline;
//! 5. the dispatcher stops (its context is joined from this loop, never from itself);
//! 6. the runner stops;
//! 7. the ZooKeeper session is closed (the quorum does it after stage 6) and the loop unloops;
//! 8. on the server's thread, after the loop: the RPC servers' IO is stopped and joined.
//!
//! The supervisor then joins the thread and drops the server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quorum::{Event, Member, MemberInfo, QuorumConfig, QuorumHandle, QuorumHandler, QuorumServer, ZkConfig};
use runtime::rpc::{self, Server, ServerConfig, WorkerPool};
use runtime::{ContextHandle, JoinError, TimerHandle};
use vip::health::{HealthFlag, HealthMonitor, Subscription};
use vip::VipServer;

use crate::config::Config;
use crate::crash_watch::runners::RunnerWatch;
use crate::crash_watch::CrashWatch;
use crate::dispatcher::{release_vip, NetworkHealthFlag, SchedulerHandle, SchedulerSetup, TaskDispatcher, VipFailure};
use crate::fresh_members::FreshMembers;
use crate::metrics::{zk_state_label, Metrics, TransitionReason, SERVICE_STATES, ZK_STATES};
use crate::notify::Notifier;
use crate::reach::{ReachSettings, ReachWatch};
use crate::runner::{RunnerConfig, TaskRunner};
use crate::runner_client::RunnerClient;
use crate::state_lock::SoleIncarnation;

mod routes;
mod stop_stage;

pub use routes::DEBUG_HOOKS_ENV;

use stop_stage::{log_done, timed, StopStage};

pub use crate::task_db::layout::QUORUM_PATH;

/// How often the loop polls the dispatcher's published health (the original: a 1 s TimerHandle).
pub const HEALTH_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long a take-over is watched for its dispatcher to be ready (it gives up much sooner:
/// `OPEN_GIVE_UP`).
const TAKEOVER_WATCH_LIMIT: Duration = Duration::from_secs(600);

/// How often the leader's task and runner gauges are read from its dispatcher at most.
pub const LEADER_GAUGES_TTL: Duration = Duration::from_secs(1);

/// `/healthz` answers 503 when the loop's health poll has not run for this long (three polls).
pub const LOOP_STALE_AFTER: Duration = Duration::from_secs(3);

/// Why the service stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// SIGTERM/SIGINT or an operator asked: the process exits after the stop.
    Requested,
    /// This node led with a failed data network: the process stays and rejoins later.
    NetworkFailure(String),
    /// The VIP could not be held: a permanent failure (configuration, privileges) keeps the
    /// service stopped; a transient one that persisted makes the node rejoin later.
    VipFailure(VipFailure),
    /// This node was elected but could not run its dispatcher (it could not start, or its task
    /// database could not be opened): it hands leadership over and rejoins after a back-off,
    /// never staying a leader that answers every task route 503.
    DispatcherFailed(String),
}

/// Why the server could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("quorum: {0}")]
    Quorum(#[from] quorum::QuorumError),
    #[error("rpc: {0}")]
    Rpc(#[from] rpc::RpcError),
    #[error("cannot schedule on the server loop: {0}")]
    Sched(#[from] runtime::SchedError),
    #[error("the server was already initialized")]
    AlreadyInitialized,
    #[error("vip: {0}")]
    Vip(#[from] vip::VipError),
}

/// What this node runs beyond its runner, in one slot: a follower nothing, a leader its
/// dispatcher and — once its scheduling started — the handle requests reach it through.
enum Role {
    Follower,
    Leader {
        dispatcher: TaskDispatcher,
        scheduler: Option<SchedulerHandle>,
        /// The watch over the other nodes' runners (`crash_watch::runners`): a dead runner's tasks
        /// are rescheduled at once. Asked to stop before the dispatcher, joined after it.
        runner_watch: Option<RunnerWatch>,
    },
}

impl Role {
    /// The running dispatcher's scheduler, for requests.
    fn scheduler(&self) -> Option<SchedulerHandle> {
        match self {
            Role::Leader { scheduler, .. } => scheduler.clone(),
            Role::Follower => None,
        }
    }

    fn runs_dispatcher(&self) -> bool {
        matches!(self, Role::Leader { .. })
    }
}

/// What the loop, the RPC handlers and the supervisor share.
struct Inner {
    config: Arc<Config>,
    quorum: QuorumHandle,
    loop_context: ContextHandle,
    health: HealthFlag,
    health_monitor: Arc<HealthMonitor>,
    notifier: Notifier,
    published_health: NetworkHealthFlag,
    /// What this node runs beyond its runner: nothing, or the leader's dispatcher.
    role: Mutex<Role>,
    runner: Mutex<Option<Arc<TaskRunner>>>,
    vip: Option<Arc<VipServer>>,
    /// The members as ZooKeeper holds them, for the status and cluster answers.
    fresh_members: FreshMembers,
    vip_failure: Mutex<Option<VipFailure>>,
    /// The one client of the runner API (the dispatcher's calls and the forwarded operations).
    runner_client: RunnerClient,
    /// Set when this leader's dispatcher could not start or open its database; the loop stops
    /// the service for it (`StopReason::DispatcherFailed`).
    dispatcher_failure: Mutex<Option<String>>,
    rpc_servers: Vec<Arc<Server>>,
    stopping: AtomicBool,
    stop_reason: Mutex<Option<StopReason>>,
    stop_started: Mutex<Option<Instant>>,
    last_published_health: Mutex<Option<bool>>,
    warned_no_healthy_peer: AtomicBool,
    /// The process's metrics (they outlive this server: the supervisor owns them).
    metrics: Arc<Metrics>,
    /// True from `RoleChanged { leader: true }` until the first step-down path counts the
    /// transition (a stop, a session loss or `RoleChanged { leader: false }`), so it counts once.
    counted_leader: AtomicBool,
    /// Whether this node led when its stop was asked (the step-down histogram's sample).
    led_at_stop: AtomicBool,
    /// When the loop last ran its health poll (`CLOCK_MONOTONIC` ms), for `/healthz`.
    last_loop_tick_ms: AtomicU64,
    /// Set after stop stage 1: the ports are free for the stopped service's stand-in.
    listening_stopped: AtomicBool,
    /// When the leader's task and runner gauges were last read.
    leader_gauges_at: Mutex<Option<Instant>>,
    /// The VIP's frames already added to `vip_garps_sent`.
    vip_frames_counted: AtomicU64,
    /// The crash detector (`crash_watch`): asked to stop in stage 1, joined when dropped.
    crash_watch: Mutex<Option<CrashWatch>>,
    /// The reach watcher and early take-over (`reach`), with `early_takeover_ms` only: asked to
    /// stop in stage 1, joined when dropped.
    reach_watch: Mutex<Option<ReachWatch>>,
}

/// The Task Center service of one process.
pub struct TaskServer {
    inner: Arc<Inner>,
    quorum_server: QuorumServer,
    timers: Mutex<Vec<TimerHandle>>,
    health_subscription: Mutex<Option<Subscription>>,
    initialized: AtomicBool,
    _worker_pool: Arc<WorkerPool>,
    incarnation: SoleIncarnation,
}

impl TaskServer {
    /// Builds the server; nothing runs until `initialize` and `start`.
    pub fn new(
        config: Arc<Config>,
        health_monitor: Arc<HealthMonitor>,
        notifier: Notifier,
        metrics: Arc<Metrics>,
        incarnation: SoleIncarnation,
    ) -> Result<TaskServer, ServerError> {
        let member = MemberInfo {
            id: config.node_id.clone(),
            address: config.dispatcher_address().to_string(),
            priority: 0,
            healthy: health_monitor.flag().is_valid(),
            data_address: Some(config.data_address.to_string()),
        };
        let zk = ZkConfig::new(config.zookeeper_hosts.clone(), config.session_timeout);
        // The state directory's lock proves that an election node of this node id with another
        // session is a dead incarnation's: it is deleted at once, not left to its session's expiry.
        let quorum_server =
            QuorumServer::new(QuorumConfig::new(zk, QUORUM_PATH, member).with_stale_own_nodes_removed(true))?;
        let worker_pool = WorkerPool::with_default_size("taskd-workers")?;
        let runner_client = RunnerClient::new(config.api.sent_token())?;
        // Sockets of the VIP server belong to this thread's network namespace: the supervisor's.
        // The VIP stored in ZooKeeper (`zbs-task vip set`) overrides the file's; the `vip` routes
        // act on this server.
        let vip = match &config.vip {
            Some(vip_config) => {
                let quorum = quorum_server.handle();
                let store = vip::VipStore::new(move || quorum.session());
                Some(Arc::new(VipServer::new(vip_config)?.with_store(store)))
            }
            None => None,
        };
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let dispatcher_server = Server::new(routes::dispatcher_api(
                routes::dispatcher_listeners(&config),
                weak.clone(),
                &config,
                &worker_pool,
                &runner_client,
                &metrics,
            ));
            let runner_server = Server::new(routes::runner_api(
                config.api.limit(ServerConfig::new("runner", config.runner_address())),
                weak.clone(),
                &config,
                &worker_pool,
                &metrics,
            ));
            Inner {
                fresh_members: FreshMembers::new(quorum_server.handle()).with_metrics(metrics.clone()),
                quorum: quorum_server.handle(),
                loop_context: quorum_server.context(),
                health: health_monitor.flag(),
                health_monitor,
                notifier,
                published_health: NetworkHealthFlag::new(),
                role: Mutex::new(Role::Follower),
                runner: Mutex::new(None),
                vip,
                vip_failure: Mutex::new(None),
                runner_client: runner_client.clone(),
                dispatcher_failure: Mutex::new(None),
                rpc_servers: vec![Arc::new(dispatcher_server), Arc::new(runner_server)],
                stopping: AtomicBool::new(false),
                stop_reason: Mutex::new(None),
                stop_started: Mutex::new(None),
                last_published_health: Mutex::new(None),
                warned_no_healthy_peer: AtomicBool::new(false),
                metrics: metrics.clone(),
                counted_leader: AtomicBool::new(false),
                led_at_stop: AtomicBool::new(false),
                listening_stopped: AtomicBool::new(false),
                leader_gauges_at: Mutex::new(None),
                vip_frames_counted: AtomicU64::new(0),
                last_loop_tick_ms: AtomicU64::new(crate::run_log::monotonic_ns() / 1_000_000),
                crash_watch: Mutex::new(None),
                reach_watch: Mutex::new(None),
                config,
            }
        });
        Ok(TaskServer {
            inner,
            quorum_server,
            timers: Mutex::new(Vec::new()),
            health_subscription: Mutex::new(None),
            initialized: AtomicBool::new(false),
            _worker_pool: worker_pool,
            incarnation,
        })
    }

    /// Binds the RPC servers, installs the quorum handler and arms the loop's timers.
    pub fn initialize(&self) -> Result<(), ServerError> {
        if self.initialized.swap(true, Ordering::AcqRel) {
            return Err(ServerError::AlreadyInitialized);
        }
        if let Some(vip) = &self.inner.vip {
            // A node that starts is not leader: a VIP left by a killed daemon must go.
            match vip.remove_leftover() {
                Ok(true) => tracing::warn!(vip = %vip.vip(), "removed a leftover vip at start"),
                Ok(false) => {}
                Err(error) => tracing::warn!(vip = %vip.vip(), %error, "cannot check for a leftover vip"),
            }
        }
        for server in &self.inner.rpc_servers {
            let address = server.serve_in_background(&format!("rpc-{}", server.name()))?;
            tracing::info!(server = %server.name(), %address, "rpc server listening");
        }
        self.start_runner();
        self.quorum_server.initialize(Handler { inner: self.inner.clone() })?;
        // After the listeners: a member's port listens before its election node can exist.
        match CrashWatch::start(self.inner.quorum.clone()) {
            Ok(watch) => *self.inner.crash_watch.lock() = Some(watch),
            Err(error) => {
                tracing::error!(%error, "cannot start the crash detector; a crashed leader waits for its session")
            }
        }
        self.start_reach_watch();
        let mut timers = self.timers.lock();
        let poller = self.inner.clone();
        timers.push(TimerHandle::new(
            &self.inner.loop_context,
            move || poller.poll_health(),
            HEALTH_POLL_INTERVAL,
            true,
        )?);
        // Publish every health change in the quorum at once (not at the next poll), so the
        // whole-outage guard of the leader sees the members' current health. Whether to stop is
        // not decided here: the dispatcher publishes the change and wakes the loop itself.
        let weak = Arc::downgrade(&self.inner);
        let loop_context = self.inner.loop_context.clone();
        *self.health_subscription.lock() = Some(self.inner.health.subscribe(move |_change| {
            let weak = weak.clone();
            let _ = loop_context.sched(move || {
                if let Some(inner) = weak.upgrade() {
                    inner.publish_health_in_quorum();
                }
            });
        }));
        if let Some(interval) = self.inner.notifier.watchdog_interval() {
            let notifier = self.inner.notifier.clone();
            // Pinged from the loop itself, so a wedged loop stops the pings and systemd acts.
            timers.push(TimerHandle::new(&self.inner.loop_context, move || notifier.watchdog(), interval, true)?);
        }
        Ok(())
    }

    /// Starts the reach watcher (`reach`) when `early_takeover_ms` is on (the configuration
    /// checked that the health source is the probe, whose per-peer view it publishes).
    fn start_reach_watch(&self) {
        let config = &self.inner.config;
        if config.early_takeover.is_zero() {
            return;
        }
        let settings = ReachSettings {
            quorum: self.inner.quorum.clone(),
            node_id: config.node_id.clone(),
            peer_reach: self.inner.health_monitor.peer_reach(),
            probe_port: config.health.probe.port,
            wait: config.early_takeover,
        };
        match ReachWatch::start(settings) {
            Ok(watch) => *self.inner.reach_watch.lock() = Some(watch),
            Err(error) => {
                tracing::error!(%error, "cannot start the reach watcher; a lost leader waits for its session")
            }
        }
    }

    /// Starts this node's runner; it registers once the quorum has a session.
    fn start_runner(&self) {
        // The proof that no other live process has this node id: owner nodes of this node id
        // held by another session are dead, deleted before the runner registers.
        let runner_config =
            RunnerConfig::from_daemon(&self.inner.config, Some(self.inner.metrics.clone()), Some(self.incarnation));
        let health = self.inner.health.clone();
        match TaskRunner::start(runner_config, self.inner.quorum.clone(), move || health.is_valid()) {
            Ok(runner) => *self.inner.runner.lock() = Some(Arc::new(runner)),
            Err(error) => tracing::error!(%error, "cannot start the runner"),
        }
    }

    /// Runs the loop on a thread of its own; it joins the election.
    pub fn start(&self) -> Result<(), ServerError> {
        self.quorum_server.start()?;
        self.inner.metrics.service_running.set(1);
        Metrics::set_state(&self.inner.metrics.service_state, SERVICE_STATES, Some("running"));
        Ok(())
    }

    /// Stops the service (see `# Shutdown`); returns at once, idempotent, from any thread.
    pub fn stop(&self, reason: StopReason) {
        self.inner.stop(reason);
    }

    /// True once the loop has finished (the server stopped, for whatever reason).
    pub fn has_stopped(&self) -> bool {
        self.inner.quorum.is_stopped()
    }

    /// True once a stop has closed the listeners (stage 1): the ports can be bound again while
    /// the rest of the stop goes on.
    pub fn has_stopped_listening(&self) -> bool {
        self.inner.listening_stopped.load(Ordering::Acquire)
    }

    /// Why the server stopped (or is stopping), if it is.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.inner.stop_reason.lock().clone()
    }

    /// Waits for the loop's thread to finish. From the loop's own thread: `SelfJoin`, at once.
    pub fn join(&self) -> Result<(), JoinError> {
        self.quorum_server.join()
    }

    /// The addresses the RPC servers listen on (dispatcher, runner), once initialized.
    pub fn rpc_addresses(&self) -> Vec<Option<SocketAddr>> {
        self.inner.rpc_servers.iter().map(|server| server.local_addr()).collect()
    }

    /// True while this node leads.
    pub fn is_leader(&self) -> bool {
        self.inner.quorum.is_leader()
    }
}

impl Drop for TaskServer {
    fn drop(&mut self) {
        self.inner.stop(StopReason::Requested);
        self.health_subscription.lock().take();
        self.timers.lock().clear();
        drop(self.inner.crash_watch.lock().take());
        drop(self.inner.reach_watch.lock().take());
        if let Err(error) = self.quorum_server.join() {
            tracing::error!(%error, "task server loop did not join");
        }
        // On the owner's thread after the loop has ended.
        timed(StopStage::StopRpcIo, || {
            for server in &self.inner.rpc_servers {
                server.shutdown();
            }
            String::new()
        });
        self.inner.count_vip_frames();
        if let Some(started) = *self.inner.stop_started.lock() {
            tracing::info!(total_ms = started.elapsed().as_millis() as u64, "task server stopped");
        }
    }
}

/// The `reason` label of `zbs_taskd_service_stops_total`.
fn stop_label(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::Requested => "requested",
        StopReason::NetworkFailure(_) => "network_failure",
        StopReason::VipFailure(_) => "vip_failure",
        StopReason::DispatcherFailed(_) => "dispatcher_failed",
    }
}

impl Inner {
    fn stop(&self, reason: StopReason) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.stop_started.lock() = Some(Instant::now());
        tracing::warn!(?reason, "stopping the task server");
        self.notifier.stopping();
        self.notifier.status(&format!("stopping: {reason:?}"));
        self.led_at_stop.store(self.quorum.is_leader(), Ordering::Release);
        self.metrics
            .service_stops
            .get_or_create(&crate::metrics::ReasonLabels { reason: stop_label(&reason).to_string() })
            .inc();
        self.count_step_down(match &reason {
            StopReason::Requested => TransitionReason::Shutdown,
            StopReason::NetworkFailure(_) => TransitionReason::DataNetworkFailed,
            StopReason::VipFailure(_) => TransitionReason::VipFailed,
            StopReason::DispatcherFailed(_) => TransitionReason::DispatcherFailed,
        });
        Metrics::set_state(&self.metrics.service_state, SERVICE_STATES, Some("stopping"));
        *self.stop_reason.lock() = Some(reason);
        timed(StopStage::StopListening, || {
            if let Some(watch) = self.crash_watch.lock().as_ref() {
                watch.request_stop();
            }
            if let Some(watch) = self.reach_watch.lock().as_ref() {
                watch.request_stop();
            }
            // A port closes only after the leaving marker exists, so that no peer's crash detector
            // takes the refusals of this live process for a crash (`crash_watch`'s `# Safety`).
            match self.quorum.announce_leaving() {
                Ok(_) => {
                    for server in &self.rpc_servers {
                        server.stop_listening();
                    }
                    // The ports are free for the stopped service's stand-in.
                    self.listening_stopped.store(true, Ordering::Release);
                    String::new()
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot announce leaving: the rpc servers listen until everything has stopped");
                    "not so: leaving not announced, the servers listen until stage 8".to_string()
                }
            }
        });
        timed(StopStage::ReleaseVip, || match &self.vip {
            Some(vip) => {
                release_vip(vip);
                String::new()
            }
            None => "no vip configured".to_string(),
        });
        // Stage 3 onwards run on the loop: the quorum steps down, gives up the election node,
        // calls `Handler::on_stop` (stages 4 to 6), closes the session and unloops.
        self.quorum.leave();
    }

    /// Counts this node's step-down once, with the first reason seen (see `counted_leader`),
    /// and records it in the leadership history.
    fn count_step_down(&self, reason: TransitionReason) {
        if self.counted_leader.swap(false, Ordering::AcqRel) {
            self.metrics.transition(reason);
            self.record_event("stepped_down", reason.label());
        }
    }

    /// Appends a leadership event on a coroutine of the loop (a few ZooKeeper round trips that
    /// the event's handler need not wait for); one that cannot be written is logged.
    fn record_event(&self, event: &str, reason: &str) {
        let event = crate::leader_events::LeaderEvent::new(&self.config.node_id, event, reason);
        let quorum = self.quorum.clone();
        let scheduled = self.loop_context.sched(move || {
            let Some(session) = quorum.session() else {
                return tracing::warn!(?event, "no ZooKeeper session: the leadership event is not recorded");
            };
            if let Err(error) = crate::leader_events::append(&session, &event) {
                tracing::warn!(?event, %error, "cannot record the leadership event");
            }
        });
        if let Err(error) = scheduled {
            tracing::warn!(%error, "cannot schedule the leadership event's write");
        }
    }

    /// Observes the take-over's second half once the new dispatcher is ready: a coroutine on
    /// the loop looks every 5 ms, and ends when it is ready, when the dispatcher stopped (this
    /// node no longer leads), when the server stops, or after `TAKEOVER_WATCH_LIMIT`.
    fn time_takeover(self: &Arc<Self>, elected_at: Instant, handle: SchedulerHandle) {
        let weak = Arc::downgrade(self);
        let _ = self.loop_context.sched(move || loop {
            let Some(inner) = weak.upgrade() else { return };
            if inner.stopping.load(Ordering::Acquire)
                || inner.role.lock().scheduler().is_none()
                || elected_at.elapsed() > TAKEOVER_WATCH_LIMIT
            {
                return;
            }
            if handle.is_ready() {
                inner.metrics.takeover_seconds.observe(elected_at.elapsed().as_secs_f64());
                return;
            }
            drop(inner);
            runtime::sleep(Duration::from_millis(5));
        });
    }

    /// True while the loop's 1 s health poll ran within the last `LOOP_STALE_AFTER`.
    fn loop_answers(&self) -> bool {
        let last = self.last_loop_tick_ms.load(Ordering::Acquire);
        crate::run_log::monotonic_ns() / 1_000_000 <= last.saturating_add(LOOP_STALE_AFTER.as_millis() as u64)
    }

    /// Sets the gauges that mirror this server's live state, right before an encoding.
    fn refresh_metrics(&self) {
        let metrics = &self.metrics;
        let leader = self.quorum.is_leader() && !self.stopping.load(Ordering::Acquire);
        metrics.is_leader.set(i64::from(leader));
        let zk_state = self.quorum.session().map(|session| zk_state_label(session.state()));
        Metrics::set_state(&metrics.zookeeper_session_state, ZK_STATES, zk_state);
        metrics.refresh_health(&self.health);
        for server in &self.rpc_servers {
            metrics
                .rpc_open_connections
                .get_or_create(&crate::metrics::ServerLabels { server: server.name().to_string() })
                .set(server.n_connections() as i64);
        }
        self.refresh_leader_gauges(leader);
        self.count_vip_frames();
        if let Some(vip) = &self.vip {
            metrics
                .vip_held
                .get_or_create(&crate::metrics::VipLabels { vip: vip.vip().to_string() })
                .set(i64::from(vip.is_active()));
        }
    }

    /// The leader's task and runner gauges, from its dispatcher at most once a `LEADER_GAUGES_TTL`
    /// (a scrape every 100 ms must not load the dispatcher); a follower exports them as 0.
    fn refresh_leader_gauges(&self, leader: bool) {
        let metrics = &self.metrics;
        let scheduler = self.role.lock().scheduler().filter(|handle| leader && handle.is_ready());
        let Some(handle) = scheduler else {
            *self.leader_gauges_at.lock() = None;
            metrics.tasks.clear();
            Metrics::set_state(&metrics.runners, crate::metrics::RUNNER_STATES, None);
            return;
        };
        {
            let mut at = self.leader_gauges_at.lock();
            if at.is_some_and(|at| at.elapsed() < LEADER_GAUGES_TTL) {
                return;
            }
            *at = Some(Instant::now());
        }
        let answer = handle.call(Duration::from_secs(1), |scheduler| {
            let tasks = scheduler.list(&crate::task_db::ListFilter::all())?;
            let runners = scheduler.runners()?;
            Ok::<_, crate::dispatcher::scheduler::DispatchError>((tasks, runners))
        });
        let (tasks, runners) = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => return tracing::debug!(%error, "metrics: cannot list tasks and runners"),
            Err(error) => return tracing::debug!(%error, "metrics: the dispatcher did not answer"),
        };
        let mut counts: std::collections::HashMap<(&'static str, crate::task::TaskState), i64> = Default::default();
        for task in &tasks {
            *counts.entry((task.kind.type_name(), task.state)).or_default() += 1;
        }
        for task_type in ["copy_volume", "sleep"] {
            for state in crate::task::TaskState::ALL {
                let labels = crate::metrics::TaskLabels {
                    task: crate::metrics::TaskTypeLabels { r#type: task_type.to_string() },
                    state: state.as_str().to_string(),
                };
                metrics.tasks.get_or_create(&labels).set(counts.get(&(task_type, state)).copied().unwrap_or(0));
            }
        }
        let n_draining = runners.runners.iter().filter(|runner| runner.info.draining).count() as i64;
        let n_up = runners.runners.len() as i64 - n_draining;
        metrics.runners.get_or_create(&crate::metrics::StateLabels { state: "up".to_string() }).set(n_up);
        metrics.runners.get_or_create(&crate::metrics::StateLabels { state: "draining".to_string() }).set(n_draining);
    }

    /// Adds the frames this server's VIP sent since the last look to the process's counter
    /// (each server has its own `VipServer`; the counter outlives them).
    fn count_vip_frames(&self) {
        let Some(vip) = &self.vip else { return };
        let n_sent = vip.n_frames_sent();
        let previous = self.vip_frames_counted.swap(n_sent, Ordering::AcqRel);
        self.metrics.vip_garps_sent.inc_by(n_sent.saturating_sub(previous));
    }

    /// Why this node is not ready, or None when it is: the service runs, its ZooKeeper session
    /// is connected and its data network valid. Generic reasons: `/readyz` needs no token.
    fn not_ready_reason(&self) -> Option<&'static str> {
        if self.stopping.load(Ordering::Acquire) {
            return Some("the service is stopping");
        }
        match self.quorum.session().map(|session| session.state()) {
            Some(quorum::ZkSessionState::SyncConnected) => {}
            _ => return Some("not connected to ZooKeeper"),
        }
        if !self.health.is_valid() {
            return Some("the data network is not valid");
        }
        None
    }

    /// The loop's 1 s poll (and the early wake-up): publish our health in the quorum, keep the
    /// probe's peers current, and stop the service when leading with a failed data network.
    fn poll_health(&self) {
        self.last_loop_tick_ms.store(crate::run_log::monotonic_ns() / 1_000_000, Ordering::Release);
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let dispatcher_failure = self.dispatcher_failure.lock().take();
        if let Some(reason) = dispatcher_failure {
            tracing::error!(%reason, "the dispatcher cannot run on this leader: handing leadership over");
            self.stop(StopReason::DispatcherFailed(reason));
            return;
        }
        let vip_failure = self.vip_failure.lock().take();
        if let Some(failure) = vip_failure {
            tracing::error!(permanent = failure.permanent, message = %failure.message, "the vip cannot be held: stopping the service");
            self.stop(StopReason::VipFailure(failure));
            return;
        }
        self.publish_health_in_quorum();
        if !self.quorum.is_leader() {
            if self.role.lock().runs_dispatcher() {
                self.stop_dispatcher();
            }
            return;
        }
        // The dispatcher publishes every change of the health at once, bad and good, so the flag
        // is the current verdict.
        if self.published_health.is_healthy() {
            self.warned_no_healthy_peer.store(false, Ordering::Release);
            return;
        }
        let reason = self.health.status().last_reason.unwrap_or_else(|| "the data network is invalid".to_string());
        if self.config.step_down_requires_healthy_peer && !self.another_member_is_healthy() {
            if !self.warned_no_healthy_peer.swap(true, Ordering::AcqRel) {
                tracing::warn!(%reason, "data network invalid, but no other member reports healthy: keeping leadership (whole-outage guard)");
            }
            return;
        }
        tracing::error!(%reason, "leader's data network failed: stopping the service, keeping the process");
        self.stop(StopReason::NetworkFailure(reason));
    }

    /// Publishes this node's health in the quorum when it changed, and keeps the probe's
    /// peers current.
    fn publish_health_in_quorum(&self) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let healthy = self.health.is_valid();
        let mut last = self.last_published_health.lock();
        if *last != Some(healthy) {
            *last = Some(healthy);
            self.quorum.set_health(healthy);
        }
        drop(last);
        // The probe's peers follow the membership as ZooKeeper holds it: a follower watches only
        // its predecessor, so its cached list can keep members that left and miss ones that came.
        let members = self.fresh_members.read().unwrap_or_else(|| self.quorum.members());
        self.update_peers(&members);
    }

    /// The whole-outage guard's question, asked of ZooKeeper itself: the members' cached data
    /// can be stale, since a leader watches the membership, not each member's data. When the read
    /// fails nothing proves a healthy peer, so the answer is no (keep leading): a cached flag may
    /// be one the peer has since withdrawn, and stepping down on it could leave no leader.
    fn another_member_is_healthy(&self) -> bool {
        match self.quorum.read_members() {
            Ok(members) => members.iter().any(|member| member.info.id != self.config.node_id && member.info.healthy),
            Err(error) => {
                tracing::warn!(%error, "cannot read the members from ZooKeeper: no healthy peer confirmed");
                false
            }
        }
    }

    fn update_peers(&self, members: &[Member]) {
        let port = self.config.health.probe.port;
        let peers: Vec<SocketAddr> = members
            .iter()
            .filter(|member| member.info.id != self.config.node_id)
            .filter_map(|member| member.info.data_address.as_deref()?.parse::<std::net::IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        self.health_monitor.set_peers(peers);
    }

    fn start_dispatcher(self: &Arc<Self>) {
        // Started and stopped only on the loop, so the slot is not held while the dispatcher
        // starts: requests meanwhile find no scheduler (503, "starting"), never a held lock.
        if self.role.lock().runs_dispatcher() || self.stopping.load(Ordering::Acquire) {
            return;
        }
        let wake = self.loop_waker();
        let wake_for_vip = self.loop_waker();
        let weak = Arc::downgrade(self);
        let on_vip_failure = move |failure: VipFailure| {
            if let Some(inner) = weak.upgrade() {
                *inner.vip_failure.lock() = Some(failure);
            }
            wake_for_vip();
        };
        let dispatcher_server = Arc::downgrade(&self.rpc_servers[0]);
        let dispatcher_port = self.config.dispatcher_port;
        let listen_on_vip = move |ip: std::net::IpAddr| {
            let Some(server) = dispatcher_server.upgrade() else { return };
            if let Err(error) = server.listen_also(SocketAddr::new(ip, dispatcher_port), true) {
                tracing::error!(vip = %ip, %error, "the dispatcher API cannot listen on the vip");
            }
        };
        let report_unusable = self.dispatcher_failure_reporter();
        if let Some(vip) = &self.vip {
            // This term's fence, before the dispatcher binds the VIP.
            let lease = self.runner.lock().as_ref().map(|runner| runner.lease());
            let session = self.quorum.session();
            vip.set_fence(Some(crate::dispatcher::vip_fence(lease, session.as_deref(), self.config.session_timeout)));
        }
        let failure = match TaskDispatcher::start(
            self.health.clone(),
            self.published_health.clone(),
            wake,
            self.vip.clone(),
            on_vip_failure,
            listen_on_vip,
            self.metrics.clone(),
        ) {
            Ok(mut started) => {
                let setup = SchedulerSetup::from_daemon(
                    &self.config,
                    self.quorum.clone(),
                    self.runner_client.clone(),
                    Arc::new(report_unusable),
                );
                let scheduling = started.start_scheduling(setup);
                let (scheduler, failure) = match scheduling {
                    Ok(handle) => (Some(handle), None),
                    Err(error) => (None, Some(format!("cannot start task scheduling: {error}"))),
                };
                let runner_watch = match RunnerWatch::start(self.quorum.clone(), self.config.node_id.clone()) {
                    Ok(watch) => Some(watch),
                    Err(error) => {
                        tracing::error!(%error, "cannot start the runner watch; a dead runner's tasks wait for its session");
                        None
                    }
                };
                *self.role.lock() = Role::Leader { dispatcher: started, scheduler, runner_watch };
                failure
            }
            Err(error) => Some(format!("cannot start the dispatcher: {error}")),
        };
        if let Some(reason) = failure {
            *self.dispatcher_failure.lock() = Some(reason);
            // On the loop already: decide now rather than at the next poll.
            self.poll_health();
        }
    }

    /// What the scheduler's worker calls when its database cannot be opened: it only records
    /// the reason and wakes the loop, which stops the service (`StopReason::DispatcherFailed`).
    fn dispatcher_failure_reporter(self: &Arc<Self>) -> impl Fn(String) + Send + Sync + 'static {
        let weak = Arc::downgrade(self);
        let wake = self.loop_waker();
        move |reason| {
            if let Some(inner) = weak.upgrade() {
                *inner.dispatcher_failure.lock() = Some(reason);
            }
            wake();
        }
    }

    /// A closure that asks the loop to look at health and VIP now: only a message to the loop,
    /// which alone decides and stops.
    fn loop_waker(self: &Arc<Self>) -> impl Fn() + Send + Sync + 'static {
        let weak = Arc::downgrade(self);
        let loop_context = self.loop_context.clone();
        move || {
            let weak = weak.clone();
            let _ = loop_context.sched(move || {
                if let Some(inner) = weak.upgrade() {
                    inner.poll_health();
                }
            });
        }
    }

    fn stop_dispatcher(&self) {
        let role = std::mem::replace(&mut *self.role.lock(), Role::Follower);
        if let Role::Leader { dispatcher, runner_watch, .. } = role {
            // The watch is only asked to stop first: its thread may be waiting on ZooKeeper (a
            // lost connection, the very reason for many step-downs), and the dispatcher's stop
            // releases the VIP before anything else, which must not wait for that.
            if let Some(watch) = &runner_watch {
                watch.request_stop();
            }
            dispatcher.stop();
            drop(runner_watch);
        }
    }

    fn role_name(&self) -> &'static str {
        if self.quorum.is_leader() {
            "leader"
        } else {
            "follower"
        }
    }
}

/// The server's reaction to quorum events, on the loop.
struct Handler {
    inner: Arc<Inner>,
}

impl QuorumHandler for Handler {
    fn on_event(&mut self, event: Event) {
        match event {
            Event::RoleChanged { leader: true, sequence } => {
                tracing::info!(sequence, "became leader");
                let elected_at = Instant::now();
                if !self.inner.counted_leader.swap(true, Ordering::AcqRel) {
                    self.inner.metrics.transition(TransitionReason::Elected);
                    self.inner.record_event("elected", TransitionReason::Elected.label());
                }
                self.inner.notifier.status(&format!("leader (member {sequence})"));
                if self.inner.health.is_invalid() {
                    // Elected by sequence alone: decide before any leader component starts, so
                    // an unhealthy node hands over without ever running the dispatcher.
                    self.inner.published_health.publish(false);
                    self.inner.poll_health();
                    if self.inner.stopping.load(Ordering::Acquire) {
                        return;
                    }
                }
                self.inner.start_dispatcher();
                let scheduler = self.inner.role.lock().scheduler();
                if let Some(handle) = scheduler {
                    self.inner.time_takeover(elected_at, handle);
                }
            }
            Event::RoleChanged { leader: false, sequence } => {
                tracing::info!(sequence, "acting as follower");
                // Connected, it gave way to a member of higher priority; otherwise it stepped
                // down for a lost connection.
                let connected = self
                    .inner
                    .quorum
                    .session()
                    .is_some_and(|session| session.state() == quorum::ZkSessionState::SyncConnected);
                self.inner.count_step_down(if connected {
                    TransitionReason::Priority
                } else {
                    TransitionReason::ZookeeperLost
                });
                self.inner.notifier.status("follower");
                self.inner.stop_dispatcher();
            }
            Event::MembersChanged(members) => {
                tracing::info!(n_members = members.len(), "members changed");
                self.inner.update_peers(&members);
            }
            Event::SessionLost => {
                tracing::warn!("ZooKeeper session lost; rejoining as a follower");
                self.inner.metrics.zookeeper_session_expirations.inc();
                self.inner.count_step_down(TransitionReason::SessionExpired);
                self.inner.stop_dispatcher();
            }
            Event::Stopped => {
                log_done(StopStage::CloseSession, self.stop_started(), "");
            }
        }
    }

    fn on_stop(&mut self) {
        log_done(StopStage::LeaveQuorum, self.stop_started(), "");
        if self.inner.led_at_stop.load(Ordering::Acquire) {
            self.inner.metrics.stepdown_seconds.observe(self.stop_started().elapsed().as_secs_f64());
        }
        timed(StopStage::DrainRequests, || {
            for server in &self.inner.rpc_servers {
                server.stop_accepting_and_join_outstanding_requests();
            }
            String::new()
        });
        timed(StopStage::StopDispatcher, || {
            self.inner.stop_dispatcher();
            String::new()
        });
        timed(StopStage::StopRunner, || {
            let runner = self.inner.runner.lock().take();
            let n_interrupted = runner.map(|runner| runner.stop()).unwrap_or(0);
            format!("{n_interrupted} running tasks interrupted")
        });
    }
}

impl Handler {
    fn stop_started(&self) -> Instant {
        self.inner.stop_started.lock().unwrap_or_else(Instant::now)
    }
}
