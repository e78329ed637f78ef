//! The leader's virtual IP (netlink add/remove, gratuitous ARP; built in the VIP issue) and the
//! secondary (data) network health that decides whether this node may stay leader.

pub mod arp_capture;
pub mod health;

mod config;
mod error;
mod fence;
mod garp;
mod netlink;
mod server;
mod service;
mod store;

pub use config::{VipAddress, VipConfig};
pub use error::{VipError, VipResult, VipRetry, VipVerdict};
pub use fence::{fence_window, lifetime_until, FenceRule, FENCE_MARGIN, KERNEL_EXPIRY_SLACK, MIN_LIFETIME};
pub use server::{HoldUntil, Retarget, ShownVip, SyncReport, VipPresence, VipServer};
pub use service::{check_service_name, DEFAULT_SERVICE, MAX_SERVICE_LEN};
pub use store::{vip_znode, StoredVip, VipStore, VipStoreError, STORED_VIP_VERSION, VIP_ZNODE};
