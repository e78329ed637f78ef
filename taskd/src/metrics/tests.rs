//! The metric families' names follow Prometheus conventions, and what components record shows
//! up in the encoding.

use super::*;

/// The `# TYPE` lines of an encoding: (family name, type).
fn families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

/// The value of the first sample line that starts with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[test]
fn every_family_is_prefixed_and_counted_and_names_its_unit() {
    let metrics = Metrics::new();
    let text = metrics.encode();
    let families = families(&text);
    // Families without a label set yet (tasks, retries, VIP, requests) are not encoded.
    assert!(families.len() as u64 <= metrics.n_families(), "{text}");
    assert!(families.len() >= 25, "too few families at start: {families:?}");
    for (name, kind) in &families {
        assert!(name.starts_with("zbs_taskd_"), "{name}");
        // A histogram of a duration is in seconds; OpenMetrics counters' samples end in _total.
        if kind == "histogram" {
            assert!(name.ends_with("_seconds"), "{name}");
        }
        assert!(!name.contains("_ms") && !name.contains("millis"), "{name}: base units only");
    }
    assert!(families.iter().any(|(name, kind)| name == "zbs_taskd_leader_transitions" && kind == "counter"));
    assert!(text.contains("zbs_taskd_build_info{version=\""), "{text}");
    // Known label sets start at 0, so a rate sees their first event.
    assert_eq!(sample(&text, "zbs_taskd_leader_transitions_total{reason=\"session_expired\"}"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "zbs_taskd_service_state{state=\"running\"}"), Some(1.0), "{text}");
}

#[test]
fn recorded_values_show_up_in_the_encoding() {
    let metrics = Metrics::new();
    metrics.transition(TransitionReason::Elected);
    metrics.transition(TransitionReason::DataNetworkFailed);
    metrics.transition(TransitionReason::DataNetworkFailed);
    metrics.is_leader.set(1);
    metrics.run_started("sleep", Some(Duration::from_millis(30)));
    metrics.run_finished("copy_volume", "succeeded", Duration::from_secs(2), 4096, 1024);
    let text = metrics.encode();
    assert_eq!(sample(&text, "zbs_taskd_leader_transitions_total{reason=\"elected\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "zbs_taskd_leader_transitions_total{reason=\"data_network_failed\"}"), Some(2.0));
    assert_eq!(sample(&text, "zbs_taskd_is_leader"), Some(1.0));
    assert_eq!(sample(&text, "zbs_taskd_task_queue_wait_seconds_count"), Some(1.0));
    assert_eq!(
        sample(&text, "zbs_taskd_task_runs_finished_total{type=\"copy_volume\",outcome=\"succeeded\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "zbs_taskd_copy_transferred_bytes_total"), Some(4096.0));
    assert_eq!(sample(&text, "zbs_taskd_copy_skipped_bytes_total"), Some(3072.0));
}

#[test]
fn a_state_family_is_one_hot() {
    let metrics = Metrics::new();
    Metrics::set_state(&metrics.service_state, SERVICE_STATES, Some("stopped"));
    let text = metrics.encode();
    assert_eq!(sample(&text, "zbs_taskd_service_state{state=\"stopped\"}"), Some(1.0));
    assert_eq!(sample(&text, "zbs_taskd_service_state{state=\"running\"}"), Some(0.0));
    assert_eq!(sample(&text, "zbs_taskd_service_state{state=\"stopping\"}"), Some(0.0));
}

#[test]
fn leader_gauges_come_from_counts_and_a_follower_exports_none() {
    let metrics = Metrics::new();
    let mut counts = crate::task_db::TaskCounts::default();
    counts.add(("sleep", crate::task::TaskState::Running));
    counts.add(("sleep", crate::task::TaskState::Running));
    counts.add(("copy_volume", crate::task::TaskState::Failed));
    let runners = crate::dispatcher::scheduler::RunnerCounts { n_up: 2, n_draining: 1 };
    metrics.set_leader_gauges(Some(&counts), Some(runners));
    let text = metrics.encode();
    assert_eq!(sample(&text, "zbs_taskd_tasks{type=\"sleep\",state=\"running\"}"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "zbs_taskd_tasks{type=\"copy_volume\",state=\"failed\"}"), Some(1.0));
    // Every type and state is exported, zeros too.
    assert_eq!(sample(&text, "zbs_taskd_tasks{type=\"copy_volume\",state=\"pending\"}"), Some(0.0));
    assert_eq!(sample(&text, "zbs_taskd_runners{state=\"up\"}"), Some(2.0));
    assert_eq!(sample(&text, "zbs_taskd_runners{state=\"draining\"}"), Some(1.0));
    metrics.set_leader_gauges(None, None);
    let text = metrics.encode();
    assert!(!text.contains("zbs_taskd_tasks{"), "{text}");
    assert_eq!(sample(&text, "zbs_taskd_runners{state=\"up\"}"), Some(0.0));
}

#[test]
fn task_transitions_are_counted_by_type_from_and_to() {
    let metrics = Metrics::new();
    let count = metrics.task_transition_counter();
    let transition = |from, to| crate::task_db::TaskTransition { task_type: "sleep", from, to };
    count(transition(None, crate::task::TaskState::Pending));
    count(transition(Some(crate::task::TaskState::Pending), crate::task::TaskState::Running));
    count(transition(Some(crate::task::TaskState::Pending), crate::task::TaskState::Running));
    let text = metrics.encode();
    let series = |from: &str, to: &str| {
        format!("zbs_taskd_task_transitions_total{{type=\"sleep\",from=\"{from}\",to=\"{to}\"}}")
    };
    assert_eq!(sample(&text, &series("new", "pending")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &series("pending", "running")), Some(2.0), "{text}");
}

#[test]
fn zookeeper_requests_are_timed_by_operation() {
    let metrics = Metrics::new();
    let observer = observers::ZkMetrics::new(metrics.clone());
    quorum::OperationObserver::finished(&observer, "multi", Duration::from_millis(3));
    quorum::OperationObserver::finished(&observer, "multi", Duration::from_millis(5));
    quorum::OperationObserver::finished(&observer, "get_data_and_watch", Duration::from_millis(1));
    let text = metrics.encode();
    let count = |operation: &str| {
        sample(&text, &format!("zbs_taskd_zookeeper_operation_seconds_count{{operation=\"{operation}\"}}"))
    };
    assert_eq!(count("multi"), Some(2.0), "{text}");
    assert_eq!(count("get_data_and_watch"), Some(1.0), "{text}");
    assert_eq!(count("exists"), Some(0.0), "known operations start at zero: {text}");
}

#[test]
fn a_stopped_service_exports_no_vip_held_and_no_leader_gauges() {
    let metrics = Metrics::new();
    metrics.set_vip_held("task_center", "10.0.0.9", true);
    metrics.is_leader.set(1);
    let mut counts = crate::task_db::TaskCounts::default();
    counts.add(("sleep", crate::task::TaskState::Pending));
    metrics
        .set_leader_gauges(Some(&counts), Some(crate::dispatcher::scheduler::RunnerCounts { n_up: 3, n_draining: 0 }));
    assert_eq!(sample(&metrics.encode(), "zbs_taskd_vip_held{service=\"task_center\",vip=\"10.0.0.9\"}"), Some(1.0));
    metrics.service_stopped();
    let text = metrics.encode();
    assert_eq!(sample(&text, "zbs_taskd_vip_held{service=\"task_center\",vip=\"10.0.0.9\"}"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "zbs_taskd_is_leader"), Some(0.0));
    assert_eq!(sample(&text, "zbs_taskd_service_state{state=\"stopped\"}"), Some(1.0));
    assert_eq!(sample(&text, "zbs_taskd_runners{state=\"up\"}"), Some(0.0));
    assert!(!text.contains("zbs_taskd_tasks{"), "{text}");
}
