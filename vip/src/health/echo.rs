//! The UDP echo every node answers on its data address, and the datagram both sides use.
//!
//! A probe is 24 bytes: `ZBSH`, version 1, kind (1 = request, 2 = reply), two zero bytes, then
//! the prober's round number and its random nonce (big-endian `u64`s). The responder answers a
//! well-formed request with the same datagram marked as a reply, and nothing else: a reply is
//! never answered (two responders cannot be made to ping-pong by one spoofed datagram) and the
//! answer is never larger than the request (no amplification).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use runtime::Thread;

use super::error::{HealthError, Result};
use super::realtime::raise_this_thread;
use super::stop::{StopSignal, Wake};

/// Length of every probe datagram.
pub(crate) const PROBE_LEN: usize = 24;
const MAGIC: &[u8; 4] = b"ZBSH";
const VERSION: u8 = 1;
const KIND_REQUEST: u8 = 1;
const KIND_REPLY: u8 = 2;

/// The content of a probe datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe {
    pub(crate) is_reply: bool,
    pub(crate) round: u64,
    pub(crate) nonce: u64,
}

impl Probe {
    pub(crate) fn encode(&self) -> [u8; PROBE_LEN] {
        let mut datagram = [0u8; PROBE_LEN];
        datagram[..4].copy_from_slice(MAGIC);
        datagram[4] = VERSION;
        datagram[5] = if self.is_reply { KIND_REPLY } else { KIND_REQUEST };
        datagram[8..16].copy_from_slice(&self.round.to_be_bytes());
        datagram[16..24].copy_from_slice(&self.nonce.to_be_bytes());
        datagram
    }

    /// Parses a datagram; anything that is not exactly a probe is `None`.
    pub(crate) fn decode(datagram: &[u8]) -> Option<Probe> {
        let datagram: &[u8; PROBE_LEN] = datagram.try_into().ok()?;
        if &datagram[..4] != MAGIC || datagram[4] != VERSION || datagram[6..8] != [0, 0] {
            return None;
        }
        let is_reply = match datagram[5] {
            KIND_REQUEST => false,
            KIND_REPLY => true,
            _ => return None,
        };
        let round = u64::from_be_bytes(datagram[8..16].try_into().ok()?);
        let nonce = u64::from_be_bytes(datagram[16..24].try_into().ok()?);
        Some(Probe { is_reply, round, nonce })
    }
}

/// Answers probes on one address, on its own thread, until stopped or dropped (which joins it).
pub struct EchoResponder {
    local_addr: SocketAddr,
    stop: StopSignal,
    thread: Option<Thread<()>>,
}

impl EchoResponder {
    /// Binds `addr` (port 0 picks a free port, see [`local_addr`]) and starts answering.
    ///
    /// The socket is created on the calling thread, so it lives in the caller's network
    /// namespace.
    ///
    /// [`local_addr`]: EchoResponder::local_addr
    pub fn start(addr: SocketAddr) -> Result<EchoResponder> {
        EchoResponder::start_with_priority(addr, 0)
    }

    /// Like `start`, its thread at `SCHED_FIFO` `realtime_priority` (0: ordinary; refused
    /// quietly, see `realtime`).
    pub fn start_with_priority(addr: SocketAddr, realtime_priority: u8) -> Result<EchoResponder> {
        let bind_error = |source| HealthError::Bind { what: "echo responder", addr, source };
        let socket = UdpSocket::bind(addr).map_err(bind_error)?;
        socket.set_nonblocking(true).map_err(bind_error)?;
        let local_addr = socket.local_addr().map_err(bind_error)?;
        let stop = StopSignal::new().map_err(HealthError::io("create the echo responder's stop event"))?;
        let thread_stop = stop.clone();
        let thread = Thread::spawn("zbs-health-echo", move || {
            raise_this_thread(realtime_priority, "echo responder");
            answer_probes(&socket, &thread_stop)
        })
        .map_err(HealthError::io("start the echo responder thread"))?;
        tracing::debug!(%local_addr, "health echo responder started");
        Ok(EchoResponder { local_addr, stop, thread: Some(thread) })
    }

    /// The address it answers on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops answering and joins the thread; the socket is closed when this returns. Idempotent.
    pub fn stop(&mut self) {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            if let Err(error) = thread.join() {
                tracing::error!(%error, "the health echo responder thread failed");
            }
        }
    }
}

impl Drop for EchoResponder {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer_probes(socket: &UdpSocket, stop: &StopSignal) {
    let local_addr = socket.local_addr().ok();
    // Larger than a probe so an oversized datagram is seen as such and ignored.
    let mut buffer = [0u8; 64];
    loop {
        match stop.wait(Some(socket.as_raw_fd()), Instant::now() + Duration::from_secs(3600)) {
            Ok(Wake::Stopped) => return,
            Ok(Wake::Readable | Wake::TimedOut) => {}
            Err(error) => {
                tracing::error!(%error, "health echo responder cannot wait for its socket");
                if !stop.sleep_until(Instant::now() + Duration::from_millis(100)) {
                    return;
                }
                continue;
            }
        }
        // Drains everything queued before waiting again.
        loop {
            let (length, from) = match socket.recv_from(&mut buffer) {
                Ok(received) => received,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // ICMP errors queued on the socket; nothing to answer.
                    tracing::debug!(%error, "health echo responder receive error");
                    continue;
                }
            };
            let Some(probe) = Probe::decode(&buffer[..length]) else { continue };
            if probe.is_reply || from.port() == 0 || Some(from) == local_addr {
                continue;
            }
            let reply = Probe { is_reply: true, ..probe }.encode();
            if let Err(error) = socket.send_to(&reply, from) {
                tracing::debug!(%error, %from, "health echo responder cannot answer");
            }
        }
    }
}
