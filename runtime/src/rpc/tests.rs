//! Tests of the RPC servers: fbthrift's stage order for each flag combination, the drain of
//! many in-flight requests, the join deadline, shared pools, stops from handlers and from many
//! threads, restart, and malformed input. They assert counts and orders, never speed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::*;
use crate::sync_point::SyncPoint;

pub(super) fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Waits (bounded) until `condition` holds.
pub(super) fn wait_for(what: &str, timeout: Duration, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A parsed HTTP response as a client sees it.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Reply {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    pub(super) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A minimal keep-alive HTTP/1.1 client over a std socket, so tests control every byte.
pub(super) struct Client {
    pub(super) stream: TcpStream,
    pub(super) buffer: Vec<u8>,
}

impl Client {
    pub(super) fn connect(address: SocketAddr) -> Client {
        let stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        Client { stream, buffer: Vec::new() }
    }

    pub(super) fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    pub(super) fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<Reply> {
        let body = body.unwrap_or("");
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(raw.as_bytes())?;
        self.read_reply()
    }

    pub(super) fn read_reply(&mut self) -> std::io::Result<Reply> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(header_len)) = response.parse(&self.buffer) {
                let headers: Vec<(String, String)> = response
                    .headers
                    .iter()
                    .map(|header| (header.name.to_string(), String::from_utf8_lossy(header.value).to_string()))
                    .collect();
                let status = response.code.unwrap_or(0);
                let length: usize = headers
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, value)| value.parse().ok())
                    .unwrap_or(0);
                if status == 100 {
                    self.buffer.drain(..header_len);
                    continue;
                }
                if self.buffer.len() >= header_len + length {
                    let body = self.buffer[header_len..header_len + length].to_vec();
                    self.buffer.drain(..header_len + length);
                    return Ok(Reply { status, headers, body });
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a whole response"));
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// True when the server closed the connection (EOF) without sending anything more.
    pub(super) fn is_closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

pub(super) fn echo_config(name: &str) -> ServerConfig {
    ServerConfig::new(name, loopback())
        .route(Method::Post, "/echo", |request| match request.json::<serde_json::Value>() {
            Ok(value) => Response::json(200, &value),
            Err(response) => response,
        })
        .route(Method::Get, "/hello", |_| Response::json(200, &serde_json::json!({ "hello": "world" })))
        .route(Method::Get, "/tasks/{task_id}", |request| {
            Response::json(200, &serde_json::json!({ "task_id": request.param("task_id") }))
        })
}

type Events = Arc<Mutex<Vec<String>>>;

fn recorded(config: ServerConfig, events: &Events) -> ServerConfig {
    let (a, b, c, d, e) = (events.clone(), events.clone(), events.clone(), events.clone(), events.clone());
    config
        .on_pre_start(move |_| a.lock().push("pre_start".into()))
        .on_pre_serve(move |_| b.lock().push("pre_serve".into()))
        .on_stop_requested(move || c.lock().push("stop_requested".into()))
        .on_post_stop(move || d.lock().push("post_stop".into()))
        .on_stage(move |stage| e.lock().push(stage.as_str().into()))
}

#[test]
fn serves_json_routes_with_keep_alive() {
    let server = Server::new(echo_config("echo"));
    let address = server.serve_in_background("rpc-test-echo").expect("serve");
    let mut client = Client::connect(address);
    for round in 0..3 {
        let reply = client.request("POST", "/echo", Some(&format!("{{\"round\":{round}}}"))).expect("echo");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json(), serde_json::json!({ "round": round }));
        assert_eq!(reply.header("connection"), Some("keep-alive"));
    }
    let reply = client.request("GET", "/tasks/42", None).expect("param");
    assert_eq!(reply.json(), serde_json::json!({ "task_id": "42" }));
    assert_eq!(server.n_connections(), 1, "every request went over the one keep-alive connection");

    // A maintained client library works too.
    let text =
        ureq::get(&format!("http://{address}/hello")).call().expect("ureq call").into_string().expect("ureq body");
    let body: serde_json::Value = serde_json::from_str(&text).expect("ureq json");
    assert_eq!(body, serde_json::json!({ "hello": "world" }));

    server.stop();
    server.join().expect("join");
    assert_eq!(server.status(), ServerStatus::NotRunning);
}

/// The guard sees every request of a found route before its handler and may answer instead;
/// unknown paths never reach it.
#[test]
fn the_guard_answers_before_the_handler() {
    let handled = Arc::new(AtomicUsize::new(0));
    let guarded = Arc::new(AtomicUsize::new(0));
    let (h, g) = (handled.clone(), guarded.clone());
    let config = ServerConfig::new("guarded", loopback())
        .route(Method::Post, "/act", move |_| {
            h.fetch_add(1, Ordering::SeqCst);
            Response::json(200, &serde_json::json!({ "acted": true }))
        })
        .guard(move |request| {
            g.fetch_add(1, Ordering::SeqCst);
            match request.header("x-pass") {
                Some("yes") => None,
                _ => Some(Response::error(401, "no pass")),
            }
        });
    let server = Server::new(config);
    let address = server.serve_in_background("rpc-test-guard").expect("serve");
    let refused = ureq::post(&format!("http://{address}/act")).send_string("{}");
    assert!(matches!(refused, Err(ureq::Error::Status(401, _))), "{refused:?}");
    assert_eq!(handled.load(Ordering::SeqCst), 0, "a refused request never reaches its handler");
    let passed = ureq::post(&format!("http://{address}/act")).set("X-Pass", "yes").send_string("{}").expect("pass");
    assert_eq!(passed.status(), 200);
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    let unknown = ureq::post(&format!("http://{address}/nowhere")).send_string("{}");
    assert!(matches!(unknown, Err(ureq::Error::Status(404, _))), "{unknown:?}");
    assert_eq!(guarded.load(Ordering::SeqCst), 2, "unknown paths are answered without the guard");
    server.stop();
    server.join().expect("join");
}

#[test]
fn each_flag_combination_follows_fbthrift_order() {
    let head = ["pre_start", "pre_serve", "cleanup", "stop_listening"];
    let drain = ["stop_accepting_and_join_outstanding_requests", "stop_requested"];
    let cpu_io = ["stop_cpu_workers", "post_stop", "stop_workers"];
    let joined = |parts: &[&[&str]]| -> Vec<String> {
        parts.iter().flat_map(|part| part.iter().map(|s| s.to_string())).collect()
    };
    let cases: [(bool, bool, Vec<String>); 4] = [
        (true, true, joined(&[&head, &drain, &cpu_io, &["shutdown"]])),
        (true, false, joined(&[&head, &drain, &cpu_io, &["shutdown"]])),
        (false, true, joined(&[&head, &drain, &["shutdown"], &cpu_io])),
        (false, false, joined(&[&head, &["shutdown"], &drain, &cpu_io])),
    ];
    for (stop_workers_on_stop_listening, join_requests_when_server_stops, expected) in cases {
        let events: Events = Arc::default();
        let config = recorded(echo_config("flags"), &events)
            .stop_workers_on_stop_listening(stop_workers_on_stop_listening)
            .join_requests_when_server_stops(join_requests_when_server_stops);
        let server = Server::new(config);
        let address = server.setup().expect("setup");
        let mut established = Client::connect(address);
        assert_eq!(established.request("GET", "/hello", None).expect("hello").status, 200);

        events.lock().push("cleanup".into());
        server.cleanup();
        server.cleanup(); // Idempotent: no stage runs twice.
        assert!(TcpStream::connect(address).is_err(), "listening stopped: new connections are refused");
        if !stop_workers_on_stop_listening && !join_requests_when_server_stops {
            // Only listening stopped: the established connection is still served.
            assert_eq!(server.status(), ServerStatus::PreStopping);
            let reply = established.request("GET", "/hello", None).expect("still served");
            assert_eq!(reply.status, 200);
            assert_eq!(reply.header("connection"), Some("keep-alive"));
        }
        events.lock().push("shutdown".into());
        server.shutdown();
        server.shutdown();
        assert_eq!(
            *events.lock(),
            expected,
            "flags stop_workers_on_stop_listening={stop_workers_on_stop_listening} \
             join_requests_when_server_stops={join_requests_when_server_stops}"
        );
        assert_eq!(server.status(), ServerStatus::NotRunning);
        assert!(established.is_closed_by_server());
    }
}

#[test]
fn stop_during_500_in_flight_requests_answers_every_one() {
    const N_REQUESTS: usize = 500;
    let entered = Arc::new(AtomicUsize::new(0));
    let gate = SyncPoint::new();
    let config = {
        let (entered, gate) = (entered.clone(), gate.clone());
        // Every client is 127.0.0.1: the per-client limit must let all of them in.
        echo_config("drain").max_connections_per_client(N_REQUESTS + 8).route(Method::Get, "/slow", move |_| {
            entered.fetch_add(1, Ordering::SeqCst);
            gate.wait();
            Response::json(200, &serde_json::json!({ "payload": "x".repeat(4096) }))
        })
    };
    let server = Server::new(config);
    let address = server.serve_in_background("rpc-test-drain").expect("serve");

    // A connection that is in the middle of sending a request when the drain begins.
    let mut late = Client::connect(address);
    late.send_raw(b"GET /hello HTTP/1.1\r\nHost: test\r\n");

    let clients: Vec<_> = (0..N_REQUESTS)
        .map(|index| {
            std::thread::Builder::new()
                .name(format!("client-{index}"))
                .stack_size(64 * 1024)
                .spawn(move || {
                    let mut client = Client::connect(address);
                    client.request("GET", "/slow", None)
                })
                .expect("client thread")
        })
        .collect();
    wait_for("every request to reach its handler", Duration::from_secs(60), || {
        entered.load(Ordering::SeqCst) == N_REQUESTS
    });

    let handle = server.handle();
    let stopper = std::thread::spawn(move || handle.stop());
    wait_for("the drain to begin", Duration::from_secs(30), || server.status() == ServerStatus::DrainingUntilStopped);
    let refused = TcpStream::connect(address);
    assert!(refused.is_err(), "a new connection after stop listening must be refused");

    late.send_raw(b"\r\n");
    let reply = late.read_reply().expect("the late request is answered");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["error"], "server stopping");
    assert_eq!(reply.header("connection"), Some("close"));

    gate.done();
    let mut n_ok = 0;
    for client in clients {
        let reply = client.join().expect("client thread").expect("a whole response");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["payload"].as_str().map(str::len), Some(4096));
        assert_eq!(reply.header("connection"), Some("close"));
        n_ok += 1;
    }
    assert_eq!(n_ok, N_REQUESTS);
    stopper.join().expect("stopper");
    server.join().expect("join");
    assert_eq!(server.status(), ServerStatus::NotRunning);
    assert_eq!(server.n_connections(), 0);
}

#[test]
fn a_request_running_at_the_deadline_is_cut() {
    let entered = Arc::new(AtomicUsize::new(0));
    let gate = SyncPoint::new();
    let join_timeout = Duration::from_millis(300);
    let config = {
        let (entered, gate) = (entered.clone(), gate.clone());
        echo_config("deadline").workers_join_timeout(join_timeout).route(Method::Get, "/stuck", move |_| {
            entered.fetch_add(1, Ordering::SeqCst);
            gate.wait();
            Response::json(200, &"too late")
        })
    };
    let server = Server::new(config);
    let address = server.serve_in_background("rpc-test-deadline").expect("serve");
    let client = std::thread::spawn(move || Client::connect(address).request("GET", "/stuck", None));
    wait_for("the stuck request", Duration::from_secs(30), || entered.load(Ordering::SeqCst) == 1);

    let started = Instant::now();
    server.stop();
    server.join().expect("join");
    let elapsed = started.elapsed();
    assert!(elapsed >= join_timeout, "the stop waited for the deadline ({elapsed:?})");
    assert!(
        elapsed < join_timeout + Duration::from_secs(5),
        "the stop completed soon after the deadline ({elapsed:?})"
    );
    assert_eq!(server.status(), ServerStatus::NotRunning);
    assert!(client.join().expect("client").is_err(), "the cut request gets no response");

    // The handler returns later; dropping the server joins its coroutine.
    gate.done();
    let dropped = Instant::now();
    drop(server);
    assert!(dropped.elapsed() < Duration::from_secs(10));
}

/// Log lines captured from the calling thread, to check what the deadline logs.
#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_deadline_logs_the_requests_it_cuts() {
    let entered = Arc::new(AtomicUsize::new(0));
    let gate = SyncPoint::new();
    let config = {
        let (entered, gate) = (entered.clone(), gate.clone());
        echo_config("deadline-log").workers_join_timeout(Duration::from_millis(200)).route(
            Method::Post,
            "/stuck/{id}",
            move |_| {
                entered.fetch_add(1, Ordering::SeqCst);
                gate.wait();
                Response::json(200, &"late")
            },
        )
    };
    let server = Server::new(config);
    let address = server.setup().expect("setup");
    let client = std::thread::spawn(move || Client::connect(address).request("POST", "/stuck/7", Some("{}")));
    wait_for("the stuck request", Duration::from_secs(30), || entered.load(Ordering::SeqCst) == 1);
    let log = CapturedLog::default();
    let subscriber = {
        let log = log.clone();
        tracing_subscriber::fmt().with_ansi(false).with_writer(move || log.clone()).finish()
    };
    // No serving thread: cleanup runs the whole tear-down here, where the subscriber is. With
    // one registered dispatcher, tracing-core computes the interest of a log call site seen
    // for the first time from the default of the thread that sees it: a call site that another
    // test's server reaches first, on a thread without a subscriber, would be cached "never"
    // and its events lost here too (seen when many servers of this binary stop at once). A
    // second dispatcher makes it ask every registered one, and its registration rebuilds the
    // interest of the call sites already seen.
    tracing::subscriber::with_default(subscriber, || {
        let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        server.cleanup()
    });
    assert_eq!(server.status(), ServerStatus::NotRunning);
    assert!(client.join().expect("client").is_err());
    let text = String::from_utf8_lossy(&log.0.lock()).to_string();
    let line = text
        .lines()
        .find(|line| line.contains("request still running"))
        .unwrap_or_else(|| panic!("no cut logged in:\n{text}"));
    assert!(line.contains("method=POST") && line.contains("path=\"/stuck/7\"") && line.contains("age_ms="), "{line}");
    for stage in ["stop_listening", "stop_accepting_and_join_outstanding_requests", "stop_cpu_workers", "stop_workers"]
    {
        assert!(
            text.contains(&format!("stage=\"{stage}\"")) && text.contains("elapsed_ms="),
            "{stage} logged with its duration:\n{text}"
        );
    }
    gate.done();
}

#[test]
fn two_servers_share_the_pools_and_stop_independently() {
    let pool = WorkerPool::new("rpc-test-shared", 2).expect("pool");
    let cpu_route = |config: ServerConfig| {
        config.cpu_route(Method::Post, "/sum", |request| match request.json::<Vec<u64>>() {
            Ok(numbers) => Response::json(
                200,
                &serde_json::json!({
                    "sum": numbers.iter().sum::<u64>(),
                    "on_pool": crate::current_context().map(|context| context.name().to_string()),
                }),
            ),
            Err(response) => response,
        })
    };
    // An address no other test listens on: after the stop, a connection refused there can only
    // mean this server closed its listener (on 127.0.0.1 a concurrent test may take the port).
    let first_config = ServerConfig { address: SocketAddr::from(([127, 0, 0, 5], 0)), ..echo_config("first") };
    let first = Server::new(cpu_route(first_config).worker_pool(pool.clone()));
    let second = Server::new(cpu_route(echo_config("second")).worker_pool(pool.clone()));
    let first_address = first.serve_in_background("rpc-test-first").expect("first");
    let second_address = second.serve_in_background("rpc-test-second").expect("second");
    for address in [first_address, second_address] {
        let reply = Client::connect(address).request("POST", "/sum", Some("[1,2,3]")).expect("sum");
        assert_eq!(reply.json()["sum"], 6);
        assert!(reply.json()["on_pool"].as_str().is_some_and(|name| name.starts_with("rpc-test-shared")));
    }
    let mut second_client = Client::connect(second_address);
    first.stop();
    first.join().expect("join first");
    assert_eq!(first.status(), ServerStatus::NotRunning);
    assert!(TcpStream::connect(first_address).is_err());
    assert!(!pool.is_stopped(), "a shared pool outlives the server that stops");
    for _ in 0..3 {
        assert_eq!(second_client.request("POST", "/sum", Some("[4,5]")).expect("sum").json()["sum"], 9);
        assert_eq!(second_client.request("GET", "/hello", None).expect("hello").status, 200);
    }
    assert_eq!(Client::connect(second_address).request("GET", "/hello", None).expect("new").status, 200);
    second.stop();
    second.join().expect("join second");
}

#[test]
fn stop_from_inside_a_handler_completes() {
    for placement in [Placement::Io, Placement::Cpu] {
        let events: Events = Arc::default();
        let mut router = Router::new();
        router.add(
            Method::Post,
            "/stop",
            Arc::new(|request: &Request| {
                let server = request.server().expect("the handler knows its server");
                server.stop();
                server.stop();
                Response::json(200, &serde_json::json!({ "stopping": true }))
            }),
            placement,
        );
        let server = Server::new(recorded(ServerConfig::new("self-stop", loopback()).router(router), &events));
        let address = server.serve_in_background("rpc-test-self-stop").expect("serve");
        let reply = Client::connect(address).request("POST", "/stop", None).expect("its own response");
        assert_eq!(reply.status, 200, "{placement:?}");
        assert_eq!(reply.json()["stopping"], true);
        server.join().expect("join");
        assert_eq!(server.status(), ServerStatus::NotRunning);
        let n_listening = events.lock().iter().filter(|event| *event == "stop_listening").count();
        assert_eq!(n_listening, 1);
    }
}

#[test]
fn concurrent_stops_from_threads_and_a_signal_flag_run_each_stage_once() {
    let events: Events = Arc::default();
    let server = Arc::new(Server::new(recorded(echo_config("concurrent"), &events)));
    server.serve_in_background("rpc-test-concurrent").expect("serve");
    let flag = crate::StopFlag::new_unregistered();
    let watcher = {
        let (flag, handle) = (flag.clone(), server.handle());
        std::thread::spawn(move || {
            while !flag.wait_timeout(Duration::from_millis(20)) {}
            handle.stop();
        })
    };
    let stoppers: Vec<_> = (0..8)
        .map(|index| {
            let server = server.clone();
            std::thread::spawn(move || match index % 3 {
                0 => server.stop(),
                1 => server.cleanup(),
                _ => server.shutdown(),
            })
        })
        .collect();
    flag.set();
    for stopper in stoppers {
        stopper.join().expect("stopper");
    }
    watcher.join().expect("watcher");
    server.join().expect("join");
    server.shutdown();
    let events = events.lock().clone();
    let stages: Vec<&str> = events
        .iter()
        .map(String::as_str)
        .filter(|event| event.starts_with("stop_") && *event != "stop_requested")
        .collect();
    assert_eq!(
        stages,
        ["stop_listening", "stop_accepting_and_join_outstanding_requests", "stop_cpu_workers", "stop_workers"],
        "each stage once, in fbthrift's order"
    );
    assert_eq!(server.status(), ServerStatus::NotRunning);
}

#[test]
fn restart_after_cleanup_serves_again() {
    let events: Events = Arc::default();
    let server = Server::new(recorded(echo_config("restart"), &events));
    for round in 0..3 {
        let address = server.serve_in_background("rpc-test-restart").expect("serve again");
        let reply = Client::connect(address).request("POST", "/echo", Some(&round.to_string())).expect("echo");
        assert_eq!(reply.json(), serde_json::json!(round));
        server.stop();
        server.join().expect("join");
        assert_eq!(server.status(), ServerStatus::NotRunning);
    }
    let n_serve = events.lock().iter().filter(|event| *event == "pre_serve").count();
    assert_eq!(n_serve, 3);

    // With a server-owned pool too (no shared pool given), and with serve() on this thread.
    let server =
        Arc::new(Server::new(echo_config("restart-serve").cpu_route(Method::Get, "/cpu", |_| Response::json(200, &1))));
    for _ in 0..2 {
        let serving = {
            let server = server.clone();
            std::thread::spawn(move || server.serve())
        };
        wait_for("serving", Duration::from_secs(30), || server.status() == ServerStatus::Running);
        let address = server.local_addr().expect("address");
        assert_eq!(Client::connect(address).request("GET", "/cpu", None).expect("cpu").status, 200);
        server.stop();
        serving.join().expect("serving thread").expect("serve");
    }
}

#[test]
fn the_sweeper_closes_idle_connections_and_stalled_writers() {
    let big_body = "x".repeat(16 << 20);
    let config = echo_config("deadlines")
        .idle_timeout(Duration::from_millis(300))
        .write_timeout(Duration::from_millis(300))
        .route(Method::Get, "/big", move |_| Response::json(200, &big_body));
    let server = Server::new(config);
    let address = server.serve_in_background("rpc-test-deadlines").expect("serve");

    // Idle: the server closes a connection that sends nothing, after the idle timeout.
    let started = Instant::now();
    let mut idle = Client::connect(address);
    let mut byte = [0u8; 1];
    let n = std::io::Read::read(&mut idle.stream, &mut byte).expect("end-of-file, not an error");
    assert_eq!(n, 0, "the idle connection got bytes");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "closed before the idle timeout: {waited:?}");
    assert!(waited < Duration::from_secs(5), "closed long after the idle timeout: {waited:?}");

    // Stalled writer: a client that asks for 16 MiB and never reads is cut after the write
    // timeout, and its connection leaves the server.
    let mut stalled = Client::connect(address);
    stalled.send_raw(b"GET /big HTTP/1.1\r\n\r\n");
    wait_for("the stalled connection to be closed", Duration::from_secs(10), || server.n_connections() == 0);
    let mut fresh = Client::connect(address);
    assert_eq!(fresh.request("GET", "/hello", None).expect("hello").status, 200);
    drop(stalled);

    server.stop();
    server.join().expect("join");
}

#[test]
fn malformed_requests_get_4xx_and_leave_other_connections_alone() {
    let limits = Limits { max_header_bytes: 4096, max_headers: 16, max_body_bytes: 1024 };
    let server = Server::new(echo_config("malformed").limits(limits).request_timeout(Duration::from_millis(300)));
    let address = server.serve_in_background("rpc-test-malformed").expect("serve");
    let mut bystander = Client::connect(address);
    assert_eq!(bystander.request("GET", "/hello", None).expect("hello").status, 200);

    let mut expect_status = |raw: &[u8], half_close: bool, status: u16| {
        let mut client = Client::connect(address);
        client.send_raw(raw);
        if half_close {
            client.stream.shutdown(std::net::Shutdown::Write).expect("half close");
        }
        let reply = client.read_reply().expect("an answer, not a reset");
        assert_eq!(reply.status, status, "for {:?}", String::from_utf8_lossy(&raw[..raw.len().min(60)]));
        assert!(reply.json()["error"].as_str().is_some_and(|message| !message.is_empty()));
        assert_eq!(bystander.request("GET", "/hello", None).expect("bystander").status, 200);
    };
    expect_status(b"\x16\x03\x01garbage\r\n\r\n", false, 400);
    expect_status(format!("GET /hello HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(8192)).as_bytes(), false, 431);
    let many: String = (0..40).map(|index| format!("X-{index}: 1\r\n")).collect();
    expect_status(format!("GET /hello HTTP/1.1\r\n{many}\r\n").as_bytes(), false, 431);
    expect_status(b"POST /echo HTTP/1.1\r\nContent-Length: 999999\r\n\r\n{}", false, 413);
    expect_status(b"POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"trunc", true, 400);
    expect_status(b"POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"slow", false, 408);
    expect_status(b"POST /echo HTTP/1.1\r\nContent-Length: 9\r\n\r\n{not json", false, 400);
    expect_status(b"GET /nowhere HTTP/1.1\r\n\r\n", false, 404);
    expect_status(b"DELETE /hello HTTP/1.1\r\n\r\n", false, 405);
    expect_status(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", false, 501);

    let mut invalid_json = Client::connect(address);
    let reply = invalid_json.request("POST", "/echo", Some("{\"a\":")).expect("answer");
    assert_eq!(reply.status, 400);
    assert!(reply.json()["error"].as_str().is_some_and(|message| message.contains("invalid JSON")));
    // A handler's 400 keeps the connection: it was a well-formed HTTP request.
    assert_eq!(invalid_json.request("GET", "/hello", None).expect("again").status, 200);

    server.stop();
    server.join().expect("join");
}

#[test]
fn setup_reports_bind_errors_and_refuses_a_second_setup() {
    let first = Server::new(echo_config("bind-first"));
    let address = first.setup().expect("setup");
    let second = Server::new(ServerConfig::new("bind-second", address));
    assert!(matches!(second.setup(), Err(RpcError::Bind { .. })), "the port is taken");
    assert_eq!(second.status(), ServerStatus::NotRunning);
    assert!(matches!(first.setup(), Err(RpcError::NotStopped { .. })));
    drop(first);
    // The port is free again after the drop (std binds with SO_REUSEADDR).
    let third = Server::new(ServerConfig::new("bind-third", address));
    assert_eq!(third.setup().expect("setup on the freed port"), address);
}

#[test]
fn a_stop_during_setup_ends_serve_and_a_second_background_serve_is_refused() {
    let handle: Arc<std::sync::OnceLock<ServerHandle>> = Arc::default();
    let config = {
        let handle = handle.clone();
        echo_config("stop-in-setup").on_pre_start(move |_| {
            if let Some(handle) = handle.get() {
                handle.stop();
            }
        })
    };
    let server = Server::new(config);
    assert!(handle.set(server.handle()).is_ok());
    server.serve().expect("serve returns after the stop requested by the pre-start hook");
    assert_eq!(server.status(), ServerStatus::NotRunning);

    let server = Server::new(echo_config("twice"));
    server.serve_in_background("rpc-test-twice").expect("first");
    assert!(matches!(server.serve_in_background("rpc-test-twice"), Err(RpcError::NotStopped { .. })));
    server.stop();
    server.join().expect("join");
}

#[test]
fn a_concurrent_cleanup_waits_for_the_drain_of_a_foreground_serve() {
    let entered = Arc::new(AtomicUsize::new(0));
    let gate = SyncPoint::new();
    let events: Events = Arc::default();
    let config = {
        let (entered, gate) = (entered.clone(), gate.clone());
        recorded(echo_config("foreground"), &events).route(Method::Get, "/slow", move |_| {
            entered.fetch_add(1, Ordering::SeqCst);
            gate.wait();
            Response::json(200, &"done")
        })
    };
    let server = Arc::new(Server::new(config));
    let serving = {
        let server = server.clone();
        std::thread::spawn(move || server.serve())
    };
    wait_for("serving", Duration::from_secs(30), || server.status() == ServerStatus::Running);
    let address = server.local_addr().expect("address");
    let client = std::thread::spawn(move || Client::connect(address).request("GET", "/slow", None));
    wait_for("the slow request", Duration::from_secs(30), || entered.load(Ordering::SeqCst) == 1);
    server.stop();
    wait_for("the drain", Duration::from_secs(30), || server.status() == ServerStatus::DrainingUntilStopped);
    let others: Vec<_> = (0..2)
        .map(|index| {
            let server = server.clone();
            std::thread::spawn(move || if index == 0 { server.cleanup() } else { server.stop_workers() })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    assert!(!events.lock().iter().any(|event| event == "stop_workers"), "IO is not stopped during the drain");
    gate.done();
    let reply = client.join().expect("client").expect("the drained request is answered");
    assert_eq!(reply.status, 200);
    for other in others {
        other.join().expect("concurrent stage");
    }
    serving.join().expect("serving").expect("serve");
    assert_eq!(events.lock().iter().filter(|event| *event == "stop_workers").count(), 1);
    assert_eq!(server.status(), ServerStatus::NotRunning);
}
