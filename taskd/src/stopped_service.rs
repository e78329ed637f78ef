//! What the node's ports answer while the service is stopped: after the service stopped
//! itself (a network failure, a VIP or dispatcher failure) the supervisor waits for the re-entry
//! back-off and a valid data network, and meanwhile this stand-in listens on the management
//! address's dispatcher and runner ports. The dispatcher port answers `/api/v1/status` (state `stopped`, the reason, what it
//! waits for and when the next attempt is due), `/healthz`, `/readyz` (503), `/leader` (the
//! standby status), `/metrics`, and every task route with 503 naming the leader when ZooKeeper
//! says who it is; the runner port answers status and the probes, and every runner route 503.
//! So a stopped service is never mistaken for a dead process (a refused
//! connection), and clients are sent to the leader.
//!
//! It is no quorum member: its ZooKeeper session (opened lazily, for the leader's name) creates
//! no election node, and it never binds the VIP. It announces itself with an ephemeral node
//! under [`STOPPED_PATH`], so `cluster show` on any node lists stopped nodes as such.
//!
//! # Shutdown
//! `stop` (or drop): join the announcer thread (bounded by its 2 s connect timeout), stop listening, drain, stop the IO, then close the ZooKeeper session (its
//! ephemeral node goes with it). The supervisor stops it right before it builds the next server,
//! which binds the port again at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quorum::{Member, ZkConfig, ZkSession};
use runtime::rpc::{Method, Response, Server, ServerConfig, WorkerPool};
use serde::{Deserialize, Serialize};
use vip::health::HealthFlag;

use crate::api::{dispatcher_routes, runner_routes, CopyRules, DispatcherAccess};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::runner_client::RunnerClient;

/// Where stopped nodes announce themselves (ephemeral children named by node id).
pub const STOPPED_PATH: &str = "/zbs/taskd/stopped";

/// How long a leader lookup is reused.
const LEADER_LOOKUP_TTL: Duration = Duration::from_secs(1);

/// What a stopped service waits for before the next attempt to rejoin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// The re-entry back-off, until `until`.
    Backoff { until: Instant },
    /// A valid data network (`rise` good rounds in a row).
    DataNetwork,
    /// A restart of the daemon: the VIP cannot be held with this configuration.
    Restart,
}

impl Waiting {
    fn label(self) -> &'static str {
        match self {
            Waiting::Backoff { .. } => "backoff",
            Waiting::DataNetwork => "data_network",
            Waiting::Restart => "restart",
        }
    }
}

/// A stopped node as its ephemeral node under [`STOPPED_PATH`] holds it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedNode {
    pub node_id: String,
    /// Its dispatcher port's address, where it answers status.
    pub address: String,
    pub reason: String,
    pub since_unix_ms: u64,
}

/// The stopped nodes announced under [`STOPPED_PATH`]; an unreadable path is an empty list and
/// a corrupt node is skipped with a warning. Blocks: call it on a worker.
pub fn read_stopped_nodes(session: &ZkSession) -> Vec<StoppedNode> {
    let names = match session.children(STOPPED_PATH) {
        Ok(names) => names,
        Err(error) => {
            tracing::debug!(%error, "cannot list the stopped nodes");
            return Vec::new();
        }
    };
    let mut nodes: Vec<StoppedNode> = names
        .iter()
        .filter_map(|name| {
            let path = format!("{STOPPED_PATH}/{name}");
            let data = session.get_data(&path).ok()??;
            match serde_json::from_slice::<StoppedNode>(&data.0) {
                Ok(node) => Some(node),
                Err(error) => {
                    tracing::warn!(%path, %error, "skipping a corrupt stopped node");
                    None
                }
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    nodes
}

/// The stand-in server of one stop (see the module doc).
pub struct StoppedService {
    servers: Vec<Server>,
    shared: Arc<Shared>,
    /// Opens the session and announces this node right away (joined at drop).
    announcer: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    health: HealthFlag,
    reason: String,
    since_unix_ms: u64,
    waiting: Mutex<Waiting>,
    /// Set once the lazily opened session has announced this node.
    session: Mutex<Option<Arc<ZkSession>>>,
    leader: Mutex<Option<(Instant, Option<Member>)>>,
}

impl StoppedService {
    /// Listens on the management address's dispatcher port and answers for the stopped
    /// service; `reason` says why it stopped.
    pub fn start(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        health: HealthFlag,
        pool: Arc<WorkerPool>,
        runner_client: RunnerClient,
        reason: String,
        waiting: Waiting,
    ) -> Result<StoppedService, runtime::rpc::RpcError> {
        let shared = Arc::new(Shared {
            metrics: metrics.clone(),
            health,
            reason,
            since_unix_ms: crate::clock::now_ms(),
            waiting: Mutex::new(waiting),
            session: Mutex::new(None),
            leader: Mutex::new(None),
            config: config.clone(),
        });
        metrics.service_stopped();
        let announcer_shared = shared.clone();
        let announcer = std::thread::Builder::new()
            .name("taskd-stopped-zk".to_string())
            .spawn(move || drop(announcer_shared.session()))
            .map_err(|error| tracing::warn!(%error, "cannot start the stopped service's announcer"))
            .ok();
        let mut service = StoppedService { servers: Vec::new(), shared: shared.clone(), announcer };
        for server in
            [dispatcher_server(&config, &shared, pool.clone(), runner_client), runner_server(&config, &shared, pool)]
        {
            let server = Server::new(server);
            // On an error the servers already started stop with `service`'s drop.
            let address = server.serve_in_background(&format!("rpc-stopped-{}", server.name()))?;
            tracing::info!(server = %server.name(), %address, reason = %shared.reason, "the stopped service answers");
            service.servers.push(server);
        }
        Ok(service)
    }

    /// What the service waits for now.
    pub fn set_waiting(&self, waiting: Waiting) {
        *self.shared.waiting.lock() = waiting;
    }

    /// Stops answering (see `# Shutdown`).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for StoppedService {
    fn drop(&mut self) {
        if let Some(announcer) = self.announcer.take() {
            // Bounded by the connect timeout.
            let _ = announcer.join();
        }
        for server in &self.servers {
            server.stop_listening();
        }
        for server in &self.servers {
            server.shutdown();
        }
        if let Some(session) = self.shared.session.lock().take() {
            if let Err(error) = session.close(Duration::from_secs(2)) {
                tracing::debug!(%error, "cannot close the stopped service's ZooKeeper session");
            }
        }
    }
}

impl Shared {
    /// The current leader as ZooKeeper says (reused for a second); None when there is none or
    /// ZooKeeper cannot be reached. Blocks: called on the worker pool.
    fn leader(&self) -> Option<Member> {
        let mut cached = self.leader.lock();
        if let Some((at, leader)) = cached.as_ref() {
            if at.elapsed() < LEADER_LOOKUP_TTL {
                return leader.clone();
            }
        }
        let leader = self.read_leader();
        *cached = Some((Instant::now(), leader.clone()));
        leader
    }

    fn read_leader(&self) -> Option<Member> {
        let session = self.session()?;
        let started = Instant::now();
        match quorum::member::read_members(&session, crate::task_db::layout::QUORUM_PATH) {
            Ok(members) => {
                self.metrics.zookeeper_operation("read_members", started.elapsed());
                members.into_iter().min_by_key(|member| member.sequence)
            }
            Err(error) => {
                tracing::debug!(%error, "the stopped service cannot read the members");
                if !session.is_open() {
                    self.session.lock().take();
                }
                None
            }
        }
    }

    /// The stand-in's session, opened (and this node announced) on first use.
    fn session(&self) -> Option<Arc<ZkSession>> {
        let mut slot = self.session.lock();
        if let Some(session) = slot.as_ref().filter(|session| session.is_open()) {
            return Some(session.clone());
        }
        let mut zk = ZkConfig::new(self.config.zookeeper_hosts.clone(), self.config.session_timeout);
        zk.connect_timeout = Duration::from_secs(2);
        zk.observer = self.metrics.zookeeper_observer();
        let session = match ZkSession::connect(&zk) {
            Ok(session) => Arc::new(session),
            Err(error) => {
                tracing::debug!(%error, "the stopped service cannot reach ZooKeeper");
                return None;
            }
        };
        self.announce(&session);
        *slot = Some(session.clone());
        Some(session)
    }

    /// Writes this node's ephemeral node under [`STOPPED_PATH`]; a failure is only logged.
    fn announce(&self, session: &ZkSession) {
        let node = StoppedNode {
            node_id: self.config.node_id.clone(),
            address: self.config.dispatcher_address().to_string(),
            reason: self.reason.clone(),
            since_unix_ms: self.since_unix_ms,
        };
        let data = match serde_json::to_vec(&node) {
            Ok(data) => data,
            Err(error) => return tracing::warn!(%error, "cannot encode the stopped node"),
        };
        let path = format!("{STOPPED_PATH}/{}", self.config.node_id);
        let result =
            session.ensure_path(STOPPED_PATH).and_then(|()| session.create_ephemeral(&path, &data).map(|_| ()));
        if let Err(error) = result {
            tracing::warn!(%error, %path, "cannot announce the stopped service in ZooKeeper");
        }
    }

    fn status(&self) -> serde_json::Value {
        let waiting = *self.waiting.lock();
        let next_attempt_in_ms = match waiting {
            Waiting::Backoff { until } => Some(until.saturating_duration_since(Instant::now()).as_millis() as u64),
            Waiting::DataNetwork => Some(0),
            Waiting::Restart => None,
        };
        let health = self.health.status();
        let leader = self.leader();
        serde_json::json!({
            "node_id": self.config.node_id,
            "pid": std::process::id(),
            "state": "stopped",
            "role": "stopped",
            "leader": false,
            "stopping": false,
            "stopped": {
                "reason": self.reason,
                "since_unix_ms": self.since_unix_ms,
                "waiting_for": waiting.label(),
                // When the back-off ends (0: as soon as the data network is valid; null: never
                // without a restart).
                "next_attempt_in_ms": next_attempt_in_ms,
            },
            "leader_id": leader.as_ref().map(|leader| leader.info.id.clone()),
            "leader_address": leader.as_ref().map(|leader| leader.info.address.clone()),
            "health": {
                "state": format!("{:?}", health.state),
                "valid": self.health.is_valid(),
                "reason": health.last_reason,
            },
            "members": [],
            "members_source": "none",
        })
    }

    /// The 503 every task route answers, naming the leader when known.
    fn unavailable(&self) -> Response {
        let leader = self.leader();
        let message = match &leader {
            Some(leader) => format!(
                "this node's service is stopped ({}); the leader is {} at {}",
                self.reason, leader.info.id, leader.info.address
            ),
            None => format!("this node's service is stopped ({}); no leader is known", self.reason),
        };
        Response::json(
            503,
            &serde_json::json!({
                "error": message,
                "status": 503,
                "state": "stopped",
                "leader": leader.as_ref().map(|leader| leader.info.address.clone()),
                "leader_id": leader.as_ref().map(|leader| leader.info.id.clone()),
            }),
        )
        .with_header("Retry-After", "1")
    }

    fn refresh_metrics(&self) {
        self.metrics.service_stopped();
        self.metrics.refresh_health(&self.health);
    }
}

/// The dispatcher routes' view of a stopped service: every call is refused with 503.
struct StoppedAccess {
    shared: Arc<Shared>,
}

impl DispatcherAccess for StoppedAccess {
    fn scheduler(&self) -> Result<crate::dispatcher::SchedulerHandle, Response> {
        Err(self.shared.unavailable())
    }

    fn cluster(&self) -> serde_json::Value {
        self.shared.status()
    }

    fn vips(&self) -> crate::vip_keeper::Vips {
        crate::vip_keeper::Vips::default()
    }
}

/// The dispatcher port: every dispatcher route (503 naming the leader) and the common ones.
fn dispatcher_server(
    config: &Config,
    shared: &Arc<Shared>,
    pool: Arc<WorkerPool>,
    runner_client: RunnerClient,
) -> ServerConfig {
    let server = ServerConfig::new("dispatcher", config.dispatcher_address());
    let server = dispatcher_routes(
        server,
        Arc::new(StoppedAccess { shared: shared.clone() }),
        CopyRules::default(),
        pool.clone(),
        runner_client,
    );
    common_routes(server, config, shared, pool)
}

/// The runner port: every runner route answers 503 (no runner runs), and the common ones.
fn runner_server(config: &Config, shared: &Arc<Shared>, pool: Arc<WorkerPool>) -> ServerConfig {
    let server = runner_routes(ServerConfig::new("runner", config.runner_address()), Arc::new(|| None));
    common_routes(server, config, shared, pool)
}

/// Status, probes and metrics, the access guard and the limits, on either port.
fn common_routes(server: ServerConfig, config: &Config, shared: &Arc<Shared>, pool: Arc<WorkerPool>) -> ServerConfig {
    let observer = shared.metrics.rpc_observer(&server.name);
    let policy = config.api.access_policy();
    let standby_status = config.api.standby_status;
    let status = shared.clone();
    let scrape = shared.clone();
    let events = shared.clone();
    config
        .api
        .limit(server)
        .observer(observer)
        .guard(move |request| policy.refusal(request))
        .worker_pool(pool)
        .workers_join_timeout(Duration::from_secs(2))
        .route(Method::Get, "/healthz", |_request| crate::probes::healthz(true))
        .route(Method::Get, "/readyz", |_request| crate::probes::readyz(Some("the service is stopped")))
        .route(Method::Get, "/leader", move |_request| crate::probes::leader(false, standby_status))
        .route(Method::Get, "/metrics", move |_request| {
            scrape.refresh_metrics();
            crate::probes::metrics(&scrape.metrics)
        })
        .cpu_route(Method::Get, &format!("{}/events", crate::api::PREFIX), move |request| {
            crate::api::leader_events(events.session(), request)
        })
        // The leader is read from ZooKeeper: on the worker pool.
        .cpu_route(Method::Get, "/api/v1/status", move |_request| Response::json(200, &status.status()))
}
