//! The pure health model: samples, the three states and the fall/rise hysteresis between them.
//!
//! Nothing here does IO or keeps time, so every transition can be tested by feeding samples.

use std::fmt;

/// The result of one health check round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthSample {
    /// The check passed (for the prober: at least one peer answered).
    Good,
    /// The check failed, for the given reason; `fall` of these in a row make the state invalid.
    Bad(String),
    /// There is nothing that could fail: a cluster of one node has no peer to lose. Valid at
    /// once, skipping `rise`.
    Alone,
    /// A fact rules health out at once, skipping `fall`: the data link is down or gone, or an
    /// authoritative source (the health file, the chunk service) says so.
    Down(String),
}

impl HealthSample {
    /// Whether the sample counts as a good round.
    pub fn is_good(&self) -> bool {
        matches!(self, HealthSample::Good | HealthSample::Alone)
    }

    /// The failure reason, for bad samples.
    pub fn reason(&self) -> Option<&str> {
        match self {
            HealthSample::Bad(reason) | HealthSample::Down(reason) => Some(reason),
            HealthSample::Good | HealthSample::Alone => None,
        }
    }
}

/// What the node currently knows about its data network.
///
/// A monitor starts in [`HealthState::Unknown`]: a freshly started node has proved nothing, so
/// it must not count as a healthy candidate (`is_valid` is false), but nothing has failed
/// either, so a leader must not step down for it (`is_invalid` is false). The first `rise` good
/// rounds make it valid, the first `fall` bad rounds (or one decisive fact) invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// Not proved either way yet (just started, or the peer list is not known yet).
    Unknown,
    /// Proved healthy: `rise` good rounds in a row (or a one-node cluster).
    Valid,
    /// Proved unhealthy: `fall` bad rounds in a row, or a decisive fact such as link down.
    Invalid,
}

impl HealthState {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            HealthState::Unknown => 0,
            HealthState::Valid => 1,
            HealthState::Invalid => 2,
        }
    }

    pub(crate) fn from_u8(value: u8) -> HealthState {
        match value {
            1 => HealthState::Valid,
            2 => HealthState::Invalid,
            _ => HealthState::Unknown,
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            HealthState::Unknown => "unknown",
            HealthState::Valid => "valid",
            HealthState::Invalid => "invalid",
        })
    }
}

/// A change of [`HealthState`], as handed to subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    /// The state before.
    pub from: HealthState,
    /// The state now.
    pub to: HealthState,
    /// Why: the failure reason when turning invalid, a short description otherwise.
    pub reason: String,
}

/// The `fall`/`rise` counting, as a value: feed it samples, it says when the state changes.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    fall: u32,
    rise: u32,
    state: HealthState,
    good_streak: u32,
    bad_streak: u32,
    rounds: u64,
    n_bad_rounds: u64,
    n_changes: u64,
    last_reason: Option<String>,
    link_down: Option<String>,
}

impl Hysteresis {
    /// A model in [`HealthState::Unknown`]. `fall` and `rise` below 1 are taken as 1.
    pub fn new(fall: u32, rise: u32) -> Hysteresis {
        Hysteresis {
            fall: fall.max(1),
            rise: rise.max(1),
            state: HealthState::Unknown,
            good_streak: 0,
            bad_streak: 0,
            rounds: 0,
            n_bad_rounds: 0,
            n_changes: 0,
            last_reason: None,
            link_down: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Good rounds in a row (0 after any bad one).
    pub fn good_streak(&self) -> u32 {
        self.good_streak
    }

    /// Bad rounds in a row (0 after any good one).
    pub fn bad_streak(&self) -> u32 {
        self.bad_streak
    }

    /// Samples recorded so far.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// Bad samples recorded so far (failed probe rounds, rounds with the link down).
    pub fn n_bad_rounds(&self) -> u64 {
        self.n_bad_rounds
    }

    /// State changes so far.
    pub fn n_changes(&self) -> u64 {
        self.n_changes
    }

    /// The reason of the latest bad sample or link-down report, kept after recovery.
    pub fn last_reason(&self) -> Option<&str> {
        self.last_reason.as_deref()
    }

    /// Why the link is down, while it is.
    pub fn link_down(&self) -> Option<&str> {
        self.link_down.as_deref()
    }

    /// Records one round. While the link is down every round counts as [`HealthSample::Down`]
    /// with the link's reason: a probe that still gets through (another route) does not prove
    /// the data interface healthy.
    pub fn record(&mut self, sample: HealthSample) -> Option<HealthChange> {
        let sample = match &self.link_down {
            Some(reason) => HealthSample::Down(reason.clone()),
            None => sample,
        };
        self.rounds += 1;
        if matches!(sample, HealthSample::Bad(_) | HealthSample::Down(_)) {
            self.n_bad_rounds += 1;
        }
        match sample {
            HealthSample::Good => {
                self.count_good();
                if self.good_streak >= self.rise {
                    let reason = format!("{} good rounds in a row", self.good_streak);
                    return self.change_to(HealthState::Valid, reason);
                }
                None
            }
            HealthSample::Alone => {
                self.count_good();
                self.change_to(HealthState::Valid, "no peers: a cluster of one node".to_string())
            }
            HealthSample::Bad(reason) => {
                self.count_bad(&reason);
                if self.bad_streak >= self.fall {
                    let reason = format!("{} bad rounds in a row, last: {reason}", self.bad_streak);
                    return self.change_to(HealthState::Invalid, reason);
                }
                None
            }
            HealthSample::Down(reason) => {
                self.count_bad(&reason);
                self.change_to(HealthState::Invalid, reason)
            }
        }
    }

    /// Records the data link's state. Going down makes the state invalid at once (keepalived's
    /// `track_interface`); coming back up changes nothing by itself: the next `rise` good
    /// rounds, counted from then, make it valid.
    pub fn set_link_down(&mut self, down: Option<String>) -> Option<HealthChange> {
        match down {
            Some(reason) => {
                self.link_down = Some(reason.clone());
                self.good_streak = 0;
                self.last_reason = Some(reason.clone());
                self.change_to(HealthState::Invalid, reason)
            }
            None => {
                if self.link_down.take().is_some() {
                    self.good_streak = 0;
                }
                None
            }
        }
    }

    fn count_good(&mut self) {
        self.bad_streak = 0;
        self.good_streak = self.good_streak.saturating_add(1);
    }

    fn count_bad(&mut self, reason: &str) {
        self.good_streak = 0;
        self.bad_streak = self.bad_streak.saturating_add(1);
        if self.last_reason.as_deref() != Some(reason) {
            self.last_reason = Some(reason.to_string());
        }
    }

    fn change_to(&mut self, to: HealthState, reason: String) -> Option<HealthChange> {
        if self.state == to {
            return None;
        }
        let from = self.state;
        self.state = to;
        self.n_changes += 1;
        Some(HealthChange { from, to, reason })
    }
}

#[cfg(test)]
mod tests;
