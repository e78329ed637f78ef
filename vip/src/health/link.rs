//! Following the data interface's link state through rtnetlink (keepalived's
//! `track_interface`): the link going down, losing its carrier, being renamed away or vanishing
//! is reported at once, and the monitor turns invalid without waiting for `fall` rounds.
//!
//! A link counts as up when it is administratively up (`IFF_UP`) and has its carrier
//! (`IFF_RUNNING`). The watcher subscribes to link notifications before it asks for the current
//! state, so no change can fall between the two; when the kernel drops notifications (a full
//! socket buffer, `ENOBUFS`) it asks for the whole state again.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use runtime::Thread;

use super::error::{HealthError, Result};
use super::stop::{StopSignal, Wake};

/// The rtnetlink multicast group of link changes (`RTMGRP_LINK`).
const RTMGRP_LINK: u32 = 1;
/// Large enough for a dump datagram of many links with all their attributes.
const RECEIVE_BUFFER_LEN: usize = 64 * 1024;

/// The link state as the watcher reports it: `None` when up, else why it is not.
pub(crate) type LinkDown = Option<String>;

/// Watches one interface, by name, on its own thread; reports every change through `report`.
pub(crate) struct LinkWatcher {
    thread: Option<Thread<()>>,
    stop: StopSignal,
}

impl LinkWatcher {
    /// Opens the netlink socket on the calling thread (so in the caller's network namespace),
    /// reads the current state, reports it, and starts following changes.
    pub(crate) fn start<F>(interface: &str, report: F) -> Result<LinkWatcher>
    where
        F: FnMut(LinkDown) + Send + 'static,
    {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(HealthError::netlink("open a socket"))?;
        socket.bind(&SocketAddr::new(0, RTMGRP_LINK)).map_err(HealthError::netlink("subscribe to link changes"))?;
        // Room for a burst of notifications on a host with many interfaces; a smaller default
        // only means an occasional full re-read (ENOBUFS), so a failure here is not fatal.
        if let Err(error) = socket.set_rx_buf_sz(1 << 20) {
            tracing::debug!(%error, "cannot enlarge the netlink receive buffer");
        }
        socket.set_non_blocking(true).map_err(HealthError::netlink("make the socket non-blocking"))?;
        let stop = StopSignal::new().map_err(HealthError::io("create the link watcher's stop event"))?;
        let mut state = WatchState::new(interface.to_string(), report);
        state.request_dump(&socket).map_err(HealthError::netlink("ask for the links"))?;
        // The first answer is read here, so the monitor knows the link's state when `start`
        // returns and a link that is already down is reported before any probe round.
        state.read_until_dump_done(&socket, Instant::now() + Duration::from_secs(5))?;
        let thread_stop = stop.clone();
        let thread = Thread::spawn("zbs-health-link", move || state.follow(&socket, &thread_stop))
            .map_err(HealthError::io("start the link watcher thread"))?;
        Ok(LinkWatcher { thread: Some(thread), stop })
    }

    /// Stops following and joins the thread. Idempotent.
    pub(crate) fn stop(&mut self) {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            if let Err(error) = thread.join() {
                tracing::error!(%error, "the link watcher thread failed");
            }
        }
    }
}

impl Drop for LinkWatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

struct WatchState<F> {
    interface: String,
    /// The kernel's index of the interface, once seen; a link with this index but another name
    /// means the interface was renamed away.
    index: Option<u32>,
    /// A dump was asked for and its `Done` has not come yet.
    dump_pending: bool,
    /// The interface appeared in the pending dump.
    seen_in_dump: bool,
    /// The last reported state; `None` before the first report.
    reported: Option<LinkDown>,
    report: F,
    buffer: Vec<u8>,
}

impl<F: FnMut(LinkDown)> WatchState<F> {
    fn new(interface: String, report: F) -> WatchState<F> {
        WatchState {
            interface,
            index: None,
            dump_pending: false,
            seen_in_dump: false,
            reported: None,
            report,
            buffer: vec![0; RECEIVE_BUFFER_LEN],
        }
    }

    /// Asks for every link; the answer is handled like notifications, and an interface missing
    /// from it is reported gone.
    fn request_dump(&mut self, socket: &Socket) -> io::Result<()> {
        request_link_dump(socket)?;
        self.dump_pending = true;
        self.seen_in_dump = false;
        Ok(())
    }

    fn read_until_dump_done(&mut self, socket: &Socket, deadline: Instant) -> Result<()> {
        let read_error = |source| HealthError::NetLink { context: "read the links", source };
        while self.dump_pending {
            if Instant::now() >= deadline {
                let source = io::Error::new(io::ErrorKind::TimedOut, "no complete answer within 5 s");
                return Err(read_error(source));
            }
            match receive(socket, &mut self.buffer) {
                Ok(Some(length)) => self.handle_datagram(length).map_err(read_error)?,
                Ok(None) => wait_readable(socket, Duration::from_millis(50)),
                Err(source) => return Err(read_error(source)),
            }
        }
        Ok(())
    }

    fn follow(&mut self, socket: &Socket, stop: &StopSignal) {
        loop {
            match stop.wait(Some(socket.as_raw_fd()), Instant::now() + Duration::from_secs(3600)) {
                Ok(Wake::Stopped) => return,
                Ok(Wake::TimedOut) => continue,
                Ok(Wake::Readable) => {}
                Err(error) => {
                    tracing::error!(%error, "link watcher cannot wait for its netlink socket");
                    if !stop.sleep_until(Instant::now() + Duration::from_millis(100)) {
                        return;
                    }
                    continue;
                }
            }
            loop {
                let result = match receive(socket, &mut self.buffer) {
                    Ok(Some(length)) => self.handle_datagram(length),
                    Ok(None) => break,
                    Err(error) => Err(error),
                };
                match result {
                    Ok(()) => {}
                    Err(error) if error.raw_os_error() == Some(libc::ENOBUFS) => {
                        // Notifications were dropped: the only safe state is a fresh dump.
                        tracing::warn!("link notifications were lost; reading the links again");
                        if let Err(error) = self.request_dump(socket) {
                            tracing::error!(%error, "cannot ask for the links again");
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, "link watcher cannot read its netlink socket");
                        break;
                    }
                }
            }
        }
    }

    fn handle_datagram(&mut self, length: usize) -> io::Result<()> {
        for message in parse_messages(&self.buffer[..length]) {
            match message {
                Parsed::Link { new, link } => {
                    if self.dump_pending && new && link_name(&link) == Some(self.interface.as_str()) {
                        self.seen_in_dump = true;
                    }
                    self.handle_link(new, &link);
                }
                Parsed::Done => {
                    if self.dump_pending && !self.seen_in_dump {
                        self.index = None;
                        let reason = format!("data interface {} does not exist", self.interface);
                        self.set(Some(reason));
                    }
                    self.dump_pending = false;
                }
                Parsed::Error(error) => return Err(error),
                Parsed::Other => {}
            }
        }
        Ok(())
    }

    fn handle_link(&mut self, new: bool, link: &LinkMessage) {
        let index = link.header.index;
        let is_ours = link_name(link) == Some(self.interface.as_str());
        if !new {
            if is_ours || self.index == Some(index) {
                self.index = None;
                self.set(Some(format!("data interface {} was removed", self.interface)));
            }
            return;
        }
        if is_ours {
            self.index = Some(index);
            self.set(link_down_reason(&self.interface, link.header.flags));
        } else if self.index == Some(index) {
            self.index = None;
            let new_name = link_name(link).unwrap_or("?");
            self.set(Some(format!("data interface {} was renamed to {new_name}", self.interface)));
        }
    }

    fn set(&mut self, down: LinkDown) {
        if self.reported.as_ref() == Some(&down) {
            return;
        }
        match &down {
            Some(reason) => tracing::warn!(interface = %self.interface, %reason, "data link is down"),
            None => tracing::info!(interface = %self.interface, "data link is up"),
        }
        self.reported = Some(down.clone());
        (self.report)(down);
    }
}

fn link_down_reason(interface: &str, flags: LinkFlags) -> LinkDown {
    if !flags.contains(LinkFlags::Up) {
        Some(format!("data interface {interface} is administratively down"))
    } else if !flags.contains(LinkFlags::Running) {
        Some(format!("data interface {interface} has no carrier"))
    } else {
        None
    }
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|attribute| match attribute {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

/// Finds the interface that carries `ip`: the one with exactly that address, else the one whose
/// subnet holds it with the longest prefix (so 127.0.0.2, never assigned, maps to `lo`). Asked
/// on the calling thread's network namespace.
pub(crate) fn interface_of_address(ip: IpAddr) -> Result<String> {
    let socket = Socket::new(NETLINK_ROUTE).map_err(HealthError::netlink("open a socket"))?;
    let addresses = dump(&socket, RouteNetlinkMessage::GetAddress(AddressMessage::default()))
        .map_err(HealthError::netlink("read the addresses"))?;
    let mut best: Option<(u8, u32)> = None;
    for message in addresses {
        let RouteNetlinkMessage::NewAddress(address) = message else { continue };
        let prefix_len = address.header.prefix_len;
        for attribute in &address.attributes {
            let (AddressAttribute::Local(candidate) | AddressAttribute::Address(candidate)) = attribute else {
                continue;
            };
            let score = if *candidate == ip {
                u8::MAX
            } else if same_subnet(*candidate, ip, prefix_len) {
                prefix_len
            } else {
                continue;
            };
            if best.is_none_or(|(best_score, _)| score > best_score) {
                best = Some((score, address.header.index));
            }
        }
    }
    let Some((_, index)) = best else { return Err(HealthError::NoInterface { ip }) };
    let links = dump(&socket, RouteNetlinkMessage::GetLink(LinkMessage::default()))
        .map_err(HealthError::netlink("read the links"))?;
    links
        .iter()
        .find_map(|message| match message {
            RouteNetlinkMessage::NewLink(link) if link.header.index == index => link_name(link).map(str::to_string),
            _ => None,
        })
        .ok_or(HealthError::NoInterface { ip })
}

fn same_subnet(a: IpAddr, b: IpAddr, prefix_len: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let prefix_len = u32::from(prefix_len.min(32));
            let mask = if prefix_len == 0 { 0 } else { u32::MAX << (32 - prefix_len) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let prefix_len = u32::from(prefix_len.min(128));
            let mask = if prefix_len == 0 { 0 } else { u128::MAX << (128 - prefix_len) };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

fn request_link_dump(socket: &Socket) -> io::Result<()> {
    send_dump_request(socket, RouteNetlinkMessage::GetLink(LinkMessage::default()))
}

fn send_dump_request(socket: &Socket, request: RouteNetlinkMessage) -> io::Result<()> {
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(request));
    packet.header.flags = NLM_F_DUMP | NLM_F_REQUEST;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buffer = vec![0; packet.buffer_len()];
    packet.serialize(&mut buffer);
    let kernel = SocketAddr::new(0, 0);
    socket.send_to(&buffer, &kernel, 0)?;
    Ok(())
}

/// A blocking request/dump on a socket nobody else reads: every message until `Done`.
fn dump(socket: &Socket, request: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
    send_dump_request(socket, request)?;
    let mut buffer = vec![0; RECEIVE_BUFFER_LEN];
    let mut messages = Vec::new();
    loop {
        let length = socket.recv(&mut &mut buffer[..], 0)?;
        let length = length.min(buffer.len());
        let mut offset = 0;
        while offset < length {
            let message: NetlinkMessage<RouteNetlinkMessage> = NetlinkMessage::deserialize(&buffer[offset..length])
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))?;
            let message_length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(messages),
                NetlinkPayload::Error(error) if error.code.is_some() => return Err(error.to_io()),
                NetlinkPayload::InnerMessage(inner) => messages.push(inner),
                _ => {}
            }
            if message_length == 0 {
                break;
            }
            offset += align4(message_length);
        }
    }
}

enum Parsed {
    Link { new: bool, link: LinkMessage },
    Done,
    Error(io::Error),
    Other,
}

/// Reads one datagram without blocking: `Ok(None)` when nothing is queued.
fn receive(socket: &Socket, buffer: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match socket.recv(&mut &mut buffer[..], 0) {
            Ok(length) => return Ok(Some(length.min(buffer.len()))),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
}

/// Splits one datagram into messages; a malformed one ends the datagram (logged), never panics.
fn parse_messages(datagram: &[u8]) -> Vec<Parsed> {
    let mut parsed = Vec::new();
    let mut offset = 0;
    while offset < datagram.len() {
        let message: NetlinkMessage<RouteNetlinkMessage> = match NetlinkMessage::deserialize(&datagram[offset..]) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "cannot parse a netlink message; skipping the rest of the datagram");
                break;
            }
        };
        let message_length = message.header.length as usize;
        parsed.push(match message.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => Parsed::Link { new: true, link },
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => Parsed::Link { new: false, link },
            NetlinkPayload::Done(_) => Parsed::Done,
            NetlinkPayload::Error(error) if error.code.is_some() => Parsed::Error(error.to_io()),
            _ => Parsed::Other,
        });
        if message_length == 0 {
            break;
        }
        offset += align4(message_length);
    }
    parsed
}

fn align4(length: usize) -> usize {
    (length + 3) & !3
}

fn wait_readable(socket: &Socket, timeout: Duration) {
    let mut fds = [libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `fds` is a live array of one pollfd. The result only decides when to read again.
    unsafe {
        libc::poll(fds.as_mut_ptr(), 1, timeout_ms);
    }
}

#[cfg(test)]
mod tests;
