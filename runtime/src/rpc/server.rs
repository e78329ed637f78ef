//! `Server`: one HTTP/JSON RPC server with fbthrift's lifecycle, on one or several listening
//! addresses: the server and its `Inner`, and the start-up (`setup`, `serve`, a cycle's start,
//! `listen_also`). `ServerConfig` (`config.rs`) says what it serves, where, within which limits,
//! and how it stops; the tear-down stages (`stop_listening`,
//! `stop_accepting_and_join_outstanding_requests`, `stop_cpu_workers`, `stop_workers`,
//! `cleanup`, `shutdown`) are in `server/shutdown.rs`. Together they are `rpc`'s `# Start-up`
//! and `# Shutdown` sections in code.

mod shutdown;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::admission::Admission;
use super::config::{ListenAddress, ServerConfig, Stage};
use super::connection;
use super::connection_state::Shared;
use super::cycle::{Cycle, Gate, Listener};
use super::deadlines::DeadlineSweeper;
use super::error::{Result, RpcError};
use super::handle::{ServerControl, ServerHandle};
use super::io_pool::configure_io_pool;
use super::pool::WorkerPool;
use super::status::{AtomicStatus, ServerStatus};
use super::wait_group::WaitGroup;
use crate::co_mutex::CoMutex;
use crate::park;
use crate::sync_point::SyncPoint;
use crate::thread::{JoinError, Thread};

/// What the lifecycle shares with connections and handles.
pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) config: ServerConfig,
    pub(super) status: AtomicStatus,
    pub(super) cycle: Mutex<Option<Arc<Cycle>>>,
    /// A stop that arrived while `setup` was running, before its cycle existed.
    pub(super) stop_pending: AtomicBool,
    pub(super) serve_thread: Mutex<Option<Thread<()>>>,
    /// Serialises the lifecycle's entry points (setup, the stages, cleanup, shutdown): a
    /// second caller parks until the first has finished, then finds its stages done.
    pub(super) lifecycle: CoMutex<()>,
    /// Connection coroutines cut at a deadline whose handlers had not returned yet.
    pub(super) stragglers: Mutex<Vec<may::coroutine::JoinHandle<()>>>,
    /// Addresses added with `Server::listen_also`, listened on by every later cycle too.
    pub(super) added_listeners: Mutex<Vec<ListenAddress>>,
}

/// One RPC server. Dropping it stops it, runs the tear-down stages the flags left to the
/// destructor, and joins everything it started (see the module's `# Shutdown`).
pub struct Server {
    inner: Arc<Inner>,
}

static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);

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
        self.inner.handle()
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
    ///
    /// # Errors
    ///
    /// [`RpcError::Bind`] when the server is serving and `address` cannot be bound now.
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
    ///
    /// # Errors
    ///
    /// [`RpcError::Bind`] naming the address that cannot be bound; [`RpcError::NotStopped`] when
    /// the server is not stopped (already serving, or stopping); [`RpcError::Spawn`] when an
    /// accept coroutine or the deadline sweeper cannot be started.
    pub fn setup(&self) -> Result<SocketAddr> {
        self.inner.exclusive_setup()
    }

    /// `setup` if needed, then waits until `stop`, then `cleanup`. Blocks the caller (parks it,
    /// when it is a coroutine).
    ///
    /// # Errors
    ///
    /// [`RpcError::SelfJoin`] when called from one of the server's own handlers (it would wait for
    /// itself); `setup`'s errors.
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
    ///
    /// # Errors
    ///
    /// [`RpcError::NotStopped`] while a serving thread still runs; `setup`'s errors;
    /// [`RpcError::Spawn`] when the thread cannot be started.
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
    ///
    /// # Errors
    ///
    /// [`RpcError::SelfJoin`] from the serving thread itself; [`RpcError::ServeThread`] with the
    /// message of the serving thread's panic.
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
        if connection::is_connection_of(self.id) {
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
        let shared = Shared::new(self.id, &self.config, self.handle());
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
            connections: Arc::default(),
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
        match DeadlineSweeper::start(&cycle.connections, shared) {
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
        // SAFETY: (may's spawn contract) the coroutine keeps no thread-local across a park and
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
        let inner: Weak<Inner> = Arc::downgrade(self);
        ServerHandle::new(inner)
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
}

impl ServerControl for Inner {
    fn request_stop(&self) {
        Inner::request_stop(self);
    }

    fn status(&self) -> ServerStatus {
        self.status.load()
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        Inner::local_addr(self)
    }
}
