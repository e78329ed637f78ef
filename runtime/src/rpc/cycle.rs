//! One serving cycle, from a `setup` to the end of its stop: the listening sockets, the open
//! connections' registry, the connection limits, the deadline sweeper and the stages'
//! once-flags. A connection depends on its cycle; the cycle knows connections only through
//! their shared state (`connection_state.rs`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::admission::Admission;
use super::config::ListenAddress;
use super::connection_state::{Registry, Shared};
use super::deadlines::DeadlineSweeper;
use super::error::{Result, RpcError};
use super::pool::WorkerPool;
use super::wait_group::WaitGroup;
use crate::sync_point::SyncPoint;

/// A stage that runs once per cycle; later callers wait until it has finished.
#[derive(Default)]
pub(crate) struct Gate {
    pub(crate) started: AtomicBool,
    pub(crate) finished: SyncPoint,
}

impl Gate {
    /// True for the one caller that must run the stage.
    pub(crate) fn begin(&self) -> bool {
        !self.started.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn finish(&self) {
        self.finished.done();
    }

    pub(crate) fn wait(&self) {
        self.finished.wait();
    }
}

/// One listening socket of a cycle and its accept coroutine.
pub(crate) struct Listener {
    pub(crate) local_addr: SocketAddr,
    pub(crate) freebind: bool,
    /// Taken (and so closed, once the accept coroutine has let its clone go) when the cycle
    /// stops listening.
    pub(crate) socket: Mutex<Option<Arc<may::net::TcpListener>>>,
    pub(crate) accept_exited: SyncPoint,
    /// `None` before the accept coroutine starts and after it is joined.
    pub(crate) accept_handle: Mutex<Option<may::coroutine::JoinHandle<()>>>,
}

impl Listener {
    /// Binds `wanted`; the socket is closed again if anything later fails (it is dropped).
    pub(crate) fn bind(wanted: ListenAddress) -> Result<Listener> {
        let address = wanted.address;
        // std's bind sets SO_REUSEADDR but not SO_REUSEPORT (which may's bind sets): a second
        // daemon on the same port must fail, not share the port.
        let std_listener =
            bind_listener(address, wanted.freebind).map_err(|source| RpcError::Bind { address, source })?;
        let local_addr = std_listener.local_addr().map_err(|source| RpcError::Bind { address, source })?;
        let socket = {
            use std::os::fd::{FromRawFd, IntoRawFd};
            let fd = std_listener.into_raw_fd();
            // SAFETY: the fd was just taken out of a live listener; may's listener now owns it.
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
    pub(crate) fn connectable(&self) -> bool {
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
    pub(crate) owns_pool: bool,
    pub(crate) stop_requested: SyncPoint,
    /// The primary address first, then `also_listen`'s in order, then those added while serving
    /// (`Server::listen_also`); only ever appended to, so an accept coroutine's index stays its own.
    pub(crate) listeners: Mutex<Vec<Arc<Listener>>>,
    pub(crate) paused: AtomicBool,
    /// The connection limits; every open connection holds a slot of it.
    pub(crate) admission: Arc<Admission>,
    pub(crate) shared: Arc<Shared>,
    /// Enforces the connections' deadlines until IO stops.
    pub(crate) deadline_sweeper: Mutex<Option<DeadlineSweeper>>,
    /// Open connections, for the drain and the deadline's log. A connection removes itself
    /// (under this lock) before it closes its socket, so a raw fd found here is still its own.
    pub(crate) connections: Arc<Registry>,
    pub(crate) live_connections: WaitGroup,
    pub(crate) handles: Mutex<HashMap<u64, may::coroutine::JoinHandle<()>>>,
    pub(crate) finished_connections: Mutex<Vec<u64>>,
    pub(crate) next_connection_id: AtomicU64,
    pub(crate) draining: AtomicBool,
    pub(crate) cpu_jobs: WaitGroup,
    pub(crate) drain_deadline: Mutex<Option<Instant>>,
    pub(crate) listening: Gate,
    pub(crate) accepting: Gate,
    pub(crate) cpu_workers: Gate,
    pub(crate) workers: Gate,
}

impl Cycle {
    pub(crate) fn accept_exited_done(&self, listener: usize) {
        if let Some(listener) = self.listeners.lock().get(listener) {
            listener.accept_exited.done();
        }
    }

    /// The listeners as they are now.
    pub(crate) fn listeners(&self) -> Vec<Arc<Listener>> {
        self.listeners.lock().clone()
    }

    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.lock().iter().map(|listener| listener.local_addr).collect()
    }

    /// Closes every listening socket (those whose accept coroutine still runs close when it
    /// lets its clone go).
    pub(crate) fn close_listeners(&self) {
        for listener in self.listeners() {
            listener.socket.lock().take();
        }
    }

    /// Wakes every connection that waits for its next request, so the drain need not wait.
    pub(crate) fn wake_idle_connections(&self) {
        for connection in self.connections.lock().values() {
            connection.wake_if_idle();
        }
    }

    /// Shuts down the sockets of every connection still open and logs what each was doing.
    pub(crate) fn cut_connections(&self, server: &str, why: &str) -> usize {
        let connections = self.connections.lock();
        for connection in connections.values() {
            connection.cut(server, why);
        }
        connections.len()
    }
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
pub(crate) fn loopback_of(address: SocketAddr) -> SocketAddr {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, address.port())
}
