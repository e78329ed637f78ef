//! The IO side of a server: one accept coroutine per listener, the connection limits applied at
//! the accept, and one `may` coroutine per admitted connection that reads requests, runs their
//! handlers (on itself or on the worker pool) and writes responses, honouring keep-alive, the
//! size limits, and the drain (`Connection: close`, 503 to late requests).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::admission::{Refusal, Slot};
use super::http::{self, HttpError, Limits, Method, Parsed, Request, Response};
use super::router::{Lookup, Placement, Router};
use super::server::{mark_connection_coroutine, Cycle, Inner, ServerHandle};
use super::wait_group::DoneOnDrop;
use super::RpcError;
use crate::context::panic_message;

// No socket here ever has a `may` IO timeout. `may`'s IO timer races with its selector: a
// timer that expires while a read completes borrows the socket's timer cell on two threads at
// once ("RefCell already borrowed" in `EventData::fast_schedule`, then memory corruption), which
// aborted daemons under steady HTTP polling. The workspace builds `may` without its
// `io_timeout` feature, and the idle, header, request, write and linger deadlines are enforced by the
// cycle's deadline sweeper (`deadlines.rs`), which shuts a late connection's socket down so
// its blocked read or write returns at once, the same way the drain wakes idle connections.
/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// At most this much is read and thrown away while lingering before a close.
const LINGER_MAX_BYTES: usize = 4 * 1024 * 1024;

/// What every connection of one server needs, shared by all of them.
pub(crate) struct Shared {
    server_id: u64,
    name: String,
    router: Router,
    limits: Limits,
    idle_timeout: Duration,
    header_timeout: Duration,
    request_timeout: Duration,
    write_timeout: Duration,
    linger: Duration,
    handle: ServerHandle,
    /// The whole answer to a connection past a connection limit, encoded once.
    refusal: Vec<u8>,
    observer: Option<Arc<dyn super::server::RequestObserver>>,
}

impl Shared {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The shortest of the deadlines the sweeper enforces, which sets its period.
    pub(crate) fn shortest_deadline(&self) -> Duration {
        self.idle_timeout.min(self.header_timeout).min(self.request_timeout).min(self.write_timeout).min(self.linger)
    }

    pub(crate) fn new(inner: &Arc<Inner>) -> Arc<Shared> {
        let config = &inner.config;
        Arc::new(Shared {
            server_id: inner.id,
            name: config.name.clone(),
            router: config.router.clone(),
            limits: config.limits,
            idle_timeout: config.idle_timeout,
            header_timeout: config.header_timeout,
            request_timeout: config.request_timeout,
            write_timeout: config.write_timeout,
            linger: config.linger,
            handle: inner.handle(),
            refusal: Response::error(503, "too many connections").encode(false, false),
            observer: config.observer.clone(),
        })
    }
}

/// What a connection is doing, for the deadline sweeper and the drain deadline's log.
#[derive(Debug, Clone)]
enum Activity {
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
    id: u64,
    fd: RawFd,
    peer_addr: SocketAddr,
    accepted_at: Instant,
    activity: Mutex<Activity>,
    cut: AtomicBool,
    /// The deadline the sweeper already enforced, so it shuts the socket down once. A header
    /// or request deadline found here makes the read that then returns end-of-file answer 408
    /// instead of treating the request as truncated.
    missed: Mutex<Option<Missed>>,
}

impl ConnectionShared {
    fn set(&self, activity: Activity) {
        *self.activity.lock() = activity;
    }

    /// Wakes a connection blocked waiting for its next request, when the drain begins: the read
    /// side is shut down, so its read returns end-of-file and it closes (bytes already queued
    /// are still read first, and answered 503). A connection that is reading, handling or
    /// writing is left to finish; it sees the drain flag before it reads again.
    pub(crate) fn wake_if_idle(&self) {
        let activity = self.activity.lock();
        if matches!(*activity, Activity::Idle { .. } | Activity::Accepted { .. }) {
            // SAFETY of the fd: called with the registry locked, as `cut`; shutdown does not close it.
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
        // SAFETY of the fd: see the doc above; shutdown does not close it.
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
        // SAFETY of the fd: see the doc above; shutdown does not close it.
        unsafe { libc::shutdown(self.fd, how) };
    }
}

/// Accepts on the cycle's listener `index` until the cycle is paused, then takes what the kernel
/// still had queued and exits (dropping its reference to the listening socket).
pub(crate) fn accept_loop(listener: Arc<may::net::TcpListener>, cycle: Arc<Cycle>, index: usize) {
    struct ExitSignal<'a>(&'a Cycle, usize);
    impl Drop for ExitSignal<'_> {
        fn drop(&mut self) {
            self.0.accept_exited_done(self.1);
        }
    }
    let _exit = ExitSignal(&cycle, index);
    loop {
        let accepted = listener.accept();
        if cycle.paused.load(Ordering::Acquire) {
            if let Ok((stream, peer_addr)) = accepted {
                spawn_connection(&cycle, stream, peer_addr);
            }
            // Connections the kernel completed before the pause are served, not reset.
            take_queued(&listener, &cycle);
            return;
        }
        match accepted {
            Ok((stream, peer_addr)) => spawn_connection(&cycle, stream, peer_addr),
            Err(error) => {
                tracing::warn!(server = %cycle.shared.name, %error, "accept failed");
                // Out of descriptors or memory: back off instead of spinning.
                may::coroutine::sleep(Duration::from_millis(50));
            }
        }
        reap_finished(&cycle);
    }
}

/// Serves the connections the kernel has completed on `listener` and nobody accepted yet,
/// without waiting for more (the listening socket is non-blocking).
pub(crate) fn take_queued(listener: &may::net::TcpListener, cycle: &Arc<Cycle>) {
    while let Ok((stream, peer_addr)) = listener.inner().accept() {
        // A fresh fd we own; may's stream sets it non-blocking and registers it.
        let stream = unsafe { may::net::TcpStream::from_raw_fd(stream.into_raw_fd()) };
        spawn_connection(cycle, stream, peer_addr);
    }
}

fn reap_finished(cycle: &Cycle) {
    let finished = std::mem::take(&mut *cycle.finished_connections.lock());
    if finished.is_empty() {
        return;
    }
    let mut handles = cycle.handles.lock();
    let mut not_yet = Vec::new();
    for id in finished {
        match handles.remove(&id) {
            Some(handle) if handle.is_done() => {
                let _ = handle.join();
            }
            Some(handle) => {
                handles.insert(id, handle);
                not_yet.push(id);
            }
            None => not_yet.push(id),
        }
    }
    drop(handles);
    cycle.finished_connections.lock().extend(not_yet);
}

fn spawn_connection(cycle: &Arc<Cycle>, stream: may::net::TcpStream, peer_addr: SocketAddr) {
    let shared = &cycle.shared;
    let slot = match cycle.admission.admit(peer_addr.ip()) {
        Ok(slot) => slot,
        Err(refusal) => return refuse(stream, peer_addr, refusal, cycle),
    };
    let id = cycle.next_connection_id.fetch_add(1, Ordering::Relaxed);
    let accepted_at = Instant::now();
    let connection = Arc::new(ConnectionShared {
        id,
        fd: stream.as_raw_fd(),
        peer_addr,
        accepted_at,
        activity: Mutex::new(Activity::Accepted { since: accepted_at }),
        cut: AtomicBool::new(false),
        missed: Mutex::new(None),
    });
    cycle.connections.lock().insert(id, connection.clone());
    cycle.live_connections.add();
    let builder = may::coroutine::Builder::new();
    let coroutine_cycle = cycle.clone();
    // SAFETY (may's spawn contract): handlers run on this stack (IO_STACK_SIZE, set once per
    // process by configure_io_pool) and the code keeps no thread-local across a park.
    let spawned = unsafe {
        builder.spawn(move || {
            let cycle = coroutine_cycle;
            run_connection(stream, &connection, &cycle, slot);
        })
    };
    match spawned {
        Ok(handle) => {
            cycle.handles.lock().insert(id, handle);
        }
        Err(error) => {
            tracing::error!(server = %shared.name, %error, "cannot start a connection coroutine; connection dropped");
            // The closure (and the stream and slot in it) is gone; forget the connection.
            cycle.connections.lock().remove(&id);
            cycle.live_connections.done();
        }
    }
}

/// Answers a connection past a limit with 503 `too many connections` and closes it, unread.
///
/// One `send` with `MSG_DONTWAIT` on the accept coroutine, then the close: the socket is fresh,
/// so its send buffer is empty and ~150 bytes go whole or not at all, and nothing here can park
/// the accept loop, whatever the peer does. No coroutine, no registry entry and no deadline are
/// spent on it, so a flood past the limit costs an accept, a send and a close per connection.
/// Nothing of the request is read: a client that had already sent one may see the close as a
/// reset (the kernel resets a socket closed with unread bytes) instead of the 503.
fn refuse(stream: may::net::TcpStream, peer_addr: SocketAddr, refusal: Refusal, cycle: &Cycle) {
    let bytes = &cycle.shared.refusal;
    // SAFETY: the fd is the stream's, open until the stream drops below; the buffer is valid.
    let sent = unsafe {
        libc::send(stream.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    let n_refused = cycle.admission.n_refused();
    // Logged at the 1st, 2nd, 4th, 8th… refusal of a cycle, so a flood cannot flood the log.
    if n_refused.is_power_of_two() {
        tracing::warn!(server = %cycle.shared.name, peer = %peer_addr, limit = refusal.as_str(), n_refused, answered = sent > 0, "connection refused: too many connections");
    } else {
        tracing::debug!(server = %cycle.shared.name, peer = %peer_addr, limit = refusal.as_str(), answered = sent > 0, "connection refused: too many connections");
    }
    drop(stream);
}

/// Leaves the registry (before the stream closes: see `ConnectionShared::cut`) and the count.
struct Deregister<'a> {
    cycle: &'a Cycle,
    id: u64,
}

impl Drop for Deregister<'_> {
    fn drop(&mut self) {
        self.cycle.connections.lock().remove(&self.id);
        self.cycle.finished_connections.lock().push(self.id);
        self.cycle.live_connections.done();
    }
}

fn run_connection(stream: may::net::TcpStream, connection: &Arc<ConnectionShared>, cycle: &Arc<Cycle>, slot: Slot) {
    mark_connection_coroutine(cycle.shared.server_id);
    // Both also run if a handler's panic escaped: the counts must drop whatever happens. The
    // slot goes last, after the socket is closed, so a new connection from the same client
    // is never admitted while this one still holds its descriptor.
    let _slot = slot;
    let deregister = Deregister { cycle, id: connection.id };
    let stream = serve(stream, connection, cycle, &cycle.shared);
    // Leave the registry first, then close the socket (see `ConnectionShared::cut`).
    drop(deregister);
    drop(stream);
}

/// Why a connection's loop ends.
enum Next {
    KeepAlive,
    Close,
}

/// Serves requests until the connection should close; returns the stream unclosed.
fn serve(
    mut stream: may::net::TcpStream,
    connection: &ConnectionShared,
    cycle: &Cycle,
    shared: &Shared,
) -> may::net::TcpStream {
    let _ = stream.set_nodelay(true);
    let mut buffer: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    // The first request's header deadline counts from the accept, the next ones' from their
    // first byte (between requests the idle timeout holds).
    let mut head_since = Some(connection.accepted_at);
    loop {
        let request = match read_request(&mut stream, &mut buffer, head_since.take(), connection, cycle, shared) {
            ReadOutcome::Request(request) => request,
            ReadOutcome::Closed => return stream,
            ReadOutcome::Invalid(error) => {
                tracing::debug!(server = %shared.name, peer = %connection.peer_addr, %error, "bad request");
                if write_response(&mut stream, connection, &error.response(), false, false) {
                    linger(&mut stream, &mut buffer, false, connection, shared);
                }
                return stream;
            }
        };
        if cycle.draining.load(Ordering::Acquire) {
            let response = Response::error(503, "server stopping");
            if write_response(&mut stream, connection, &response, false, request.method == Method::Head) {
                linger(&mut stream, &mut buffer, true, connection, shared);
            }
            return stream;
        }
        let keep_alive = request.keep_alive;
        let head_only = request.method == Method::Head;
        let response = dispatch(*request, connection, cycle, shared);
        if connection.cut.load(Ordering::Acquire) {
            return stream;
        }
        // Decided after the handler: a drain that began meanwhile closes the connection.
        let next = if keep_alive && !cycle.draining.load(Ordering::Acquire) { Next::KeepAlive } else { Next::Close };
        let written = write_response(&mut stream, connection, &response, matches!(next, Next::KeepAlive), head_only);
        match next {
            Next::KeepAlive if written => {
                // Scheduling is cooperative: a client that always has its next request ready
                // would keep this worker thread, and the other connections would starve
                // (the benchmark's p99 fell from ~17 ms to ~5 ms with this yield).
                may::coroutine::yield_now();
                continue;
            }
            Next::KeepAlive => return stream,
            Next::Close => {
                if written {
                    linger(&mut stream, &mut buffer, true, connection, shared);
                }
                return stream;
            }
        }
    }
}

enum ReadOutcome {
    Request(Box<Request>),
    /// The peer closed, went idle too long, or the drain closed an idle connection.
    Closed,
    Invalid(HttpError),
}

/// Reads one request. `first_head_since`, for a connection's first request, is when its header
/// deadline began (the accept); for the next ones it begins with their first byte.
fn read_request(
    stream: &mut may::net::TcpStream,
    buffer: &mut Vec<u8>,
    first_head_since: Option<Instant>,
    connection: &ConnectionShared,
    cycle: &Cycle,
    shared: &Shared,
) -> ReadOutcome {
    // When the request's first byte came (a pipelined one may already be here).
    let mut request_since: Option<Instant> = None;
    let begin = |request_since: &mut Option<Instant>| {
        let now = Instant::now();
        *request_since = Some(now);
        connection.set(Activity::ReadingHead { head_since: first_head_since.unwrap_or(now), since: now });
    };
    if !buffer.is_empty() {
        begin(&mut request_since);
    }
    let mut head_complete = false;
    let mut sent_continue = false;
    loop {
        if !buffer.is_empty() {
            match http::parse(buffer, &shared.limits, connection.peer_addr) {
                Ok(Parsed::Complete { mut request, consumed }) => {
                    buffer.drain(..consumed);
                    request.server = Some(shared.handle.clone());
                    return ReadOutcome::Request(request);
                }
                Ok(Parsed::Partial { head_complete: complete, expects_continue }) => {
                    if complete && !head_complete {
                        // The header deadline is met; the body has the request timeout only.
                        head_complete = true;
                        let since = request_since.unwrap_or_else(Instant::now);
                        connection.set(Activity::ReadingBody { since });
                    }
                    if expects_continue && !sent_continue && !cycle.draining.load(Ordering::Acquire) {
                        sent_continue = true;
                        if stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                            return ReadOutcome::Closed;
                        }
                    }
                }
                Err(error) => return ReadOutcome::Invalid(error),
            }
        }
        if connection.cut.load(Ordering::Acquire) {
            return ReadOutcome::Closed;
        }
        // Between requests, a drain closes the connection (its `Idle` or `Accepted` was set
        // before this load, so a drain that missed it in `wake_if_idle` is seen here).
        if request_since.is_none() && buffer.is_empty() && cycle.draining.load(Ordering::Acquire) {
            return ReadOutcome::Closed;
        }
        let start = buffer.len();
        buffer.resize(start + READ_CHUNK, 0);
        let read = stream.read(&mut buffer[start..]);
        match read {
            Ok(0) => {
                buffer.truncate(start);
                let missed = *connection.missed.lock();
                match missed {
                    Some(Missed::Request) => return ReadOutcome::Invalid(HttpError::Timeout),
                    // A connection that sent nothing at all is closed without an answer.
                    Some(Missed::Header) if !buffer.is_empty() => {
                        return ReadOutcome::Invalid(HttpError::HeaderTimeout)
                    }
                    _ => {}
                }
                if buffer.is_empty() {
                    return ReadOutcome::Closed;
                }
                // The client half-closed in the middle of a request; it can still read our answer.
                return ReadOutcome::Invalid(http::truncation_error(buffer, &shared.limits));
            }
            Ok(n) => {
                buffer.truncate(start + n);
                if request_since.is_none() {
                    begin(&mut request_since);
                }
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => buffer.truncate(start),
            Err(_) => {
                buffer.truncate(start);
                return ReadOutcome::Closed;
            }
        }
    }
}

/// Runs the handler the router finds (see `route_request`), telling the server's observer.
fn dispatch(request: Request, connection: &ConnectionShared, cycle: &Cycle, shared: &Shared) -> Response {
    let Some(observer) = &shared.observer else {
        return route_request(request, connection, cycle, shared, &mut |_| ());
    };
    let started = Instant::now();
    let method = request.method;
    observer.started();
    let mut route = String::from("unmatched");
    let response = route_request(request, connection, cycle, shared, &mut |pattern| route = pattern.to_string());
    observer.finished(method, &route, response.status(), started.elapsed());
    response
}

/// Runs the handler the router finds: on this coroutine, or on the worker pool. `found` is told
/// the matched route's pattern.
fn route_request(
    mut request: Request,
    connection: &ConnectionShared,
    cycle: &Cycle,
    shared: &Shared,
    found: &mut dyn FnMut(&str),
) -> Response {
    let lookup_method = request.method;
    let mut lookup = shared.router.lookup(lookup_method, &request.path);
    // HEAD is answered by the GET handler when it has no route of its own; the body is dropped.
    if lookup_method == Method::Head && !matches!(lookup, Lookup::Found { .. }) {
        if let get @ Lookup::Found { .. } = shared.router.lookup(Method::Get, &request.path) {
            lookup = get;
        }
    }
    let (route, params) = match lookup {
        Lookup::Found { route, params, pattern } => {
            found(pattern);
            (route, params)
        }
        Lookup::MethodNotAllowed { allowed } => {
            let allow: Vec<&str> = allowed.iter().map(|method| method.as_str()).collect();
            return Response::error(405, &format!("method {} is not allowed on {}", request.method, request.path))
                .with_header("Allow", &allow.join(", "));
        }
        Lookup::NotFound => return Response::error(404, &format!("no route for {} {}", request.method, request.path)),
    };
    request.params = params;
    if let Some(refusal) = shared.router.refusal(&request) {
        return refusal;
    }
    connection.set(Activity::Handling { method: request.method, path: request.path.clone(), since: Instant::now() });
    let response = match route.placement {
        Placement::Io => catch_unwind(AssertUnwindSafe(|| (route.handler)(&request))).unwrap_or_else(|panic| {
            let message = panic_message(&panic);
            tracing::error!(server = %shared.name, path = %request.path, panic = %message, "handler panicked");
            Response::error(500, &format!("handler panicked: {message}"))
        }),
        Placement::Cpu => {
            cycle.cpu_jobs.add();
            let _done = DoneOnDrop(&cycle.cpu_jobs);
            let handler = route.handler.clone();
            let path = request.path.clone();
            match cycle.pool.run(move || handler(&request)) {
                Ok(response) => response,
                Err(RpcError::JobPanicked(message)) => {
                    tracing::error!(server = %shared.name, %path, panic = %message, "handler panicked on the worker pool");
                    Response::error(500, &format!("handler panicked: {message}"))
                }
                Err(error) => Response::error(503, &error.to_string()),
            }
        }
    };
    connection.set(Activity::Writing { since: Instant::now() });
    response
}

/// Writes one response; false when the connection broke.
fn write_response(
    stream: &mut may::net::TcpStream,
    connection: &ConnectionShared,
    response: &Response,
    keep_alive: bool,
    head_only: bool,
) -> bool {
    let bytes = response.encode(keep_alive, head_only);
    let written = stream.write_all(&bytes).and_then(|()| stream.flush()).is_ok();
    connection.set(Activity::Idle { since: Instant::now() });
    written
}

/// Before closing: keep reading for a moment so that a request already on its way does not
/// make the kernel reset the connection (and lose the response just written). Requests that
/// arrive meanwhile (pipelined, or sent before our `Connection: close` reached the client) get
/// 503 "server stopping" when `answer_late_requests`; anything else is thrown away.
fn linger(
    stream: &mut may::net::TcpStream,
    buffer: &mut Vec<u8>,
    answer_late_requests: bool,
    connection: &ConnectionShared,
    shared: &Shared,
) {
    if !answer_late_requests {
        buffer.clear();
    }
    // The sweeper shuts the read side down at the deadline, so the read below returns then.
    let deadline = Instant::now() + shared.linger;
    let mut n_read = 0usize;
    loop {
        if connection.cut.load(Ordering::Acquire) {
            return;
        }
        if answer_late_requests && !buffer.is_empty() {
            match http::parse(buffer, &shared.limits, connection.peer_addr) {
                Ok(Parsed::Complete { request, consumed }) => {
                    buffer.drain(..consumed);
                    let response = Response::error(503, "server stopping");
                    if !write_response(stream, connection, &response, false, request.method == Method::Head) {
                        return;
                    }
                    continue;
                }
                Ok(Parsed::Partial { .. }) => {}
                Err(_) => buffer.clear(),
            }
        } else {
            buffer.clear();
        }
        if Instant::now() >= deadline || n_read >= LINGER_MAX_BYTES {
            break;
        }
        connection.set(Activity::Lingering { until: deadline });
        let start = buffer.len();
        buffer.resize(start + READ_CHUNK, 0);
        let read = stream.read(&mut buffer[start..]);
        match read {
            Ok(0) => {
                buffer.truncate(start);
                return;
            }
            Ok(n) => {
                buffer.truncate(start + n);
                n_read += n;
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => buffer.truncate(start),
            Err(_) => return,
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}
