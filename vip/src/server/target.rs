//! What `VipServer` does to one VIP on its interface under the server's lock: take it (add,
//! renew, announce), keep it, find it among the interface's addresses, delete it. Every function
//! here is a few short netlink or packet calls on the sockets in `Inner`.

use std::time::Instant;

use super::{Inner, SyncReport, Target, VipPresence};
use crate::config::VipAddress;
use crate::error::{VipError, VipResult};
use crate::garp::announcement_frame;
use crate::netlink::{Address, Link};

impl Target {
    pub(super) fn config_vip(&self, inner: &mut Inner, now: Instant) -> VipResult<VipPresence> {
        let link = match self.read_link(inner)? {
            Some(link) => link,
            None => {
                return Err(VipError::NotFound(format!(
                    "vip.interface: interface {:?} does not exist on this node",
                    self.config.interface
                )))
            }
        };
        self.check_usable(&link)?;
        let addresses = self.read_addresses(inner, &link)?;
        let present = self.find_vip(&addresses)?;
        if !self.has_subnet_address(&addresses) {
            return Err(VipError::NotFound(self.no_subnet_message()));
        }
        let presence = if present {
            self.renew(inner, &link)?;
            VipPresence::AlreadyPresent
        } else {
            if let Err(error) = self.add(inner, &link) {
                if matches!(error, VipError::Fenced(_)) && !inner.active {
                    // The term has begun but its fence is not open yet (no contact confirmed on
                    // the leading session so far): `sync_vip` adds the VIP, with the takeover
                    // burst, once it opens.
                    inner.active = true;
                    inner.awaiting_fence = true;
                    inner.schedule.start();
                }
                return Err(error);
            }
            tracing::info!(service = %self.config.service, vip = %self.vip, interface = %self.config.interface, label = %self.label, "VIP added");
            VipPresence::Added
        };
        inner.awaiting_fence = false;
        if !inner.active {
            inner.active = true;
            inner.schedule.start();
        }
        self.announce(inner, &link, now)?;
        Ok(presence)
    }

    pub(super) fn sync_vip_at(&self, inner: &mut Inner, now: Instant) -> VipResult<SyncReport> {
        if !inner.active {
            return Ok(SyncReport::default());
        }
        let interface = &self.config.interface;
        let link = match self.read_link(inner)? {
            Some(link) => link,
            None => return Err(VipError::Interface(format!("interface {interface} disappeared while leader"))),
        };
        self.check_usable(&link)?;
        let addresses = self.read_addresses(inner, &link)?;
        let mut report = SyncReport { active: true, ..SyncReport::default() };
        let present = self.find_vip(&addresses)?;
        if !self.has_subnet_address(&addresses) {
            return Err(VipError::Interface(self.no_subnet_message()));
        }
        if present {
            // A renewal only: no announcement beyond what the schedule has due.
            self.renew(inner, &link)?;
        } else if inner.awaiting_fence {
            self.add(inner, &link)?;
            inner.awaiting_fence = false;
            tracing::info!(service = %self.config.service, vip = %self.vip, %interface, label = %self.label, "VIP added once its fence opened");
        } else {
            self.add(inner, &link)?;
            tracing::warn!(service = %self.config.service, vip = %self.vip,
                %interface,
                fenced = inner.hold_until.is_some(),
                "the VIP was missing from the interface (removed by someone else, or its lifetime lapsed while \
                 this leader could not renew it); re-added it"
            );
            report.re_added = true;
            inner.schedule.start();
        }
        report.arp_frames_sent = self.announce(inner, &link, now)?;
        Ok(report)
    }

    pub(super) fn read_link(&self, inner: &mut Inner) -> VipResult<Option<Link>> {
        let interface = &self.config.interface;
        inner.netlink.link(interface).map_err(VipError::netlink(format!("read link {interface}")))
    }

    pub(super) fn read_addresses(&self, inner: &mut Inner, link: &Link) -> VipResult<Vec<Address>> {
        let interface = &self.config.interface;
        inner.netlink.addresses(link.index).map_err(VipError::netlink(format!("read the addresses of {interface}")))
    }

    pub(super) fn check_usable(&self, link: &Link) -> VipResult<()> {
        match link.unusable_reason() {
            Some(reason) => Err(VipError::Interface(format!("interface {} {reason}", self.config.interface))),
            None => Ok(()),
        }
    }

    /// Whether the VIP is among `addresses`; the VIP's address with another prefix is a conflict.
    pub(super) fn find_vip(&self, addresses: &[Address]) -> VipResult<bool> {
        let mut present = false;
        for address in addresses.iter().filter(|address| address.ip == self.vip.ip) {
            if address.prefix_len != self.vip.prefix_len {
                return Err(VipError::BadRequest(format!(
                    "{}/{} is already on {} with another prefix than the VIP {}; remove it or fix vip.address",
                    address.ip, address.prefix_len, self.config.interface, self.vip
                )));
            }
            if address.label.as_deref() != Some(self.label.as_str()) {
                tracing::debug!(service = %self.config.service, vip = %self.vip, label = ?address.label, "the VIP is present with another label");
            }
            present = true;
        }
        Ok(present)
    }

    /// Whether another address of the interface has a subnet that contains the VIP.
    pub(super) fn has_subnet_address(&self, addresses: &[Address]) -> bool {
        addresses.iter().any(|address| {
            address.ip != self.vip.ip && VipAddress::same_subnet(address.ip, address.prefix_len, self.vip.ip)
        })
    }

    pub(super) fn no_subnet_message(&self) -> String {
        format!(
            "vip.interface: interface {} has no address in a subnet that contains the VIP {} \
             (the VIP is added beside the node's own address, never alone)",
            self.config.interface, self.vip
        )
    }

    pub(super) fn add(&self, inner: &mut Inner, link: &Link) -> VipResult<()> {
        let context = format!("add {} to {}", self.vip, self.config.interface);
        let lifetime = inner.lifetime(self.vip)?;
        match inner.netlink.add_address(link.index, self.vip, &self.label, lifetime) {
            Ok(_) => Ok(()),
            Err(error) if error.raw_os_error() == Some(libc::ENODEV) => Err(VipError::Interface(format!(
                "interface {} disappeared while the VIP was being added",
                self.config.interface
            ))),
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => Err(VipError::BadRequest(format!(
                "the kernel refused {} with label {:?} on {}: {error}",
                self.vip, self.label, self.config.interface
            ))),
            Err(error) => Err(VipError::netlink(context)(error)),
        }
    }

    /// Renews a fenced VIP just found on the interface: its lifetime starts anew (nothing else
    /// changes, nothing is announced). Nothing to do for an unfenced one.
    pub(super) fn renew(&self, inner: &mut Inner, link: &Link) -> VipResult<()> {
        if inner.hold_until.is_none() {
            return Ok(());
        }
        let context = format!("renew {} on {}", self.vip, self.config.interface);
        let Some(lifetime) = inner.lifetime(self.vip)? else { return Ok(()) };
        match inner.netlink.renew_address(link.index, self.vip, &self.label, lifetime) {
            Ok(()) => {
                tracing::trace!(service = %self.config.service, vip = %self.vip, lifetime_s = lifetime, "VIP renewed");
                Ok(())
            }
            Err(error) if error.raw_os_error() == Some(libc::ENODEV) => Err(VipError::Interface(format!(
                "interface {} disappeared while the VIP was being renewed",
                self.config.interface
            ))),
            Err(error) => Err(VipError::netlink(context)(error)),
        }
    }

    pub(super) fn delete(&self, inner: &mut Inner) -> VipResult<bool> {
        let Some(link) = self.read_link(inner)? else {
            return Ok(false);
        };
        let context = format!("delete {} from {}", self.vip, self.config.interface);
        inner.netlink.delete_address(link.index, self.vip).map_err(VipError::netlink(context))
    }

    /// Sends every announcement due at `now`; returns the number of frames sent.
    pub(super) fn announce(&self, inner: &mut Inner, link: &Link, now: Instant) -> VipResult<u32> {
        let Some(mac) = link.arp_mac() else {
            if !inner.no_arp_logged {
                inner.no_arp_logged = true;
                tracing::info!(
                    interface = %self.config.interface,
                    "the interface does not use ARP (not Ethernet, or NOARP); no gratuitous ARP is sent"
                );
            }
            inner.schedule.stop();
            return Ok(0);
        };
        let frame = announcement_frame(mac, self.vip.ip);
        let mut sent = 0;
        while let Some(announcement) = inner.schedule.due(now) {
            for _ in 0..announcement.frames() {
                inner.packet.send(link.index, &frame).map_err(|source| self.arp_failed(source))?;
                sent += 1;
                inner.n_frames_sent += 1;
            }
            inner.schedule.sent(announcement, now);
            tracing::debug!(service = %self.config.service, vip = %self.vip, ?announcement, "gratuitous ARP sent");
        }
        Ok(sent)
    }

    pub(super) fn arp_failed(&self, source: std::io::Error) -> VipError {
        VipError::ArpBroadcastFailed { interface: self.config.interface.clone(), vip: self.vip.ip, source }
    }
}
