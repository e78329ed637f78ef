//! Tests of the chunk source against a tiny HTTP server on 127.0.0.1 run by the test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::{check_chunk, chunk_agent};
use crate::health::{HealthConfig, HealthMonitor, HealthSample, HealthState, SourceKind};

const PATIENCE: Duration = Duration::from_secs(20);

/// What the fake chunk service answers.
#[derive(Clone)]
enum Reply {
    Http {
        status: u16,
        body: String,
    },
    /// Reads the request and never answers.
    Silent,
}

/// A one-thread HTTP server answering every request with the current `Reply`; stopped and
/// joined on drop.
struct FakeChunk {
    addr: SocketAddr,
    reply: Arc<Mutex<Reply>>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeChunk {
    fn start(reply: Reply) -> FakeChunk {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let reply = Arc::new(Mutex::new(reply));
        let stopping = Arc::new(AtomicBool::new(false));
        let (thread_reply, thread_stopping) = (reply.clone(), stopping.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let reply = thread_reply.lock().clone();
                answer(stream, &reply);
            }
        });
        FakeChunk { addr, reply, stopping, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://{}/api/v2/health", self.addr)
    }

    fn set(&self, reply: Reply) {
        *self.reply.lock() = reply;
    }
}

fn answer(mut stream: TcpStream, reply: &Reply) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    match reply {
        Reply::Http { status, body } => {
            let response = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
        // Holds the connection open past the client's deadline.
        Reply::Silent => std::thread::sleep(Duration::from_millis(600)),
    }
}

impl Drop for FakeChunk {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn ok(body: &str) -> Reply {
    Reply::Http { status: 200, body: body.to_string() }
}

fn bad_reason(sample: HealthSample) -> String {
    match sample {
        HealthSample::Bad(reason) => reason,
        other => panic!("expected a bad round, got {other:?}"),
    }
}

#[test]
fn sec_valid_decides_and_every_failure_is_a_bad_round_with_a_reason() {
    let chunk = FakeChunk::start(ok(r#"{"sec_valid": true, "other": 1}"#));
    let agent = chunk_agent(Duration::from_millis(300));
    let url = chunk.url();
    assert_eq!(check_chunk(&agent, &url), HealthSample::Good);

    chunk.set(ok(r#"{"sec_valid": false}"#));
    assert!(matches!(check_chunk(&agent, &url), HealthSample::Down(reason) if reason.contains("sec_valid = false")));

    chunk.set(ok(r#"{"sec_valid": "yes"}"#));
    assert!(bad_reason(check_chunk(&agent, &url)).contains("no boolean sec_valid"));
    chunk.set(ok(r#"{"status": "fine"}"#));
    assert!(bad_reason(check_chunk(&agent, &url)).contains("no boolean sec_valid"));
    chunk.set(ok("<html>not json</html>"));
    assert!(bad_reason(check_chunk(&agent, &url)).contains("did not answer JSON"));
    chunk.set(Reply::Http { status: 500, body: "{}".into() });
    assert!(bad_reason(check_chunk(&agent, &url)).contains("answered HTTP 500"));

    chunk.set(Reply::Silent);
    let started = std::time::Instant::now();
    let reason = bad_reason(check_chunk(&agent, &url));
    assert!(reason.contains("cannot reach"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(5), "the deadline applies");

    let closed_url = url.clone();
    drop(chunk);
    assert!(bad_reason(check_chunk(&agent, &closed_url)).contains("cannot reach"));
}

#[test]
fn the_chunk_source_drives_the_state() {
    let chunk = FakeChunk::start(ok(r#"{"sec_valid": true}"#));
    let mut config = HealthConfig { source: SourceKind::Chunk, fall: 3, rise: 2, ..HealthConfig::default() };
    config.chunk.url = Some(chunk.url());
    config.chunk.interval_ms = 50;
    config.chunk.timeout_ms = 50;
    let monitor = HealthMonitor::start(&config, "127.0.0.1".parse().expect("ip")).expect("start");
    let flag = monitor.flag();
    assert!(flag.wait_for_state(HealthState::Valid, PATIENCE));
    chunk.set(ok(r#"{"sec_valid": false}"#));
    assert!(flag.wait_for_state(HealthState::Invalid, PATIENCE));
    assert!(flag.status().last_reason.unwrap_or_default().contains("sec_valid = false"));
    chunk.set(ok(r#"{"sec_valid": true}"#));
    assert!(flag.wait_for_state(HealthState::Valid, PATIENCE));
}
