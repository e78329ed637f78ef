//! Tests of the hysteresis: samples in, transitions and counters out, no IO and no clock.

use super::{HealthChange, HealthSample, HealthState, Hysteresis};

fn bad(reason: &str) -> HealthSample {
    HealthSample::Bad(reason.to_string())
}

/// Feeds `n` copies of `sample` and returns the changes they caused.
fn feed(model: &mut Hysteresis, sample: &HealthSample, n: usize) -> Vec<HealthChange> {
    (0..n).filter_map(|_| model.record(sample.clone())).collect()
}

#[test]
fn starts_unknown_and_turns_valid_after_exactly_rise_good_rounds() {
    let mut model = Hysteresis::new(3, 5);
    assert_eq!(model.state(), HealthState::Unknown);
    assert!(feed(&mut model, &HealthSample::Good, 4).is_empty());
    assert_eq!(model.state(), HealthState::Unknown);
    assert_eq!(model.good_streak(), 4);
    let change = model.record(HealthSample::Good).expect("the fifth good round changes the state");
    assert_eq!(change.from, HealthState::Unknown);
    assert_eq!(change.to, HealthState::Valid);
    assert_eq!(model.rounds(), 5);
    assert_eq!(model.n_changes(), 1);
    assert!(feed(&mut model, &HealthSample::Good, 10).is_empty(), "no change while it stays good");
}

#[test]
fn starts_unknown_and_turns_invalid_after_exactly_fall_bad_rounds() {
    let mut model = Hysteresis::new(3, 5);
    assert!(feed(&mut model, &bad("no answer"), 2).is_empty());
    assert_eq!(model.state(), HealthState::Unknown, "start-up noise is not a failure");
    let change = model.record(bad("no answer")).expect("the third bad round changes the state");
    assert_eq!((change.from, change.to), (HealthState::Unknown, HealthState::Invalid));
    assert!(change.reason.contains("3 bad rounds"), "{}", change.reason);
    assert!(change.reason.contains("no answer"), "{}", change.reason);
}

#[test]
fn valid_needs_fall_consecutive_bad_rounds_to_turn_invalid() {
    let mut model = Hysteresis::new(3, 5);
    feed(&mut model, &HealthSample::Good, 5);
    assert_eq!(model.state(), HealthState::Valid);
    // Two bad, one good, two bad: never three in a row.
    for _ in 0..4 {
        assert!(feed(&mut model, &bad("lost"), 2).is_empty());
        assert!(model.record(HealthSample::Good).is_none());
    }
    assert_eq!(model.state(), HealthState::Valid);
    assert_eq!(model.bad_streak(), 0);
    assert_eq!(model.last_reason(), Some("lost"), "the last reason is kept after recovery");
    let changes = feed(&mut model, &bad("lost"), 3);
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].from, changes[0].to), (HealthState::Valid, HealthState::Invalid));
    assert_eq!(model.bad_streak(), 3);
}

#[test]
fn invalid_needs_rise_consecutive_good_rounds_to_turn_valid() {
    let mut model = Hysteresis::new(3, 5);
    feed(&mut model, &bad("down"), 3);
    assert_eq!(model.state(), HealthState::Invalid);
    // Four good, one bad, repeatedly: never five in a row.
    for _ in 0..3 {
        assert!(feed(&mut model, &HealthSample::Good, 4).is_empty());
        assert!(model.record(bad("flap")).is_none());
    }
    assert_eq!(model.state(), HealthState::Invalid);
    let changes = feed(&mut model, &HealthSample::Good, 5);
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].from, changes[0].to), (HealthState::Invalid, HealthState::Valid));
    assert_eq!(model.n_changes(), 2);
    assert_eq!(model.rounds(), 3 + 3 * 5 + 5);
}

#[test]
fn down_is_invalid_at_once_and_alone_is_valid_at_once() {
    let mut model = Hysteresis::new(3, 5);
    let change = model.record(HealthSample::Down("the file says fail".into())).expect("decisive");
    assert_eq!((change.from, change.to), (HealthState::Unknown, HealthState::Invalid));
    assert_eq!(change.reason, "the file says fail");
    let change = model.record(HealthSample::Alone).expect("a one-node cluster is valid at once");
    assert_eq!((change.from, change.to), (HealthState::Invalid, HealthState::Valid));
    assert!(model.record(HealthSample::Alone).is_none());
    // After a one-node phase, a peer that cannot be reached still needs `fall` rounds.
    assert!(feed(&mut model, &bad("no answer"), 2).is_empty());
    assert!(model.record(bad("no answer")).is_some());
}

#[test]
fn link_down_is_invalid_at_once_and_overrides_good_rounds_until_it_comes_back() {
    let mut model = Hysteresis::new(3, 5);
    feed(&mut model, &HealthSample::Good, 5);
    feed(&mut model, &HealthSample::Good, 3);
    let change = model.set_link_down(Some("eth1 is administratively down".into())).expect("at once");
    assert_eq!((change.from, change.to), (HealthState::Valid, HealthState::Invalid));
    assert_eq!(model.link_down(), Some("eth1 is administratively down"));
    // Probes that still get through (another route) do not count while the link is down.
    assert!(feed(&mut model, &HealthSample::Good, 10).is_empty());
    assert!(feed(&mut model, &HealthSample::Alone, 2).is_empty());
    assert_eq!(model.state(), HealthState::Invalid);
    assert_eq!(model.good_streak(), 0);
    // Up again: nothing changes by itself; `rise` good rounds from now on do.
    assert!(model.set_link_down(None).is_none());
    assert_eq!(model.link_down(), None);
    assert!(feed(&mut model, &HealthSample::Good, 4).is_empty());
    let changes = feed(&mut model, &HealthSample::Good, 1);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].to, HealthState::Valid);
}

#[test]
fn link_down_while_already_invalid_is_not_a_second_change() {
    let mut model = Hysteresis::new(2, 2);
    feed(&mut model, &bad("x"), 2);
    assert_eq!(model.state(), HealthState::Invalid);
    assert!(model.set_link_down(Some("gone".into())).is_none());
    assert_eq!(model.n_changes(), 1);
    assert_eq!(model.last_reason(), Some("gone"));
}

#[test]
fn fall_and_rise_of_zero_are_taken_as_one() {
    let mut model = Hysteresis::new(0, 0);
    assert_eq!(model.record(HealthSample::Good).map(|change| change.to), Some(HealthState::Valid));
    assert_eq!(model.record(bad("x")).map(|change| change.to), Some(HealthState::Invalid));
}

#[test]
fn sample_helpers() {
    assert!(HealthSample::Good.is_good());
    assert!(HealthSample::Alone.is_good());
    assert!(!bad("x").is_good());
    assert_eq!(HealthSample::Down("y".into()).reason(), Some("y"));
    assert_eq!(HealthSample::Good.reason(), None);
    for state in [HealthState::Unknown, HealthState::Valid, HealthState::Invalid] {
        assert_eq!(HealthState::from_u8(state.to_u8()), state);
    }
}

#[test]
fn bad_rounds_are_counted_across_recoveries_and_link_downs() {
    let mut model = Hysteresis::new(2, 2);
    feed(&mut model, &bad("no echo from 10.0.1.2"), 3);
    feed(&mut model, &HealthSample::Good, 4);
    feed(&mut model, &bad("no echo from 10.0.1.3"), 1);
    assert_eq!(model.n_bad_rounds(), 4, "bad streaks end, the count does not");
    model.set_link_down(Some("carrier lost".to_string()));
    feed(&mut model, &HealthSample::Good, 2);
    assert_eq!(model.n_bad_rounds(), 6, "a good probe with the link down is a bad round");
    assert_eq!(model.rounds(), 10);
}
