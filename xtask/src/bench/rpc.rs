//! The rpc benchmark: a small JSON echo over 64 keep-alive connections against our server and,
//! in the same run, against `may_minihttp` serving the same handler on the same `may`
//! scheduler; then a drain round: 1,000 requests of 50-200 ms in flight when stop is called.
//! Every load generator here is bounded in count and time and targets only 127.0.0.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use parking_lot::Mutex;
use runtime::rpc::{Method, Response, Server, ServerConfig};
use runtime::SyncPoint;

use super::report::{percentile, Report};

const N_CONNECTIONS: usize = 64;
const ROUND_DURATION: Duration = Duration::from_secs(3);
const N_ROUNDS: usize = 3;
const WARM_UP: Duration = Duration::from_millis(500);
/// A bound on requests per connection per round, whatever the speed.
const MAX_REQUESTS_PER_CONNECTION: usize = 500_000;
const N_DRAIN_REQUESTS: usize = 1_000;

const ECHO_BODY: &str =
    r#"{"task_id":"3f6c1a2e","type":"copy_volume","args":{"src":"/dev/zbs/a","dst":"/dev/zbs/b","io_depth":8}}"#;

pub fn run() -> Result<()> {
    runtime::rpc::configure_io_pool();
    let mut report = Report::new("rpc");

    let ours = Server::new(ServerConfig::new("bench-echo", loopback(0)).route(Method::Post, "/echo", |request| {
        match request.json::<serde_json::Value>() {
            Ok(value) => Response::json(200, &value),
            Err(response) => response,
        }
    }));
    let ours_address = ours.serve_in_background("bench-echo").context("start our echo server")?;
    let (reference_handle, reference_address) = start_reference()?;

    let mut ours_total = Load::default();
    let mut reference_total = Load::default();
    run_load(ours_address, WARM_UP)?;
    run_load(reference_address, WARM_UP)?;
    for _ in 0..N_ROUNDS {
        ours_total.add(run_load(ours_address, ROUND_DURATION)?);
        reference_total.add(run_load(reference_address, ROUND_DURATION)?);
    }
    ours.stop();
    ours.join().context("stop our echo server")?;
    // SAFETY: may_minihttp offers no graceful stop: cancelling its accept coroutine is its
    // documented way, and nothing of ours runs on that coroutine.
    unsafe { reference_handle.coroutine().cancel() };
    let _ = reference_handle.join();

    report.set("echo_rps", ours_total.rps());
    report.set("echo_rps_reference", reference_total.rps());
    report.set("echo_p50_us", percentile(&mut ours_total.latencies_us, 0.50));
    report.set("echo_p99_us", percentile(&mut ours_total.latencies_us, 0.99));
    report.set("echo_p50_us_reference", percentile(&mut reference_total.latencies_us, 0.50));
    report.set("echo_p99_us_reference", percentile(&mut reference_total.latencies_us, 0.99));
    report.set("echo_rps_ratio_to_reference", ours_total.rps() / reference_total.rps());
    report.set("echo_errors", (ours_total.n_errors + reference_total.n_errors) as f64);

    let drain = drain_round()?;
    report.set("drain_requests", N_DRAIN_REQUESTS as f64);
    report.set("drain_lost_requests", drain.n_lost as f64);
    report.set("drain_time_ms", drain.drain_ms);
    report.set("drain_longest_request_ms", drain.longest_ms);
    report.set("drain_overrun_ms", drain.overrun_ms);

    report.note(format!(
        "echo: {N_CONNECTIONS} keep-alive connections from std threads, {N_ROUNDS} rounds of {} s per server, alternating; \
         handler parses the JSON body and serialises it back",
        ROUND_DURATION.as_secs()
    ));
    report.note("reference: may_minihttp on the same may worker pool (pinning off, same stack size)");
    report.note(format!(
        "drain: {N_DRAIN_REQUESTS} connections, one request each, held at a gate until all are in their handlers, \
         then each sleeps 50-200 ms; stop is called when the gate opens. overrun = stop returned - last handler returned"
    ));
    report.write()?;
    Ok(())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// may_minihttp serving the same echo; it binds by address, so a free port is found first.
fn start_reference() -> Result<(may::coroutine::JoinHandle<()>, SocketAddr)> {
    use may_minihttp::{HttpServer, HttpService, Request, Response as MiniResponse};

    #[derive(Clone)]
    struct Echo;

    impl HttpService for Echo {
        fn call(&mut self, request: Request, response: &mut MiniResponse) -> std::io::Result<()> {
            let mut body = Vec::new();
            request.body().read_to_end(&mut body)?;
            match serde_json::from_slice::<serde_json::Value>(&body).and_then(|value| serde_json::to_vec(&value)) {
                Ok(bytes) => {
                    response.header("Content-Type: application/json");
                    response.body_vec(bytes);
                }
                Err(_) => {
                    response.status_code(400, "Bad Request");
                }
            }
            Ok(())
        }
    }

    let port = std::net::TcpListener::bind(loopback(0))?.local_addr()?.port();
    let address = loopback(port);
    let handle = HttpServer(Echo).start(address).context("start may_minihttp")?;
    // Wait until it accepts.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(address).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "may_minihttp did not start listening");
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((handle, address))
}

#[derive(Default)]
struct Load {
    n_requests: usize,
    n_errors: usize,
    elapsed: Duration,
    latencies_us: Vec<f64>,
}

impl Load {
    fn add(&mut self, other: Load) {
        self.n_requests += other.n_requests;
        self.n_errors += other.n_errors;
        self.elapsed += other.elapsed;
        self.latencies_us.extend(other.latencies_us);
    }

    fn rps(&self) -> f64 {
        self.n_requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `N_CONNECTIONS` threads, each sending echo requests one after the other on its own
/// keep-alive connection until `duration` has passed.
fn run_load(address: SocketAddr, duration: Duration) -> Result<Load> {
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{ECHO_BODY}",
        ECHO_BODY.len()
    );
    let start_gate = Arc::new(std::sync::Barrier::new(N_CONNECTIONS + 1));
    let mut threads = Vec::with_capacity(N_CONNECTIONS);
    for index in 0..N_CONNECTIONS {
        let request = request.clone();
        let start_gate = start_gate.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("load-{index}"))
                .stack_size(256 * 1024)
                .spawn(move || -> Load {
                    let mut load = Load::default();
                    let connected = TcpStream::connect(address);
                    start_gate.wait();
                    let Ok(stream) = connected else {
                        load.n_errors += 1;
                        return load;
                    };
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut client = RawClient { stream, buffer: Vec::with_capacity(4096) };
                    let deadline = Instant::now() + duration;
                    while Instant::now() < deadline && load.n_requests < MAX_REQUESTS_PER_CONNECTION {
                        let sent = Instant::now();
                        match client.call(request.as_bytes()) {
                            Ok((200, body_len)) if body_len == ECHO_BODY.len() => {
                                load.n_requests += 1;
                                load.latencies_us.push(sent.elapsed().as_secs_f64() * 1e6);
                            }
                            _ => {
                                load.n_errors += 1;
                                break;
                            }
                        }
                    }
                    load
                })
                .context("start a load thread")?,
        );
    }
    start_gate.wait();
    let started = Instant::now();
    let mut total = Load::default();
    for thread in threads {
        let load = thread.join().map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
        total.add(load);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// One keep-alive connection that sends a request and reads the whole response.
struct RawClient {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl RawClient {
    /// Returns the status and body length of the response.
    fn call(&mut self, request: &[u8]) -> std::io::Result<(u16, usize)> {
        self.stream.write_all(request)?;
        self.read_response()
    }

    fn read_response(&mut self) -> std::io::Result<(u16, usize)> {
        let mut chunk = [0u8; 8192];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(header_len)) = response.parse(&self.buffer) {
                let status = response.code.unwrap_or(0);
                let body_len: usize = response
                    .headers
                    .iter()
                    .find(|header| header.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|header| std::str::from_utf8(header.value).ok())
                    .and_then(|value| value.trim().parse().ok())
                    .unwrap_or(0);
                if self.buffer.len() >= header_len + body_len {
                    self.buffer.drain(..header_len + body_len);
                    return Ok((status, body_len));
                }
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

struct Drain {
    n_lost: usize,
    drain_ms: f64,
    longest_ms: f64,
    overrun_ms: f64,
}

/// 1,000 requests in their handlers when stop is called; each must still get its response.
fn drain_round() -> Result<Drain> {
    let entered = Arc::new(AtomicUsize::new(0));
    let gate = SyncPoint::new();
    let last_handler_end: Arc<Mutex<Option<Instant>>> = Arc::default();
    let config = {
        let (entered, gate, last_handler_end) = (entered.clone(), gate.clone(), last_handler_end.clone());
        // Every connection comes from 127.0.0.1: room for all of them under the per-client cap.
        ServerConfig::new("bench-drain", loopback(0))
            .workers_join_timeout(Duration::from_secs(30))
            .max_connections(N_DRAIN_REQUESTS + 64)
            .max_connections_per_client(N_DRAIN_REQUESTS + 64)
            .route(Method::Get, "/slow/{ms}", move |request| {
                let sleep_ms: u64 = request.param("ms").and_then(|ms| ms.parse().ok()).unwrap_or(100);
                entered.fetch_add(1, Ordering::SeqCst);
                gate.wait();
                runtime::sleep(Duration::from_millis(sleep_ms));
                let now = Instant::now();
                let mut last = last_handler_end.lock();
                if last.is_none_or(|last| now > last) {
                    *last = Some(now);
                }
                drop(last);
                Response::json(200, &serde_json::json!({ "slept_ms": sleep_ms }))
            })
    };
    let server = Server::new(config);
    let address = server.serve_in_background("bench-drain").context("start the drain server")?;
    let mut clients = Vec::with_capacity(N_DRAIN_REQUESTS);
    for index in 0..N_DRAIN_REQUESTS {
        // A spread of 50..=200 ms without a random-number crate.
        let sleep_ms = 50 + (index * 7919) % 151;
        clients.push(
            std::thread::Builder::new()
                .name(format!("drain-{index}"))
                .stack_size(64 * 1024)
                .spawn(move || -> bool {
                    let Ok(stream) = TcpStream::connect(address) else { return false };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
                    let mut client = RawClient { stream, buffer: Vec::new() };
                    let request = format!("GET /slow/{sleep_ms} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
                    matches!(client.call(request.as_bytes()), Ok((200, body_len)) if body_len > 0)
                })
                .context("start a drain client")?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while entered.load(Ordering::SeqCst) < N_DRAIN_REQUESTS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let n_in_flight = entered.load(Ordering::SeqCst);
    gate.done();
    let stop_called = Instant::now();
    server.stop();
    server.join().context("stop the drain server")?;
    let stopped = Instant::now();
    let mut n_ok = 0;
    for client in clients {
        if client.join().unwrap_or(false) {
            n_ok += 1;
        }
    }
    let last_end = last_handler_end.lock().unwrap_or(stop_called);
    if n_in_flight < N_DRAIN_REQUESTS {
        tracing::warn!(n_in_flight, "not every drain request reached its handler before stop");
    }
    Ok(Drain {
        n_lost: N_DRAIN_REQUESTS - n_ok,
        drain_ms: (stopped - stop_called).as_secs_f64() * 1e3,
        longest_ms: last_end.saturating_duration_since(stop_called).as_secs_f64() * 1e3,
        overrun_ms: stopped.saturating_duration_since(last_end).as_secs_f64() * 1e3,
    })
}
