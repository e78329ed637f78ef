//! The one closed enum of events a quorum member delivers on its loop, handled in one `match`.

use crate::member::Member;

/// What happened to this member of the quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// This member became leader (`leader: true`) or stopped acting as leader. `sequence` is its
    /// election node's sequence number (-1 when it has none, for example after its session ended).
    RoleChanged { leader: bool, sequence: i64 },
    /// The members this member knows of, sorted by sequence. The leader learns of every join and
    /// leave (it watches the service path); a follower learns them when it re-evaluates.
    MembersChanged(Vec<Member>),
    /// The ZooKeeper session expired (or failed for good): its election node and watches are gone.
    /// A new session is being built; the member rejoins as a follower.
    SessionLost,
    /// The member has left the quorum: the last event.
    Stopped,
}
