//! The leader's virtual IP (netlink add/remove, gratuitous ARP; built in the VIP issue) and the
//! secondary (data) network health that decides whether this node may stay leader.

pub mod arp_capture;
pub mod health;

mod fence;
mod garp;
mod netlink;
mod vip_config;
mod vip_error;
mod vip_server;
mod vip_store;

pub use fence::{fence_window, lifetime_until, FenceRule, FENCE_MARGIN, KERNEL_EXPIRY_SLACK, MIN_LIFETIME};
pub use vip_config::{VipAddress, VipConfig};
pub use vip_error::{VipError, VipResult, VipRetry, VipVerdict};
pub use vip_server::{HoldUntil, Retarget, ShownVip, SyncReport, VipPresence, VipServer};
pub use vip_store::{StoredVip, VipStore, VipStoreError, STORED_VIP_VERSION, VIP_ZNODE};
