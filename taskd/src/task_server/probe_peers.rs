//! The health probe's peers: the data addresses of the members now, and of those seen as members
//! within [`PEER_MEMORY`]. A follower learns of a membership change only when its predecessor
//! changes or at its next 1 s poll, so without a memory a member that restarted a moment ago
//! (gone from the list, not yet back in it) leaves the follower probing only the leader; if the
//! leader's data network is then cut, "none of 1 peers answered" made the follower take its
//! own network for failed (bench failover, silent cut: two hand-overs instead of one, and the
//! follower's service in re-entry back-off). A remembered peer can only add evidence: the
//! verdict is bad only when no peer answers, and a node whose own link is down hears no one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a member that left stays among the probe's peers (a restart, a service's re-entry).
pub const PEER_MEMORY: Duration = Duration::from_secs(60);

/// The peers seen as members, with when they last were.
#[derive(Debug, Default)]
pub struct PeerMemory {
    last_seen: HashMap<SocketAddr, Instant>,
}

impl PeerMemory {
    /// Records `members` (the other members' probe addresses) as seen at `now`, forgets those
    /// unseen for longer than [`PEER_MEMORY`], and returns the peers to probe: the members and
    /// the remembered, sorted, each once — or none when there is no other member now: the
    /// membership says this node is alone (always valid), and members that left are not
    /// brought back to judge it.
    pub fn peers(&mut self, members: &[SocketAddr], now: Instant) -> Vec<SocketAddr> {
        for member in members {
            self.last_seen.insert(*member, now);
        }
        self.last_seen.retain(|_, seen| now.saturating_duration_since(*seen) <= PEER_MEMORY);
        if members.is_empty() {
            return Vec::new();
        }
        let mut peers: Vec<SocketAddr> = self.last_seen.keys().copied().collect();
        peers.sort();
        peers
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::{PeerMemory, PEER_MEMORY};

    fn addr(last_octet: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last_octet], 10602))
    }

    #[test]
    fn a_member_that_left_a_moment_ago_is_still_probed_and_forgotten_after_the_memory() {
        let mut memory = PeerMemory::default();
        let start = Instant::now();
        assert_eq!(memory.peers(&[addr(2), addr(1)], start), vec![addr(1), addr(2)]);
        // addr(2) restarts: gone from the membership for a moment.
        assert_eq!(memory.peers(&[addr(1)], start + Duration::from_secs(1)), vec![addr(1), addr(2)]);
        assert_eq!(memory.peers(&[addr(1)], start + PEER_MEMORY), vec![addr(1), addr(2)]);
        assert_eq!(memory.peers(&[addr(1)], start + PEER_MEMORY + Duration::from_millis(1)), vec![addr(1)]);
        // Alone by the membership: nobody remembered is probed, and the memory stays.
        assert_eq!(memory.peers(&[], start + PEER_MEMORY + Duration::from_secs(1)), Vec::<SocketAddr>::new());
        assert_eq!(memory.peers(&[addr(3)], start + PEER_MEMORY + Duration::from_secs(2)), vec![addr(1), addr(3)]);
    }

    proptest! {
        /// Whatever the history: each peer once, sorted, and a peer is probed exactly when it was
        /// a member within the memory (every current member among them) — none when no other
        /// member is now.
        #[test]
        fn peers_are_the_members_and_the_recently_seen(
            rounds in prop::collection::vec((prop::collection::vec(1u8..6, 0..5), 0u64..90_000), 1..30),
        ) {
            let mut memory = PeerMemory::default();
            let start = Instant::now();
            let mut now = start;
            let mut history: Vec<(Instant, Vec<SocketAddr>)> = Vec::new();
            for (octets, step_ms) in rounds {
                now += Duration::from_millis(step_ms);
                let members: Vec<SocketAddr> = octets.into_iter().map(addr).collect();
                history.push((now, members.clone()));
                let peers = memory.peers(&members, now);
                for member in &members {
                    prop_assert!(peers.contains(member), "member {member} not probed");
                }
                prop_assert!(peers.windows(2).all(|pair| pair[0] < pair[1]), "not sorted or repeated: {peers:?}");
                for peer in &peers {
                    let seen_recently = history
                        .iter()
                        .any(|(at, members)| members.contains(peer) && now.duration_since(*at) <= PEER_MEMORY);
                    prop_assert!(seen_recently, "{peer} probed though not a member within the memory");
                }
                if members.is_empty() {
                    prop_assert!(peers.is_empty(), "alone by the membership, yet probing {peers:?}");
                    continue;
                }
                for (at, members) in &history {
                    if now.duration_since(*at) <= PEER_MEMORY {
                        for member in members {
                            prop_assert!(peers.contains(member), "{member}, a member within the memory, not probed");
                        }
                    }
                }
            }
        }
    }
}
