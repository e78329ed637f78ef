//! The VIP's rtnetlink requests: read one link by name, dump the IPv4 addresses, add and delete
//! one address. Every call is a short blocking request on a socket only this module reads.
//!
//! The socket belongs to the network namespace of the thread that opened it, whichever thread
//! uses it later. Answers are matched by sequence number, so a reply left over from a request
//! that timed out is skipped rather than taken for the next one's.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope, CacheInfo};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::config::VipAddress;

/// Large enough for any dump datagram the kernel sends.
const RECEIVE_BUFFER_LEN: usize = 64 * 1024;
/// How long one answer may take; the kernel answers in microseconds, so this only bounds a
/// pathological stall.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the VIP needs to know of its interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) index: u32,
    pub(crate) flags: LinkFlags,
    /// The hardware address when the link is Ethernet-like (6 bytes).
    pub(crate) mac: Option<[u8; 6]>,
    pub(crate) ethernet: bool,
}

impl Link {
    /// Why the link cannot carry traffic now, if it cannot.
    pub(crate) fn unusable_reason(&self) -> Option<&'static str> {
        if !self.flags.contains(LinkFlags::Up) {
            Some("is administratively down")
        } else if !self.flags.contains(LinkFlags::Running) {
            Some("has no carrier")
        } else {
            None
        }
    }

    /// The MAC to announce from, when the link speaks ARP at all.
    pub(crate) fn arp_mac(&self) -> Option<[u8; 6]> {
        if !self.ethernet || self.flags.contains(LinkFlags::Noarp) {
            return None;
        }
        self.mac
    }
}

/// One IPv4 address of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Address {
    pub(crate) ip: IpAddr,
    pub(crate) prefix_len: u8,
    pub(crate) label: Option<String>,
}

/// An rtnetlink socket for requests.
pub(crate) struct RouteSocket {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl RouteSocket {
    /// Opens the socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<RouteSocket> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        set_receive_timeout(&socket, ANSWER_TIMEOUT)?;
        Ok(RouteSocket { socket, sequence: 0, buffer: vec![0; RECEIVE_BUFFER_LEN] })
    }

    /// The link called `name`; `None` when there is none.
    pub(crate) fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut request = LinkMessage::default();
        request.attributes.push(LinkAttribute::IfName(name.to_string()));
        let answers = match self.transact(RouteNetlinkMessage::GetLink(request), NLM_F_ACK) {
            Ok(answers) => answers,
            Err(error) if error.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
            Err(error) => return Err(error),
        };
        Ok(answers.into_iter().find_map(|answer| match answer {
            RouteNetlinkMessage::NewLink(link) => Some(link_of(&link)),
            _ => None,
        }))
    }

    /// Every IPv4 and IPv6 address of the interface with index `index`.
    pub(crate) fn addresses(&mut self, index: u32) -> io::Result<Vec<Address>> {
        let mut addresses = self.addresses_of(index, AddressFamily::Inet)?;
        addresses.extend(self.addresses_of(index, AddressFamily::Inet6)?);
        Ok(addresses)
    }

    fn addresses_of(&mut self, index: u32, family: AddressFamily) -> io::Result<Vec<Address>> {
        let mut request = AddressMessage::default();
        request.header.family = family;
        let answers = self.transact(RouteNetlinkMessage::GetAddress(request), NLM_F_DUMP)?;
        let mut addresses = Vec::new();
        for answer in answers {
            let RouteNetlinkMessage::NewAddress(address) = answer else {
                continue;
            };
            if address.header.index != index || address.header.family != family {
                continue;
            }
            let mut local = None;
            let mut peer = None;
            let mut label = None;
            for attribute in address.attributes {
                match attribute {
                    AddressAttribute::Local(ip) => local = Some(ip),
                    AddressAttribute::Address(ip) => peer = Some(ip),
                    AddressAttribute::Label(text) => label = Some(text),
                    _ => {}
                }
            }
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS differs from it only on
            // point-to-point links, where it names the peer.
            if let Some(ip) = local.or(peer) {
                addresses.push(Address { ip, prefix_len: address.header.prefix_len, label });
            }
        }
        Ok(addresses)
    }

    /// Adds `vip` to the interface, an IPv4 one with `label`, an IPv6 one without duplicate
    /// address detection (usable at once); `Ok(false)` when the kernel already has it. With a
    /// `lifetime` (whole seconds, at least 1) the kernel deletes the address by itself once it
    /// lapses (the fence, `fence.rs`); without one it is permanent.
    pub(crate) fn add_address(
        &mut self,
        index: u32,
        vip: VipAddress,
        label: &str,
        lifetime: Option<u32>,
    ) -> io::Result<bool> {
        let request = vip_request(index, vip, label, lifetime);
        let flags = NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        match self.transact(RouteNetlinkMessage::NewAddress(request), flags) {
            Ok(_) => Ok(true),
            Err(error) if error.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Sets the lifetime of `vip`, which must be on the interface, anew from now (`NLM_F_REPLACE`:
    /// the kernel restarts the address's age). The kernel creates an absent address all the same,
    /// so the caller renews only a VIP it has just found; everything but the lifetime is sent as
    /// `add_address` sends it, so nothing else changes.
    pub(crate) fn renew_address(&mut self, index: u32, vip: VipAddress, label: &str, lifetime: u32) -> io::Result<()> {
        let request = vip_request(index, vip, label, Some(lifetime));
        self.transact(RouteNetlinkMessage::NewAddress(request), NLM_F_ACK | NLM_F_REPLACE).map(drop)
    }

    /// Deletes `vip` (that address with that prefix) from the interface; `Ok(false)` when absent.
    pub(crate) fn delete_address(&mut self, index: u32, vip: VipAddress) -> io::Result<bool> {
        let request = address_request(index, vip);
        match self.transact(RouteNetlinkMessage::DelAddress(request), NLM_F_ACK) {
            Ok(_) => Ok(true),
            Err(error) if error.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(false),
            Err(error) if error.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Sends one request and collects its answers: up to `Done` for a dump, up to the
    /// acknowledgement otherwise. A negative acknowledgement is the kernel's error.
    fn transact(&mut self, request: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(request));
        packet.header.flags = NLM_F_REQUEST | flags;
        packet.header.sequence_number = sequence;
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send_to(&bytes, &SocketAddr::new(0, 0), 0)?;

        let mut answers = Vec::new();
        loop {
            let length = loop {
                match self.socket.recv(&mut &mut self.buffer[..], 0) {
                    Ok(length) => break length.min(self.buffer.len()),
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "the kernel did not answer in time"));
                    }
                    Err(error) => return Err(error),
                }
            };
            let mut offset = 0;
            while offset < length {
                let message: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&self.buffer[offset..length])
                        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))?;
                let message_length = message.header.length as usize;
                if message.header.sequence_number == sequence {
                    match message.payload {
                        NetlinkPayload::Done(_) => return Ok(answers),
                        NetlinkPayload::Error(error) => {
                            return match error.code {
                                None => Ok(answers),
                                Some(_) => Err(error.to_io()),
                            }
                        }
                        NetlinkPayload::Overrun(_) => {
                            return Err(io::Error::new(io::ErrorKind::InvalidData, "netlink overrun"));
                        }
                        NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                        _ => {}
                    }
                }
                if message_length == 0 {
                    break;
                }
                offset += (message_length + 3) & !3;
            }
        }
    }
}

/// The VIP as `add_address` and `renew_address` send it.
fn vip_request(index: u32, vip: VipAddress, label: &str, lifetime: Option<u32>) -> AddressMessage {
    let mut request = address_request(index, vip);
    if vip.ip.is_ipv4() {
        request.attributes.push(AddressAttribute::Label(label.to_string()));
    } else {
        request.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    if let Some(broadcast) = vip.broadcast() {
        request.attributes.push(AddressAttribute::Broadcast(broadcast));
    }
    if let Some(seconds) = lifetime {
        // Preferred as long as valid: an address past its preferred lifetime is deprecated, and an
        // IPv4 one whose preferred lifetime is infinite is not even scheduled for its expiry.
        let mut cache_info = CacheInfo::default();
        cache_info.ifa_valid = seconds.max(1);
        cache_info.ifa_preferred = seconds.max(1);
        request.attributes.push(AddressAttribute::CacheInfo(cache_info));
    }
    request
}

fn address_request(index: u32, vip: VipAddress) -> AddressMessage {
    let mut request = AddressMessage::default();
    request.header.family = if vip.ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    request.header.prefix_len = vip.prefix_len;
    request.header.scope = AddressScope::Universe;
    request.header.index = index;
    request.attributes.push(AddressAttribute::Local(vip.ip));
    request.attributes.push(AddressAttribute::Address(vip.ip));
    request
}

fn link_of(message: &LinkMessage) -> Link {
    let mac = message.attributes.iter().find_map(|attribute| match attribute {
        LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
        _ => None,
    });
    Link {
        index: message.header.index,
        flags: message.header.flags,
        mac,
        ethernet: message.header.link_layer_type == LinkLayerType::Ether,
    }
}

fn set_receive_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let value = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    // SAFETY: the descriptor is open for the socket's lifetime and `value` is a valid timeval of
    // the size passed.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&value as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
