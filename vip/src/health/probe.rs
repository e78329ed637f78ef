//! The `probe` source's prober: every round it sends one echo request to each peer's data
//! address and counts the round good when at least one peer answers in time.
//!
//! It runs on its own thread (blocking socket work never sits on a coroutine context). The peer
//! list can change at any time; it is read at the start of every round. Until the list is known
//! no round is recorded (the state stays unknown); an empty list is a cluster of one node, which
//! is always valid.
//!
//! # Detection time
//!
//! With the defaults (`interval_ms` 200, `timeout_ms` 100, `fall` 3) a data network that stops
//! answering is declared invalid between `(fall - 1) × interval + timeout` = 500 ms and
//! `fall × interval + timeout` = 700 ms after the failure; recovery takes `rise` (5) good
//! rounds, about 1 s. A link that goes down is reported by the link watcher within
//! milliseconds, without waiting for rounds.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use runtime::Thread;

use super::echo::Probe;
use super::error::{HealthError, Result};
use super::flag::Shared;
use super::peer_reach::PeerReach;
use super::realtime::raise_this_thread;
use super::rounds::spawn_rounds;
use super::state::HealthSample;
use super::stop::{StopSignal, Wake};

/// The peer list shared between the monitor (`set_peers`) and the prober thread. `None` until
/// the daemon has told who the peers are.
pub(crate) type PeerList = Arc<Mutex<Option<Vec<SocketAddr>>>>;

/// What the prober needs, besides the shared state.
pub(crate) struct ProberSettings {
    pub(crate) bind_ip: IpAddr,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    /// Whom the rounds reach, kept for `HealthMonitor::peer_reach`.
    pub(crate) reach: PeerReach,
    /// `health.realtime_priority` for the round thread (0: ordinary).
    pub(crate) realtime_priority: u8,
}

/// Binds the prober's socket on the calling thread (so in the caller's network namespace) and
/// starts its thread.
pub(crate) fn start_prober(
    shared: Arc<Shared>,
    peers: PeerList,
    settings: ProberSettings,
    stop: StopSignal,
) -> Result<Thread<()>> {
    let addr = SocketAddr::new(settings.bind_ip, 0);
    let bind_error = |source| HealthError::Bind { what: "prober", addr, source };
    // Bound to the data address so probes leave from it and the peers answer to it.
    let socket = UdpSocket::bind(addr).map_err(bind_error)?;
    socket.set_nonblocking(true).map_err(bind_error)?;
    let mut prober = Prober {
        socket,
        nonce: random_nonce(),
        round: 0,
        timeout: settings.timeout,
        reachable: HashMap::new(),
        reach: settings.reach,
    };
    let mut priority_to_raise = Some(settings.realtime_priority);
    spawn_rounds("zbs-health-prb", shared, settings.interval, stop, move |stop| {
        if let Some(priority) = priority_to_raise.take() {
            raise_this_thread(priority, "prober");
        }
        let peer_list = peers.lock().clone();
        prober.run_round(&peer_list?, stop)
    })
}

struct Prober {
    socket: UdpSocket,
    nonce: u64,
    round: u64,
    timeout: Duration,
    /// Each peer's reachability in its latest round, to log changes once.
    reachable: HashMap<SocketAddr, bool>,
    /// Each peer's silence and since when, for the early take-over.
    reach: PeerReach,
}

impl Prober {
    /// One round; `None` when stopped meanwhile.
    fn run_round(&mut self, peers: &[SocketAddr], stop: &StopSignal) -> Option<HealthSample> {
        if peers.is_empty() {
            self.reachable.clear();
            self.reach.record_round(&[], |_| true, Instant::now());
            return Some(HealthSample::Alone);
        }
        self.round += 1;
        let round_started = Instant::now();
        let deadline = round_started + self.timeout;
        let request = Probe { is_reply: false, round: self.round, nonce: self.nonce }.encode();
        let mut first_error: Option<String> = None;
        for peer in peers {
            if let Err(error) = self.socket.send_to(&request, peer) {
                first_error.get_or_insert_with(|| format!("send to {peer}: {error}"));
            }
        }
        let waiting_for: HashSet<SocketAddr> = peers.iter().copied().collect();
        let mut answered: HashSet<SocketAddr> = HashSet::new();
        while answered.len() < waiting_for.len() {
            match stop.wait(Some(self.socket.as_raw_fd()), deadline) {
                Ok(Wake::Stopped) => return None,
                Ok(Wake::TimedOut) => break,
                Ok(Wake::Readable) => self.receive_replies(&waiting_for, &mut answered, &mut first_error),
                Err(error) => {
                    first_error.get_or_insert_with(|| format!("wait for answers: {error}"));
                    break;
                }
            }
        }
        self.log_reachability(peers, &answered);
        self.reach.record_round(peers, |peer| answered.contains(peer), round_started);
        if answered.is_empty() {
            let detail = first_error.map(|error| format!(" ({error})")).unwrap_or_default();
            let n_peers = waiting_for.len();
            let timeout_ms = self.timeout.as_millis();
            Some(HealthSample::Bad(format!(
                "none of {n_peers} peers answered the echo probe within {timeout_ms} ms{detail}"
            )))
        } else {
            Some(HealthSample::Good)
        }
    }

    fn receive_replies(
        &mut self,
        waiting_for: &HashSet<SocketAddr>,
        answered: &mut HashSet<SocketAddr>,
        first_error: &mut Option<String>,
    ) {
        let mut buffer = [0u8; 64];
        loop {
            match self.socket.recv_from(&mut buffer) {
                Ok((length, from)) => {
                    let Some(reply) = Probe::decode(&buffer[..length]) else { continue };
                    // Answers to earlier rounds, or from addresses that are not peers, prove
                    // nothing about this round.
                    if reply.is_reply
                        && reply.round == self.round
                        && reply.nonce == self.nonce
                        && waiting_for.contains(&from)
                    {
                        answered.insert(from);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    first_error.get_or_insert_with(|| format!("receive: {error}"));
                }
            }
        }
    }

    fn log_reachability(&mut self, peers: &[SocketAddr], answered: &HashSet<SocketAddr>) {
        self.reachable.retain(|peer, _| peers.contains(peer));
        for peer in peers {
            let now_reachable = answered.contains(peer);
            match self.reachable.insert(*peer, now_reachable) {
                Some(before) if before != now_reachable => {
                    if now_reachable {
                        tracing::info!(%peer, "health peer answers again");
                    } else {
                        tracing::info!(%peer, "health peer stopped answering");
                    }
                }
                Some(_) => {}
                None => tracing::debug!(%peer, reachable = now_reachable, "health peer probed for the first time"),
            }
        }
    }
}

/// A per-process random number, so that replies meant for another prober (an earlier process
/// with the same address and port) are not counted.
fn random_nonce() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests;
