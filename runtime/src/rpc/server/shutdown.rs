//! The tear-down stages of a server, each run once per cycle, in the order `rpc`'s `# Shutdown`
//! gives: stop listening, stop accepting and join outstanding requests, stop CPU workers, stop
//! workers (IO) — and what `~ThriftServer` does after `cleanUp` (`shutdown_stages`).

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Inner;
use crate::park;
use crate::rpc::config::Stage;
use crate::rpc::connection;
use crate::rpc::cycle::{loopback_of, Cycle, Listener};
use crate::rpc::status::ServerStatus;

impl Inner {
    /// What `~ThriftServer` does after `cleanUp`.
    pub(super) fn shutdown_stages(&self) {
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

    pub(super) fn stop_listening(&self) {
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
    pub(super) fn pause_accepting(&self, cycle: &Arc<Cycle>) {
        let listeners = {
            let listeners = cycle.listeners.lock();
            cycle.paused.store(true, Ordering::Release);
            listeners.clone()
        };
        for listener in &listeners {
            self.pause_listener(cycle, listener);
        }
    }

    pub(super) fn pause_listener(&self, cycle: &Arc<Cycle>, listener: &Listener) {
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
                // SAFETY: the listener is alive (we hold an Arc), so its fd is still its own.
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
                        tracing::error!(server = %self.name(), panic = %crate::context::panic_message(&*panic), "the accept coroutine panicked");
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

    pub(super) fn stop_accepting_and_join_outstanding_requests(&self) {
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

    pub(super) fn stop_cpu_workers(&self) {
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

    pub(super) fn stop_workers(&self) {
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

    pub(super) fn reap_stragglers(&self) {
        let mut stragglers = self.stragglers.lock();
        let (done, running): (Vec<_>, Vec<_>) = stragglers.drain(..).partition(|handle| handle.is_done());
        *stragglers = running;
        drop(stragglers);
        for handle in done {
            let _ = handle.join();
        }
    }

    pub(super) fn join_stragglers(&self, timeout: Duration) {
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
