//! Tests of the link watcher: address-to-interface lookup, and real link changes of a veth pair
//! inside a network namespace the test creates (as root, with `ip`; skipped otherwise).

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use super::{interface_of_address, same_subnet};
use crate::health::{EchoResponder, HealthChange, HealthConfig, HealthMonitor, HealthState, SourceKind};

const PATIENCE: Duration = Duration::from_secs(20);

#[test]
fn subnets() {
    let ip = |text: &str| -> IpAddr { text.parse().expect("an address") };
    assert!(same_subnet(ip("10.1.2.3"), ip("10.1.2.200"), 24));
    assert!(!same_subnet(ip("10.1.2.3"), ip("10.1.3.3"), 24));
    assert!(same_subnet(ip("127.0.0.1"), ip("127.5.0.1"), 8));
    assert!(same_subnet(ip("1.2.3.4"), ip("5.6.7.8"), 0));
    assert!(same_subnet(ip("fd00::1"), ip("fd00::2"), 64));
    assert!(!same_subnet(ip("fd00::1"), ip("fd01::1"), 64));
    assert!(!same_subnet(ip("10.0.0.1"), ip("::1"), 0));
}

#[test]
fn a_loopback_address_is_carried_by_lo() {
    assert_eq!(interface_of_address(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("lookup"), "lo");
    // Never assigned, but inside lo's 127.0.0.0/8.
    assert_eq!(interface_of_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 99))).expect("lookup"), "lo");
    // TEST-NET-3 is on no interface here.
    assert!(interface_of_address(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))).is_err());
}

#[test]
fn a_missing_interface_is_invalid_at_once() {
    let mut config = HealthConfig { source: SourceKind::Probe, ..HealthConfig::default() };
    config.probe.respond = false;
    config.probe.interface = Some("zbsh-nosuch".into());
    let monitor = HealthMonitor::start(&config, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 80))).expect("start");
    // The initial state is read inside `start`.
    let status = monitor.flag().status();
    assert_eq!(status.state, HealthState::Invalid, "{status:?}");
    assert_eq!(status.link_down.as_deref(), Some("data interface zbsh-nosuch does not exist"));
}

/// A network namespace with a veth pair in it, removed on drop even when the test fails.
struct VethLab {
    namespace: String,
}

const DATA_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);

impl VethLab {
    /// `None` (with the reason printed) when this machine cannot make one.
    fn create() -> Option<VethLab> {
        // SAFETY: geteuid has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: creating a network namespace needs root");
            return None;
        }
        if Command::new("ip").arg("-V").output().is_err() {
            eprintln!("skipped: the `ip` command (iproute2) is not installed");
            return None;
        }
        let lab = VethLab { namespace: format!("zbs-health-test-{}", std::process::id()) };
        if let Err(error) = run_ip(&["netns", "add", &lab.namespace]) {
            eprintln!("skipped: cannot create a network namespace: {error}");
            return None;
        }
        let setup = [
            "link set lo up",
            "link add zbsh0 type veth peer name zbsh1",
            "addr add 10.213.0.1/24 dev zbsh0",
            "addr add 10.213.0.2/24 dev zbsh1",
            "link set zbsh0 up",
            "link set zbsh1 up",
        ];
        for step in setup {
            lab.ip(step);
        }
        Some(lab)
    }

    /// Runs `ip -n <namespace> <args>`, failing the test when it fails.
    fn ip(&self, args: &str) {
        let mut full = vec!["-n", &self.namespace];
        full.extend(args.split_whitespace());
        if let Err(error) = run_ip(&full) {
            panic!("ip {}: {error}", full.join(" "));
        }
    }

    /// Runs `f` on a fresh thread that has entered the namespace; what `f` creates (sockets)
    /// lives there.
    fn run_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.namespace);
        std::thread::spawn(move || {
            let namespace = File::open(&path).expect("open the namespace");
            // SAFETY: setns on a valid namespace descriptor changes only this thread, which
            // ends right after `f`.
            let result = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(result, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("the namespace thread")
    }
}

impl Drop for VethLab {
    fn drop(&mut self) {
        if let Err(error) = run_ip(&["netns", "del", &self.namespace]) {
            eprintln!("cannot remove network namespace {}: {error}", self.namespace);
        }
    }
}

fn run_ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip").args(args).output().map_err(|error| error.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// The next change to `to`, skipping others.
fn next_change_to(changes: &mpsc::Receiver<HealthChange>, to: HealthState) -> HealthChange {
    loop {
        let change = changes.recv_timeout(PATIENCE).expect("a state change in time");
        if change.to == to {
            return change;
        }
    }
}

#[test]
fn link_down_no_carrier_and_removal_are_invalid_at_once() {
    let Some(lab) = VethLab::create() else { return };
    let (monitor, _responder) = lab.run_inside(|| {
        let responder = EchoResponder::start(SocketAddr::new(IpAddr::V4(PEER_IP), 0)).expect("responder");
        let mut config = HealthConfig { source: SourceKind::Probe, fall: 3, rise: 2, ..HealthConfig::default() };
        // Slow rounds: the fall path would need seconds, so an invalid state with the link's
        // reason can only come from the link watcher.
        config.probe.interval_ms = 1000;
        config.probe.timeout_ms = 500;
        config.probe.respond = false;
        // No interface named: it is found from the data address (zbsh0).
        let monitor = HealthMonitor::start(&config, IpAddr::V4(DATA_IP)).expect("start in the namespace");
        monitor.set_peers(vec![responder.local_addr()]);
        (monitor, responder)
    });
    let flag = monitor.flag();
    let (change_tx, changes) = mpsc::channel();
    let _subscription = flag.subscribe(move |change| {
        let _ = change_tx.send(change.clone());
    });
    assert!(flag.wait_for_state(HealthState::Valid, PATIENCE), "valid with the link up");

    for (command, restore, expected) in [
        ("link set zbsh0 down", "link set zbsh0 up", "data interface zbsh0 is administratively down"),
        ("link set zbsh1 down", "link set zbsh1 up", "data interface zbsh0 has no carrier"),
    ] {
        let rounds_before = flag.status().rounds;
        let started = std::time::Instant::now();
        lab.ip(command);
        let change = next_change_to(&changes, HealthState::Invalid);
        // Informational only (a benchmark, not an assertion): includes running `ip`.
        eprintln!("`{command}` → invalid in {:?}", started.elapsed());
        assert_eq!(change.reason, expected, "after `{command}`");
        let status = flag.status();
        assert!(status.rounds < rounds_before + 3, "invalid before `fall` rounds could have passed: {status:?}");
        assert_eq!(status.link_down.as_deref(), Some(expected));
        lab.ip(restore);
        let change = next_change_to(&changes, HealthState::Valid);
        assert_eq!(change.reason, "2 good rounds in a row", "valid again only after rise rounds");
        assert_eq!(flag.status().link_down, None);
    }

    // Renamed away (a rename needs the link down first): the name no longer exists, even after
    // the link comes back up under its new name.
    lab.ip("link set zbsh0 down");
    next_change_to(&changes, HealthState::Invalid);
    lab.ip("link set zbsh0 name zbshx");
    lab.ip("link set zbshx up");
    let renamed = Some("data interface zbsh0 was renamed to zbshx");
    assert!(flag.wait_until(PATIENCE, |status| status.link_down.as_deref() == renamed));
    assert!(flag.is_invalid());
    lab.ip("link set zbshx down");
    lab.ip("link set zbshx name zbsh0");
    lab.ip("link set zbsh0 up");
    let change = next_change_to(&changes, HealthState::Valid);
    assert_eq!(change.reason, "2 good rounds in a row", "valid again under its own name");

    // The kernel takes a device down before it unregisters it, so the first report may be
    // "administratively down"; the removal itself follows.
    lab.ip("link del zbsh0");
    let change = next_change_to(&changes, HealthState::Invalid);
    assert!(change.reason.starts_with("data interface zbsh0 "), "{}", change.reason);
    let removed = Some("data interface zbsh0 was removed");
    assert!(flag.wait_until(PATIENCE, |status| status.link_down.as_deref() == removed));
    drop(monitor);
}
