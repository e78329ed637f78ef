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
//!
//! # Where each part lives
//! This file is the lifecycle: the shared state (`Inner`), `new`, `initialize`, `start`, stages
//! 1 and 2 of the stop and the drop. The rest extends `Inner` from children: `health_poll.rs`
//! (the loop's decisions: its health poll, and what the probes read), `role.rs` (the `Role` slot
//! and its transitions: the dispatcher started and stopped, each step-down counted once),
//! `quorum_handler.rs` (quorum events on the loop, and stop stages 4 to 6), `metrics_refresh.rs`
//! (the live gauges before a scrape), `routes.rs` (both ports' routes) and `stop_stage.rs` (the
//! stop order as data).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quorum::{MemberInfo, QuorumConfig, QuorumHandle, QuorumServer, ZkConfig};
use runtime::rpc::{self, Server, ServerConfig, WorkerPool};
use runtime::{ContextHandle, JoinError, TimerHandle};
use vip::health::{HealthFlag, HealthMonitor, Subscription};
use vip::VipServer;

use crate::vip_keeper::Vips;

use crate::config::Config;
use crate::crash_watch::CrashWatch;
use crate::dispatcher::{NetworkHealthFlag, VipFailure};
use crate::fresh_members::FreshMembers;
use crate::metrics::{Metrics, TransitionReason, SERVICE_STATES};
use crate::notify::Notifier;
use crate::reach::{ReachSettings, ReachWatch};
use crate::runner::{RunnerConfig, TaskRunner};
use crate::runner_client::RunnerClient;
use crate::state_lock::SoleIncarnation;

mod health_poll;
mod metrics_refresh;
mod probe_peers;
mod quorum_handler;
mod role;
mod routes;
mod stop_stage;

pub use routes::DEBUG_HOOKS_ENV;

use quorum_handler::Handler;
use role::Role;
use stop_stage::{timed, StopStage};

pub use crate::task_db::layout::QUORUM_PATH;

/// How often the loop polls the dispatcher's published health (the original: a 1 s TimerHandle).
pub const HEALTH_POLL_INTERVAL: Duration = Duration::from_secs(1);

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
    vips: Vips,
    /// The members as ZooKeeper holds them, for the status and cluster answers.
    fresh_members: FreshMembers,
    /// The members' probe addresses seen lately: the health probe's peers.
    probe_peers: Mutex<probe_peers::PeerMemory>,
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
        let mut zk = ZkConfig::new(config.zookeeper_hosts.clone(), config.session_timeout);
        zk.observer = metrics.zookeeper_observer();
        // The state directory's lock proves that an election node of this node id with another
        // session is a dead incarnation's: it is deleted at once, not left to its session's expiry.
        let quorum_server =
            QuorumServer::new(QuorumConfig::new(zk, QUORUM_PATH, member).with_stale_own_nodes_removed(true))?;
        let worker_pool = WorkerPool::with_default_size("taskd-workers")?;
        let runner_client = RunnerClient::new(config.api.sent_token())?;
        // Sockets of the VIP servers belong to this thread's network namespace: the supervisor's.
        // The VIP stored in ZooKeeper for a service (`zbs-task vip set --service`) overrides the
        // file's; the `vip` routes act on these servers.
        let vips = {
            let quorum = quorum_server.handle();
            let store = vip::VipStore::new(move || quorum.session());
            let servers = config
                .vips
                .iter()
                .map(|vip_config| Ok(Arc::new(VipServer::new(vip_config)?.with_store(store.clone()))))
                .collect::<Result<Vec<_>, vip::VipError>>()?;
            Vips::new(servers)
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
                probe_peers: Mutex::new(probe_peers::PeerMemory::default()),
                quorum: quorum_server.handle(),
                loop_context: quorum_server.context(),
                health: health_monitor.flag(),
                health_monitor,
                notifier,
                published_health: NetworkHealthFlag::new(),
                role: Mutex::new(Role::Follower),
                runner: Mutex::new(None),
                vips,
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
        // A node that starts is not leader: a VIP left by a killed daemon must go, every service's.
        self.inner.vips.remove_leftovers();
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
        timed(StopStage::ReleaseVip, || self.vips.release_all());
        // Stage 3 onwards run on the loop: the quorum steps down, gives up the election node,
        // calls `Handler::on_stop` (stages 4 to 6), closes the session and unloops.
        self.quorum.leave();
    }
}
