//! Unit tests of the cluster fixture's pure parts: the two-leader analysis and glog timestamps.

use std::time::{Duration, Instant, SystemTime};

use chrono::{Local, TimeZone, Timelike};

use super::{glog_time, Observation, Sample, Sampler};

fn observation(start: Instant, at_ms: u64, node: usize, status: Option<(u32, bool, i64)>) -> Observation {
    Observation {
        at: start + Duration::from_millis(at_ms),
        unix_micros: at_ms * 1000,
        node,
        status: status.map(|(pid, leader, sequence)| Sample { pid, leader, sequence: Some(sequence), stopping: false }),
    }
}

#[test]
fn a_hand_over_between_two_polls_is_not_an_overlap() {
    let start = Instant::now();
    let sampler = Sampler::from_observations(vec![
        observation(start, 0, 0, Some((100, true, 0))),
        observation(start, 1, 1, Some((200, false, 1))),
        observation(start, 20, 0, Some((100, true, 0))),
        // Node 1 says leader after node 0's last "leader"; node 0 no longer answers.
        observation(start, 21, 1, Some((200, true, 1))),
        observation(start, 40, 0, None),
        observation(start, 41, 1, Some((200, true, 1))),
    ]);
    assert!(sampler.definite_overlaps().is_empty());
    assert_eq!(sampler.first_leader_after(start + Duration::from_millis(5), 0).map(|o| o.node), Some(1));
    assert!(!sampler.led_since(0, start + Duration::from_millis(30)));
}

#[test]
fn a_leader_seen_on_both_sides_of_another_leader_is_an_overlap() {
    let start = Instant::now();
    let sampler = Sampler::from_observations(vec![
        observation(start, 0, 0, Some((100, true, 0))),
        observation(start, 1, 1, Some((200, true, 1))),
        observation(start, 20, 0, Some((100, true, 0))),
    ]);
    let overlaps = sampler.definite_overlaps();
    assert_eq!(overlaps.len(), 1, "{overlaps:?}");
    assert_eq!((overlaps[0].node, overlaps[0].other), (0, 1));
}

#[test]
fn a_new_election_node_or_process_starts_a_new_span() {
    let start = Instant::now();
    let new_sequence = Sampler::from_observations(vec![
        observation(start, 0, 0, Some((100, true, 0))),
        observation(start, 1, 1, Some((200, true, 1))),
        observation(start, 20, 0, Some((100, true, 5))),
    ]);
    assert!(new_sequence.definite_overlaps().is_empty());
    let new_process = Sampler::from_observations(vec![
        observation(start, 0, 0, Some((100, true, 0))),
        observation(start, 1, 1, Some((200, true, 1))),
        observation(start, 20, 0, Some((101, true, 0))),
    ]);
    assert!(new_process.definite_overlaps().is_empty());
}

#[test]
fn glog_headers_parse_as_local_time_with_microseconds() {
    let now = Local::now();
    let line = format!("I{} 22:27:52.483311 20637 task_server.rs:220] stop stage 1: x", now.format("%m%d"));
    let parsed = glog_time(&line).expect("a glog line");
    let local: chrono::DateTime<Local> = parsed.into();
    assert_eq!((local.hour(), local.minute(), local.second()), (22, 27, 52));
    assert_eq!(local.nanosecond(), 483_311_000);
    assert_eq!(local.date_naive(), now.date_naive());
    let expected =
        Local.from_local_datetime(&now.date_naive().and_hms_micro_opt(22, 27, 52, 483_311).expect("a time")).earliest();
    assert_eq!(Some(parsed), expected.map(SystemTime::from));
    assert_eq!(glog_time("zbs-taskd: invalid value for `session_timeout_ms`"), None);
    assert_eq!(glog_time("I11x3 22:27:52.483311 1 a.rs:1] x"), None);
}
