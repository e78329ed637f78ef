//! The error policy across several VIPs, as a pure rule: each VIP's own [`VipRetry`] verdict
//! (`vip::VipRetry`: back off, step down after `transient_failure_limit`, stop at once on a
//! permanent error) says what *that VIP* needs; this rule says what the *leader* does.
//!
//! - An error that affects the node as a whole ([`affects_node`]: no privilege, no socket, the
//!   fence closed because ZooKeeper is out of reach) applies to the leader as it comes: another
//!   VIP could not do better on this node.
//! - Any other error is that VIP's alone (its interface vanished or went down, its address
//!   conflicts): while another VIP is held or still being tried, the leader keeps leading and the
//!   failed VIP is reported for its service and retried every sync interval.
//! - When every VIP has failed for good (each verdict a step-down or a stop), the leader steps
//!   down, or stops its service when every one of them was permanent: with one VIP, exactly the
//!   policy of a single VIP.
//!
//! [`VipRetry`]: vip::VipRetry

use vip::{VipError, VipVerdict};

/// Where one VIP stands after its latest operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipStanding {
    /// Its retry policy's latest verdict; `None` before its first operation of the term.
    pub verdict: Option<VipVerdict>,
    /// The latest error affects the node as a whole ([`affects_node`]).
    pub node_wide: bool,
}

impl VipStanding {
    /// No operation yet in this term.
    pub const PENDING: VipStanding = VipStanding { verdict: None, node_wide: false };

    /// The VIP failed for good in this term (step-down or stop verdict).
    pub fn given_up(&self) -> bool {
        matches!(self.verdict, Some(VipVerdict::StepDown | VipVerdict::StopService))
    }
}

/// What the leader does about its VIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderVerdict {
    /// Keep leading (every failed VIP is reported and retried).
    Keep,
    /// Step down (releasing every VIP) so another node can take over; may lead again later.
    StepDown,
    /// Stop the service: the configuration cannot work on this node.
    StopService,
}

/// Whether `error` concerns the node rather than one VIP: a missing privilege or socket (every
/// VIP would fail alike) or a closed fence (the node's contact with ZooKeeper).
pub fn affects_node(error: &VipError) -> bool {
    match error {
        VipError::Socket { .. } | VipError::Fenced(_) => true,
        VipError::NetLink { .. } => error.is_permanent(),
        VipError::BadRequest(_)
        | VipError::NotFound(_)
        | VipError::ArpBroadcastFailed { .. }
        | VipError::Interface(_) => false,
    }
}

/// The leader's verdict over every VIP's standing (see the module documentation).
pub fn leader_verdict(standings: &[VipStanding]) -> LeaderVerdict {
    for standing in standings.iter().filter(|standing| standing.node_wide) {
        match standing.verdict {
            Some(VipVerdict::StopService) => return LeaderVerdict::StopService,
            Some(VipVerdict::StepDown) => return LeaderVerdict::StepDown,
            _ => {}
        }
    }
    if standings.is_empty() || !standings.iter().all(VipStanding::given_up) {
        return LeaderVerdict::Keep;
    }
    if standings.iter().all(|standing| standing.verdict == Some(VipVerdict::StopService)) {
        LeaderVerdict::StopService
    } else {
        LeaderVerdict::StepDown
    }
}
