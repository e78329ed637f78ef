//! Tests of the stop flag; the ones that deliver real signals run in a child process, because
//! installing handlers changes the whole test process.

use std::io::Write;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::test_child::{assert_succeeded_with, describe, ChildTests};

/// The tests that run as a re-executed child: the signalled process.
const CHILDREN: ChildTests = ChildTests::new("RUNTIME_SIGNALS_TEST_CHILD", module_path!());

/// Printed by a child once it has checked what it was asked to check.
const CHILD_OK_MARKER: &str = "signals-child: flag set by SIGTERM";

/// Printed by a child that is still alive after a second SIGTERM; must never appear.
const CHILD_SURVIVED_MARKER: &str = "signals-child: survived the second SIGTERM";

/// How long a child waits for a signal it sent itself before giving up. Generous: delivery is
/// immediate in practice, and a loaded machine must not make the test flaky.
const SIGNAL_DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

fn send_sigterm_to_self() {
    // SAFETY: kill and getpid have no memory-safety preconditions.
    let result = unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    assert_eq!(result, 0, "kill(getpid(), SIGTERM) failed: {}", std::io::Error::last_os_error());
}

fn print_marker(marker: &str) {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{marker}").expect("write to stdout");
    stdout.flush().expect("flush stdout");
}

#[test]
fn unregistered_flag_is_shared_by_clones() {
    let flag = StopFlag::new_unregistered();
    let clone = flag.clone();
    assert!(!flag.is_set());
    clone.set();
    assert!(flag.is_set());
    assert!(flag.wait_timeout(Duration::ZERO));
}

#[test]
fn unregistered_flags_are_independent() {
    let first = StopFlag::new_unregistered();
    let second = StopFlag::new_unregistered();
    first.set();
    assert!(!second.is_set());
}

#[test]
fn wait_timeout_returns_false_after_the_timeout() {
    let flag = StopFlag::new_unregistered();
    let timeout = Duration::from_millis(50);
    let started = Instant::now();
    assert!(!flag.wait_timeout(timeout));
    assert!(started.elapsed() >= timeout, "returned after {:?}", started.elapsed());
}

#[test]
fn wait_timeout_returns_true_once_another_thread_sets_the_flag() {
    let flag = StopFlag::new_unregistered();
    let setter_flag = flag.clone();
    let setter = thread::Builder::new()
        .name("stop-flag-setter".to_owned())
        .spawn(move || {
            thread::sleep(Duration::from_millis(20));
            setter_flag.set();
        })
        .expect("spawn the setter thread");
    assert!(flag.wait_timeout(Duration::from_secs(60)));
    setter.join().expect("join the setter thread");
}

#[test]
fn wait_timeout_accepts_an_unrepresentable_timeout() {
    let flag = StopFlag::new_unregistered();
    flag.set();
    assert!(flag.wait_timeout(Duration::MAX));
}

#[test]
fn sigterm_sets_the_installed_flag() {
    const NAME: &str = "sigterm_sets_the_installed_flag";
    if CHILDREN.is_child(NAME) {
        let flag = install_stop_flag().expect("install the stop flag");
        assert!(!flag.is_set(), "flag set before any signal");
        send_sigterm_to_self();
        assert!(flag.wait_timeout(SIGNAL_DELIVERY_TIMEOUT), "SIGTERM did not set the flag");
        print_marker(CHILD_OK_MARKER);
        return;
    }
    let output = CHILDREN.run(NAME);
    assert_succeeded_with(&output, CHILD_OK_MARKER);
}

#[test]
fn second_sigterm_exits_at_once_with_the_documented_status() {
    const NAME: &str = "second_sigterm_exits_at_once_with_the_documented_status";
    if CHILDREN.is_child(NAME) {
        let flag = install_stop_flag().expect("install the stop flag");
        send_sigterm_to_self();
        assert!(flag.wait_timeout(SIGNAL_DELIVERY_TIMEOUT), "first SIGTERM did not set the flag");
        print_marker(CHILD_OK_MARKER);
        send_sigterm_to_self();
        // The handler should have ended the process; give a slow delivery time to arrive.
        thread::sleep(SIGNAL_DELIVERY_TIMEOUT);
        print_marker(CHILD_SURVIVED_MARKER);
        return;
    }
    let output = CHILDREN.run(NAME);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(CHILD_OK_MARKER), "first SIGTERM not handled: {}", describe(&output));
    assert!(!stdout.contains(CHILD_SURVIVED_MARKER), "child survived: {}", describe(&output));
    assert_eq!(output.status.code(), Some(FORCED_EXIT_STATUS_SIGTERM), "{}", describe(&output));
    assert_eq!(FORCED_EXIT_STATUS_SIGTERM, 143);
}

#[test]
fn sigterm_after_set_exits_at_once() {
    const NAME: &str = "sigterm_after_set_exits_at_once";
    if CHILDREN.is_child(NAME) {
        let flag = install_stop_flag().expect("install the stop flag");
        flag.set();
        print_marker(CHILD_OK_MARKER);
        send_sigterm_to_self();
        thread::sleep(SIGNAL_DELIVERY_TIMEOUT);
        print_marker(CHILD_SURVIVED_MARKER);
        return;
    }
    let output = CHILDREN.run(NAME);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(CHILD_OK_MARKER), "child did not start: {}", describe(&output));
    assert!(!stdout.contains(CHILD_SURVIVED_MARKER), "child survived: {}", describe(&output));
    assert_eq!(output.status.code(), Some(FORCED_EXIT_STATUS_SIGTERM), "{}", describe(&output));
}

#[test]
fn installing_twice_shares_one_flag() {
    const NAME: &str = "installing_twice_shares_one_flag";
    if CHILDREN.is_child(NAME) {
        let first = install_stop_flag().expect("install the stop flag");
        let second = install_stop_flag().expect("install the stop flag again");
        assert!(Arc::ptr_eq(&first.flag, &second.flag), "two installs made two flags");
        // One SIGTERM sets both, and it is a first signal: two installs did not register two
        // flag setters ahead of a second conditional exit, which would end the process here.
        send_sigterm_to_self();
        assert!(first.wait_timeout(SIGNAL_DELIVERY_TIMEOUT), "SIGTERM did not set the flag");
        assert!(second.is_set());
        thread::sleep(Duration::from_millis(200));
        print_marker(CHILD_OK_MARKER);
        return;
    }
    let output = CHILDREN.run(NAME);
    assert_succeeded_with(&output, CHILD_OK_MARKER);
}

#[test]
fn the_unregistered_flag_ignores_signals() {
    const NAME: &str = "the_unregistered_flag_ignores_signals";
    if CHILDREN.is_child(NAME) {
        let unregistered = StopFlag::new_unregistered();
        let installed = install_stop_flag().expect("install the stop flag");
        send_sigterm_to_self();
        assert!(installed.wait_timeout(SIGNAL_DELIVERY_TIMEOUT), "SIGTERM did not set the flag");
        assert!(!unregistered.is_set(), "a signal set the unregistered flag");
        print_marker(CHILD_OK_MARKER);
        return;
    }
    let output = CHILDREN.run(NAME);
    assert_succeeded_with(&output, CHILD_OK_MARKER);
}
