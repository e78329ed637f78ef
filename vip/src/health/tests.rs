//! Tests of the module's public surface that belong to no single source.

use std::time::Duration;

use super::{EchoResponder, HealthFlag, HealthMonitor, HealthSample, HealthState, Subscription};

#[test]
fn handles_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<HealthMonitor>();
    assert_send_sync::<HealthFlag>();
    assert_send_sync::<Subscription>();
    assert_send_sync::<EchoResponder>();
}

#[test]
fn a_dropped_subscription_is_not_called_and_a_callback_may_subscribe() {
    let monitor = HealthMonitor::without_source(1, 1).expect("monitor");
    let flag = monitor.flag();
    let (tx, rx) = std::sync::mpsc::channel();
    let kept_tx = tx.clone();
    let kept = flag.subscribe(move |change| {
        let _ = kept_tx.send(("kept", change.to));
    });
    let dropped = flag.subscribe(move |change| {
        let _ = tx.send(("dropped", change.to));
    });
    drop(dropped);
    monitor.record(HealthSample::Good);
    assert_eq!(rx.try_recv(), Ok(("kept", HealthState::Valid)));
    assert!(rx.try_recv().is_err(), "the dropped subscription was not called");

    // A callback that subscribes from inside a notification does not deadlock.
    let inner_flag = flag.clone();
    let nested = std::sync::Mutex::new(Vec::new());
    let _subscriber = flag.subscribe(move |_| {
        if let Ok(mut nested) = nested.lock() {
            nested.push(inner_flag.subscribe(|_| {}));
        }
    });
    monitor.record(HealthSample::Bad("x".into()));
    assert!(flag.is_invalid());
    drop(kept);
}

#[test]
fn wait_until_returns_at_the_timeout_and_accepts_huge_timeouts() {
    let monitor = HealthMonitor::without_source(3, 5).expect("monitor");
    let flag = monitor.flag();
    assert!(!flag.wait_for_state(HealthState::Valid, Duration::from_millis(100)));
    assert!(flag.wait_until(Duration::MAX, |status| status.state == HealthState::Unknown));
    let status = flag.status();
    assert_eq!((status.rounds, status.n_changes, status.last_reason), (0, 0, None));
}
