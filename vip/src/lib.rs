//! The leader's virtual IP (netlink add/remove, gratuitous ARP) and the secondary-network health source; built in the VIP issue.
