//! Tests of the quiet watch's move counting.

use proptest::prelude::*;

use super::*;

#[test]
fn gaps_are_not_moves_and_changes_are() {
    assert_eq!(count_moves::<u8>(&[]), 0);
    assert_eq!(count_moves(&[Some(1), None, Some(1), Some(1)]), 0);
    assert_eq!(count_moves(&[Some(1), None, Some(2)]), 1);
    assert_eq!(count_moves(&[None, Some(1), Some(2), Some(1)]), 2);
}

#[test]
fn spurious_failovers_count_one_move_of_both_once() {
    let outcome = QuietOutcome { seconds: 120.0, vip_moves: 2, leader_moves: 2, two_holder_samples: 0 };
    assert_eq!(outcome.spurious_failovers(), 2);
    let outcome = QuietOutcome { seconds: 120.0, vip_moves: 0, leader_moves: 1, two_holder_samples: 0 };
    assert_eq!(outcome.spurious_failovers(), 1);
}

proptest! {
    #[test]
    fn a_constant_holder_never_moves(holder in 0u8..3, gaps in proptest::collection::vec(any::<bool>(), 0..50)) {
        let observations: Vec<Option<u8>> = gaps.iter().map(|gap| (!gap).then_some(holder)).collect();
        prop_assert_eq!(count_moves(&observations), 0);
    }

    #[test]
    fn moves_are_fewer_than_observations(observations in proptest::collection::vec(proptest::option::of(0u8..3), 0..50)) {
        let seen = observations.iter().flatten().count();
        prop_assert!(count_moves(&observations) <= seen.saturating_sub(1));
    }
}
