//! A daemon under abuse by its callers, on loopback: connection floods at and past the limits
//! per client address and per port, and 300 slow-loris connections, while an honest caller's
//! `/api/v1/status` is still answered within a second and the node keeps working (ZooKeeper,
//! task submits) with the descriptors the limits left it.

use std::io::ErrorKind;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tests::cluster::{Cluster, ClusterBuilder};
use tests::prelude::*;

const PER_CLIENT: usize = 16;
/// Above the 300 slow loris, so they alone never fill the port: an honest caller must find a place.
const PER_PORT: usize = 400;
const HEADER_TIMEOUT: Duration = Duration::from_millis(1500);

fn serialize() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn with_node(scenario: impl FnOnce(&Cluster) -> Result<()>) {
    let _serial = serialize();
    let cluster = ClusterBuilder::new()
        .nodes(1)
        .configure(|config| {
            config.api.max_connections = Some(PER_PORT);
            config.api.max_connections_per_client = Some(PER_CLIENT);
            config.api.header_timeout_ms = Some(HEADER_TIMEOUT.as_millis() as u64);
        })
        .start()
        .expect("start a node");
    if let Err(error) = scenario(&cluster) {
        cluster.keep_dir_on_drop();
        panic!("{error:?}\n(cluster dir: {})", cluster.dir().display());
    }
}

/// A connection to `to` from the loopback address `from` (every 127/8 address is local).
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((from, 0)).into()).with_context(|| format!("bind {from}"))?;
    socket.connect(&to.into()).with_context(|| format!("connect {from} → {to}"))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// A client address of the flood: 127.0.<a>.<b>, away from the nodes' own 127.0.0.x.
fn flooder(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 10 + (index / 250) as u8, 1 + (index % 250) as u8)
}

/// A connection from `from` that the server took: it answered a `/healthz` on it and keeps it
/// open (keep-alive). `None` when it was refused (503 `too many connections`, or reset).
fn admitted(from: Ipv4Addr, to: SocketAddr) -> Result<Option<TcpStream>> {
    let mut stream = connect_from(from, to)?;
    if stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n").is_err() {
        return Ok(None);
    }
    let mut answer = Vec::new();
    let mut chunk = [0u8; 512];
    while !(answer.ends_with(b"}") && answer.windows(4).any(|window| window == b"\r\n\r\n")) {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    if text.starts_with("HTTP/1.1 200") {
        return Ok(Some(stream));
    }
    ensure!(text.is_empty() || text.contains("too many connections"), "neither taken nor refused: {text}");
    Ok(None)
}

/// What a connection that has sent nothing reads: the server's 503 refusal, or nothing yet.
fn refused_at_once(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_millis(500))).ok();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.starts_with("HTTP/1.1 503") && text.contains("too many connections")
}

/// Whether the server has closed `stream`: its answer (a 408, if any) read through to the end,
/// or the connection reset. A connection still open times out on the read instead.
fn is_closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_millis(300))).ok();
    let mut buffer = [0u8; 512];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
}

/// `GET /api/v1/status` from `from` on a fresh connection; how long the answer took.
fn status_from(from: Ipv4Addr, cluster: &Cluster) -> Result<Duration> {
    let spec = cluster.node(0);
    let started = Instant::now();
    let mut stream = connect_from(from, SocketAddr::from((spec.address, spec.dispatcher_port)))?;
    stream.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")?;
    // The answer is whole at its Content-Length; the close comes a linger later (the server
    // keeps reading a moment so a request in flight is not reset), which is not the wait.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let whole = |answer: &[u8]| {
        let text = String::from_utf8_lossy(answer);
        let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
        head.lines()
            .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|n| n.trim().to_string()))
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|length| body.len() >= length)
    };
    while !whole(&answer) {
        let n = stream.read(&mut chunk).context("read the status")?;
        ensure!(n > 0, "the status answer ended early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    ensure!(text.starts_with("HTTP/1.1 200"), "status from {from}: {}", text.lines().next().unwrap_or(""));
    Ok(took)
}

fn honest_status_is_quick(cluster: &Cluster, what: &str) -> Result<()> {
    let took = status_from(Ipv4Addr::new(127, 0, 9, 1), cluster)?;
    eprintln!("{what}: /api/v1/status answered in {:.1} ms", took.as_secs_f64() * 1e3);
    ensure!(took <= Duration::from_secs(1), "{what}: /api/v1/status took {took:?}");
    Ok(())
}

#[test]
fn floods_and_slow_loris_leave_the_node_answering_and_working() {
    with_node(|cluster| {
        let spec = cluster.node(0);
        let dispatcher = SocketAddr::from((spec.address, spec.dispatcher_port));
        cluster.wait_for_leader(Duration::from_secs(30))?;

        // One client opens 200 connections: its first PER_CLIENT are held, every later one is
        // refused at once, and an honest client is still served.
        let mut held = Vec::new();
        for _ in 0..200 {
            held.extend(admitted(flooder(0), dispatcher)?);
        }
        ensure!(held.len() == PER_CLIENT, "{} of one client's 200 connections taken, not {PER_CLIENT}", held.len());
        honest_status_is_quick(cluster, "one client past its limit")?;
        drop(held);

        // Many clients fill the port: past PER_PORT a new connection is refused, whoever asks;
        // once they go, the node answers again.
        let mut held = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while held.len() < PER_PORT {
            held.extend(admitted(flooder(1 + held.len()), dispatcher)?);
            ensure!(Instant::now() < deadline, "the places of the first flood were never given back");
        }
        let mut past = connect_from(Ipv4Addr::new(127, 0, 9, 2), dispatcher)?;
        ensure!(refused_at_once(&mut past), "a connection past max_connections was not refused");
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(10);
        while status_from(Ipv4Addr::new(127, 0, 9, 3), cluster).is_err() {
            ensure!(Instant::now() < deadline, "the node did not answer again after the flood left");
            std::thread::sleep(Duration::from_millis(50));
        }

        // 300 slow-loris connections from 30 addresses (10 each, under the per-client limit):
        // each trickles its request line until the header deadline cuts it.
        let mut loris = Vec::new();
        for index in 0..300 {
            let mut stream = connect_from(flooder(100 + index / 10), dispatcher)?;
            if stream.write_all(b"GET /api/v1/sta").is_ok() {
                loris.push(stream);
            }
        }
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        while started.elapsed() < HEADER_TIMEOUT * 2 {
            for stream in &mut loris {
                let _ = stream.write_all(b"t");
            }
            // Asked every 200 ms while the loris trickle, an honest caller is answered at once.
            slowest = slowest.max(status_from(Ipv4Addr::new(127, 0, 9, 4), cluster)?);
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("slow loris: the slowest honest status took {:.1} ms", slowest.as_secs_f64() * 1e3);
        ensure!(slowest <= Duration::from_secs(1), "an honest status took {slowest:?} among the slow loris");
        let still_open = loris.iter_mut().map(is_closed_by_server).filter(|closed| !closed).count();
        ensure!(still_open == 0, "{still_open} slow-loris connections still open past the header deadline");
        honest_status_is_quick(cluster, "after the slow loris")?;

        // The node still has descriptors for ZooKeeper and its runner: a task runs to the end.
        let token = cluster.token().to_string();
        let url = format!("http://{dispatcher}/api/v2/task_center/sleep/create");
        let created: serde_json::Value = ureq::post(&url)
            .set(taskd::access::TOKEN_HEADER, &token)
            .send_json(serde_json::json!({ "duration_ms": 10 }))
            .context("submit after the abuse")?
            .into_json()?;
        let task_id = created["task_id"].as_str().context("task id")?.to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let record: serde_json::Value =
                ureq::get(&format!("http://{dispatcher}/api/v2/task_center/tasks/{task_id}")).call()?.into_json()?;
            if record["state"] == "succeeded" {
                break;
            }
            if Instant::now() > deadline {
                bail!("the task submitted after the abuse did not succeed: {record}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = cluster.log(0);
        ensure!(log.contains("connection refused: too many connections"), "refusals are logged");
        Ok(())
    });
}
