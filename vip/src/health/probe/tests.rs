//! Tests of the probe source against real UDP echo responders on loopback addresses.
//!
//! Every test uses its own 127.0.0.x addresses, so tests running in parallel never answer each
//! other's probes. Time bounds are generous: they only stop a broken test from hanging.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;

use crate::health::echo::Probe;
use crate::health::{EchoResponder, HealthConfig, HealthMonitor, HealthState, SourceKind};

const PATIENCE: Duration = Duration::from_secs(20);

fn loopback(last_byte: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_byte))
}

fn responder(last_byte: u8) -> EchoResponder {
    EchoResponder::start(SocketAddr::new(loopback(last_byte), 0)).expect("start an echo responder")
}

fn probe_config(fall: u32, rise: u32) -> HealthConfig {
    let mut config = HealthConfig { source: SourceKind::Probe, fall, rise, ..HealthConfig::default() };
    config.probe.interval_ms = 100;
    // Loopback answers in microseconds; 80 ms leaves room for a busy machine.
    config.probe.timeout_ms = 80;
    config.probe.respond = false;
    config
}

#[test]
fn echo_answers_well_formed_requests_only() {
    let mut responder = responder(31);
    let client = UdpSocket::bind("127.0.0.30:0").expect("bind client");
    client.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let request = Probe { is_reply: false, round: 7, nonce: 0xfeed };
    client.send_to(&request.encode(), responder.local_addr()).expect("send");
    let mut buffer = [0u8; 64];
    let (length, from) = client.recv_from(&mut buffer).expect("an answer");
    assert_eq!(from, responder.local_addr());
    assert_eq!(Probe::decode(&buffer[..length]), Some(Probe { is_reply: true, ..request }));

    // A reply, a truncated probe and an unrelated datagram get no answer.
    let reply = Probe { is_reply: true, ..request }.encode();
    for datagram in [&reply[..], &reply[..10], b"hello world, this is not a probe"] {
        client.send_to(datagram, responder.local_addr()).expect("send");
    }
    let error = client.recv_from(&mut buffer).expect_err("no answer to non-requests");
    assert!(matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{error}");

    // Stopping joins the thread and closes the socket: the address can be bound again.
    let addr = responder.local_addr();
    responder.stop();
    responder.stop();
    UdpSocket::bind(addr).expect("the responder's port is free after stop");
}

#[test]
fn invalid_after_fall_rounds_without_any_answer_and_valid_again_after_rise() {
    let responders = [responder(41), responder(42), responder(43)];
    let addresses: Vec<SocketAddr> = responders.iter().map(EchoResponder::local_addr).collect();
    let mut config = probe_config(3, 3);
    // Follows the link of `lo`, found from the data address (127.0.0.40 lies in 127.0.0.0/8).
    config.probe.track_interface = true;
    let monitor = HealthMonitor::start(&config, loopback(40)).expect("start the monitor");
    let flag = monitor.flag();
    let (invalid_tx, invalid_rx) = mpsc::channel();
    let _subscription = flag.on_invalid(move |reason| {
        let _ = invalid_tx.send(reason.to_string());
    });
    monitor.set_peers(addresses.clone());
    assert!(flag.wait_for_state(HealthState::Valid, PATIENCE), "valid with three peers answering");
    assert!(!flag.is_invalid());

    // Two of three peers gone: one answer per round is enough.
    let [first, second, third] = responders;
    drop(first);
    drop(second);
    let rounds_before = flag.status().rounds;
    assert!(flag.wait_until(PATIENCE, |status| status.rounds >= rounds_before + 8));
    let status = flag.status();
    assert_eq!(status.state, HealthState::Valid, "{status:?}");
    assert_eq!(status.n_changes, 1, "never left valid: {status:?}");

    // No peer answers: invalid after exactly `fall` bad rounds, and the subscriber hears it.
    let last_addr = third.local_addr();
    drop(third);
    assert!(flag.wait_for_state(HealthState::Invalid, PATIENCE), "invalid with no peer answering");
    let reason = invalid_rx.recv_timeout(PATIENCE).expect("the subscriber was called");
    assert!(reason.contains("3 bad rounds in a row"), "{reason}");
    assert!(reason.contains("none of 3 peers answered"), "{reason}");
    assert!(flag.is_invalid() && !flag.is_valid());

    // One peer back: valid again after `rise` good rounds.
    let _back = EchoResponder::start(last_addr).expect("restart a responder on the same address");
    assert!(flag.wait_for_state(HealthState::Valid, PATIENCE), "valid again with one peer back");
    let status = flag.status();
    assert_eq!(status.n_changes, 3, "{status:?}");
    assert!(status.last_reason.as_deref().unwrap_or("").contains("none of 3 peers"), "{status:?}");
    assert_eq!(status.link_down, None, "lo is up");
}

#[test]
fn a_one_node_cluster_is_always_valid() {
    let mut config = probe_config(3, 5);
    config.probe.respond = true;
    let data_ip = loopback(50);
    let monitor = HealthMonitor::start(&config, data_ip).expect("start the monitor");
    let own_addr = monitor.echo_addr().expect("it answers probes");
    assert_eq!(own_addr, SocketAddr::new(data_ip, config.probe.port));
    // The membership includes this node itself; it is left out, leaving no peer at all.
    monitor.set_peers(vec![own_addr, own_addr]);
    assert_eq!(monitor.peers(), Some(vec![]));
    let flag = monitor.flag();
    let (change_tx, change_rx) = mpsc::channel();
    let _subscription = flag.subscribe(move |change| {
        let _ = change_tx.send(change.clone());
    });
    assert!(flag.wait_for_state(HealthState::Valid, PATIENCE));
    let change = change_rx.recv_timeout(PATIENCE).expect("the subscriber was called");
    // Valid at once, not after `rise` (5) good rounds.
    assert_eq!((change.from, change.to), (HealthState::Unknown, HealthState::Valid));
    assert_eq!(change.reason, "no peers: a cluster of one node");
    let rounds_before = flag.status().rounds;
    assert!(flag.wait_until(PATIENCE, |status| status.rounds >= rounds_before + 5));
    let status = flag.status();
    assert_eq!((status.state, status.n_changes), (HealthState::Valid, 1), "{status:?}");
}

#[test]
fn nothing_is_recorded_until_the_peers_are_known() {
    let config = probe_config(1, 1);
    let monitor = HealthMonitor::start(&config, loopback(60)).expect("start the monitor");
    std::thread::sleep(Duration::from_millis(500));
    let status = monitor.flag().status();
    assert_eq!((status.state, status.rounds), (HealthState::Unknown, 0), "{status:?}");
    assert_eq!(monitor.peers(), None);
}

#[test]
fn a_peer_that_never_answers_makes_the_state_invalid_and_stop_joins_promptly() {
    // Nothing listens on 127.0.0.71's port: the socket is bound and closed to find a free one.
    let silent_peer = UdpSocket::bind("127.0.0.71:0").and_then(|socket| socket.local_addr()).expect("free port");
    let mut monitor = HealthMonitor::start(&probe_config(2, 2), loopback(70)).expect("start the monitor");
    monitor.set_peers(vec![silent_peer]);
    let flag = monitor.flag();
    assert!(flag.wait_for_state(HealthState::Invalid, PATIENCE));
    let started = std::time::Instant::now();
    monitor.stop();
    assert!(started.elapsed() < Duration::from_secs(5), "stop woke the threads");
    let rounds = flag.status().rounds;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(flag.status().rounds, rounds, "no round after stop");
    assert!(flag.is_invalid(), "the flag keeps its last state");
}
