//! Tests of `VipServer` against a real kernel: each test builds its own network namespace with a
//! veth pair (the VIP's interface `zbsv0` and its peer `zbsv1`), creates the server on a thread
//! that has entered the namespace, and watches the outcome with `ip -n` and with an `AF_PACKET`
//! capture on the peer. Skipped, with the reason printed, when not root or without `ip`.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{VipPresence, VipServer};
use crate::{VipConfig, VipError, VipResult};

const VIP: &str = "10.214.0.100/24";
const VIP_IP: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 100);
const INTERFACE_MAC: [u8; 6] = [0x02, 0x5a, 0xb5, 0x00, 0x00, 0x01];
const ETH_P_ARP: u16 = 0x0806;

/// A network namespace with a veth pair, removed on drop even when the test fails.
struct Lab {
    namespace: String,
}

impl Lab {
    /// `None` (with the reason printed) when this machine cannot make one.
    fn create(test: &str) -> Option<Lab> {
        // SAFETY: geteuid has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped {test}: creating a network namespace needs root");
            return None;
        }
        if Command::new("ip").arg("-V").output().is_err() {
            eprintln!("skipped {test}: the `ip` command (iproute2) is not installed");
            return None;
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let lab =
            Lab { namespace: format!("zbs-vip-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)) };
        if let Err(error) = run_ip(&["netns", "add", &lab.namespace]) {
            eprintln!("skipped {test}: cannot create a network namespace: {error}");
            return None;
        }
        let setup = [
            "link set lo up",
            "link add zbsv0 address 02:5a:b5:00:00:01 type veth peer name zbsv1 address 02:5a:b5:00:00:02",
            "addr add 10.214.0.1/24 dev zbsv0",
            "addr add 10.214.0.2/24 dev zbsv1",
            "link set zbsv0 up",
            "link set zbsv1 up",
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

    /// The IPv4 addresses of `zbsv0`, one `address/prefix label[ (secondary)]` line each.
    fn addresses(&self) -> Vec<String> {
        let output = Command::new("ip")
            .args(["-n", &self.namespace, "-4", "-o", "addr", "show", "dev", "zbsv0"])
            .output()
            .expect("run ip");
        assert!(output.status.success(), "ip addr show: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                // "2: zbsv0    inet 10.214.0.100/24 brd 10.214.0.255 scope global secondary zbsv0:vip\
                //  valid_lft forever preferred_lft forever"
                let words: Vec<&str> = line.split_whitespace().collect();
                let at = words.iter().position(|word| *word == "inet")?;
                let label = words.iter().find(|word| word.ends_with('\\'))?.trim_end_matches('\\');
                let secondary = if words.contains(&"secondary") { " (secondary)" } else { "" };
                Some(format!("{} {label}{secondary}", words.get(at + 1)?))
            })
            .collect()
    }

    /// The `zbsv0` lines that carry the VIP's address.
    fn vip_lines(&self) -> Vec<String> {
        self.addresses().into_iter().filter(|line| line.starts_with("10.214.0.100/")).collect()
    }

    /// Runs `f` on a fresh thread that has entered the namespace; what `f` opens (sockets)
    /// belongs to the namespace.
    fn run_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.namespace);
        std::thread::spawn(move || {
            let namespace = File::open(&path).expect("open the namespace");
            // SAFETY: setns on a valid namespace descriptor changes only this thread, which
            // ends right after `f`.
            let result = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(result, 0, "setns: {}", io::Error::last_os_error());
            f()
        })
        .join()
        .expect("the namespace thread")
    }

    /// A server whose sockets live in the namespace.
    fn server(&self, config: VipConfig) -> VipResult<VipServer> {
        self.run_inside(move || VipServer::new(&config))
    }

    /// An ARP capture on the peer end, `zbsv1`.
    fn capture(&self) -> Capture {
        let fd = self.run_inside(|| Capture::open("zbsv1")).expect("open the capture socket");
        let capture = Capture { fd };
        // Anything queued before the test acts is not the test's.
        capture.frames(Duration::from_millis(20));
        capture
    }
}

impl Drop for Lab {
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

/// A raw socket receiving the ARP frames that arrive on one interface.
struct Capture {
    fd: OwnedFd,
}

impl Capture {
    fn open(interface: &str) -> io::Result<OwnedFd> {
        Capture::open_protocol(interface, ETH_P_ARP)
    }

    fn open_protocol(interface: &str, protocol: u16) -> io::Result<OwnedFd> {
        let name = std::ffi::CString::new(interface).expect("a name without NUL");
        // SAFETY: `name` is a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // Protocol 0 receives nothing until the bind below names the protocol and interface.
        // SAFETY: plain socket(2); the result is checked before it is owned.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all zero is valid.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = protocol.to_be();
        address.sll_ifindex = ifindex as i32;
        // SAFETY: `address` is a valid sockaddr_ll of the size passed.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&address as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if bound != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }

    /// The VIP's ARP frames received until `quiet` passes without one.
    fn frames(&self, quiet: Duration) -> Vec<Vec<u8>> {
        self.frames_where(quiet, |frame| {
            // Only the VIP's announcements: other ARP (the kernel's own) is not the test's.
            frame.len() >= 42 && frame[12..14] == ETH_P_ARP.to_be_bytes() && frame[28..32] == VIP_IP.octets()
        })
    }

    /// The frames received until `quiet` passes without one, that `keep` accepts.
    fn frames_where(&self, quiet: Duration, keep: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut buffer = [0u8; 2048];
        loop {
            let mut poll = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut poll, 1, quiet.as_millis() as i32) };
            if ready <= 0 {
                return frames;
            }
            // SAFETY: `buffer` is writable for its length.
            let length = unsafe { libc::recv(self.fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
            if length <= 0 {
                continue;
            }
            let frame = &buffer[..length as usize];
            if keep(frame) {
                frames.push(frame.to_vec());
            }
        }
    }
}

/// Asserts that `frames` are `count` gratuitous ARPs for the VIP from the interface's MAC.
fn assert_garps(frames: &[Vec<u8>], count: usize, step: &str) {
    assert_eq!(frames.len(), count, "{step}: gratuitous ARPs seen on the peer");
    for frame in frames {
        assert_eq!(&frame[0..6], &[0xff; 6], "{step}: broadcast destination");
        assert_eq!(frame[6..12], INTERFACE_MAC, "{step}: source MAC");
        assert_eq!(frame[14..22], [0, 1, 8, 0, 6, 4, 0, 1], "{step}: Ethernet/IPv4 ARP request");
        assert_eq!(frame[22..28], INTERFACE_MAC, "{step}: sender MAC");
        assert_eq!(frame[28..32], VIP_IP.octets(), "{step}: sender IP");
        assert_eq!(frame[38..42], VIP_IP.octets(), "{step}: target IP");
    }
}

fn config() -> VipConfig {
    VipConfig::new(VIP, "zbsv0")
}

#[test]
fn config_sync_clean_and_leftover() {
    let Some(lab) = Lab::create("config_sync_clean_and_leftover") else {
        return;
    };
    let server = lab.server(config()).expect("server");
    assert!(!server.has_vip().expect("has_vip"));

    assert_eq!(server.config_vip().expect("config_vip"), VipPresence::Added);
    assert_eq!(lab.vip_lines(), ["10.214.0.100/24 zbsv0:vip (secondary)"]);
    assert!(server.has_vip().expect("has_vip"));
    assert!(server.is_active());
    // Idempotent: a second call finds it and adds no second address.
    assert_eq!(server.config_vip().expect("config_vip again"), VipPresence::AlreadyPresent);
    assert_eq!(lab.vip_lines(), ["10.214.0.100/24 zbsv0:vip (secondary)"]);
    let report = server.sync_vip().expect("sync_vip");
    assert!(report.active && !report.re_added, "{report:?}");

    // Someone removes it: the next sync puts it back and says so.
    lab.ip("addr del 10.214.0.100/24 dev zbsv0");
    assert!(!server.has_vip().expect("has_vip"));
    let report = server.sync_vip().expect("sync_vip");
    assert!(report.re_added, "{report:?}");
    assert_eq!(lab.vip_lines(), ["10.214.0.100/24 zbsv0:vip (secondary)"]);

    // Release: gone, and a late sync tick does not bring it back.
    assert!(server.clean_vip().expect("clean_vip"));
    assert!(lab.vip_lines().is_empty(), "{:?}", lab.addresses());
    assert!(!server.clean_vip().expect("clean_vip again"), "absent is fine");
    let report = server.sync_vip().expect("sync_vip after clean");
    assert!(!report.active && !report.re_added, "{report:?}");
    assert!(lab.vip_lines().is_empty(), "{:?}", lab.addresses());

    // A previous run was killed with the VIP bound: a fresh server removes the leftover.
    lab.ip("addr add 10.214.0.100/24 dev zbsv0 label zbsv0:vip");
    let restarted = lab.server(config()).expect("server");
    assert!(restarted.remove_leftover().expect("remove_leftover"));
    assert!(lab.vip_lines().is_empty(), "{:?}", lab.addresses());
    assert!(!restarted.remove_leftover().expect("remove_leftover again"));

    // The node's own address was never touched.
    assert_eq!(lab.addresses(), ["10.214.0.1/24 zbsv0"]);
}

#[test]
fn gratuitous_arp_bursts_and_refreshes() {
    let Some(lab) = Lab::create("gratuitous_arp_bursts_and_refreshes") else {
        return;
    };
    let mut config = config();
    config.garp_burst = 3;
    config.garp_second_burst_after_ms = 5000;
    config.garp_refresh_ms = 3000;
    let server = lab.server(config).expect("server");
    let capture = lab.capture();
    let quiet = Duration::from_millis(200);
    let second = Duration::from_secs(1);

    // The schedule is driven with explicit times after the takeover, so no step sleeps.
    let t0 = Instant::now();
    server.config_vip().expect("config_vip");
    assert_garps(&capture.frames(quiet), 3, "takeover burst");

    let steps = [
        (second * 3 / 2, 0, "nothing due yet"),
        (second * 7 / 2, 1, "first refresh"),
        (second * 11 / 2, 3, "second burst"),
        (second * 7, 0, "the burst restarted the refresh period"),
        (second * 9, 1, "next refresh"),
    ];
    for (offset, expected, step) in steps {
        let report = server.sync_vip_at(t0 + offset).expect(step);
        assert_eq!(report.arp_frames_sent, expected, "{step}: {report:?}");
        assert_garps(&capture.frames(quiet), expected as usize, step);
    }

    // A re-added VIP is announced again with a whole burst.
    lab.ip("addr del 10.214.0.100/24 dev zbsv0");
    let report = server.sync_vip_at(t0 + second * 19 / 2).expect("sync after removal");
    assert!(report.re_added && report.arp_frames_sent == 3, "{report:?}");
    assert_garps(&capture.frames(quiet), 3, "burst after re-add");

    // Released: silence, however much time passes.
    server.clean_vip().expect("clean_vip");
    let report = server.sync_vip_at(t0 + second * 60).expect("sync after clean");
    assert_eq!(report.arp_frames_sent, 0);
    assert_garps(&capture.frames(quiet), 0, "after clean");
}

/// The valid lifetime the kernel shows for the VIP (`None`: absent; `Some(None)`: forever).
fn vip_valid_lifetime(lab: &Lab) -> Option<Option<u32>> {
    let output = Command::new("ip")
        .args(["-n", &lab.namespace, "-4", "-o", "addr", "show", "dev", "zbsv0"])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().find(|line| line.contains("10.214.0.100/"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|word| *word == "valid_lft")?;
    let value = words.get(at + 1)?;
    Some(value.strip_suffix("sec").and_then(|seconds| seconds.parse().ok()))
}

#[test]
fn a_fenced_vip_is_renewed_without_announcing_lapses_by_itself_and_is_never_added_past_its_fence() {
    let Some(lab) = Lab::create("fenced_vip") else {
        return;
    };
    // Only the takeover bursts: every other announcement would be a renewal's.
    let mut config = config();
    config.garp_second_burst_after_ms = 0;
    config.garp_refresh_ms = 0;
    let server = lab.server(config).expect("server");
    let capture = lab.capture();
    let quiet = Duration::from_millis(200);
    let deadline = std::sync::Arc::new(parking_lot::Mutex::new(None::<Instant>));
    let read = deadline.clone();
    server.set_fence(Some(std::sync::Arc::new(move || *read.lock())));
    let set = |from_now: Option<Duration>| *deadline.lock() = from_now.map(|delay| Instant::now() + delay);

    // No contact in this term: nothing is added.
    let error = expect_error(server.config_vip(), "Fenced");
    assert!(matches!(error, VipError::Fenced(_)) && !error.is_permanent(), "{error}");
    assert!(lab.vip_lines().is_empty(), "{:?}", lab.addresses());

    // The term has begun: once the fence opens, the next sync adds the VIP with the whole seconds
    // left before the fence, and sends the takeover burst.
    set(Some(Duration::from_millis(2_900)));
    let report = server.sync_vip().expect("sync_vip adds once the fence opens");
    assert!(report.active && report.arp_frames_sent == 5, "{report:?}");
    assert_eq!(vip_valid_lifetime(&lab), Some(Some(2)), "{:?}", lab.addresses());
    assert_eq!(capture.frames(quiet).len(), 5, "the takeover burst");
    assert_eq!(server.config_vip().expect("config_vip"), VipPresence::AlreadyPresent);
    assert!(capture.frames(quiet).is_empty(), "a repeated config_vip announced the VIP");

    // Renewed: the lifetime starts anew, nothing is announced.
    std::thread::sleep(Duration::from_millis(1_100));
    set(Some(Duration::from_millis(3_900)));
    let report = server.sync_vip().expect("sync_vip renews");
    assert!(report.active && !report.re_added && report.arp_frames_sent == 0, "{report:?}");
    assert_eq!(vip_valid_lifetime(&lab), Some(Some(3)), "{:?}", lab.addresses());
    assert!(capture.frames(quiet).is_empty(), "a renewal announced the VIP");

    // The fence closes (no fresh contact): no renewal, and the kernel drops the VIP by itself
    // within its lifetime and one second of slack.
    set(Some(Duration::from_millis(500)));
    let closed_at = Instant::now();
    expect_error(server.sync_vip(), "Fenced");
    while !lab.vip_lines().is_empty() {
        assert!(closed_at.elapsed() < Duration::from_secs(6), "the VIP did not lapse: {:?}", lab.addresses());
        std::thread::sleep(Duration::from_millis(20));
    }
    let lapsed_after = closed_at.elapsed();
    assert!(lapsed_after >= Duration::from_millis(2_500), "lapsed after {lapsed_after:?}, before its lifetime");
    eprintln!("fenced_vip: the VIP lapsed {} ms after its last renewal", lapsed_after.as_millis());
    // While the fence stays closed, a sync never brings it back.
    expect_error(server.sync_vip(), "Fenced");
    assert!(lab.vip_lines().is_empty(), "{:?}", lab.addresses());

    // Fresh contact again (a live leader whose renewals were late): re-added and announced.
    set(Some(Duration::from_millis(2_500)));
    let report = server.sync_vip().expect("sync_vip re-adds");
    assert!(report.re_added, "{report:?}");
    assert_eq!(capture.frames(quiet).len(), 5, "the burst after the re-add");
    assert_eq!(vip_valid_lifetime(&lab), Some(Some(2)));

    // Released: gone, and an open fence does not bring it back.
    assert!(server.clean_vip().expect("clean_vip"));
    set(Some(Duration::from_secs(10)));
    assert!(!server.sync_vip().expect("sync after clean").active);
    assert!(lab.vip_lines().is_empty(), "{:?}", lab.addresses());

    // Unfenced: permanent, as before.
    server.set_fence(None);
    server.config_vip().expect("config_vip unfenced");
    assert_eq!(vip_valid_lifetime(&lab), Some(None), "{:?}", lab.addresses());
    server.clean_vip().expect("clean_vip");
}

/// The message of an error of the expected kind; fails the test otherwise.
fn expect_error<T: std::fmt::Debug>(result: VipResult<T>, kind: &str) -> VipError {
    let error = match result {
        Ok(value) => panic!("expected {kind}, got Ok({value:?})"),
        Err(error) => error,
    };
    let matches = match &error {
        VipError::BadRequest(_) => kind == "BadRequest",
        VipError::NotFound(_) => kind == "NotFound",
        VipError::Interface(_) => kind == "Interface",
        VipError::Fenced(_) => kind == "Fenced",
        _ => false,
    };
    assert!(matches, "expected {kind}, got {error:?}");
    error
}

#[test]
fn bad_configurations_add_nothing() {
    let Some(lab) = Lab::create("bad_configurations_add_nothing") else {
        return;
    };
    let with = |change: fn(&mut VipConfig)| {
        let mut config = config();
        change(&mut config);
        config
    };

    let error = expect_error(lab.server(with(|c| c.address = "not-an-address/24".into())), "BadRequest");
    assert!(error.is_permanent() && error.to_string().contains("vip.address"), "{error}");
    let error = expect_error(lab.server(with(|c| c.address = "10.214.0.100/33".into())), "BadRequest");
    assert!(error.to_string().contains("vip.address"), "{error}");
    let error = expect_error(lab.server(with(|c| c.label = Some("eth0:vip".into()))), "BadRequest");
    assert!(error.to_string().contains("vip.label"), "{error}");

    // No such interface: permanent, and a later sync does not add anything either.
    let missing = lab.server(with(|c| c.interface = "zbsv-nosuch".into())).expect("server");
    let error = expect_error(missing.config_vip(), "NotFound");
    assert!(error.is_permanent() && error.to_string().contains("zbsv-nosuch"), "{error}");
    assert!(!missing.sync_vip().expect("sync").active);
    assert!(!missing.has_vip().expect("has_vip"));
    assert!(!missing.remove_leftover().expect("nothing to remove"));

    // No address of zbsv0 is in the VIP's subnet: the VIP would become a primary address.
    let elsewhere = lab.server(with(|c| c.address = "10.215.0.100/24".into())).expect("server");
    let error = expect_error(elsewhere.config_vip(), "NotFound");
    assert!(error.is_permanent() && error.to_string().contains("subnet"), "{error}");

    // The VIP's address is already there with another prefix: a conflict, left untouched.
    lab.ip("addr add 10.214.0.100/32 dev zbsv0");
    let server = lab.server(config()).expect("server");
    let error = expect_error(server.config_vip(), "BadRequest");
    assert!(error.to_string().contains("another prefix"), "{error}");
    assert!(!server.clean_vip().expect("clean_vip"), "the /32 is not the VIP");
    assert_eq!(lab.vip_lines(), ["10.214.0.100/32 zbsv0"]);
    lab.ip("addr del 10.214.0.100/32 dev zbsv0");

    // Down, or without carrier: transient, nothing added.
    lab.ip("link set zbsv0 down");
    let error = expect_error(server.config_vip(), "Interface");
    assert!(!error.is_permanent() && error.to_string().contains("down"), "{error}");
    lab.ip("link set zbsv0 up");
    lab.ip("link set zbsv1 down");
    let error = expect_error(server.config_vip(), "Interface");
    assert!(!error.is_permanent() && error.to_string().contains("carrier"), "{error}");
    assert!(lab.vip_lines().is_empty(), "{:?}", lab.addresses());
    lab.ip("link set zbsv1 up");

    // Nothing anywhere in the namespace carries the VIP after all of that.
    let output = Command::new("ip").args(["-n", &lab.namespace, "-4", "-o", "addr", "show"]).output().expect("run ip");
    let all = String::from_utf8_lossy(&output.stdout);
    assert!(!all.contains("10.214.0.100") && !all.contains("10.215.0.100"), "{all}");
}

#[test]
fn an_interface_that_vanishes_while_leader_is_transient() {
    let Some(lab) = Lab::create("an_interface_that_vanishes_while_leader_is_transient") else {
        return;
    };
    let server = lab.server(config()).expect("server");
    assert_eq!(server.config_vip().expect("config_vip"), VipPresence::Added);
    // The node's own address goes: the kernel deletes the secondary VIP with it, or promotes
    // the VIP to primary when the host sets promote_secondaries (inherited by namespaces).
    lab.ip("addr del 10.214.0.1/24 dev zbsv0");
    let before = lab.vip_lines();
    let error = expect_error(server.sync_vip(), "Interface");
    assert!(!error.is_permanent() && error.to_string().contains("subnet"), "{error}");
    assert_eq!(lab.vip_lines(), before, "the VIP is never added alone");
    // The interface goes.
    lab.ip("link del zbsv0");
    let error = expect_error(server.sync_vip(), "Interface");
    assert!(!error.is_permanent() && error.to_string().contains("disappeared"), "{error}");
    assert!(!server.clean_vip().expect("clean_vip with no interface"));
}

/// A takeover that failed (the interface missing) is retried by `keep_vip` until the interface
/// comes, and not once the term ended: a released VIP never comes back from a late tick.
#[test]
fn keep_vip_retries_a_failed_takeover_until_the_term_ends() {
    let Some(lab) = Lab::create("keep_vip_retries_a_failed_takeover_until_the_term_ends") else {
        return;
    };
    let server = lab.server(VipConfig::new("10.216.0.100/24", "zbsv2")).expect("server");
    expect_error(server.config_vip(), "NotFound");
    expect_error(server.keep_vip(), "NotFound");
    assert!(!server.is_active());
    lab.ip("link add zbsv2 type veth peer name zbsv3");
    lab.ip("addr add 10.216.0.1/24 dev zbsv2");
    lab.ip("link set zbsv2 up");
    lab.ip("link set zbsv3 up");
    let report = server.keep_vip().expect("the retried takeover");
    assert!(report.active, "{report:?}");
    assert!(server.is_active() && server.has_vip().expect("has_vip"));
    // Held: keep_vip is sync_vip (the VIP removed behind its back comes back).
    lab.ip("addr del 10.216.0.100/24 dev zbsv2");
    assert!(server.keep_vip().expect("sync").re_added);
    // The term ends: nothing comes back, and a failed takeover of a new term is not retried
    // after its release either.
    assert!(server.clean_vip().expect("clean_vip"));
    assert!(!server.keep_vip().expect("after clean").active);
    assert!(!server.has_vip().expect("has_vip"));
    lab.ip("link set zbsv2 down");
    expect_error(server.config_vip(), "Interface");
    server.clean_vip().expect("clean_vip");
    lab.ip("link set zbsv2 up");
    assert!(!server.keep_vip().expect("after clean").active);
    assert!(!server.has_vip().expect("has_vip"));
}

#[test]
fn a_dropped_leader_releases_the_vip() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<VipServer>();
    let Some(lab) = Lab::create("a_dropped_leader_releases_the_vip") else {
        return;
    };
    let server = lab.server(config()).expect("server");
    server.config_vip().expect("config_vip");
    // Used from another thread than the one that built it: the sockets stay in the namespace.
    let server = std::thread::spawn(move || {
        assert!(server.has_vip().expect("has_vip"));
        server
    })
    .join()
    .expect("thread");
    assert_eq!(lab.vip_lines().len(), 1);
    drop(server);
    assert!(lab.vip_lines().is_empty(), "{:?}", lab.addresses());
    // A server that never took the VIP leaves a leftover alone on drop (remove_leftover's job).
    lab.ip("addr add 10.214.0.100/24 dev zbsv0 label zbsv0:vip");
    drop(lab.server(config()).expect("server"));
    assert_eq!(lab.vip_lines().len(), 1);
}

#[test]
fn retarget_moves_a_held_vip_and_only_records_an_idle_one() {
    use super::Retarget;
    let Some(lab) = Lab::create("retarget_moves_a_held_vip_and_only_records_an_idle_one") else {
        return;
    };
    let server = lab.server(config()).expect("server");
    let moved = VipConfig::new("10.214.0.101/24", "zbsv0");

    // Not leader: the new VIP is only recorded; nothing is added.
    assert_eq!(server.retarget(&moved).expect("retarget idle"), Retarget::Changed);
    assert_eq!(server.vip().to_string(), "10.214.0.101/24");
    assert!(vip_lines_of_any(&lab).is_empty(), "{:?}", lab.addresses());
    assert_eq!(server.retarget(&config()).expect("retarget back"), Retarget::Changed);

    // Leader: the old address goes, the new one comes, in one call.
    assert_eq!(server.config_vip().expect("config_vip"), VipPresence::Added);
    assert_eq!(vip_lines_of_any(&lab), ["10.214.0.100/24 zbsv0:vip (secondary)"]);
    assert_eq!(server.retarget(&moved).expect("retarget held"), Retarget::Moved);
    assert_eq!(vip_lines_of_any(&lab), ["10.214.0.101/24 zbsv0:vip (secondary)"]);
    assert!(server.is_active());
    assert_eq!(server.retarget(&moved).expect("same again"), Retarget::Unchanged);

    // A bad one changes nothing.
    let error = server.retarget(&VipConfig::new("10.214.0.300/24", "zbsv0")).expect_err("a bad address");
    assert!(matches!(error, VipError::BadRequest(_)), "{error:?}");
    assert_eq!(vip_lines_of_any(&lab), ["10.214.0.101/24 zbsv0:vip (secondary)"]);

    assert!(server.clean_vip().expect("clean_vip"));
    assert!(vip_lines_of_any(&lab).is_empty(), "{:?}", lab.addresses());
    assert_eq!(lab.addresses(), ["10.214.0.1/24 zbsv0"]);

    // Killed while holding the VIP set at run time: a fresh server with the file's VIP removes
    // it at start (same label), and leaves the node's own address alone.
    lab.ip("addr add 10.214.0.101/24 dev zbsv0 label zbsv0:vip");
    let restarted = lab.server(config()).expect("server");
    assert!(restarted.remove_leftover().expect("remove_leftover"));
    assert!(vip_lines_of_any(&lab).is_empty(), "{:?}", lab.addresses());
    assert_eq!(lab.addresses(), ["10.214.0.1/24 zbsv0"]);
}

/// The lines of either VIP the retarget test uses.
fn vip_lines_of_any(lab: &Lab) -> Vec<String> {
    lab.addresses().into_iter().filter(|line| line.starts_with("10.214.0.10")).collect()
}

#[test]
fn an_ipv6_vip_is_added_without_dad_and_announced_with_unsolicited_neighbour_advertisements() {
    const ETH_P_IPV6: u16 = 0x86dd;
    let Some(lab) = Lab::create("an_ipv6_vip_is_added_without_dad_and_announced") else {
        return;
    };
    lab.ip("addr add fd00:214::1/64 dev zbsv0 nodad");
    lab.ip("addr add fd00:214::2/64 dev zbsv1 nodad");
    let vip: std::net::Ipv6Addr = "fd00:214::100".parse().expect("ip");
    let fd = lab.run_inside(|| Capture::open_protocol("zbsv1", ETH_P_IPV6)).expect("open the capture socket");
    let capture = Capture { fd };
    capture.frames_where(Duration::from_millis(20), |_| false);

    let server = lab.server(VipConfig::new("fd00:214::100/64", "zbsv0")).expect("server");
    assert_eq!(server.config_vip().expect("config_vip"), VipPresence::Added);
    let output = Command::new("ip")
        .args(["-n", &lab.namespace, "-6", "-o", "addr", "show", "dev", "zbsv0"])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().find(|line| line.contains("fd00:214::100/64")).unwrap_or_else(|| panic!("no VIP: {text}"));
    assert!(!line.contains("tentative"), "the VIP waits for DAD: {line}");
    assert!(server.has_vip().expect("has_vip"));

    let advertisements = capture.frames_where(Duration::from_millis(200), |frame| {
        // Ethernet, IPv6 (next header ICMPv6 at 20), ICMPv6 type at 54, target at 62..78.
        frame.len() >= 86 && frame[12..14] == ETH_P_IPV6.to_be_bytes() && frame[20] == 58 && frame[54] == 136
    });
    assert_eq!(advertisements.len(), 5, "the takeover burst of neighbour advertisements");
    for frame in &advertisements {
        assert_eq!(frame[0..6], [0x33, 0x33, 0, 0, 0, 1], "to all nodes");
        assert_eq!(frame[6..12], INTERFACE_MAC, "from the interface");
        assert_eq!(frame[21], 255, "hop limit 255, or neighbours drop it");
        assert_eq!(frame[22..38], vip.octets(), "from the VIP");
        assert_eq!(frame[58] & 0x20, 0x20, "the Override flag");
        assert_eq!(frame[62..78], vip.octets(), "target: the VIP");
        assert_eq!(frame[78..80], [2, 1], "the target link-layer address option");
        assert_eq!(frame[80..86], INTERFACE_MAC, "at the interface's MAC");
        let parsed = etherparse::SlicedPacket::from_ethernet(frame).expect("a valid frame");
        assert!(matches!(parsed.transport, Some(etherparse::TransportSlice::Icmpv6(_))), "{parsed:?}");
    }

    assert!(server.clean_vip().expect("clean_vip"));
    assert!(!server.has_vip().expect("has_vip"));
    // Without an address of the VIP's subnet on the interface, nothing is added.
    let elsewhere = lab.server(VipConfig::new("fd00:999::100/64", "zbsv0")).expect("server");
    assert!(matches!(elsewhere.config_vip(), Err(VipError::NotFound(_))));
}
