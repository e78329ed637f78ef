//! Tests of the failover keys: the names issue 14 lists, crash's two holders apart, stayed
//! trials out of the percentiles.

use std::time::{Duration, Instant};

use super::*;

fn trial(vip_up_ms: f64, unavailable_ms: f64, failback: usize) -> Trial {
    let now = Instant::now();
    Trial {
        started_at: now,
        ended_at: now,
        vip_up_ms,
        unavailable_ms,
        failback_failed_requests: failback,
        old_rejoined: true,
    }
}

fn run(system: System) -> SystemRun {
    let mut trials = BTreeMap::new();
    trials.insert(TrialType::LinkCut, vec![trial(10.0, 12.0, 0), trial(20.0, 22.0, 1), trial(30.0, 32.0, 0)]);
    trials.insert(TrialType::Crash, vec![trial(15.0, 16.0, 0), trial(f64::NAN, f64::NAN, 0)]);
    let two_holder_samples = BTreeMap::from([(TrialType::LinkCut, 1), (TrialType::Crash, 7)]);
    SystemRun {
        system,
        trials,
        two_holder_samples,
        quiet: Some(QuietOutcome { seconds: 120.0, vip_moves: 1, leader_moves: 0, two_holder_samples: 0 }),
    }
}

#[test]
fn every_key_the_issue_lists_is_written() {
    let mut report = Report::new("failover-test");
    let runs = [run(System::Taskd), run(System::Keepalived), run(System::TaskdTuned), run(System::KeepalivedTuned)];
    for run in &runs {
        set_system_keys(&mut report, run);
    }
    set_legacy_and_ratio_keys(&mut report, &runs);
    for system in ["taskd", "taskd_tuned", "keepalived", "keepalived_tuned"] {
        for trial_type in ["link_cut", "crash"] {
            for measure in ["vip_up_ms_p50", "vip_up_ms_p99", "unavailable_ms_p50"] {
                let key = format!("{system}_{trial_type}_{measure}");
                assert!(report.results.contains_key(&key), "no {key}");
            }
        }
        assert_eq!(report.results[&format!("{system}_vip_on_two_nodes_samples")], 1.0, "crash's apart");
        assert_eq!(report.results[&format!("{system}_crash_vip_on_two_nodes_samples")], 7.0);
        assert_eq!(report.results[&format!("{system}_spurious_failovers")], 1.0);
    }
    assert_eq!(report.results["taskd_link_cut_vip_up_ms_p50"], 20.0);
    assert_eq!(report.results["link_cut_vip_up_ms_p50"], 20.0, "today's key: ours");
    assert_eq!(report.results["vip_on_two_nodes_samples"], 8.0, "today's key: every trial of ours");
    assert_eq!(report.results["failback_failed_requests"], 2.0, "ours only: taskd and taskd_tuned");
    assert_eq!(report.results["link_cut_vip_up_ratio"], 1.0);
    assert_eq!(report.results["link_cut_tuned_vip_up_ratio"], 1.0);
}

#[test]
fn a_trial_where_the_vip_stayed_is_counted_apart() {
    let mut report = Report::new("failover-test");
    set_system_keys(&mut report, &run(System::Keepalived));
    assert_eq!(report.results["keepalived_crash_vip_stayed_trials"], 1.0);
    assert_eq!(report.results["keepalived_crash_vip_up_ms_p50"], 15.0);
    assert_eq!(report.results["keepalived_link_cut_vip_stayed_trials"], 0.0);
    assert_eq!(report.results["keepalived_link_cut_old_not_rejoined_trials"], 0.0);
}

#[test]
fn two_holder_samples_count_inside_the_trials_only() {
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let sample = |ms: u64, holders: Vec<usize>| HolderSample { at: at(ms), seen: holders.clone(), holders };
    let samples = vec![
        sample(5, vec![0, 1]),
        sample(15, vec![0, 1]),
        sample(20, vec![1]),
        sample(35, vec![1, 2]),
        sample(50, vec![0, 2]),
    ];
    let trials = vec![
        Trial { started_at: at(10), ended_at: at(20), ..trial(1.0, 1.0, 0) },
        Trial { started_at: at(30), ended_at: at(40), ..trial(1.0, 1.0, 0) },
    ];
    assert_eq!(two_holder_samples_in(&samples, &trials), 2);
}
