//! What a connection shares with its cycle and the cycle's stop stages: the server-wide
//! connection settings (`Shared`), each open connection's activity and socket
//! (`ConnectionShared`: what the drain wakes or cuts and the deadline sweeper judges), and the
//! registry of open connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::config::{RequestObserver, ServerConfig};
use super::handle::ServerHandle;
use super::http::{Limits, Method, Response};
use super::router::Router;

/// The open connections of a cycle by id. A connection removes itself (under this lock) before
/// it closes its socket, so a raw fd found here is still its own.
pub(crate) type Registry = Mutex<HashMap<u64, Arc<ConnectionShared>>>;

/// What every connection of one server needs, shared by all of them.
pub(crate) struct Shared {
    pub(crate) server_id: u64,
    pub(crate) name: String,
    pub(crate) router: Router,
    pub(crate) limits: Limits,
    pub(crate) idle_timeout: Duration,
    pub(crate) header_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) linger: Duration,
    pub(crate) handle: ServerHandle,
    /// The whole answer to a connection past a connection limit, encoded once.
    pub(crate) refusal: Vec<u8>,
    pub(crate) observer: Option<Arc<dyn RequestObserver>>,
}

impl Shared {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The shortest of the deadlines the sweeper enforces, which sets its period.
    pub(crate) fn shortest_deadline(&self) -> Duration {
        self.idle_timeout.min(self.header_timeout).min(self.request_timeout).min(self.write_timeout).min(self.linger)
    }

    pub(crate) fn new(server_id: u64, config: &ServerConfig, handle: ServerHandle) -> Arc<Shared> {
        Arc::new(Shared {
            server_id,
            name: config.name.clone(),
            router: config.router.clone(),
            limits: config.limits,
            idle_timeout: config.idle_timeout,
            header_timeout: config.header_timeout,
            request_timeout: config.request_timeout,
            write_timeout: config.write_timeout,
            linger: config.linger,
            handle,
            refusal: Response::error(503, "too many connections").encode(false, false),
            observer: config.observer.clone(),
        })
    }
}

/// What a connection is doing, for the deadline sweeper and the drain deadline's log.
#[derive(Debug, Clone)]
pub(crate) enum Activity {
    /// Accepted, nothing received yet: the first request's line and headers must arrive within
    /// the header timeout of the accept (or the idle timeout, when shorter).
    Accepted { since: Instant },
    /// Waiting for the next request after a response (idle timeout).
    Idle { since: Instant },
    /// A request's line and headers are arriving: header timeout counted from `head_since`
    /// (the first byte, or the accept for a connection's first request), request timeout from
    /// `since` (the first byte).
    ReadingHead { head_since: Instant, since: Instant },
    /// The headers are complete, the body is arriving (request timeout).
    ReadingBody { since: Instant },
    /// Its handler runs; only the drain deadline limits it.
    Handling { method: Method, path: String, since: Instant },
    /// Writing a response (write timeout).
    Writing { since: Instant },
    /// Reading what the client still sends before the close, until the linger time is up.
    Lingering { until: Instant },
}

/// Which deadline a connection missed, as the sweeper found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missed {
    Idle,
    Header,
    Request,
    Write,
    Linger,
}

/// The part of a connection the server's stop stages can see.
pub(crate) struct ConnectionShared {
    pub(crate) id: u64,
    pub(crate) fd: RawFd,
    pub(crate) peer_addr: SocketAddr,
    pub(crate) accepted_at: Instant,
    pub(crate) activity: Mutex<Activity>,
    pub(crate) cut: AtomicBool,
    /// The deadline the sweeper already enforced, so it shuts the socket down once. A header
    /// or request deadline found here makes the read that then returns end-of-file answer 408
    /// instead of treating the request as truncated.
    pub(crate) missed: Mutex<Option<Missed>>,
}

impl ConnectionShared {
    pub(crate) fn set(&self, activity: Activity) {
        *self.activity.lock() = activity;
    }

    /// Wakes a connection blocked waiting for its next request, when the drain begins: the read
    /// side is shut down, so its read returns end-of-file and it closes (bytes already queued
    /// are still read first, and answered 503). A connection that is reading, handling or
    /// writing is left to finish; it sees the drain flag before it reads again.
    pub(crate) fn wake_if_idle(&self) {
        let activity = self.activity.lock();
        if matches!(*activity, Activity::Idle { .. } | Activity::Accepted { .. }) {
            // SAFETY: (the fd) called with the registry locked, as `cut`; shutdown does not close it.
            unsafe { libc::shutdown(self.fd, libc::SHUT_RD) };
        }
    }

    /// Logs what the connection is doing and shuts its socket down; its coroutine then ends
    /// as soon as it touches the socket (or its handler returns). Called with the registry
    /// locked, so the fd is still this connection's.
    pub(crate) fn cut(&self, server: &str, why: &str) {
        self.cut.store(true, Ordering::Release);
        match self.activity.lock().clone() {
            Activity::Handling { method, path, since } => tracing::warn!(
                server,
                connection = self.id,
                peer = %self.peer_addr,
                %method,
                path,
                age_ms = since.elapsed().as_millis() as u64,
                why,
                "request still running; its connection is cut"
            ),
            Activity::ReadingHead { since, .. } | Activity::ReadingBody { since } | Activity::Writing { since } => {
                tracing::warn!(
                    server,
                    connection = self.id,
                    peer = %self.peer_addr,
                    age_ms = since.elapsed().as_millis() as u64,
                    why,
                    "connection busy reading or writing; cut"
                )
            }
            Activity::Accepted { .. } | Activity::Idle { .. } | Activity::Lingering { .. } => {
                tracing::debug!(server, connection = self.id, why, "idle connection cut")
            }
        }
        // SAFETY: (the fd) see the doc above; shutdown does not close it.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
    }

    /// The deadline this connection has missed at `now`, if any, under `shared`'s timeouts.
    pub(crate) fn missed_deadline(&self, now: Instant, shared: &Shared) -> Option<Missed> {
        let late = |since: Instant, timeout: Duration| now.saturating_duration_since(since) >= timeout;
        match *self.activity.lock() {
            // Silent since its accept: as late as an idle connection, or as a slow first request.
            Activity::Accepted { since } if late(since, shared.header_timeout.min(shared.idle_timeout)) => {
                Some(Missed::Header)
            }
            Activity::Idle { since } if late(since, shared.idle_timeout) => Some(Missed::Idle),
            Activity::ReadingHead { head_since, .. } if late(head_since, shared.header_timeout) => Some(Missed::Header),
            Activity::ReadingHead { since, .. } | Activity::ReadingBody { since }
                if late(since, shared.request_timeout) =>
            {
                Some(Missed::Request)
            }
            Activity::Writing { since } if late(since, shared.write_timeout) => Some(Missed::Write),
            Activity::Lingering { until } if now >= until => Some(Missed::Linger),
            _ => None,
        }
    }

    /// Ends the wait of a connection that missed a deadline, once: idle, header, request and
    /// linger deadlines shut the read side down (its read returns end-of-file; a late request
    /// is answered 408 on the still open write side), a write deadline shuts both sides down
    /// (the write fails and the connection closes). Called by the sweeper with the registry
    /// locked, so the fd is still this connection's.
    pub(crate) fn enforce(&self, missed: Missed, server: &str) {
        {
            let mut already = self.missed.lock();
            if *already == Some(missed) {
                return;
            }
            *already = Some(missed);
        }
        let how = match missed {
            Missed::Idle | Missed::Linger => libc::SHUT_RD,
            Missed::Header => {
                tracing::debug!(server, connection = self.id, peer = %self.peer_addr, "header timeout");
                libc::SHUT_RD
            }
            Missed::Request => {
                tracing::debug!(server, connection = self.id, peer = %self.peer_addr, "request timeout");
                libc::SHUT_RD
            }
            Missed::Write => {
                tracing::debug!(server, connection = self.id, peer = %self.peer_addr, "write timeout");
                libc::SHUT_RDWR
            }
        };
        // SAFETY: (the fd) see the doc above; shutdown does not close it.
        unsafe { libc::shutdown(self.fd, how) };
    }
}
