//! The routes of a `TaskServer`'s two ports: where the dispatcher API listens, the dispatcher's
//! and the runner's routes (from `api`), what both ports answer about this node (status, probes,
//! metrics, the leadership history), the test hooks of a `debug-hooks` build, and the
//! `DispatcherAccess` the task routes reach the dispatcher through (a follower answers 421
//! naming the leader).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use runtime::rpc::{Method, Response, ServerConfig, WorkerPool};

use super::Inner;
use crate::api::{dispatcher_routes, runner_routes, CopyRules, DispatcherAccess};
use crate::config::Config;
use crate::dispatcher::SchedulerHandle;
use crate::metrics::Metrics;
use crate::runner_client::RunnerClient;
use crate::vip_keeper::Vips;

/// Where the dispatcher API listens: the management address, the file's VIPs and `[api]
/// listen_also` (bound with `IP_FREEBIND`: a follower's listener waits there for the address,
/// so clients are answered the moment the VIP arrives), never a wildcard — so never on the data
/// network. A VIP stored at run time is added while leading (`listen_on_vip` in
/// `start_dispatcher`).
pub(super) fn dispatcher_listeners(config: &Config) -> ServerConfig {
    let mut server = config.api.limit(ServerConfig::new("dispatcher", config.dispatcher_address()));
    let vips = config.vips.iter().filter_map(|vip| vip.vip().ok()).map(|vip| vip.ip);
    for ip in vips.chain(config.api.listen_also.iter().copied()) {
        if ip != config.management_address {
            server = server.also_listen(SocketAddr::new(ip, config.dispatcher_port), true);
        }
    }
    server
}

/// The dispatcher port: the task routes (a follower answers 421), the test hooks in a
/// `debug-hooks` build, and this node's own routes.
pub(super) fn dispatcher_api(
    config: ServerConfig,
    inner: Weak<Inner>,
    daemon: &Config,
    pool: &Arc<WorkerPool>,
    runner_client: &RunnerClient,
    metrics: &Arc<Metrics>,
) -> ServerConfig {
    let observer = metrics.rpc_observer(&config.name);
    let config = config.observer(observer);
    let config = dispatcher_routes(
        config,
        Arc::new(Access { inner: inner.clone() }),
        CopyRules::from_daemon(daemon),
        pool.clone(),
        runner_client.clone(),
    );
    let config = with_debug_routes(config, &inner);
    node_routes(config, inner, daemon, pool)
}

/// The runner port: the runner's routes and this node's own routes.
pub(super) fn runner_api(
    config: ServerConfig,
    inner: Weak<Inner>,
    daemon: &Config,
    pool: &Arc<WorkerPool>,
    metrics: &Arc<Metrics>,
) -> ServerConfig {
    let observer = metrics.rpc_observer(&config.name);
    let config = config.observer(observer);
    let runner_inner = inner.clone();
    let config =
        runner_routes(config, Arc::new(move || runner_inner.upgrade().and_then(|inner| inner.runner.lock().clone())));
    node_routes(config, inner, daemon, pool)
}

/// What both ports answer about this node — status, probes, metrics, the leadership history —
/// behind the access guard, on the shared worker pool.
fn node_routes(config: ServerConfig, inner: Weak<Inner>, daemon: &Config, pool: &Arc<WorkerPool>) -> ServerConfig {
    let status_inner = inner.clone();
    let ready_inner = inner.clone();
    let healthz_inner = inner.clone();
    let events_inner = inner.clone();
    let leader_inner = inner.clone();
    let metrics_inner = inner.clone();
    let standby_status = daemon.api.standby_status;
    let policy = daemon.api.access_policy();
    config
        .guard(move |request| policy.refusal(request))
        .worker_pool(pool.clone())
        .workers_join_timeout(daemon.drain_deadline)
        .stop_workers_on_stop_listening(false)
        // A wedged loop stops its 1 s health poll, and `/healthz` then answers 503.
        .route(Method::Get, "/healthz", move |_request| match healthz_inner.upgrade() {
            Some(inner) => crate::probes::healthz(inner.loop_answers()),
            None => crate::probes::healthz(false),
        })
        .route(Method::Get, "/readyz", move |_request| match ready_inner.upgrade() {
            Some(inner) => crate::probes::readyz(inner.not_ready_reason()),
            None => crate::probes::readyz(Some("the service is stopping")),
        })
        .route(Method::Get, "/leader", move |_request| {
            let leader = leader_inner.upgrade().is_some_and(|inner| {
                inner.quorum.is_leader()
                    && !inner.stopping.load(Ordering::Acquire)
                    && inner.role.lock().scheduler().is_some_and(|handle| handle.is_ready())
            });
            crate::probes::leader(leader, standby_status)
        })
        // The leader's task gauges come from its dispatcher: on the worker pool.
        .cpu_route(Method::Get, "/metrics", move |_request| match metrics_inner.upgrade() {
            Some(inner) => {
                inner.refresh_metrics();
                crate::probes::metrics(&inner.metrics)
            }
            None => Response::error(503, "server stopping"),
        })
        .cpu_route(Method::Get, &format!("{}/events", crate::api::PREFIX), move |request| {
            crate::api::leader_events(events_inner.upgrade().and_then(|inner| inner.quorum.session()), request)
        })
        // The answer reads the members from ZooKeeper (see `FreshMembers`): on the worker pool.
        .cpu_route(Method::Get, "/api/v1/status", move |_request| match status_inner.upgrade() {
            Some(inner) => Response::json(200, &status_json(&inner)),
            None => Response::error(503, "server stopping"),
        })
}

/// The environment variable that enables the test-only debug routes in a build with the
/// `debug-hooks` feature (the tests' builds); a release or `dist` build has no such routes.
pub const DEBUG_HOOKS_ENV: &str = "ZBS_TASKD_DEBUG_HOOKS";

#[cfg(feature = "debug-hooks")]
fn with_debug_routes(config: ServerConfig, inner: &Weak<Inner>) -> ServerConfig {
    if std::env::var(DEBUG_HOOKS_ENV).is_ok_and(|value| value == "1") {
        debug_routes(config, inner.clone())
    } else {
        config
    }
}

#[cfg(not(feature = "debug-hooks"))]
fn with_debug_routes(config: ServerConfig, _inner: &Weak<Inner>) -> ServerConfig {
    config
}

/// `POST /debug/v1/wedge-loop?ms=N`: blocks the server loop's thread for N ms (at most 60 s), so
/// a test can see that a hung loop stops the systemd watchdog pings.
#[cfg(feature = "debug-hooks")]
fn debug_routes(config: ServerConfig, inner: Weak<Inner>) -> ServerConfig {
    config.route(Method::Post, "/debug/v1/wedge-loop", move |request| {
        let Some(ms) = request.query_param("ms").and_then(|ms| ms.parse::<u64>().ok()).filter(|ms| *ms <= 60_000)
        else {
            return Response::error(400, "ms must be a number of milliseconds up to 60000");
        };
        let Some(inner) = inner.upgrade() else { return Response::error(503, "server stopping") };
        tracing::warn!(ms, "debug hook: wedging the server loop");
        match inner.loop_context.sched(move || std::thread::sleep(std::time::Duration::from_millis(ms))) {
            Ok(()) => Response::json(202, &serde_json::json!({ "wedged_ms": ms })),
            Err(_) => Response::error(503, "server stopping"),
        }
    })
}

/// The node's status; its members' health is read fresh from ZooKeeper when the session is up
/// (`members_source` says `zookeeper` or `cache`). Blocks: called on the worker pool.
fn status_json(inner: &Inner) -> serde_json::Value {
    let health = inner.health.status();
    let (members, members_source) =
        crate::fresh_members::members_answer(inner.fresh_members.read(), || inner.quorum.members());
    serde_json::json!({
        "node_id": inner.config.node_id,
        "pid": std::process::id(),
        "role": inner.role_name(),
        "leader": inner.quorum.is_leader(),
        "sequence": inner.quorum.sequence(),
        "stopping": inner.stopping.load(Ordering::Acquire),
        "state": if inner.stopping.load(Ordering::Acquire) { "stopping" } else { "running" },
        "health": {
            "state": format!("{:?}", health.state),
            "valid": inner.health.is_valid(),
            "reason": health.last_reason,
        },
        "members": members,
        "members_source": members_source,
    })
}

/// The dispatcher API's view of the server.
struct Access {
    inner: Weak<Inner>,
}

impl DispatcherAccess for Access {
    fn scheduler(&self) -> Result<SchedulerHandle, Response> {
        let Some(inner) = self.inner.upgrade() else {
            return Err(Response::error(503, "server stopping"));
        };
        if inner.stopping.load(Ordering::Acquire) {
            return Err(Response::error(503, "server stopping"));
        }
        if !inner.quorum.is_leader() {
            // Named from a fresh read: a follower's cached list keeps an old leader it does not
            // watch (it watches only its predecessor) for as long as nothing else changes.
            let members = inner.fresh_members.read().unwrap_or_else(|| inner.quorum.members());
            let leader = members.into_iter().min_by_key(|member| member.sequence);
            return Err(match leader {
                Some(leader) if leader.info.id != inner.config.node_id => Response::json(
                    421,
                    &serde_json::json!({
                        "error": format!("not the leader; the leader is {} at {}", leader.info.id, leader.info.address),
                        "status": 421,
                        "leader": leader.info.address,
                        "leader_id": leader.info.id,
                    }),
                ),
                _ => Response::error(503, "no leader elected yet"),
            });
        }
        let scheduler = inner.role.lock().scheduler();
        match scheduler {
            Some(handle) if handle.is_ready() => Ok(handle),
            _ => Err(Response::error(503, "the dispatcher is starting")),
        }
    }

    fn cluster(&self) -> serde_json::Value {
        match self.inner.upgrade() {
            Some(inner) => {
                let mut status = status_json(&inner);
                // Fresh from the store on a follower too (`VipServer::shown`), never the VIP this
                // node held before the last `vip set`.
                // `vip` is the main VIP's (service `default`, or the first), as before services.
                let shown: Vec<(String, String)> =
                    inner.vips.iter().map(|vip| (vip.service().to_string(), vip.shown().address())).collect();
                let main = shown
                    .iter()
                    .find(|(service, _)| service == vip::DEFAULT_SERVICE)
                    .or(shown.first())
                    .map(|(_, address)| address.clone());
                status["vip"] = serde_json::json!(main);
                status["vips"] = shown
                    .iter()
                    .map(|(service, address)| serde_json::json!({ "service": service, "address": address }))
                    .collect();
                status["stopped_nodes"] = match inner.quorum.session() {
                    Some(session) => serde_json::json!(crate::stopped_service::read_stopped_nodes(&session)),
                    None => serde_json::json!([]),
                };
                status
            }
            None => serde_json::json!({ "error": "server stopping" }),
        }
    }

    fn vips(&self) -> Vips {
        self.inner.upgrade().map(|inner| inner.vips.clone()).unwrap_or_default()
    }
}
