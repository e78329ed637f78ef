//! What a server serves and how it starts and stops: `ServerConfig` (the builder), the
//! lifecycle `Hooks` and the tear-down `Stage`s they report, and `ListenAddress`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::http::{Limits, Method, Request, Response};
use super::pool::WorkerPool;
use super::router::Router;

/// A tear-down stage, as fbthrift names them; reported to the `on_stage` hook when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `stopListening`: pause accepting; established connections keep being served.
    StopListening,
    /// `stopAcceptingAndJoinOutstandingRequests`: drain connections, with the join deadline.
    StopAcceptingAndJoinOutstandingRequests,
    /// `stopCPUWorkers`: join this server's worker-pool work; then the post-stop hook.
    StopCpuWorkers,
    /// `stopWorkers`: stop IO, join every connection coroutine of this server.
    StopWorkers,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::StopListening => "stop_listening",
            Stage::StopAcceptingAndJoinOutstandingRequests => "stop_accepting_and_join_outstanding_requests",
            Stage::StopCpuWorkers => "stop_cpu_workers",
            Stage::StopWorkers => "stop_workers",
        }
    }
}

type AddrHook = Arc<dyn Fn(SocketAddr) + Send + Sync>;
type PlainHook = Arc<dyn Fn() + Send + Sync>;
type StageHook = Arc<dyn Fn(Stage) + Send + Sync>;

/// fbthrift's server event handler: closures called at the lifecycle's points.
#[derive(Clone, Default)]
pub struct Hooks {
    /// `preStart`: bound, status `PreStarting`, not serving yet.
    pub pre_start: Option<AddrHook>,
    /// `preServe`: status `Running`, connections are accepted.
    pub pre_serve: Option<AddrHook>,
    /// `onStopRequested` (fbthrift's `callOnStopServing`): the drain begins.
    pub stop_requested: Option<PlainHook>,
    /// `postStop`: this server's worker-pool work has been joined.
    pub post_stop: Option<PlainHook>,
    /// Every tear-down stage, when it actually runs (not when a repeated call returns at once).
    pub on_stage: Option<StageHook>,
}

/// Told of every request a server answers, for metrics: the daemon counts them, the runtime
/// only reports. Called on the connection's IO coroutine, so it must be quick and never block.
pub trait RequestObserver: Send + Sync + 'static {
    /// A request's handler is about to run (or its refusal to be written).
    fn started(&self);
    /// The request was answered: `route` is its registered pattern (`/tasks/{task_id}`), or
    /// `"unmatched"` for a 404 or 405; `status` the answer's status code.
    fn finished(&self, method: Method, route: &str, status: u16, elapsed: Duration);
}

/// An address a server listens on besides its primary one (`ServerConfig::also_listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddress {
    /// Port 0 gives an ephemeral port of its own (see `Server::local_addrs`).
    pub address: SocketAddr,
    /// Set `IP_FREEBIND` (`IPV6_FREEBIND` for IPv6) before the bind, so that the listener can
    /// exist before its address is on the host: a VIP that only the leader holds.
    pub freebind: bool,
}

/// What a server serves and how it starts and stops.
#[derive(Clone)]
pub struct ServerConfig {
    /// For thread names and logs, e.g. `"dispatcher"`.
    pub name: String,
    /// Where to listen (the primary address, `local_addr`); port 0 gives an ephemeral port.
    pub address: SocketAddr,
    /// More addresses served by the same router, connection limits and lifecycle, each with
    /// its own listening socket and accept coroutine.
    pub also_listen: Vec<ListenAddress>,
    pub router: Router,
    /// The CPU pool shared with other servers; `None` makes the server start its own at
    /// `setup` (one thread per CPU) and stop it in `stop_cpu_workers`.
    pub worker_pool: Option<Arc<WorkerPool>>,
    pub limits: Limits,
    /// The deadline of the join of outstanding requests (fbthrift's `workersJoinTimeout`).
    pub workers_join_timeout: Duration,
    /// fbthrift's `stopWorkersOnStopListening_`: stop listening also drains and joins the CPU
    /// work, and `cleanup` stops IO too.
    pub stop_workers_on_stop_listening: bool,
    /// fbthrift's `joinRequestsWhenServerStops_`: with the flag above false, `cleanup` still
    /// drains; otherwise the drain waits for `shutdown`/drop.
    pub join_requests_when_server_stops: bool,
    /// Open connections of the server, all listeners together; a connection past it gets 503
    /// `too many connections` and is closed at once, unread.
    pub max_connections: usize,
    /// Open connections from one client IP address; past it, as `max_connections`.
    pub max_connections_per_client: usize,
    /// A keep-alive connection with no request for this long after its last response is
    /// closed, and so is one that has sent nothing since its accept (or sooner, at the header
    /// timeout).
    pub idle_timeout: Duration,
    /// A request's line and headers must arrive whole within this time of its first byte, and
    /// a connection's first request within this time of its accept (else 408 and the
    /// connection is closed): a client that trickles its headers cannot hold a connection for
    /// longer (slow loris).
    pub header_timeout: Duration,
    /// A request must arrive whole, body included, within this time of its first byte (else
    /// 408).
    pub request_timeout: Duration,
    /// A response write that makes no progress for this long closes the connection.
    pub write_timeout: Duration,
    /// After the last response of a closing connection, how long to keep reading (answering
    /// late requests with 503) so that the client gets the response, not a reset.
    pub linger: Duration,
    pub hooks: Hooks,
    /// Told of every request and its answer (see [`RequestObserver`]).
    pub observer: Option<Arc<dyn RequestObserver>>,
}

impl ServerConfig {
    /// Defaults: fbthrift's flags (both true), a 30 s join deadline, 1 MiB bodies, 1024
    /// connections of which 64 per client address, a 10 s header timeout.
    pub fn new(name: &str, address: SocketAddr) -> ServerConfig {
        ServerConfig {
            name: name.to_string(),
            address,
            also_listen: Vec::new(),
            router: Router::new(),
            worker_pool: None,
            limits: Limits::default(),
            workers_join_timeout: Duration::from_secs(30),
            stop_workers_on_stop_listening: true,
            join_requests_when_server_stops: true,
            max_connections: 1024,
            max_connections_per_client: 64,
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            linger: Duration::from_millis(200),
            hooks: Hooks::default(),
            observer: None,
        }
    }

    /// Sets the observer told of every request (see [`RequestObserver`]).
    pub fn observer(mut self, observer: Arc<dyn RequestObserver>) -> ServerConfig {
        self.observer = Some(observer);
        self
    }

    /// Adds a route run on the IO pool.
    pub fn route<F>(mut self, method: Method, path: &str, handler: F) -> ServerConfig
    where
        F: Fn(&Request) -> Response + Send + Sync + 'static,
    {
        self.router.route(method, path, handler);
        self
    }

    /// Adds a route run on the CPU worker pool.
    pub fn cpu_route<F>(mut self, method: Method, path: &str, handler: F) -> ServerConfig
    where
        F: Fn(&Request) -> Response + Send + Sync + 'static,
    {
        self.router.cpu_route(method, path, handler);
        self
    }

    /// Sets the router's guard: every request of a found route passes it before its handler.
    pub fn guard<G>(mut self, guard: G) -> ServerConfig
    where
        G: Fn(&Request) -> Option<Response> + Send + Sync + 'static,
    {
        self.router.guard(guard);
        self
    }

    pub fn router(mut self, router: Router) -> ServerConfig {
        self.router = router;
        self
    }

    pub fn worker_pool(mut self, pool: Arc<WorkerPool>) -> ServerConfig {
        self.worker_pool = Some(pool);
        self
    }

    pub fn limits(mut self, limits: Limits) -> ServerConfig {
        self.limits = limits;
        self
    }

    pub fn workers_join_timeout(mut self, timeout: Duration) -> ServerConfig {
        self.workers_join_timeout = timeout;
        self
    }

    pub fn stop_workers_on_stop_listening(mut self, value: bool) -> ServerConfig {
        self.stop_workers_on_stop_listening = value;
        self
    }

    pub fn join_requests_when_server_stops(mut self, value: bool) -> ServerConfig {
        self.join_requests_when_server_stops = value;
        self
    }

    /// Listens on `address` too (the primary address stays the one given to `new`), with
    /// `IP_FREEBIND` when `freebind`. A bind failure of any address fails `setup` with
    /// `RpcError::Bind` naming it.
    pub fn also_listen(mut self, address: SocketAddr, freebind: bool) -> ServerConfig {
        self.also_listen.push(ListenAddress { address, freebind });
        self
    }

    pub fn max_connections(mut self, n: usize) -> ServerConfig {
        self.max_connections = n;
        self
    }

    pub fn max_connections_per_client(mut self, n: usize) -> ServerConfig {
        self.max_connections_per_client = n;
        self
    }

    pub fn header_timeout(mut self, timeout: Duration) -> ServerConfig {
        self.header_timeout = timeout;
        self
    }

    pub fn idle_timeout(mut self, timeout: Duration) -> ServerConfig {
        self.idle_timeout = timeout;
        self
    }

    pub fn request_timeout(mut self, timeout: Duration) -> ServerConfig {
        self.request_timeout = timeout;
        self
    }

    pub fn write_timeout(mut self, timeout: Duration) -> ServerConfig {
        self.write_timeout = timeout;
        self
    }

    pub fn on_pre_start(mut self, hook: impl Fn(SocketAddr) + Send + Sync + 'static) -> ServerConfig {
        self.hooks.pre_start = Some(Arc::new(hook));
        self
    }

    pub fn on_pre_serve(mut self, hook: impl Fn(SocketAddr) + Send + Sync + 'static) -> ServerConfig {
        self.hooks.pre_serve = Some(Arc::new(hook));
        self
    }

    pub fn on_stop_requested(mut self, hook: impl Fn() + Send + Sync + 'static) -> ServerConfig {
        self.hooks.stop_requested = Some(Arc::new(hook));
        self
    }

    pub fn on_post_stop(mut self, hook: impl Fn() + Send + Sync + 'static) -> ServerConfig {
        self.hooks.post_stop = Some(Arc::new(hook));
        self
    }

    pub fn on_stage(mut self, hook: impl Fn(Stage) + Send + Sync + 'static) -> ServerConfig {
        self.hooks.on_stage = Some(Arc::new(hook));
        self
    }
}
