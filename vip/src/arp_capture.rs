//! Watching ARP on an interface: a receive-only `AF_PACKET` socket bound to one interface and
//! the ARP frames it reads, parsed with `etherparse`.
//!
//! The daemon never reads ARP; this is how the failover tests (and an operator's diagnostics)
//! prove that a takeover was announced: bound to the switch's bridge, the socket sees every
//! broadcast frame any port sends, so the new leader's gratuitous ARP burst is counted as the
//! clients' switch would see it.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use etherparse::{ArpOperation, ArpPacketSlice, EtherType, Ethernet2Slice};

const ETH_P_ARP: u16 = 0x0806;

/// One IPv4-over-Ethernet ARP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpFrame {
    /// The Ethernet source address.
    pub source_mac: [u8; 6],
    /// True for a request (operation 1), false for a reply.
    pub request: bool,
    /// The sender's hardware and protocol addresses.
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    /// The target's protocol address.
    pub target_ip: Ipv4Addr,
}

impl ArpFrame {
    /// A gratuitous ARP (an announcement): the sender names itself as the target.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }

    /// Whether this frame announces `ip` at `mac` (gratuitous, from that MAC).
    pub fn announces(&self, ip: Ipv4Addr, mac: [u8; 6]) -> bool {
        self.is_gratuitous() && self.sender_ip == ip && self.sender_mac == mac && self.source_mac == mac
    }
}

/// Parses an Ethernet frame; None unless it is an IPv4-over-Ethernet ARP request or reply.
pub fn parse_arp_frame(frame: &[u8]) -> Option<ArpFrame> {
    let ethernet = Ethernet2Slice::from_slice_without_fcs(frame).ok()?;
    if ethernet.ether_type() != EtherType::ARP {
        return None;
    }
    let arp = ArpPacketSlice::from_slice(ethernet.payload_slice()).ok()?;
    if arp.proto_addr_type() != EtherType::IPV4 || arp.hw_addr_size() != 6 || arp.proto_addr_size() != 4 {
        return None;
    }
    let request = match arp.operation() {
        ArpOperation::REQUEST => true,
        ArpOperation::REPLY => false,
        _ => return None,
    };
    let ipv4 = |bytes: &[u8]| -> Option<Ipv4Addr> { Some(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)) };
    Some(ArpFrame {
        source_mac: ethernet.source(),
        request,
        sender_mac: arp.sender_hw_addr().try_into().ok()?,
        sender_ip: ipv4(arp.sender_protocol_addr())?,
        target_ip: ipv4(arp.target_protocol_addr())?,
    })
}

/// Formats a MAC address as `ip link` does (`aa:bb:cc:dd:ee:ff`).
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter().map(|byte| format!("{byte:02x}")).collect::<Vec<_>>().join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`; None when it is not six hex bytes.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text.split(':').map(|part| u8::from_str_radix(part, 16).ok()).collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// A raw packet socket that receives the ARP frames of one interface.
pub struct ArpCapture {
    fd: OwnedFd,
}

impl ArpCapture {
    /// Opens the socket in the calling thread's network namespace and binds it to `interface`;
    /// each read waits at most `read_timeout`. Needs `CAP_NET_RAW`.
    pub fn open(interface: &str, read_timeout: Duration) -> io::Result<ArpCapture> {
        let name = std::ffi::CString::new(interface).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `name` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain socket(2) call; the result is checked before it is owned.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, ETH_P_ARP.to_be() as i32) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; all zero is a valid starting value.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = ETH_P_ARP.to_be();
        address.sll_ifindex = ifindex as i32;
        // SAFETY: the address is valid for the length passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &address as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let timeout = libc::timeval {
            tv_sec: read_timeout.as_secs() as libc::time_t,
            tv_usec: read_timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: the option value is a valid timeval for its length.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ArpCapture { fd })
    }

    /// Reads the next frame: `Ok(None)` when the read timed out or the frame is not an ARP
    /// frame this module understands.
    pub fn recv(&self) -> io::Result<Option<ArpFrame>> {
        let mut buffer = [0u8; 2048];
        // SAFETY: the buffer is valid for its length.
        let received =
            unsafe { libc::recv(self.fd.as_raw_fd(), buffer.as_mut_ptr() as *mut libc::c_void, buffer.len(), 0) };
        if received < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(error),
            };
        }
        Ok(parse_arp_frame(&buffer[..received as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::garp::garp_frame;

    #[test]
    fn the_daemons_gratuitous_arp_parses_as_an_announcement() {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let vip = Ipv4Addr::new(10, 0, 0, 100);
        let frame = parse_arp_frame(&garp_frame(mac, vip)).expect("an ARP frame");
        assert!(frame.request && frame.is_gratuitous());
        assert!(frame.announces(vip, mac));
        assert!(!frame.announces(vip, [0x02, 0, 0, 0, 0, 1]));
        assert!(!frame.announces(Ipv4Addr::new(10, 0, 0, 101), mac));
    }

    #[test]
    fn other_frames_and_truncated_ones_are_not_arp() {
        let frame = garp_frame([2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(parse_arp_frame(&frame[..30]), None);
        let mut ipv4 = frame;
        ipv4[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(parse_arp_frame(&ipv4), None);
        assert_eq!(parse_arp_frame(&[]), None);
    }

    #[test]
    fn macs_round_trip_through_text() {
        let mac = [0x02, 0xab, 0x00, 0x10, 0xff, 0x09];
        assert_eq!(format_mac(mac), "02:ab:00:10:ff:09");
        assert_eq!(parse_mac("02:ab:00:10:ff:09"), Some(mac));
        assert_eq!(parse_mac("02:ab:00:10:ff"), None);
        assert_eq!(parse_mac("not a mac"), None);
    }
}
