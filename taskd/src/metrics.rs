//! The daemon's Prometheus metrics: one `Metrics` per process, built by the supervisor before the
//! first `TaskServer` and handed to every server it builds (so counters survive a re-entry),
//! owning the registry, every family's name and help text, and the text encoding `GET /metrics`
//! answers. Components only increment; gauges that mirror live state (leader, ZooKeeper, data
//! network, VIP, connections, the leader's tasks and runners) are set by the server's `refresh`
//! right before each encoding, from state kept as it changes (the tasks by type and state are
//! the scheduler's `TaskTally`, counted by the cache: a scrape never lists tasks).
//!
//! Names follow Prometheus conventions: the `zbs_taskd_` prefix, `_total` on counters (added by
//! `prometheus-client`), `_seconds` and `_bytes` in base units.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use runtime::rpc::RequestObserver;

/// The `Content-Type` of the answer: OpenMetrics text, which Prometheus scrapes natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The prefix of every family.
pub const PREFIX: &str = "zbs_taskd";

mod labels;
mod observers;

pub use labels::*;

/// Every family the daemon exports (see the module doc); cheap to share.
pub struct Metrics {
    registry: Registry,
    pub is_leader: Gauge,
    pub leader_transitions: Family<ReasonLabels, Counter>,
    /// Stop asked → this node's election node gone (the first half of a hand-over).
    pub stepdown_seconds: Histogram,
    /// Elected (the watch fired) → this node's dispatcher ready (the second half).
    pub takeover_seconds: Histogram,
    pub service_running: Gauge,
    pub service_state: Family<StateLabels, Gauge>,
    pub service_stops: Family<ReasonLabels, Counter>,
    pub zookeeper_session_state: Family<StateLabels, Gauge>,
    pub zookeeper_session_expirations: Counter,
    pub zookeeper_operation_seconds: Family<OperationLabels, Histogram>,
    pub data_network_valid: Gauge,
    pub data_network_state: Family<StateLabels, Gauge>,
    pub data_network_rounds: Counter,
    pub data_network_bad_rounds: Counter,
    pub data_network_state_changes: Counter,
    pub vip_held: Family<VipLabels, Gauge>,
    pub vip_garps_sent: Counter,
    pub vip_errors: Family<VipErrorLabels, Counter>,
    pub tasks: Family<TaskLabels, Gauge>,
    pub task_transitions: Family<TransitionLabels, Counter>,
    pub task_runs_started: Family<TaskTypeLabels, Counter>,
    pub task_runs_finished: Family<OutcomeLabels, Counter>,
    pub task_retries: Family<ReasonLabels, Counter>,
    pub task_queue_wait_seconds: Histogram,
    pub task_run_seconds: Family<TaskTypeLabels, Histogram>,
    pub copy_transferred_bytes: Counter,
    pub copy_skipped_bytes: Counter,
    pub runners: Family<StateLabels, Gauge>,
    pub rpc_requests: Family<RequestLabels, Counter>,
    pub rpc_request_seconds: Family<ServerLabels, Histogram>,
    pub rpc_in_flight: Family<ServerLabels, Gauge>,
    pub rpc_open_connections: Family<ServerLabels, Gauge>,
    pub supervisor_reentries: Counter,
    pub supervisor_backoff_seconds: Gauge<f64, AtomicU64>,
    pub exit_counter_exits: Gauge,
    pub metric_families: AtomicU64,
    /// Every (service, VIP) `vip_held` has a series for, so that a stopped service can set them
    /// all to 0.
    vips_seen: parking_lot::Mutex<std::collections::BTreeSet<(String, String)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("n_families", &self.n_families()).finish_non_exhaustive()
    }
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    // 1 ms … ~65 s: hand-overs, ZooKeeper calls and requests all fall in it.
    exponential_buckets(0.001, 2.0, 17)
}

fn long_buckets() -> impl Iterator<Item = f64> {
    // 10 ms … ~11 h: a queued or running task.
    exponential_buckets(0.01, 4.0, 12)
}

/// Where `register_families!` puts each family, counting them.
struct Families<'a> {
    registry: &'a mut Registry,
    n_families: &'a mut u64,
}

impl Families<'_> {
    fn add(&mut self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        *self.n_families += 1;
        self.registry.register(name, help, metric);
    }
}

/// Registers each `(name, help, metric)` of the list.
macro_rules! register_families {
    ($families:ident, [$(($name:expr, $help:expr, $metric:expr $(,)?)),* $(,)?]) => {
        $($families.add($name, $help, $metric);)*
    };
}

fn histogram() -> Histogram {
    Histogram::new(seconds_buckets())
}

fn long_histogram() -> Histogram {
    Histogram::new(long_buckets())
}

impl Metrics {
    /// Registers every family, with build information (`version`, `commit`).
    pub fn new() -> Arc<Metrics> {
        let metrics = Metrics {
            registry: Registry::with_prefix(PREFIX),
            is_leader: Gauge::default(),
            leader_transitions: Family::default(),
            stepdown_seconds: histogram(),
            takeover_seconds: histogram(),
            service_running: Gauge::default(),
            service_state: Family::default(),
            service_stops: Family::default(),
            zookeeper_session_state: Family::default(),
            zookeeper_session_expirations: Counter::default(),
            zookeeper_operation_seconds: Family::new_with_constructor(histogram),
            data_network_valid: Gauge::default(),
            data_network_state: Family::default(),
            data_network_rounds: Counter::default(),
            data_network_bad_rounds: Counter::default(),
            data_network_state_changes: Counter::default(),
            vip_held: Family::default(),
            vip_garps_sent: Counter::default(),
            vip_errors: Family::default(),
            tasks: Family::default(),
            task_transitions: Family::default(),
            task_runs_started: Family::default(),
            task_runs_finished: Family::default(),
            task_retries: Family::default(),
            task_queue_wait_seconds: long_histogram(),
            task_run_seconds: Family::new_with_constructor(long_histogram),
            copy_transferred_bytes: Counter::default(),
            copy_skipped_bytes: Counter::default(),
            runners: Family::default(),
            rpc_requests: Family::default(),
            rpc_request_seconds: Family::new_with_constructor(histogram),
            rpc_in_flight: Family::default(),
            rpc_open_connections: Family::default(),
            supervisor_reentries: Counter::default(),
            supervisor_backoff_seconds: Gauge::default(),
            exit_counter_exits: Gauge::default(),
            metric_families: AtomicU64::new(0),
            vips_seen: parking_lot::Mutex::new(std::collections::BTreeSet::new()),
        };
        let metrics = metrics.registered();
        metrics.initialize_label_sets();
        Arc::new(metrics)
    }

    /// Creates every label set known in advance at 0, so that dashboards and alerts see the
    /// series (a rate over a series that appears only at its first event misses that event).
    fn initialize_label_sets(&self) {
        for reason in TransitionReason::ALL {
            let _ = self.leader_transitions.get_or_create(&ReasonLabels { reason: reason.label().to_string() });
        }
        for reason in STOP_REASONS {
            let _ = self.service_stops.get_or_create(&ReasonLabels { reason: reason.to_string() });
        }
        Metrics::set_state(&self.service_state, SERVICE_STATES, Some("running"));
        Metrics::set_state(&self.zookeeper_session_state, ZK_STATES, None);
        Metrics::set_state(&self.data_network_state, HEALTH_STATES, Some("unknown"));
        Metrics::set_state(&self.runners, RUNNER_STATES, None);
        for reason in ["failed", "interrupted", "lease_lapsed"] {
            let _ = self.task_retries.get_or_create(&ReasonLabels { reason: reason.to_string() });
        }
        for operation in ZK_OPERATIONS {
            let _ =
                self.zookeeper_operation_seconds.get_or_create(&OperationLabels { operation: operation.to_string() });
        }
        for kind in VIP_ERROR_KINDS {
            let labels = VipErrorLabels { service: vip::DEFAULT_SERVICE.to_string(), kind: kind.to_string() };
            let _ = self.vip_errors.get_or_create(&labels);
        }
        for server in ["dispatcher", "runner"] {
            let labels = ServerLabels { server: server.to_string() };
            let _ = self.rpc_in_flight.get_or_create(&labels);
            let _ = self.rpc_open_connections.get_or_create(&labels);
            let _ = self.rpc_request_seconds.get_or_create(&labels);
        }
    }

    /// Registers a clone of every family (they share their values) with its name and help.
    fn registered(mut self) -> Metrics {
        let mut registry = std::mem::take(&mut self.registry);
        let m = &self;
        let commit = option_env!("ZBS_TASKD_COMMIT").unwrap_or("unknown").to_string();
        let mut n_families = 0;
        let mut families = Families { registry: &mut registry, n_families: &mut n_families };
        register_families!(
            families,
            [
                (
                    "build",
                    "The daemon's version and the commit it was built from (always 1)",
                    Info::new(vec![
                        ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
                        ("commit".to_string(), commit),
                    ]),
                ),
                ("is_leader", "1 while this node leads the Task Center, else 0", m.is_leader.clone()),
                (
                    "leader_transitions",
                    "Leadership changes on this node by reason (elected, or why it stopped leading)",
                    m.leader_transitions.clone(),
                ),
                (
                    "stepdown_seconds",
                    "Hand-over, first half: a leader's stop asked until its election node is gone",
                    m.stepdown_seconds.clone(),
                ),
                (
                    "takeover_seconds",
                    "Hand-over, second half: elected (the watch fired) until the dispatcher is ready",
                    m.takeover_seconds.clone(),
                ),
                (
                    "service_running",
                    "1 while the service runs (a quorum member), 0 while it is stopped and the port answers for it",
                    m.service_running.clone(),
                ),
                (
                    "service_state",
                    "The service's state (running, stopping, stopped): 1 for the current one",
                    m.service_state.clone(),
                ),
                ("service_stops", "Stops of the service by reason", m.service_stops.clone()),
                (
                    "zookeeper_session_state",
                    "The ZooKeeper session's state: 1 for the current one (none while the service is stopped)",
                    m.zookeeper_session_state.clone(),
                ),
                (
                    "zookeeper_session_expirations",
                    "ZooKeeper sessions of this process that expired or were lost",
                    m.zookeeper_session_expirations.clone(),
                ),
                (
                    "zookeeper_operation_seconds",
                    "Latency of the daemon's ZooKeeper requests by operation (batches pipelined in one round trip as one)",
                    m.zookeeper_operation_seconds.clone(),
                ),
                (
                    "data_network_valid",
                    "1 while this node's data network is valid (rise good rounds in a row), else 0",
                    m.data_network_valid.clone(),
                ),
                (
                    "data_network_state",
                    "The data network's health state (unknown, valid, invalid): 1 for the current one",
                    m.data_network_state.clone(),
                ),
                (
                    "data_network_probe_rounds",
                    "Health probe rounds recorded since the process started",
                    m.data_network_rounds.clone(),
                ),
                (
                    "data_network_probe_failures",
                    "Health probe rounds that failed (or found the data link down) since the process started",
                    m.data_network_bad_rounds.clone(),
                ),
                (
                    "data_network_state_changes",
                    "Changes of the data network's health state since the process started",
                    m.data_network_state_changes.clone(),
                ),
                ("vip_held", "1 while this node holds the VIP, per VIP", m.vip_held.clone()),
                (
                    "vip_garps_sent",
                    "Gratuitous ARP (or unsolicited neighbour advertisement) frames sent for the VIP",
                    m.vip_garps_sent.clone(),
                ),
                ("vip_errors", "Failed VIP operations by service and kind", m.vip_errors.clone()),
                (
                    "tasks",
                    "Tasks by type and state, as the leader's cache holds them (exported by the leader only)",
                    m.tasks.clone(),
                ),
                (
                    "task_transitions",
                    "Task state changes the leader's cache applied, by type, from (new: a submit) and to",
                    m.task_transitions.clone(),
                ),
                ("task_runs_started", "Task runs this node's runner started, by type", m.task_runs_started.clone()),
                (
                    "task_runs_finished",
                    "Task runs this node's runner ended, by type and outcome (the task's transition)",
                    m.task_runs_finished.clone(),
                ),
                (
                    "task_retries",
                    "Runs whose task goes back to pending for another attempt, by reason",
                    m.task_retries.clone(),
                ),
                (
                    "task_queue_wait_seconds",
                    "A task's first run: submitted until running on this node",
                    m.task_queue_wait_seconds.clone(),
                ),
                ("task_run_seconds", "How long a task's run lasted, by type", m.task_run_seconds.clone()),
                (
                    "copy_transferred_bytes",
                    "Bytes copies read from their sources (holes are never read)",
                    m.copy_transferred_bytes.clone(),
                ),
                (
                    "copy_skipped_bytes",
                    "Bytes copies read but did not write (all-zero blocks)",
                    m.copy_skipped_bytes.clone(),
                ),
                (
                    "runners",
                    "Runners the leader knows, by state (up, draining; exported by the leader only)",
                    m.runners.clone(),
                ),
                ("rpc_requests", "RPC requests answered, by server, method, route and status", m.rpc_requests.clone(),),
                ("rpc_request_seconds", "RPC request handling time by server", m.rpc_request_seconds.clone()),
                ("rpc_in_flight", "RPC requests being handled, by server", m.rpc_in_flight.clone()),
                ("rpc_open_connections", "Open connections by server", m.rpc_open_connections.clone()),
                (
                    "supervisor_reentries",
                    "Times the supervisor rebuilt the service after it stopped itself",
                    m.supervisor_reentries.clone(),
                ),
                (
                    "supervisor_backoff_seconds",
                    "The re-entry back-off the supervisor waits (or last waited)",
                    m.supervisor_backoff_seconds.clone(),
                ),
                (
                    "exit_counter_exits",
                    "Exits recorded in the exit counter's window (exit mode)",
                    m.exit_counter_exits.clone(),
                ),
            ]
        );
        self.metric_families.store(n_families, Ordering::Relaxed);
        self.registry = registry;
        self
    }

    /// The OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "cannot encode the metrics");
        }
        text
    }

    /// How many families are registered.
    pub fn n_families(&self) -> u64 {
        self.metric_families.load(Ordering::Relaxed)
    }

    pub fn transition(&self, reason: TransitionReason) {
        self.leader_transitions.get_or_create(&ReasonLabels { reason: reason.label().to_string() }).inc();
    }

    /// Sets a one-hot state family: `current` 1, every other of `states` 0.
    pub fn set_state(family: &Family<StateLabels, Gauge>, states: &[&str], current: Option<&str>) {
        for state in states {
            family.get_or_create(&StateLabels { state: state.to_string() }).set(i64::from(Some(*state) == current));
        }
    }

    /// Times a ZooKeeper read.
    pub fn zookeeper_operation(&self, operation: &str, elapsed: Duration) {
        self.zookeeper_operation_seconds
            .get_or_create(&OperationLabels { operation: operation.to_string() })
            .observe(elapsed.as_secs_f64());
    }

    /// A callback that counts each task transition the leader's cache applies (handed to the
    /// scheduler, called on its worker).
    pub fn task_transition_counter(self: &Arc<Self>) -> Arc<dyn Fn(crate::task_db::TaskTransition) + Send + Sync> {
        let metrics = self.clone();
        Arc::new(move |transition| {
            let labels = TransitionLabels {
                r#type: transition.task_type.to_string(),
                from: transition.from.map_or("new", crate::task::TaskState::as_str).to_string(),
                to: transition.to.as_str().to_string(),
            };
            metrics.task_transitions.get_or_create(&labels).inc();
        })
    }

    /// Sets the leader's task gauges (every type and state, zeros too) and runner gauges from
    /// its scheduler's counts; without them (a follower, a dispatcher not ready) the task
    /// series are dropped and the runners read 0.
    pub fn set_leader_gauges(
        &self,
        tasks: Option<&crate::task_db::TaskCounts>,
        runners: Option<crate::dispatcher::scheduler::RunnerCounts>,
    ) {
        match tasks {
            Some(counts) => {
                for task_type in crate::task::TaskKind::TYPE_NAMES {
                    for state in crate::task::TaskState::ALL {
                        let labels = TaskLabels {
                            task: TaskTypeLabels { r#type: task_type.to_string() },
                            state: state.as_str().to_string(),
                        };
                        let count = i64::try_from(counts.get(task_type, state)).unwrap_or(i64::MAX);
                        self.tasks.get_or_create(&labels).set(count);
                    }
                }
            }
            None => self.tasks.clear(),
        }
        let runners = runners.unwrap_or_default();
        for (state, count) in [("up", runners.n_up), ("draining", runners.n_draining)] {
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            self.runners.get_or_create(&StateLabels { state: state.to_string() }).set(count);
        }
    }

    /// Sets `vip_held{service,vip}`: 1 while this node holds `vip` for `service`.
    pub fn set_vip_held(&self, service: &str, vip: &str, held: bool) {
        self.vips_seen.lock().insert((service.to_string(), vip.to_string()));
        let labels = VipLabels { service: service.to_string(), vip: vip.to_string() };
        self.vip_held.get_or_create(&labels).set(i64::from(held));
    }

    /// What a stopped service exports: not leading, not running, no session, no VIP held (the
    /// stand-in never binds one), none of the leader's task or runner gauges.
    pub fn service_stopped(&self) {
        self.service_running.set(0);
        self.is_leader.set(0);
        Metrics::set_state(&self.service_state, SERVICE_STATES, Some("stopped"));
        Metrics::set_state(&self.zookeeper_session_state, ZK_STATES, None);
        for (service, vip) in self.vips_seen.lock().iter() {
            self.vip_held.get_or_create(&VipLabels { service: service.clone(), vip: vip.clone() }).set(0);
        }
        self.set_leader_gauges(None, None);
    }

    /// A request observer for the RPC server `server` (`dispatcher` or `runner`).
    pub fn rpc_observer(self: &Arc<Self>, server: &str) -> Arc<dyn RequestObserver> {
        Arc::new(observers::RpcMetrics { metrics: self.clone(), server: server.to_string() })
    }

    /// An observer for a ZooKeeper session's config: every request it makes is timed into
    /// `zookeeper_operation_seconds{operation}`.
    pub fn zookeeper_observer(self: &Arc<Self>) -> quorum::ZkObserver {
        quorum::ZkObserver::new(Arc::new(observers::ZkMetrics::new(self.clone())))
    }

    /// A task run began on this node; `queue_wait` only on a task's first attempt.
    pub fn run_started(&self, task_type: &str, queue_wait: Option<Duration>) {
        self.task_runs_started.get_or_create(&TaskTypeLabels { r#type: task_type.to_string() }).inc();
        if let Some(wait) = queue_wait {
            self.task_queue_wait_seconds.observe(wait.as_secs_f64());
        }
    }

    /// An operation on the VIP of `service` failed.
    pub fn vip_error(&self, service: &str, error: &vip::VipError) {
        let kind = match error {
            vip::VipError::BadRequest(_) => "bad_request",
            vip::VipError::NotFound(_) => "not_found",
            vip::VipError::NetLink { .. } => "netlink",
            vip::VipError::ArpBroadcastFailed { .. } => "garp",
            vip::VipError::Interface(_) => "interface",
            vip::VipError::Socket { .. } => "socket",
            vip::VipError::Fenced(_) => "fenced",
        };
        self.vip_errors.get_or_create(&VipErrorLabels { service: service.to_string(), kind: kind.to_string() }).inc();
    }

    /// A run ended so that its task runs again (pending again, or interrupted and handed out
    /// again by the dispatcher), for `reason` (the run's outcome).
    pub fn retry(&self, reason: &str) {
        self.task_retries.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    /// A task run ended on this node with `outcome` after `elapsed`.
    pub fn run_finished(&self, task_type: &str, outcome: &str, elapsed: Duration, bytes_read: u64, bytes_written: u64) {
        self.task_runs_finished
            .get_or_create(&OutcomeLabels { r#type: task_type.to_string(), outcome: outcome.to_string() })
            .inc();
        self.task_run_seconds
            .get_or_create(&TaskTypeLabels { r#type: task_type.to_string() })
            .observe(elapsed.as_secs_f64());
        self.copy_transferred_bytes.inc_by(bytes_read);
        self.copy_skipped_bytes.inc_by(bytes_read.saturating_sub(bytes_written));
    }
}

impl Metrics {
    /// Mirrors the data network's health (state, valid, probe counters) into the gauges.
    pub fn refresh_health(&self, health: &vip::health::HealthFlag) {
        let status = health.status();
        let state = match status.state {
            vip::health::HealthState::Unknown => "unknown",
            vip::health::HealthState::Valid => "valid",
            vip::health::HealthState::Invalid => "invalid",
        };
        Metrics::set_state(&self.data_network_state, HEALTH_STATES, Some(state));
        self.data_network_valid.set(i64::from(health.is_valid()));
        // The monitor outlives every server, so its counters are the process's own totals.
        self.data_network_rounds.inner().store(status.rounds, Ordering::Relaxed);
        self.data_network_bad_rounds.inner().store(status.n_bad_rounds, Ordering::Relaxed);
        self.data_network_state_changes.inner().store(status.n_changes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
