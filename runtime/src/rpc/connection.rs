//! The IO side of a server: one accept coroutine per listener, the connection limits applied at
//! the accept, and one `may` coroutine per admitted connection that reads requests, runs their
//! handlers (on itself or on the worker pool) and writes responses, honouring keep-alive, the
//! size limits, and the drain (`Connection: close`, 503 to late requests).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::admission::{Refusal, Slot};
use super::connection_state::{Activity, ConnectionShared, Missed, Shared};
use super::cycle::Cycle;
use super::error::RpcError;
use super::http::{self, HttpError, Method, Parsed, Request, Response};
use super::router::{Lookup, Placement};
use super::wait_group::DoneOnDrop;
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
        // SAFETY: a fresh fd we own; may's stream sets it non-blocking and registers it.
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
    // SAFETY: (may's spawn contract) handlers run on this stack (IO_STACK_SIZE, set once per
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
            let message = panic_message(&*panic);
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

may::coroutine_local!(static CONNECTION_OF_SERVER: std::cell::Cell<u64> = std::cell::Cell::new(0));

/// Marks the running `may` coroutine as a connection of server `server_id`.
pub(crate) fn mark_connection_coroutine(server_id: u64) {
    CONNECTION_OF_SERVER.with(|cell| cell.set(server_id));
}

/// True when the running `may` coroutine is a connection of server `server_id`.
pub(crate) fn is_connection_of(server_id: u64) -> bool {
    may::coroutine::is_coroutine() && CONNECTION_OF_SERVER.with(|cell| cell.get()) == server_id
}
