//! The probe's view of each peer: since when a peer has not answered the echo. The health state
//! judges the data network as a whole (one answering peer is enough); this view says *whom* this
//! node cannot reach, for the early take-over of a leader whose host went down (`taskd::reach`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

/// Each probed peer's latest round: `None` answered, `Some(t)` silent in every round since `t`
/// (the start of the first round it missed). Cheap to clone; shared with the prober's thread.
#[derive(Debug, Clone, Default)]
pub struct PeerReach {
    silent_since: Arc<Mutex<HashMap<SocketAddr, Option<Instant>>>>,
}

impl PeerReach {
    /// Records one round started at `round_started` over `peers`, of which `answered` answered.
    /// Peers no longer probed are forgotten.
    pub(crate) fn record_round(
        &self,
        peers: &[SocketAddr],
        answered: impl Fn(&SocketAddr) -> bool,
        round_started: Instant,
    ) {
        let mut silent_since = self.silent_since.lock();
        silent_since.retain(|peer, _| peers.contains(peer));
        for peer in peers {
            let entry = silent_since.entry(*peer).or_insert(None);
            if answered(peer) {
                *entry = None;
            } else if entry.is_none() {
                *entry = Some(round_started);
            }
        }
    }

    /// Since when `peer` has not answered; `None` when it answered its latest round or is not
    /// probed (a peer never probed is not known to be unreachable).
    pub fn silent_since(&self, peer: &SocketAddr) -> Option<Instant> {
        self.silent_since.lock().get(peer).copied().flatten()
    }

    /// Every probed peer that did not answer its latest round, with since when.
    pub fn silent_peers(&self) -> Vec<(SocketAddr, Instant)> {
        let silent_since = self.silent_since.lock();
        let mut silent: Vec<(SocketAddr, Instant)> =
            silent_since.iter().filter_map(|(peer, since)| Some((*peer, (*since)?))).collect();
        silent.sort_by_key(|(peer, _)| *peer);
        silent
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_peer_is_silent_since_its_first_missed_round_until_it_answers() {
        let reach = PeerReach::default();
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let t0 = Instant::now();
        reach.record_round(&[a, b], |peer| *peer == a, t0);
        assert_eq!(reach.silent_since(&a), None);
        assert_eq!(reach.silent_since(&b), Some(t0));
        reach.record_round(&[a, b], |peer| *peer == a, t0 + Duration::from_millis(10));
        assert_eq!(reach.silent_since(&b), Some(t0), "the first missed round stays the start");
        assert_eq!(reach.silent_peers(), vec![(b, t0)]);
        reach.record_round(&[a, b], |_| true, t0 + Duration::from_millis(20));
        assert!(reach.silent_peers().is_empty());
        reach.record_round(&[a], |_| false, t0 + Duration::from_millis(30));
        assert_eq!(reach.silent_since(&b), None, "a peer no longer probed is forgotten");
    }
}
