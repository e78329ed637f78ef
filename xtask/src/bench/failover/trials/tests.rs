//! Tests of the keepalived log reading that decides when a trial may begin.

use super::*;

const START: &str = "Thu Dec  3 12:00:00 2026: Starting Keepalived v2.2.7 (01/16,2022)\n";

#[test]
fn a_backup_at_its_base_priority_is_settled() {
    let log = format!("{START}Thu: (VI_1) Entering BACKUP STATE (init)\n");
    assert!(keepalived_settled(&log, 100));
    let log = format!("{START}(VI_1) Entering MASTER STATE\n");
    assert!(keepalived_settled(&log, 100));
}

#[test]
fn fault_a_lowered_priority_or_no_state_yet_is_not_settled() {
    assert!(!keepalived_settled("", 100));
    assert!(!keepalived_settled(START, 100));
    let fault = format!("{START}(VI_1) Entering BACKUP STATE\n(VI_1) Entering FAULT STATE\n");
    assert!(!keepalived_settled(&fault, 100));
    let lowered = format!("{START}(VI_1) Entering BACKUP STATE\n(VI_1) Changing effective priority from 100 to 65\n");
    assert!(!keepalived_settled(&lowered, 100));
    let back = format!("{lowered}(VI_1) Changing effective priority from 65 to 100\n");
    assert!(keepalived_settled(&back, 100));
    let bfd_up = format!("{back}(peer_n2) Entering Up state\n");
    assert!(keepalived_settled(&bfd_up, 100), "a BFD session's state is not the instance's");
    let bfd_only = format!("{START}(peer_n2) Entering Up state\n");
    assert!(!keepalived_settled(&bfd_only, 100));
}

#[test]
fn only_the_latest_run_counts() {
    let earlier = format!("{START}(VI_1) Entering MASTER STATE\n");
    let restarted = format!("{earlier}{START}");
    assert!(!keepalived_settled(&restarted, 100), "a restarted instance has entered no state yet");
}
