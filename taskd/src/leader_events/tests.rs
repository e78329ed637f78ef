//! The ring's ordering and trimming, as pure functions over znode names.

use proptest::prelude::*;

use super::*;

fn name(sequence: i64) -> String {
    format!("{EVENT_PREFIX}{sequence:010}")
}

#[test]
fn events_are_ordered_by_sequence_and_strangers_ignored() {
    let names = vec![name(12), "junk".to_string(), name(3), "e-12x".to_string(), name(7)];
    let ordered: Vec<i64> = sequenced(&names).into_iter().map(|(sequence, _)| sequence).collect();
    assert_eq!(ordered, vec![3, 7, 12]);
}

proptest! {
    /// Trimming keeps exactly the newest `keep` events and deletes only older ones.
    #[test]
    fn trimming_keeps_the_newest(sequences in proptest::collection::btree_set(0i64..100_000, 0..60), keep in 1usize..40) {
        let names: Vec<String> = sequences.iter().rev().map(|&sequence| name(sequence)).collect();
        let trimmed = names_to_trim(&names, keep);
        prop_assert_eq!(trimmed.len(), sequences.len().saturating_sub(keep));
        let kept: Vec<i64> = sequences.iter().copied().filter(|&sequence| !trimmed.contains(&name(sequence))).collect();
        prop_assert_eq!(kept.len(), sequences.len().min(keep));
        let newest: Vec<i64> = sequences.iter().rev().take(keep).copied().collect::<Vec<_>>().into_iter().rev().collect();
        prop_assert_eq!(kept, newest);
    }
}
