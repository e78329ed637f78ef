//! The early take-over rule, apart from IO: when the members that can judge have all lost the
//! leader on both networks for long enough, the member next in line takes its election node over
//! without waiting for its session to expire. Observations in, decision out; `reach` does the IO.
//!
//! A lost leader here is not proven dead (no refusal, unlike `crash_watch`): its host may be
//! powered off, or alive behind a double cut. That is why the rule is opt-in
//! (`early_takeover_ms`) and why it asks every healthy member, not one: see `reach`'s
//! `# Trade-off` for what a live leader cut off on both networks keeps, and for how long.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use quorum::Member;

use crate::crash_watch::verdict::watch_target;

/// What the member next in line knows when it asks the rule.
#[derive(Debug, Clone)]
pub struct EarlyTakeoverView<'a> {
    /// The members as ZooKeeper holds them, sorted by sequence (the leader first).
    pub members: &'a [Member],
    /// This member's election sequence (`None`: not a member now).
    pub own_sequence: Option<i64>,
    /// For each member id whose published report says the current leader is lost on *both* the
    /// management and the data network: since when (on this member's clock) its reports have
    /// said so without a break. A member that reports nothing, or reports the leader reachable on
    /// either network, is absent.
    pub lost_leader_since: &'a HashMap<String, Instant>,
    /// This member's clock now.
    pub now: Instant,
    /// `early_takeover_ms`; zero is off.
    pub wait: Duration,
}

/// What the rule decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EarlyTakeover {
    /// The option is off, or this member is not next in line: nothing to do.
    NotMine,
    /// Not (yet) every judge has lost the leader for `wait`: look again later.
    Hold(HoldReason),
    /// Take the leader's election node over (`quorum::takeover`: the leaving marker still wins).
    TakeOver {
        /// The leader's election node.
        node_name: String,
        /// The leader's session (for the log: its owner nodes stay until it expires).
        session_id: i64,
    },
}

/// Why the rule holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldReason {
    /// This member's own data network is not healthy: its silence says nothing of the leader.
    SelfUnhealthy,
    /// A healthy member (named) has not reported the leader lost on both networks.
    NotLostBy(String),
    /// Every judge has, but not for `wait` yet (the youngest report's age).
    TooRecent(Duration),
}

/// The judges: every member but the leader whose own data network is healthy (a member whose
/// network is down cannot tell a lost leader from its own failure). This member is one of them.
pub fn judges<'a>(members: &'a [Member], leader: &Member) -> impl Iterator<Item = &'a Member> {
    let leader_id = leader.info.id.clone();
    members.iter().filter(move |member| member.info.id != leader_id && member.info.healthy)
}

/// The decision for `view` (see the module documentation). Takes the leader over only when this
/// member is next in line and healthy, and every judge — at least this member — has reported the
/// leader lost on both networks for at least `wait`.
pub fn decide(view: &EarlyTakeoverView<'_>) -> EarlyTakeover {
    if view.wait.is_zero() {
        return EarlyTakeover::NotMine;
    }
    let Some(leader) = watch_target(view.members, view.own_sequence) else { return EarlyTakeover::NotMine };
    let Some(own) = view.members.iter().find(|member| Some(member.sequence) == view.own_sequence) else {
        return EarlyTakeover::NotMine;
    };
    if !own.info.healthy {
        return EarlyTakeover::Hold(HoldReason::SelfUnhealthy);
    }
    let mut youngest = Duration::MAX;
    for judge in judges(view.members, leader) {
        let Some(since) = view.lost_leader_since.get(&judge.info.id) else {
            return EarlyTakeover::Hold(HoldReason::NotLostBy(judge.info.id.clone()));
        };
        youngest = youngest.min(view.now.saturating_duration_since(*since));
    }
    if youngest < view.wait {
        return EarlyTakeover::Hold(HoldReason::TooRecent(youngest));
    }
    EarlyTakeover::TakeOver { node_name: leader.node_name.clone(), session_id: leader.session_id }
}
