//! `Server`: one HTTP/JSON RPC server with fbthrift's lifecycle, on one or several listening
//! addresses. `ServerConfig` says what it serves, where, within which limits, and how it
//! stops; the stages (`setup`, `serve`, `stop_listening`,
//! `stop_accepting_and_join_outstanding_requests`, `stop_cpu_workers`, `stop_workers`,
//! `cleanup`, `shutdown`) are the module's `# Start-up` and `# Shutdown` sections in code.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::admission::Admission;
use super::connection::{self, ConnectionShared};
use super::deadlines::DeadlineSweeper;
use super::http::{Limits, Method, Request, Response};
use super::pool::WorkerPool;
use super::router::Router;
use super::status::{AtomicStatus, ServerStatus};
use super::wait_group::WaitGroup;
use super::{configure_io_pool, Result, RpcError};
use crate::co_mutex::CoMutex;
use crate::park;
use crate::sync_point::SyncPoint;
use crate::thread::{JoinError, Thread};

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

/// A stage that runs once per cycle; later callers wait until it has finished.
#[derive(Default)]
struct Gate {
    started: AtomicBool,
    finished: SyncPoint,
}

impl Gate {
    /// True for the one caller that must run the stage.
    fn begin(&self) -> bool {
        !self.started.swap(true, Ordering::AcqRel)
    }

    fn finish(&self) {
        self.finished.done();
    }

    fn wait(&self) {
        self.finished.wait();
    }
}

/// One listening socket of a cycle and its accept coroutine.
struct Listener {
    local_addr: SocketAddr,
    freebind: bool,
    /// Taken (and so closed, once the accept coroutine has let its clone go) when the cycle
    /// stops listening.
    socket: Mutex<Option<Arc<may::net::TcpListener>>>,
    accept_exited: SyncPoint,
    /// `None` before the accept coroutine starts and after it is joined.
    accept_handle: Mutex<Option<may::coroutine::JoinHandle<()>>>,
}

impl Listener {
    /// Binds `wanted`; the socket is closed again if anything later fails (it is dropped).
    fn bind(wanted: ListenAddress) -> Result<Listener> {
        let address = wanted.address;
        // std's bind sets SO_REUSEADDR but not SO_REUSEPORT (which may's bind sets): a second
        // daemon on the same port must fail, not share the port.
        let std_listener =
            bind_listener(address, wanted.freebind).map_err(|source| RpcError::Bind { address, source })?;
        let local_addr = std_listener.local_addr().map_err(|source| RpcError::Bind { address, source })?;
        let socket = {
            use std::os::fd::{FromRawFd, IntoRawFd};
            let fd = std_listener.into_raw_fd();
            // The fd was just taken out of a live listener; may's listener now owns it.
            Arc::new(unsafe { may::net::TcpListener::from_raw_fd(fd) })
        };
        Ok(Listener {
            local_addr,
            freebind: wanted.freebind,
            socket: Mutex::new(Some(socket)),
            accept_exited: SyncPoint::new(),
            accept_handle: Mutex::new(None),
        })
    }

    /// Whether a connection to our own address certainly stays on this host: not so for a
    /// freebind address outside loopback, which another host may hold right now (the VIP after
    /// a failover).
    fn connectable(&self) -> bool {
        let ip = self.local_addr.ip();
        !self.freebind || ip.is_loopback() || ip.is_unspecified()
    }
}

/// Everything that lives from one `setup` to the next: the listeners, the connections, the
/// stages' once-flags.
pub(crate) struct Cycle {
    /// The primary listener's address (the first of `listeners`).
    pub(crate) local_addr: SocketAddr,
    pub(crate) pool: Arc<WorkerPool>,
    owns_pool: bool,
    stop_requested: SyncPoint,
    /// The primary address first, then `also_listen`'s in order, then those added while serving
    /// (`Server::listen_also`); only ever appended to, so an accept coroutine's index stays its own.
    listeners: Mutex<Vec<Arc<Listener>>>,
    pub(crate) paused: AtomicBool,
    /// The connection limits; every open connection holds a slot of it.
    pub(crate) admission: Arc<Admission>,
    pub(crate) shared: Arc<connection::Shared>,
    /// Enforces the connections' deadlines until IO stops.
    deadline_sweeper: Mutex<Option<DeadlineSweeper>>,
    /// Open connections, for the drain and the deadline's log. A connection removes itself
    /// (under this lock) before it closes its socket, so a raw fd found here is still its own.
    pub(crate) connections: Mutex<HashMap<u64, Arc<ConnectionShared>>>,
    pub(crate) live_connections: WaitGroup,
    pub(crate) handles: Mutex<HashMap<u64, may::coroutine::JoinHandle<()>>>,
    pub(crate) finished_connections: Mutex<Vec<u64>>,
    pub(crate) next_connection_id: AtomicU64,
    pub(crate) draining: AtomicBool,
    pub(crate) cpu_jobs: WaitGroup,
    drain_deadline: Mutex<Option<Instant>>,
    listening: Gate,
    accepting: Gate,
    cpu_workers: Gate,
    workers: Gate,
}

impl Cycle {
    pub(crate) fn accept_exited_done(&self, listener: usize) {
        if let Some(listener) = self.listeners.lock().get(listener) {
            listener.accept_exited.done();
        }
    }

    /// The listeners as they are now.
    fn listeners(&self) -> Vec<Arc<Listener>> {
        self.listeners.lock().clone()
    }

    fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.lock().iter().map(|listener| listener.local_addr).collect()
    }

    /// Closes every listening socket (those whose accept coroutine still runs close when it
    /// lets its clone go).
    fn close_listeners(&self) {
        for listener in self.listeners() {
            listener.socket.lock().take();
        }
    }

    /// Wakes every connection that waits for its next request, so the drain need not wait.
    fn wake_idle_connections(&self) {
        for connection in self.connections.lock().values() {
            connection.wake_if_idle();
        }
    }

    /// Shuts down the sockets of every connection still open and logs what each was doing.
    fn cut_connections(&self, server: &str, why: &str) -> usize {
        let connections = self.connections.lock();
        for connection in connections.values() {
            connection.cut(server, why);
        }
        connections.len()
    }
}

/// What the lifecycle shares with connections and handles.
pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) config: ServerConfig,
    status: AtomicStatus,
    cycle: Mutex<Option<Arc<Cycle>>>,
    /// A stop that arrived while `setup` was running, before its cycle existed.
    stop_pending: AtomicBool,
    serve_thread: Mutex<Option<Thread<()>>>,
    /// Serialises the lifecycle's entry points (setup, the stages, cleanup, shutdown): a
    /// second caller parks until the first has finished, then finds its stages done.
    lifecycle: CoMutex<()>,
    /// Connection coroutines cut at a deadline whose handlers had not returned yet.
    stragglers: Mutex<Vec<may::coroutine::JoinHandle<()>>>,
    /// Addresses added with `Server::listen_also`, listened on by every later cycle too.
    added_listeners: Mutex<Vec<ListenAddress>>,
}

/// A cheap, cloneable handle to a server, safe to keep in handlers (it does not keep the
/// server alive): stop it, read its status and address.
#[derive(Clone)]
pub struct ServerHandle {
    inner: Weak<Inner>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").field("status", &self.status()).finish()
    }
}

impl ServerHandle {
    /// Asks the server to stop; returns at once (see `Server::stop`).
    pub fn stop(&self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.request_stop();
        }
    }

    /// The server's status; `NotRunning` once the server is gone.
    pub fn status(&self) -> ServerStatus {
        self.inner.upgrade().map_or(ServerStatus::NotRunning, |inner| inner.status.load())
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.upgrade().and_then(|inner| inner.local_addr())
    }
}

/// One RPC server. Dropping it stops it, runs the tear-down stages the flags left to the
/// destructor, and joins everything it started (see the module's `# Shutdown`).
pub struct Server {
    inner: Arc<Inner>,
}

static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);

may::coroutine_local!(static CONNECTION_OF_SERVER: std::cell::Cell<u64> = std::cell::Cell::new(0));

/// Marks the running `may` coroutine as a connection of server `server_id`.
pub(crate) fn mark_connection_coroutine(server_id: u64) {
    CONNECTION_OF_SERVER.with(|cell| cell.set(server_id));
}

impl Server {
    pub fn new(config: ServerConfig) -> Server {
        Server {
            inner: Arc::new(Inner {
                id: NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed),
                config,
                status: AtomicStatus::new(ServerStatus::NotRunning),
                cycle: Mutex::new(None),
                stop_pending: AtomicBool::new(false),
                serve_thread: Mutex::new(None),
                lifecycle: CoMutex::new(()),
                stragglers: Mutex::new(Vec::new()),
                added_listeners: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle { inner: Arc::downgrade(&self.inner) }
    }

    pub fn status(&self) -> ServerStatus {
        self.inner.status.load()
    }

    /// The primary bound address (with the real port when the config asked for port 0), once
    /// set up.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr()
    }

    /// Every bound address once set up: the primary one (`local_addr`) first, then those of
    /// `ServerConfig::also_listen` in order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.cycle().map_or_else(Vec::new, |cycle| cycle.local_addrs())
    }

    /// Listens on `address` too, from now on and in every later cycle: at once when the server
    /// is serving (the address bound, with `IP_FREEBIND` when `freebind`, and its accept
    /// coroutine started), else at the next `setup`. An address already listened on (or added)
    /// is left alone. `Ok(Some(bound))` when it was bound now, `Ok(None)` when there was
    /// nothing to do now. For a VIP that moves to an address the server did not know at its
    /// start.
    pub fn listen_also(&self, address: SocketAddr, freebind: bool) -> Result<Option<SocketAddr>> {
        self.inner.listen_also(ListenAddress { address, freebind })
    }

    /// Open connections right now.
    pub fn n_connections(&self) -> usize {
        self.inner.cycle().map_or(0, |cycle| cycle.live_connections.count())
    }

    /// Connections refused (503 `too many connections`) since the last `setup`.
    pub fn n_refused_connections(&self) -> u64 {
        self.inner.cycle().map_or(0, |cycle| cycle.admission.n_refused())
    }

    /// Binds and starts accepting: `NotRunning → PreStarting → Starting → Running`, with the
    /// pre-start and pre-serve hooks. After a complete tear-down it sets the server up again
    /// (a tear-down the flags left unfinished is finished first).
    pub fn setup(&self) -> Result<SocketAddr> {
        self.inner.exclusive_setup()
    }

    /// `setup` if needed, then waits until `stop`, then `cleanup`. Blocks the caller (parks it,
    /// when it is a coroutine).
    pub fn serve(&self) -> Result<()> {
        if self.inner.called_from_handler() {
            return Err(RpcError::SelfJoin(format!("serve of server {}", self.name())));
        }
        let cycle = match self.inner.cycle() {
            Some(cycle) if self.inner.status.load() == ServerStatus::Running => cycle,
            _ => {
                self.inner.exclusive_setup()?;
                self.inner.cycle().ok_or_else(|| RpcError::NotSetUp(self.name().to_string()))?
            }
        };
        cycle.stop_requested.wait();
        self.inner.exclusive("cleanup", Inner::cleanup);
        Ok(())
    }

    /// `setup` here (so bind errors are returned and `local_addr` is known at once), then the
    /// wait-for-stop and `cleanup` of `serve` on a `runtime::Thread` named `thread_name`, owned
    /// by the server and joined by `join` or drop.
    pub fn serve_in_background(&self, thread_name: &str) -> Result<SocketAddr> {
        let serving = self.inner.serve_thread.lock().as_ref().is_some_and(|thread| !thread.is_finished());
        if serving {
            return Err(RpcError::NotStopped { name: self.name().to_string(), status: self.status() });
        }
        self.join()?;
        let address = match (self.inner.status.load(), self.inner.local_addr()) {
            (ServerStatus::Running, Some(address)) => address,
            _ => self.inner.exclusive_setup()?,
        };
        let cycle = self.inner.cycle().ok_or_else(|| RpcError::NotSetUp(self.name().to_string()))?;
        let inner = self.inner.clone();
        let thread = Thread::spawn(thread_name, move || {
            cycle.stop_requested.wait();
            inner.exclusive("cleanup", Inner::cleanup);
        })
        .map_err(|source| RpcError::Spawn { what: thread_name.to_string(), source })?;
        *self.inner.serve_thread.lock() = Some(thread);
        Ok(address)
    }

    /// Waits for the background serving thread (after `stop`) to finish its `cleanup`.
    pub fn join(&self) -> Result<()> {
        self.inner.join_serve_thread()
    }

    /// Asks the server to stop and returns at once: the serving thread (`serve` or
    /// `serve_in_background`) then runs `cleanup`. Safe from a handler, a signal-flag watcher,
    /// any thread, any number of times, concurrently.
    pub fn stop(&self) {
        self.inner.request_stop();
    }

    /// fbthrift's `stopListening`; see the module's `# Shutdown`.
    pub fn stop_listening(&self) {
        self.inner.exclusive("stop_listening", Inner::stop_listening);
    }

    /// fbthrift's `stopAcceptingAndJoinOutstandingRequests`.
    pub fn stop_accepting_and_join_outstanding_requests(&self) {
        self.inner.exclusive(
            "stop_accepting_and_join_outstanding_requests",
            Inner::stop_accepting_and_join_outstanding_requests,
        );
    }

    /// fbthrift's `stopCPUWorkers`.
    pub fn stop_cpu_workers(&self) {
        self.inner.exclusive("stop_cpu_workers", Inner::stop_cpu_workers);
    }

    /// fbthrift's `stopWorkers`.
    pub fn stop_workers(&self) {
        self.inner.exclusive("stop_workers", Inner::stop_workers);
    }

    /// fbthrift's `cleanUp`, the mirror of `setup`: stop listening, then (by the flags) stop IO,
    /// or drain.
    pub fn cleanup(&self) {
        self.inner.exclusive("cleanup", Inner::cleanup);
    }

    /// What fbthrift's destructor does, callable before the drop: stop and join the serving
    /// thread, `cleanup` if it has not run, then the stages the flags left.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.inner.shutdown();
        self.inner.join_stragglers(self.inner.config.workers_join_timeout);
    }
}

impl Inner {
    fn name(&self) -> &str {
        &self.config.name
    }

    /// Runs `stage` holding the lifecycle lock; from a handler of this server it only
    /// requests the stop (the stage would wait for the handler itself).
    fn exclusive(&self, what: &str, stage: fn(&Inner)) {
        if self.defer_if_handler(what) {
            return;
        }
        let _lifecycle = self.lifecycle.lock();
        stage(self);
    }

    fn exclusive_setup(self: &Arc<Self>) -> Result<SocketAddr> {
        if self.called_from_handler() {
            return Err(RpcError::SelfJoin(format!("setup of server {}", self.name())));
        }
        let _lifecycle = self.lifecycle.lock();
        self.setup()
    }

    fn cycle(&self) -> Option<Arc<Cycle>> {
        self.cycle.lock().clone()
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.cycle().map(|cycle| cycle.local_addr)
    }

    fn stage_hook(&self, stage: Stage) {
        if let Some(hook) = &self.config.hooks.on_stage {
            hook(stage);
        }
    }

    /// True when the caller is a handler of this server, or any job of its worker pool:
    /// a blocking stage there would wait for itself.
    pub(crate) fn called_from_handler(&self) -> bool {
        if may::coroutine::is_coroutine() && CONNECTION_OF_SERVER.with(|cell| cell.get()) == self.id {
            return true;
        }
        self.cycle().is_some_and(|cycle| cycle.pool.is_current())
            || self.config.worker_pool.as_ref().is_some_and(|pool| pool.is_current())
    }

    /// Returns true (after requesting the stop) when a blocking stage must not run here.
    fn defer_if_handler(&self, what: &str) -> bool {
        if self.called_from_handler() {
            tracing::debug!(server = %self.name(), what, "called from a handler: stop requested, the serving thread completes it");
            self.request_stop();
            true
        } else {
            false
        }
    }

    /// Setup may be running on another thread; the stages wait until it has finished.
    fn wait_while_starting(&self) {
        while matches!(self.status.load(), ServerStatus::PreStarting | ServerStatus::Starting) {
            park::sleep(Duration::from_millis(1));
        }
    }

    fn setup(self: &Arc<Self>) -> Result<SocketAddr> {
        configure_io_pool();
        // A tear-down left half-done by the flags is finished before the server starts again.
        if let Some(cycle) = self.cycle() {
            if !cycle.workers.finished.is_done() {
                if self.status.load() == ServerStatus::Running {
                    return Err(RpcError::NotStopped { name: self.name().to_string(), status: ServerStatus::Running });
                }
                self.shutdown_stages();
            }
        }
        self.reap_stragglers();
        self.status
            .transition(ServerStatus::NotRunning, ServerStatus::PreStarting)
            .map_err(|status| RpcError::NotStopped { name: self.name().to_string(), status })?;
        // The finished cycle goes; until the new one exists, a stop is kept as pending.
        *self.cycle.lock() = None;
        let started = Instant::now();
        match self.start_cycle() {
            Ok(cycle) => {
                let address = cycle.local_addr;
                if let Some(hook) = &self.config.hooks.pre_start {
                    hook(address);
                }
                let _ = self.status.transition(ServerStatus::PreStarting, ServerStatus::Starting);
                // fbthrift's onStartServing would run here; we have no per-service hooks.
                let _ = self.status.transition(ServerStatus::Starting, ServerStatus::Running);
                if let Some(hook) = &self.config.hooks.pre_serve {
                    hook(address);
                }
                let also_listening = cycle.local_addrs().split_off(1);
                tracing::info!(
                    server = %self.name(),
                    %address,
                    ?also_listening,
                    elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                    "RPC server set up and serving"
                );
                Ok(address)
            }
            Err(error) => {
                tracing::error!(server = %self.name(), %error, "RPC server setup failed");
                *self.cycle.lock() = None;
                self.stop_pending.store(false, Ordering::Release);
                self.status.store(ServerStatus::NotRunning);
                Err(error)
            }
        }
    }

    /// Binds every address, prepares the pool, and starts one accept coroutine per listener.
    fn start_cycle(self: &Arc<Self>) -> Result<Arc<Cycle>> {
        let primary = ListenAddress { address: self.config.address, freebind: false };
        // All are bound before anything starts; on a failure those already bound are dropped,
        // which closes them.
        let added: Vec<ListenAddress> = self.added_listeners.lock().clone();
        let listeners = std::iter::once(primary)
            .chain(self.config.also_listen.iter().copied())
            .chain(added)
            .map(|address| Listener::bind(address).map(Arc::new))
            .collect::<Result<Vec<Arc<Listener>>>>()?;
        let local_addr = listeners[0].local_addr;
        let (pool, owns_pool) = match &self.config.worker_pool {
            Some(pool) => (pool.clone(), false),
            None => (WorkerPool::with_default_size(&format!("{}-cpu", self.name()))?, true),
        };
        let shared = connection::Shared::new(self);
        let cycle = Arc::new(Cycle {
            local_addr,
            pool,
            owns_pool,
            stop_requested: SyncPoint::new(),
            listeners: Mutex::new(listeners),
            paused: AtomicBool::new(false),
            admission: Admission::new(self.config.max_connections, self.config.max_connections_per_client),
            shared: shared.clone(),
            deadline_sweeper: Mutex::new(None),
            connections: Mutex::new(HashMap::new()),
            live_connections: WaitGroup::new(),
            handles: Mutex::new(HashMap::new()),
            finished_connections: Mutex::new(Vec::new()),
            next_connection_id: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            cpu_jobs: WaitGroup::new(),
            drain_deadline: Mutex::new(None),
            listening: Gate::default(),
            accepting: Gate::default(),
            cpu_workers: Gate::default(),
            workers: Gate::default(),
        });
        {
            let mut current = self.cycle.lock();
            *current = Some(cycle.clone());
            if self.stop_pending.swap(false, Ordering::AcqRel) {
                cycle.stop_requested.done();
            }
        }
        match DeadlineSweeper::start(&cycle, shared) {
            Ok(sweeper) => *cycle.deadline_sweeper.lock() = Some(sweeper),
            Err(source) => {
                cycle.close_listeners();
                return Err(RpcError::Spawn { what: format!("{}-deadlines", self.name()), source });
            }
        }
        for (index, listener) in cycle.listeners().iter().enumerate() {
            match self.spawn_accept(&cycle, listener, index) {
                Ok(()) => {}
                Err(source) => {
                    // The accept coroutines already started are stopped as stop_listening does.
                    self.pause_accepting(&cycle);
                    if let Some(sweeper) = cycle.deadline_sweeper.lock().take() {
                        sweeper.stop();
                    }
                    return Err(RpcError::Spawn { what: format!("{}-accept-{index}", self.name()), source });
                }
            }
        }
        Ok(cycle)
    }

    /// Starts the accept coroutine of the cycle's listener number `index`.
    fn spawn_accept(&self, cycle: &Arc<Cycle>, listener: &Listener, index: usize) -> std::io::Result<()> {
        let Some(socket) = listener.socket.lock().clone() else { return Ok(()) };
        let accept_cycle = cycle.clone();
        let builder = may::coroutine::Builder::new().name(format!("{}-accept-{index}", self.name()));
        // SAFETY (may's spawn contract): the coroutine keeps no thread-local across a park and
        // its stack (IO_STACK_SIZE) is ample for the accept loop.
        let handle = unsafe { builder.spawn(move || connection::accept_loop(socket, accept_cycle, index)) }?;
        *listener.accept_handle.lock() = Some(handle);
        Ok(())
    }

    /// See [`Server::listen_also`].
    fn listen_also(self: &Arc<Self>, wanted: ListenAddress) -> Result<Option<SocketAddr>> {
        {
            let mut added = self.added_listeners.lock();
            let known = std::iter::once(self.config.address)
                .chain(self.config.also_listen.iter().map(|listen| listen.address))
                .chain(added.iter().map(|listen| listen.address));
            if known.into_iter().any(|address| address == wanted.address) {
                return Ok(None);
            }
            added.push(wanted);
        }
        let Some(cycle) = self.cycle() else { return Ok(None) };
        // Under the listeners' lock, so that a stop_listening either sees this listener (and
        // closes it) or has paused already (and it is not opened).
        let mut listeners = cycle.listeners.lock();
        if cycle.paused.load(Ordering::Acquire) || self.status.load() != ServerStatus::Running {
            return Ok(None);
        }
        let listener = match Listener::bind(wanted) {
            Ok(listener) => Arc::new(listener),
            Err(error) => {
                // Not kept for later cycles either: one bad address must not fail every setup.
                self.added_listeners.lock().retain(|added| added.address != wanted.address);
                return Err(error);
            }
        };
        let index = listeners.len();
        self.spawn_accept(&cycle, &listener, index)
            .map_err(|source| RpcError::Spawn { what: format!("{}-accept-{index}", self.name()), source })?;
        let address = listener.local_addr;
        listeners.push(listener);
        tracing::info!(server = %self.name(), %address, freebind = wanted.freebind, "RPC server also listening");
        Ok(Some(address))
    }

    pub(crate) fn handle(self: &Arc<Self>) -> ServerHandle {
        ServerHandle { inner: Arc::downgrade(self) }
    }

    fn request_stop(&self) {
        let current = self.cycle.lock();
        match current.as_ref() {
            Some(cycle) if !cycle.stop_requested.is_done() => {
                tracing::info!(server = %self.name(), status = %self.status.load(), "stop requested");
                cycle.stop_requested.done();
            }
            Some(_) => {}
            // Setup is running and its cycle does not exist yet: it will see the stop.
            None if matches!(self.status.load(), ServerStatus::PreStarting | ServerStatus::Starting) => {
                tracing::info!(server = %self.name(), "stop requested during setup");
                self.stop_pending.store(true, Ordering::Release);
            }
            // Not set up: nothing to stop (like fbthrift's stop without an event base).
            None => {}
        }
    }

    fn join_serve_thread(&self) -> Result<()> {
        let thread = self.serve_thread.lock().take();
        let Some(thread) = thread else { return Ok(()) };
        match thread.join() {
            Ok(()) | Err(JoinError::AlreadyJoined) => Ok(()),
            Err(JoinError::SelfJoin) => {
                // Put it back for its real owner.
                *self.serve_thread.lock() = Some(thread);
                Err(RpcError::SelfJoin(format!("join of the serving thread of server {}", self.name())))
            }
            Err(JoinError::Panicked(message)) => Err(RpcError::ServeThread { name: self.name().to_string(), message }),
        }
    }

    fn cleanup(&self) {
        if self.defer_if_handler("cleanup") {
            return;
        }
        self.stop_listening();
        if self.config.stop_workers_on_stop_listening {
            self.stop_workers();
        } else if self.config.join_requests_when_server_stops {
            self.stop_accepting_and_join_outstanding_requests();
        }
    }

    /// Stops and joins the serving thread (outside the lifecycle lock, which its cleanup
    /// takes), then runs the destructor's stages.
    fn shutdown(&self) {
        if self.defer_if_handler("shutdown") {
            return;
        }
        self.request_stop();
        if let Err(error) = self.join_serve_thread() {
            tracing::error!(server = %self.name(), %error, "cannot join the serving thread; the tear-down goes on");
        }
        self.exclusive("shutdown", Inner::shutdown_stages);
    }

    /// What `~ThriftServer` does after `cleanUp`.
    fn shutdown_stages(&self) {
        let Some(cycle) = self.cycle() else { return };
        if !cycle.listening.started.load(Ordering::Acquire) {
            // Set up but never served: the destructor assumes cleanUp ran, so run it.
            self.cleanup();
        }
        if self.config.stop_workers_on_stop_listening {
            // Everything is already taken care of (unless a stage was called out of order).
            self.stop_workers();
            return;
        }
        if !self.config.join_requests_when_server_stops {
            self.stop_accepting_and_join_outstanding_requests();
        }
        self.stop_cpu_workers();
        self.stop_workers();
    }

    fn stop_listening(&self) {
        if self.defer_if_handler("stop_listening") {
            return;
        }
        self.wait_while_starting();
        let Some(cycle) = self.cycle() else { return };
        match self.status.transition(ServerStatus::Running, ServerStatus::PreStopping) {
            Ok(()) => {}
            // Somebody else stopped listening in this cycle: wait until the pause is complete.
            Err(_) => {
                if cycle.listening.started.load(Ordering::Acquire) || self.status.load() != ServerStatus::NotRunning {
                    cycle.listening.wait();
                }
                return;
            }
        }
        cycle.listening.begin();
        self.stage_hook(Stage::StopListening);
        let started = Instant::now();
        self.pause_accepting(&cycle);
        tracing::info!(
            server = %self.name(),
            stage = Stage::StopListening.as_str(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            n_listeners = cycle.listeners.lock().len(),
            n_connections = cycle.live_connections.count(),
            "stopped listening; established connections are still served"
        );
        cycle.listening.finish();
        if self.config.stop_workers_on_stop_listening {
            self.stop_accepting_and_join_outstanding_requests();
            self.stop_cpu_workers();
        }
    }

    /// On every listener: takes what the kernel had queued, closes the listening socket, joins
    /// the accept coroutine.
    fn pause_accepting(&self, cycle: &Arc<Cycle>) {
        let listeners = {
            let listeners = cycle.listeners.lock();
            cycle.paused.store(true, Ordering::Release);
            listeners.clone()
        };
        for listener in &listeners {
            self.pause_listener(cycle, listener);
        }
    }

    fn pause_listener(&self, cycle: &Arc<Cycle>, listener: &Listener) {
        let socket = listener.socket.lock().clone();
        let Some(socket) = socket else { return };
        if listener.accept_handle.lock().is_some() {
            // Wake the accept coroutine with a connection to ourselves (it sees the pause, takes
            // what is queued and exits). Where that connection could leave the host, or when it
            // does not wake it, take what the kernel queued from here and shut the listening
            // socket down, which makes a blocked accept return an error.
            let woken = listener.connectable()
                && std::net::TcpStream::connect_timeout(&loopback_of(listener.local_addr), Duration::from_millis(500))
                    .is_ok();
            if !woken || !listener.accept_exited.wait_timeout(Duration::from_secs(1)) {
                if listener.connectable() {
                    tracing::warn!(server = %self.name(), address = %listener.local_addr, "the accept coroutine did not wake by connection; shutting the listener down");
                }
                connection::take_queued(&socket, cycle);
                // The listener is alive (we hold an Arc), so its fd is still its own.
                unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_RDWR) };
                if !listener.accept_exited.wait_timeout(Duration::from_secs(5)) {
                    tracing::error!(server = %self.name(), address = %listener.local_addr, "the accept coroutine did not exit; it is joined at stop_workers");
                }
            }
        }
        if listener.accept_exited.is_done() {
            let handle = listener.accept_handle.lock().take();
            if let Some(handle) = handle {
                if wait_done(&handle, Duration::from_secs(1)) {
                    if let Err(panic) = handle.join() {
                        tracing::error!(server = %self.name(), panic = %crate::context::panic_message(&panic), "the accept coroutine panicked");
                    }
                } else {
                    self.stragglers.lock().push(handle);
                }
            }
        }
        drop(socket);
        // The last reference: the listening socket closes and new connections are refused.
        listener.socket.lock().take();
    }

    fn stop_accepting_and_join_outstanding_requests(&self) {
        if self.defer_if_handler("stop_accepting_and_join_outstanding_requests") {
            return;
        }
        self.wait_while_starting();
        let Some(cycle) = self.cycle() else { return };
        match self.status.transition(ServerStatus::PreStopping, ServerStatus::Stopping) {
            Ok(()) => {}
            Err(ServerStatus::Running) => return, // stop_listening has not been called.
            Err(_) => {
                if cycle.accepting.started.load(Ordering::Acquire) || self.status.load() != ServerStatus::NotRunning {
                    cycle.accepting.wait();
                }
                return;
            }
        }
        cycle.accepting.begin();
        cycle.listening.wait();
        self.stage_hook(Stage::StopAcceptingAndJoinOutstandingRequests);
        let started = Instant::now();
        if let Some(hook) = &self.config.hooks.stop_requested {
            hook();
        }
        let _ = self.status.transition(ServerStatus::Stopping, ServerStatus::DrainingUntilStopped);
        cycle.draining.store(true, Ordering::Release);
        cycle.wake_idle_connections();
        let deadline = started + self.config.workers_join_timeout;
        *cycle.drain_deadline.lock() = Some(deadline);
        let n_at_start = cycle.live_connections.count();
        let mut n_cut = 0;
        if !cycle.live_connections.wait_zero(Some(deadline)) {
            tracing::error!(
                server = %self.name(),
                timeout_ms = self.config.workers_join_timeout.as_millis() as u64,
                "outstanding requests did not finish by the join deadline; cutting their connections"
            );
            n_cut = cycle.cut_connections(self.name(), "join deadline passed");
        }
        let _ = self.status.transition(ServerStatus::DrainingUntilStopped, ServerStatus::NotRunning);
        tracing::info!(
            server = %self.name(),
            stage = Stage::StopAcceptingAndJoinOutstandingRequests.as_str(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            n_connections_drained = n_at_start.saturating_sub(n_cut),
            n_connections_cut = n_cut,
            "outstanding requests joined"
        );
        cycle.accepting.finish();
    }

    fn stop_cpu_workers(&self) {
        if self.defer_if_handler("stop_cpu_workers") {
            return;
        }
        let Some(cycle) = self.cycle() else { return };
        if !cycle.cpu_workers.begin() {
            cycle.cpu_workers.wait();
            return;
        }
        self.stage_hook(Stage::StopCpuWorkers);
        let started = Instant::now();
        // The drain's deadline holds here too: a job still running after it belongs to a
        // request that was cut, and waiting a second full timeout for it helps nobody.
        let deadline = cycle.drain_deadline.lock().unwrap_or(started + self.config.workers_join_timeout);
        if !cycle.cpu_jobs.wait_zero(Some(deadline.max(started + Duration::from_millis(10)))) {
            tracing::error!(
                server = %self.name(),
                n_jobs = cycle.cpu_jobs.count(),
                "worker-pool jobs of this server still run after the join deadline; going on"
            );
        }
        if cycle.owns_pool {
            cycle.pool.stop();
        }
        if let Some(hook) = &self.config.hooks.post_stop {
            hook();
        }
        tracing::info!(
            server = %self.name(),
            stage = Stage::StopCpuWorkers.as_str(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            pool = %cycle.pool.name(),
            shared_pool = !cycle.owns_pool,
            "worker-pool work joined"
        );
        cycle.cpu_workers.finish();
    }

    fn stop_workers(&self) {
        if self.defer_if_handler("stop_workers") {
            return;
        }
        let Some(cycle) = self.cycle() else { return };
        if !cycle.workers.begin() {
            cycle.workers.wait();
            return;
        }
        self.stage_hook(Stage::StopWorkers);
        let started = Instant::now();
        // Normally already done by stop listening; makes stop_workers complete on its own.
        self.pause_accepting(&cycle);
        let grace = Duration::from_millis(200);
        if !cycle.live_connections.wait_zero(Some(Instant::now() + grace)) {
            cycle.cut_connections(self.name(), "IO stopped");
            cycle.live_connections.wait_zero(Some(Instant::now() + grace));
        }
        for listener in cycle.listeners() {
            if let Some(handle) = listener.accept_handle.lock().take() {
                self.stragglers.lock().push(handle);
            }
        }
        // Every connection has ended or been cut: no deadline is left to enforce.
        if let Some(sweeper) = cycle.deadline_sweeper.lock().take() {
            sweeper.stop();
        }
        let handles: Vec<_> = cycle.handles.lock().drain().collect();
        let mut n_joined = 0usize;
        let mut n_left = 0usize;
        for (id, handle) in handles {
            // A connection that left the registry is past its last socket call and returns
            // at once; one still registered was cut inside its handler.
            let finishing = !cycle.connections.lock().contains_key(&id);
            if finishing && wait_done(&handle, Duration::from_secs(1)) {
                let _ = handle.join();
                n_joined += 1;
            } else {
                self.stragglers.lock().push(handle);
                n_left += 1;
            }
        }
        if n_left > 0 {
            tracing::warn!(
                server = %self.name(),
                n_left,
                "connection coroutines whose handlers still run after their connection was cut; joined at the next setup or at drop"
            );
        }
        tracing::info!(
            server = %self.name(),
            stage = Stage::StopWorkers.as_str(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            n_joined,
            "IO stopped; the server can be set up again"
        );
        cycle.workers.finish();
    }

    fn reap_stragglers(&self) {
        let mut stragglers = self.stragglers.lock();
        let (done, running): (Vec<_>, Vec<_>) = stragglers.drain(..).partition(|handle| handle.is_done());
        *stragglers = running;
        drop(stragglers);
        for handle in done {
            let _ = handle.join();
        }
    }

    fn join_stragglers(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.reap_stragglers();
            let n_left = self.stragglers.lock().len();
            if n_left == 0 {
                return;
            }
            if Instant::now() >= deadline {
                tracing::error!(
                    server = %self.name(),
                    n_left,
                    "handlers cut at the deadline still run after another join timeout; left running"
                );
                // Dropping a may JoinHandle detaches its coroutine; nothing safe can end it.
                self.stragglers.lock().clear();
                return;
            }
            park::sleep(Duration::from_millis(10));
        }
    }
}

/// Waits (parking the caller, never blocking a thread inside may's join) until `may` marks the
/// coroutine finished; false if it is still running after `timeout`.
fn wait_done<T>(handle: &may::coroutine::JoinHandle<T>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !handle.is_done() {
        if Instant::now() >= deadline {
            return false;
        }
        park::sleep(Duration::from_millis(1));
    }
    true
}

/// A listening socket as std's `TcpListener::bind` makes it (SO_REUSEADDR, no SO_REUSEPORT), and
/// for the IPv6 wildcard address a dual-stack one: it takes IPv4 connections too, whatever the
/// host's `net.ipv6.bindv6only` default. With `freebind`, `IP_FREEBIND` (`IPV6_FREEBIND`) is set
/// before the bind (socket2's setters are that `setsockopt`), so an address that is not (yet)
/// on the host can be bound.
fn bind_listener(address: SocketAddr, freebind: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    match address.ip() {
        IpAddr::V6(ip) => {
            if ip.is_unspecified() {
                socket.set_only_v6(false)?;
            }
            if freebind {
                socket.set_freebind_ipv6(true)?;
            }
        }
        IpAddr::V4(_) => {
            if freebind {
                socket.set_freebind(true)?;
            }
        }
    }
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    // The backlog std uses.
    socket.listen(128)?;
    Ok(socket.into())
}

/// Where a connection to ourselves goes: a wildcard address becomes loopback.
fn loopback_of(address: SocketAddr) -> SocketAddr {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, address.port())
}
