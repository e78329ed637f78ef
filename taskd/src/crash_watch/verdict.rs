//! The crash detector's rules, apart from IO: what the probes of a member's port prove, and whose
//! port this member watches. Observations in, verdict out; `crash_watch` does the IO.

use quorum::Member;

/// What one look at the watched member's port saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A connection was accepted (by the kernel on a listening socket): the process lives.
    Answered,
    /// The connection was refused (a RST from the member's live host): nobody listens.
    Refused,
    /// The held connection ended (EOF or reset). A dead process's sockets end this way, but so
    /// does a connection the member's server closed (its idle or header deadline): never a proof
    /// by itself, only a reason to look again at once.
    Ended,
    /// No answer in time, an unreachable host, any other error: says nothing about the process.
    NoAnswer,
}

/// What the probes prove about the watched member's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The last probe was answered.
    Alive,
    /// A refusal or an ended connection, not yet enough to decide: look again at once.
    Suspect,
    /// `refusals_needed` refusals in a row: nobody listens on the port (see `crash_watch`'s
    /// `# Safety` for why that means dead or announced leaving).
    Refused,
    /// Nothing to go on (no probe, or the last one had no answer).
    Unknown,
}

/// The verdict of `probes` (oldest first), with `refusals_needed` (at least 1) refusals in a
/// row, as the last probes, needed for `Refused`.
pub fn judge(probes: &[Probe], refusals_needed: usize) -> Verdict {
    let trailing_refusals = probes.iter().rev().take_while(|probe| **probe == Probe::Refused).count();
    if trailing_refusals >= refusals_needed.max(1) {
        return Verdict::Refused;
    }
    match probes.last() {
        Some(Probe::Refused | Probe::Ended) => Verdict::Suspect,
        Some(Probe::Answered) => Verdict::Alive,
        Some(Probe::NoAnswer) | None => Verdict::Unknown,
    }
}

/// The member this one watches: the leader (lowest sequence), when this member is next in line
/// (the second lowest). `members` sorted by sequence, as the election publishes them; nobody
/// else watches, and a member never watches itself.
pub fn watch_target(members: &[Member], own_sequence: Option<i64>) -> Option<&Member> {
    let own_sequence = own_sequence?;
    match members {
        [leader, next, ..] if next.sequence == own_sequence && leader.sequence != own_sequence => Some(leader),
        _ => None,
    }
}
