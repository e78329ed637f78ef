//! The leader's virtual IP (netlink add/remove, gratuitous ARP; built in the VIP issue) and the
//! secondary (data) network health that decides whether this node may stay leader.

pub mod health;
