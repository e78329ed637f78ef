//! The VIP's fence in the kernel: the leader adds the VIP with a finite address lifetime
//! (`IFA_CACHEINFO`) that never reaches past its last confirmed contact with ZooKeeper plus a
//! window W, and renews it while that contact stays fresh; a holder that is frozen (SIGSTOP, a
//! long stall) or dead cannot renew, and the kernel deletes its VIP by itself before a successor
//! can take over. This module is the pure part: the window, the lifetime to ask for, and the rule
//! between them and the session timeout, checked when the configuration loads.
//!
//! # What the kernel does (net/ipv4/devinet.c `check_lifetime`, net/ipv6/addrconf.c likewise)
//!
//! - Lifetimes are whole seconds. An `RTM_NEWADDR` with `NLM_F_REPLACE` on an existing address
//!   sets its lifetime anew from the moment the kernel handles it (`set_ifa_lifetime`:
//!   `ifa_tstamp = jiffies`), and queues the expiry check at once.
//! - The check deletes an address whose age reaches its valid lifetime and schedules itself for
//!   the next expiry (rounded up to a whole second when that costs under 250 ms), but never sooner
//!   than one second after it ran (`ADDRCONF_TIMER_FUZZ_MAX`). Any address change in the namespace
//!   runs it. So an address whose lifetime ends at E is gone by E + 1 s: measured 2.04 s for a
//!   2-second lifetime left alone, 2.96 s when another address was added 1.95 s after it.
//! - An address that is absent is *created* by such a request, with or without `NLM_F_CREATE`
//!   ("userspace already relies on not having to provide this"), so a renewal must find the VIP
//!   first: [`crate::VipServer::sync_vip`] renews only a VIP it has just seen, and a missing one is
//!   re-added (and announced) only while the fence allows it.
//! - The check runs from a deferrable timer: on a CPU that stays idle it waits for that CPU's
//!   next wake-up. A node's CPUs wake many times a second, which the margin below absorbs; an
//!   entirely idle CPU is the residual.
//!
//! # The rule
//!
//! With session timeout S, the window is W = S - [`KERNEL_EXPIRY_SLACK`] - [`FENCE_MARGIN`]. At
//! every add or renewal the VIP gets the lifetime `floor(c + W - now)` seconds, c being the send
//! time of the latest answered ZooKeeper request of the leading session; under one second left,
//! it gets nothing (not added, not renewed). Its kernel deadline is then at most c + W, and it is
//! gone by c + W + 1 s = c + S - 250 ms, while the server expires the session, and a successor
//! can take over, no earlier than S after it last heard from it, which is at or after c.
//! A live leader's VIP must not lapse between renewals: its contact is at most p old (the probe
//! interval), so a renewal grants at least `floor(W - p)` > W - p - 1 s seconds, which must
//! outlast the next renewal, r later: **W - p - r >= 1 s** ([`FenceRule::check`]).

use std::time::{Duration, Instant};

/// How late after its lifetime the kernel may delete an address: its expiry check runs at most
/// once a second.
pub const KERNEL_EXPIRY_SLACK: Duration = Duration::from_secs(1);

/// What the window keeps for the rest: the kernel's work queue and rtnl lock, and a thread
/// descheduled between computing a lifetime and the kernel stamping it.
pub const FENCE_MARGIN: Duration = Duration::from_millis(250);

/// The shortest lifetime the kernel accepts (0 is refused) and the fence grants.
pub const MIN_LIFETIME: Duration = Duration::from_secs(1);

/// W: how long after the last confirmed contact the VIP may stay on the interface.
pub fn fence_window(session_timeout: Duration) -> Duration {
    session_timeout.saturating_sub(KERNEL_EXPIRY_SLACK + FENCE_MARGIN)
}

/// The lifetime, in whole seconds, that makes the kernel drop the VIP by `hold_until` when given
/// at `now`; `None` when less than [`MIN_LIFETIME`] is left (the VIP must then be neither added
/// nor renewed).
pub fn lifetime_until(hold_until: Instant, now: Instant) -> Option<u32> {
    let left = hold_until.checked_duration_since(now)?;
    if left < MIN_LIFETIME {
        return None;
    }
    Some(u32::try_from(left.as_secs()).unwrap_or(u32::MAX))
}

/// The timers whose order keeps a frozen holder's VIP from outliving its session, and a live
/// leader's VIP from lapsing between renewals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceRule {
    /// S: the ZooKeeper session timeout.
    pub session_timeout: Duration,
    /// p: how often contact with ZooKeeper is confirmed (an answered probe).
    pub contact_probe_interval: Duration,
    /// r: how often the leader renews the VIP (`vip.sync_interval_ms`).
    pub renew_interval: Duration,
}

impl FenceRule {
    /// W for this session timeout.
    pub fn window(&self) -> Duration {
        fence_window(self.session_timeout)
    }

    /// `W - p - r >= 1 s`, W = S - 1.25 s (see the module documentation); the error says which
    /// numbers break it.
    pub fn check(&self) -> Result<(), String> {
        let window = self.window();
        let needed = self.contact_probe_interval + self.renew_interval + MIN_LIFETIME;
        if window < needed {
            return Err(format!(
                "the VIP's fence needs session_timeout_ms - {} ms (the kernel's expiry slack and a margin) to be at \
                 least the contact probe interval ({} ms) + vip.sync_interval_ms ({} ms) + 1000 ms, so that a live \
                 leader's VIP outlasts the gap between two renewals; with session_timeout_ms = {} it is {} ms: \
                 use a longer session_timeout_ms or a shorter vip.sync_interval_ms",
                (KERNEL_EXPIRY_SLACK + FENCE_MARGIN).as_millis(),
                self.contact_probe_interval.as_millis(),
                self.renew_interval.as_millis(),
                self.session_timeout.as_millis(),
                window.as_millis(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
