//! RPC servers over HTTP/1.1 with JSON bodies, with fbthrift's ordered, idempotent start-up and
//! tear-down (`ThriftServer`'s `setup`/`serve`/`stop`/`cleanUp`/destructor).
//!
//! Several servers in one process share the IO pool (`may`'s worker threads: one coroutine
//! accepts, one coroutine per connection) and the CPU worker pool (an `Arc<WorkerPool>` of
//! `ThreadContext`s for routes registered with `cpu_route`). `curl` works against every server:
//! keep-alive, `Content-Length` bodies, `Expect: 100-continue`, size limits (431/413), and
//! `{"error": ...}` JSON answers for every error of the framework (400, 404, 405, 408, 503).
//!
//! # Hostile callers
//! A server survives callers that hold connections open or send slowly, without a thread or a
//! `may` IO timeout per connection:
//! - **connection limits** (`max_connections`, all listeners together, 1024 by default;
//!   `max_connections_per_client`, per peer IP address, 64): a connection past either is sent
//!   503 `{"error": "too many connections"}` with `Connection: close` by one non-blocking send
//!   from the accept coroutine and closed unread. Every admitted connection holds a slot whose
//!   drop gives its place back, however the connection ends.
//! - **deadlines**, enforced by the cycle's sweeper thread (`deadlines.rs`): a connection's first
//!   request line and headers must arrive within `header_timeout` (10 s) of its accept, a later
//!   request's within `header_timeout` of its first byte (a trickle of bytes does not extend
//!   it: slow loris), the whole request within `request_timeout` (30 s) of its first byte;
//!   past them it is answered 408 and closed (a connection that sent nothing is closed without
//!   an answer). Between requests `idle_timeout` (60 s) holds; writes have `write_timeout`.
//! - **strict framing**: `Content-Length` is `1*DIGIT` and nothing else, chunked bodies are
//!   refused (501), sizes are limited (`Limits`).
//!
//! # Start-up
//! `setup()` binds the primary address and every `also_listen` address (port 0 gives an
//! ephemeral port, see `local_addr()` and `local_addrs()`; a failed bind fails `setup` with
//! `RpcError::Bind` naming that address, and closes those already bound), then walks
//! `NotRunning → PreStarting` (pre-start hook) `→ Starting → Running` (pre-serve hook), each
//! step a compare-and-swap. `serve()` = `setup()` if needed, wait for `stop()`, `cleanup()`;
//! `serve_in_background()` runs that wait on a `runtime::Thread` owned by the server.
//!
//! # Shutdown
//! `stop()` only asks (it never blocks, so it is safe from a handler, a signal-flag watcher,
//! any thread, twice, concurrently); the serving thread then runs `cleanup()`, and dropping the
//! server (or `shutdown()`) runs whatever stages the flags left, exactly as fbthrift's
//! `cleanUp` and `~ThriftServer` do. Whatever the flags, each stage runs once, first calls in
//! this order:
//!
//! 1. **stop listening** (`Running → PreStopping`): on every listener, no new connection is
//!    accepted; those the kernel had already queued are taken and served; the listening socket
//!    is closed, so new connections are refused; established connections keep being served.
//!    Each accept coroutine is woken by a connection to its own address, except on a freebind
//!    listener outside loopback (that address may be another host's by now): its socket is
//!    shut down instead. The next `setup` binds every listener again.
//! 2. **stop accepting and join outstanding requests** (`PreStopping → Stopping`, stop-requested
//!    hook, `DrainingUntilStopped`, then `NotRunning`): every connection finishes the request it
//!    is handling and gets its response with `Connection: close`; a request that arrives on a
//!    draining connection gets 503 `{"error": "server stopping"}`; idle connections are closed.
//!    At the join deadline (`workers_join_timeout`, 30 s by default) the requests still running
//!    are logged (method, path, age), their connections are shut down, and the stop goes on.
//! 3. **join worker-pool work**: this server's jobs on the CPU pool are awaited (a pool the
//!    server created for itself is stopped and joined); post-stop hook.
//! 4. **stop IO**: every connection coroutine of this server is joined (a handler that was cut
//!    at the deadline and still runs is joined when the server is set up again or dropped).
//!    The server can then be set up again.
//!
//! `stop_workers_on_stop_listening` (default true): stop listening runs stages 2 and 3 itself
//! and `cleanup()` runs stage 4, so `cleanup()` does the whole tear-down. When false, `cleanup()`
//! runs stage 2 only if `join_requests_when_server_stops` (default true), and `shutdown()`/drop
//! runs the rest (stage 2 if it has not run, then 3 and 4).
//!
//! The blocking entry points (`setup`, `cleanup`, `shutdown`, each stage) are serialised by a
//! `CoMutex`: a second caller parks until the first is done and then finds its stages done.
//! Blocking stages called from inside a handler of the same server are not run there (that
//! would wait for the handler itself): they request the stop and return, and the serving
//! thread (or the owner's `shutdown()`/drop) completes it after the handler's response.

mod admission;
mod config;
mod connection;
mod connection_state;
mod cycle;
mod deadlines;
mod error;
mod handle;
mod http;
mod io_pool;
mod pool;
mod router;
mod server;
mod status;
mod wait_group;

#[cfg(test)]
mod abuse_tests;
#[cfg(test)]
mod tests;

pub use config::{Hooks, ListenAddress, RequestObserver, ServerConfig, Stage};
pub use error::{Result, RpcError};
pub use handle::ServerHandle;
pub use http::{reason_phrase, HttpError, Limits, Method, Request, Response};
pub use io_pool::{configure_io_pool, IO_STACK_SIZE};
pub use pool::WorkerPool;
pub use router::{Guard, Handler, Placement, Router};
pub use server::Server;
pub use status::ServerStatus;
