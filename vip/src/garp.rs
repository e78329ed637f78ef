//! Gratuitous ARP: the 42-byte frame, the raw `AF_PACKET` socket that sends it, and the schedule
//! of bursts and refreshes while leader.
//!
//! The frame is an ARP request announcing the VIP (RFC 5227's "ARP announcement", what
//! keepalived sends): broadcast destination, the interface's MAC as source and sender hardware
//! address, the VIP as both sender and target protocol address, a zero target hardware address.
//! Hosts and switches that already have an entry for the VIP update it to the new MAC; Linux
//! peers ignore an update that comes within `locktime` (1 s) of the last one, which is why one
//! burst is not enough and a second burst and periodic refreshes follow.
//!
//! The schedule is keepalived's and kube-vip's together: a burst of `garp_burst` frames on
//! takeover (and whenever the VIP had to be re-added), a second burst
//! `garp_second_burst_after_ms` later, then one frame every `garp_refresh_ms` while leader.
//! A burst is sent back to back (no sleep inside a call); a send that fails leaves the
//! announcement owed, so the next call sends it again.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Length of an Ethernet frame carrying an IPv4-over-Ethernet ARP packet, without padding.
pub(crate) const FRAME_LEN: usize = 42;
const BROADCAST_MAC: [u8; 6] = [0xff; 6];
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ARP_HARDWARE_ETHERNET: u16 = 1;
const ARP_OP_REQUEST: u16 = 1;

/// The gratuitous ARP announcing `vip` at `mac`.
pub(crate) fn garp_frame(mac: [u8; 6], vip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut frame = [0u8; FRAME_LEN];
    // Ethernet header.
    frame[0..6].copy_from_slice(&BROADCAST_MAC);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    // ARP packet.
    frame[14..16].copy_from_slice(&ARP_HARDWARE_ETHERNET.to_be_bytes());
    frame[16..18].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    frame[18] = 6;
    frame[19] = 4;
    frame[20..22].copy_from_slice(&ARP_OP_REQUEST.to_be_bytes());
    frame[22..28].copy_from_slice(&mac);
    frame[28..32].copy_from_slice(&vip.octets());
    // Target hardware address: zero, as RFC 5227 asks of an announcement.
    frame[38..42].copy_from_slice(&vip.octets());
    frame
}

/// The frame announcing `vip` at `mac`: a gratuitous ARP for IPv4, an unsolicited neighbour
/// advertisement for IPv6.
pub(crate) fn announcement_frame(mac: [u8; 6], vip: IpAddr) -> Vec<u8> {
    match vip {
        IpAddr::V4(vip) => garp_frame(mac, vip).to_vec(),
        IpAddr::V6(vip) => unsolicited_na_frame(mac, vip),
    }
}

/// The IPv6 counterpart of a gratuitous ARP (RFC 4861 section 7.2.6): a neighbour advertisement
/// from the VIP to all nodes (`ff02::1`, Ethernet `33:33:00:00:00:01`), hop limit 255, with the
/// Override flag and the target link-layer address option, so that neighbours replace a cached
/// entry with the new MAC. Built (checksums included) with `etherparse`.
pub(crate) fn unsolicited_na_frame(mac: [u8; 6], vip: Ipv6Addr) -> Vec<u8> {
    const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
    const TYPE_NEIGHBOUR_ADVERTISEMENT: u8 = 136;
    const FLAG_OVERRIDE: u8 = 0x20;
    const OPTION_TARGET_LINK_LAYER_ADDRESS: u8 = 2;
    let builder = etherparse::PacketBuilder::ethernet2(mac, ALL_NODES_MAC)
        .ipv6(vip.octets(), ALL_NODES.octets(), 255)
        .icmpv6_raw(TYPE_NEIGHBOUR_ADVERTISEMENT, 0, [FLAG_OVERRIDE, 0, 0, 0]);
    let mut payload = Vec::with_capacity(24);
    payload.extend_from_slice(&vip.octets());
    // The option's length is in units of 8 bytes: type, length and the 6-byte MAC.
    payload.extend_from_slice(&[OPTION_TARGET_LINK_LAYER_ADDRESS, 1]);
    payload.extend_from_slice(&mac);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    // Writing into a Vec cannot fail, and the payload is far below any length limit.
    let _ = builder.write(&mut frame, &payload);
    frame
}

/// A send-only raw packet socket (protocol 0: the kernel queues nothing to it).
pub(crate) struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens the socket in the calling thread's network namespace; needs `CAP_NET_RAW`.
    pub(crate) fn open() -> io::Result<PacketSocket> {
        // SAFETY: plain socket(2) call; the result is checked before it is owned.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(PacketSocket { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Sends one Ethernet frame (header included) out of the interface with index `ifindex`.
    pub(crate) fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        let ifindex = i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
        if frame.len() < 14 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: sockaddr_ll is plain data; all zero is a valid starting value.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        // The frame's own EtherType (network order already) and destination.
        address.sll_protocol = u16::from_ne_bytes([frame[12], frame[13]]);
        address.sll_ifindex = ifindex;
        address.sll_halen = 6;
        address.sll_addr[..6].copy_from_slice(&frame[..6]);
        loop {
            // SAFETY: the descriptor is open, `frame` and `address` are valid for the lengths
            // passed.
            let sent = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&address as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if sent >= 0 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

/// One announcement the schedule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Announcement {
    /// The burst owed at takeover or after a re-add: `count` frames.
    FirstBurst(u32),
    /// The second burst, `count` frames.
    SecondBurst(u32),
    /// One refresh frame.
    Refresh,
}

impl Announcement {
    pub(crate) fn frames(self) -> u32 {
        match self {
            Announcement::FirstBurst(count) | Announcement::SecondBurst(count) => count,
            Announcement::Refresh => 1,
        }
    }
}

/// When the next announcements are due. Pure: the caller passes the time.
#[derive(Debug, Clone)]
pub(crate) struct AnnounceSchedule {
    burst: u32,
    second_burst_after: Option<Duration>,
    refresh: Option<Duration>,
    first_burst_owed: bool,
    second_burst_at: Option<Instant>,
    refresh_at: Option<Instant>,
}

impl AnnounceSchedule {
    pub(crate) fn new(burst: u32, second_burst_after: Option<Duration>, refresh: Option<Duration>) -> AnnounceSchedule {
        AnnounceSchedule {
            burst,
            second_burst_after,
            refresh,
            first_burst_owed: false,
            second_burst_at: None,
            refresh_at: None,
        }
    }

    /// The VIP was just taken over or re-added: a first burst is owed now, the rest follows it.
    pub(crate) fn start(&mut self) {
        self.first_burst_owed = true;
        self.second_burst_at = None;
        self.refresh_at = None;
    }

    /// No longer leader: nothing is owed.
    pub(crate) fn stop(&mut self) {
        self.first_burst_owed = false;
        self.second_burst_at = None;
        self.refresh_at = None;
    }

    /// The announcement due at `now`, if any; the first burst before the second, the second
    /// before a refresh.
    pub(crate) fn due(&self, now: Instant) -> Option<Announcement> {
        if self.first_burst_owed {
            Some(Announcement::FirstBurst(self.burst))
        } else if self.second_burst_at.is_some_and(|at| at <= now) {
            Some(Announcement::SecondBurst(self.burst))
        } else if self.refresh_at.is_some_and(|at| at <= now) {
            Some(Announcement::Refresh)
        } else {
            None
        }
    }

    /// When the next announcement falls due; `None` when nothing is scheduled.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        if self.first_burst_owed {
            return Some(Instant::now());
        }
        match (self.second_burst_at, self.refresh_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `announcement` was sent at `now`: schedule what follows it.
    pub(crate) fn sent(&mut self, announcement: Announcement, now: Instant) {
        match announcement {
            Announcement::FirstBurst(_) => {
                self.first_burst_owed = false;
                self.second_burst_at = self.second_burst_after.map(|after| now + after);
            }
            Announcement::SecondBurst(_) => self.second_burst_at = None,
            Announcement::Refresh => {}
        }
        // Every announcement restarts the refresh period: a refresh right after a burst adds
        // nothing.
        self.refresh_at = self.refresh.map(|every| now + every);
    }
}

#[cfg(test)]
mod tests;
