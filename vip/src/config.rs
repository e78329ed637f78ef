//! One VIP's configuration: a `[[vip]]` table (or the old single `[vip]`, service `default`): the
//! virtual IP, the service it is for, where it lives, how it is announced and how errors are
//! retried.
//!
//! ```toml
//! [[vip]]
//! service = "iscsi"                  # [a-z0-9_-]{1,32}; default "default"
//! address = "10.0.0.100/24"          # IPv4 or IPv6 with its prefix length; required
//! interface = "eth0"                 # the management interface; required
//! label = "eth0:vip"                 # default "<interface>:vip"; at most 15 bytes
//! garp_burst = 5                     # gratuitous ARPs sent back to back on takeover
//! garp_second_burst_after_ms = 5000  # a second burst this long after takeover; 0 = none
//! garp_refresh_ms = 3000             # one more every this long while leader; 0 = none
//! sync_interval_ms = 1000            # how often the leader calls `sync_vip` (and renews the VIP)
//! transient_failure_limit = 5        # failed calls in a row before the leader steps down
//! retry_backoff_ms = 100             # first retry delay, doubled up to sync_interval_ms
//! ```
//!
//! keepalived sends 5 gratuitous ARPs on takeover and 5 more after 5 s; kube-vip re-sends every
//! 3 s while leader. The defaults do both. Unknown keys are rejected, and
//! [`VipConfig::validate`] names the offending key in full (`vip.address`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{VipError, VipResult, VipRetry};

/// The `[vip]` section. `address` and `interface` have no default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    /// The client-facing service this VIP is for (`crate::check_service_name`); default
    /// `default`, the service of the old single `[vip]` table.
    #[serde(default = "default_service")]
    pub service: String,
    /// The VIP with its prefix length, like `10.0.0.100/24`.
    pub address: String,
    /// The interface that carries it, like `eth0`.
    pub interface: String,
    /// The address label, shown by `ip addr` and used to recognise the VIP; it must be
    /// `<interface>:<suffix>`, at most 15 bytes (the kernel's `IFNAMSIZ`). Default
    /// `<interface>:vip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Gratuitous ARPs sent back to back on takeover, and again in the second burst (default 5).
    #[serde(default = "default_garp_burst")]
    pub garp_burst: u32,
    /// Delay from takeover to the second burst, in milliseconds (default 5000; 0 = none).
    #[serde(default = "default_garp_second_burst_after_ms")]
    pub garp_second_burst_after_ms: u64,
    /// Interval of the single refresh ARP while leader, in milliseconds (default 3000; 0 = none).
    #[serde(default = "default_garp_refresh_ms")]
    pub garp_refresh_ms: u64,
    /// How often the leader's dispatcher calls `sync_vip`, in milliseconds (default 1000). It is
    /// also the granularity of the second burst and of the refresh, and the renewal interval of a
    /// fenced VIP's lifetime (`FenceRule`: it must fit the session timeout).
    #[serde(default = "default_sync_interval_ms")]
    pub sync_interval_ms: u64,
    /// Transient failures in a row after which the leader steps down (default 5).
    #[serde(default = "default_transient_failure_limit")]
    pub transient_failure_limit: u32,
    /// The first retry's delay after a transient failure, in milliseconds (default 100); each
    /// further failure doubles it, up to `sync_interval_ms`.
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
}

fn default_service() -> String {
    crate::service::DEFAULT_SERVICE.to_string()
}
fn default_garp_burst() -> u32 {
    5
}
fn default_garp_second_burst_after_ms() -> u64 {
    5000
}
fn default_garp_refresh_ms() -> u64 {
    3000
}
fn default_sync_interval_ms() -> u64 {
    1000
}
fn default_transient_failure_limit() -> u32 {
    5
}
fn default_retry_backoff_ms() -> u64 {
    100
}

/// The longest label the kernel keeps (`IFNAMSIZ` less its terminating zero).
pub const MAX_LABEL_LEN: usize = 15;
const MAX_BURST: u32 = 100;
const MAX_DELAY_MS: u64 = 3_600_000;
const MIN_REFRESH_MS: u64 = 100;
const MIN_SYNC_INTERVAL_MS: u64 = 10;
const MAX_SYNC_INTERVAL_MS: u64 = 60_000;
const MAX_FAILURE_LIMIT: u32 = 1000;

impl VipConfig {
    /// The error policy with this configuration's limit and back-off: from `retry_backoff_ms`,
    /// doubling, up to `sync_interval_ms`; step-down after `transient_failure_limit`.
    pub fn retry_policy(&self) -> VipRetry {
        let first = std::time::Duration::from_millis(self.retry_backoff_ms.max(1));
        VipRetry::new(self.transient_failure_limit, first, self.sync_interval())
    }

    /// A configuration with every default, for `address` on `interface`.
    pub fn new(address: impl Into<String>, interface: impl Into<String>) -> VipConfig {
        VipConfig {
            service: default_service(),
            address: address.into(),
            interface: interface.into(),
            label: None,
            garp_burst: default_garp_burst(),
            garp_second_burst_after_ms: default_garp_second_burst_after_ms(),
            garp_refresh_ms: default_garp_refresh_ms(),
            sync_interval_ms: default_sync_interval_ms(),
            transient_failure_limit: default_transient_failure_limit(),
            retry_backoff_ms: default_retry_backoff_ms(),
        }
    }

    /// Checks every key; a [`VipError::BadRequest`] whose message starts with the key's full
    /// name. It looks at no interface: a missing one is found by `VipServer::config_vip`.
    pub fn validate(&self) -> VipResult<()> {
        crate::service::check_service_name(&self.service).map_err(|message| bad("vip.service", message))?;
        self.vip()?;
        check_interface_name(&self.interface)?;
        self.effective_label()?;
        if self.garp_burst == 0 || self.garp_burst > MAX_BURST {
            return Err(bad("vip.garp_burst", format!("must be from 1 to {MAX_BURST}, not {}", self.garp_burst)));
        }
        if self.garp_second_burst_after_ms > MAX_DELAY_MS {
            return Err(bad(
                "vip.garp_second_burst_after_ms",
                format!("must be at most {MAX_DELAY_MS} (0 = none), not {}", self.garp_second_burst_after_ms),
            ));
        }
        if self.garp_refresh_ms != 0 && !(MIN_REFRESH_MS..=MAX_DELAY_MS).contains(&self.garp_refresh_ms) {
            return Err(bad(
                "vip.garp_refresh_ms",
                format!("must be 0 (none) or from {MIN_REFRESH_MS} to {MAX_DELAY_MS}, not {}", self.garp_refresh_ms),
            ));
        }
        if !(MIN_SYNC_INTERVAL_MS..=MAX_SYNC_INTERVAL_MS).contains(&self.sync_interval_ms) {
            return Err(bad(
                "vip.sync_interval_ms",
                format!("must be from {MIN_SYNC_INTERVAL_MS} to {MAX_SYNC_INTERVAL_MS}, not {}", self.sync_interval_ms),
            ));
        }
        if self.transient_failure_limit == 0 || self.transient_failure_limit > MAX_FAILURE_LIMIT {
            return Err(bad(
                "vip.transient_failure_limit",
                format!("must be from 1 to {MAX_FAILURE_LIMIT}, not {}", self.transient_failure_limit),
            ));
        }
        if self.retry_backoff_ms == 0 || self.retry_backoff_ms > self.sync_interval_ms {
            return Err(bad(
                "vip.retry_backoff_ms",
                format!(
                    "must be at least 1 and at most vip.sync_interval_ms ({}), not {}",
                    self.sync_interval_ms, self.retry_backoff_ms
                ),
            ));
        }
        Ok(())
    }

    /// The parsed `address`.
    pub fn vip(&self) -> VipResult<VipAddress> {
        self.address.parse::<VipAddress>().map_err(|message| bad("vip.address", message))
    }

    /// The label the VIP gets: `label`, or `<interface>:vip`, checked.
    pub fn effective_label(&self) -> VipResult<String> {
        let label = match &self.label {
            Some(label) => label.clone(),
            None => format!("{}:vip", self.interface),
        };
        let prefix = format!("{}:", self.interface);
        let key = if self.label.is_some() { "vip.label" } else { "vip.label (default <interface>:vip)" };
        if !label.starts_with(&prefix) || label.len() == prefix.len() {
            return Err(bad(
                key,
                format!("{label:?} must be the interface name, a ':' and a suffix, like \"{prefix}vip\""),
            ));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(bad(
                key,
                format!("{label:?} is longer than the kernel's {MAX_LABEL_LEN} bytes; set a shorter vip.label"),
            ));
        }
        if label.chars().any(|c| c.is_whitespace() || c == '/' || c.is_control()) {
            return Err(bad(key, format!("{label:?} must not contain spaces, '/' or control characters")));
        }
        Ok(label)
    }

    /// `garp_second_burst_after_ms` as a delay; `None` when off.
    pub fn second_burst_after(&self) -> Option<Duration> {
        (self.garp_second_burst_after_ms != 0).then(|| Duration::from_millis(self.garp_second_burst_after_ms))
    }

    /// `garp_refresh_ms` as an interval; `None` when off.
    pub fn refresh_interval(&self) -> Option<Duration> {
        (self.garp_refresh_ms != 0).then(|| Duration::from_millis(self.garp_refresh_ms))
    }

    /// `sync_interval_ms` as a duration.
    pub fn sync_interval(&self) -> Duration {
        Duration::from_millis(self.sync_interval_ms)
    }
}

fn check_interface_name(interface: &str) -> VipResult<()> {
    let bad_name = interface.is_empty()
        || interface.len() > MAX_LABEL_LEN
        || interface == "."
        || interface == ".."
        || interface.chars().any(|c| c.is_whitespace() || c == '/' || c == ':' || c.is_control());
    if bad_name {
        return Err(bad(
            "vip.interface",
            format!("{interface:?} is not an interface name (1 to {MAX_LABEL_LEN} bytes, no '/', ':' or spaces)"),
        ));
    }
    Ok(())
}

fn bad(key: &str, message: impl fmt::Display) -> VipError {
    VipError::BadRequest(format!("{key}: {message}"))
}

/// A VIP with its prefix length, parsed from `a.b.c.d/len` or `x:y::z/len`. An IPv6 VIP is
/// announced with unsolicited neighbour advertisements instead of gratuitous ARP, and added
/// without duplicate address detection (the leader takes it over on purpose); IPv6 addresses
/// carry no label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VipAddress {
    /// The address.
    pub ip: IpAddr,
    /// The prefix length: 1 to 32 for IPv4, 1 to 128 for IPv6.
    pub prefix_len: u8,
}

impl VipAddress {
    /// The subnet's broadcast address, for IPv4 prefixes that have one (up to /30).
    pub fn broadcast(&self) -> Option<Ipv4Addr> {
        match self.ip {
            IpAddr::V4(ip) => (self.prefix_len <= 30).then(|| Ipv4Addr::from(u32::from(ip) | !mask(self.prefix_len))),
            IpAddr::V6(_) => None,
        }
    }

    /// Whether `other` lies in the subnet `ip/prefix_len` (never across address families).
    pub(crate) fn same_subnet(ip: IpAddr, prefix_len: u8, other: IpAddr) -> bool {
        match (ip, other) {
            (IpAddr::V4(ip), IpAddr::V4(other)) => {
                let mask = mask(prefix_len);
                u32::from(ip) & mask == u32::from(other) & mask
            }
            (IpAddr::V6(ip), IpAddr::V6(other)) => {
                let mask = mask_v6(prefix_len);
                u128::from(ip) & mask == u128::from(other) & mask
            }
            _ => false,
        }
    }
}

fn mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        len => u32::MAX << (32 - u32::from(len.min(32))),
    }
}

fn mask_v6(prefix_len: u8) -> u128 {
    match prefix_len {
        0 => 0,
        len => u128::MAX << (128 - u32::from(len.min(128))),
    }
}

impl FromStr for VipAddress {
    type Err = String;

    /// Accepts `a.b.c.d/len` with `len` from 1 to 32, or an IPv6 address with `len` from 1 to
    /// 128; refuses an address the VIP can never be (unspecified, loopback, multicast, IPv4
    /// broadcast, its IPv4 subnet's network or broadcast address, IPv6 link-local).
    fn from_str(text: &str) -> Result<VipAddress, String> {
        let Some((ip_text, prefix_text)) = text.trim().split_once('/') else {
            return Err(format!("{text:?} needs a prefix length, like \"10.0.0.100/24\""));
        };
        let ip = match ip_text.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => return Err(format!("{ip_text:?} is not an IPv4 or IPv6 address")),
        };
        let max_prefix = if ip.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix_text.parse::<u8>() {
            Ok(len) if (1..=max_prefix).contains(&len) => len,
            _ => return Err(format!("prefix length {prefix_text:?} must be a number from 1 to {max_prefix}")),
        };
        let vip = VipAddress { ip, prefix_len };
        match ip {
            IpAddr::V4(ip) => {
                if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
                    return Err(format!("{ip} cannot be a VIP (unspecified, loopback, multicast or broadcast)"));
                }
                let host_bits = u32::from(ip) & !mask(prefix_len);
                if prefix_len <= 30 && (host_bits == 0 || host_bits == !mask(prefix_len)) {
                    return Err(format!("{vip} is the network or broadcast address of its subnet"));
                }
            }
            IpAddr::V6(ip) => {
                let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
                if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || link_local {
                    return Err(format!("{ip} cannot be a VIP (unspecified, loopback, multicast or link-local)"));
                }
            }
        }
        Ok(vip)
    }
}

impl fmt::Display for VipAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix_len)
    }
}

#[cfg(test)]
mod tests;
