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

/// A runner the leader watches: its registration and the election node of the same session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerTarget {
    pub node_id: String,
    /// The runner API's address (`ip:port`) from its registration.
    pub address: String,
    /// The session that holds both its registration and its election node.
    pub session_id: i64,
    /// Its election node: the leaving marker's name, and what a take-over deletes.
    pub election_node: String,
}

/// The runners the leader (`own_node_id`) watches: every registered runner but its own whose
/// session also holds an election node. A registration without one (a member still joining, or
/// one whose node is gone) is not watched: a stopping member announces leaving through its
/// election node, so without one nothing could tell its refusals from a crash.
/// `runners` are `(node id, address, session)` of each registration.
pub fn runners_to_watch(runners: &[(String, String, i64)], members: &[Member], own_node_id: &str) -> Vec<RunnerTarget> {
    runners
        .iter()
        .filter(|(node_id, _, _)| node_id != own_node_id)
        .filter_map(|(node_id, address, session_id)| {
            let member =
                members.iter().find(|member| member.session_id == *session_id && &member.info.id == node_id)?;
            Some(RunnerTarget {
                node_id: node_id.clone(),
                address: address.clone(),
                session_id: *session_id,
                election_node: member.node_name.clone(),
            })
        })
        .collect()
}
