//! The checker on synthetic histories: a clean one passes, and each violation is found alone.

use super::*;

const MS: u64 = 1_000_000;

fn submit(op: u64, key: &str, acknowledged: Option<&str>) -> SubmitFact {
    SubmitFact { op, key: key.to_string(), acknowledged: acknowledged.map(str::to_string) }
}

fn task(task_id: &str, key: &str, state: &str) -> TaskFact {
    TaskFact { task_id: task_id.to_string(), key: key.to_string(), state: state.to_string() }
}

fn run(task_id: &str, node: usize, pid: u32, start_ms: u64, end_ms: Option<u64>, bytes_written: u64) -> RunFact {
    RunFact {
        task_id: task_id.to_string(),
        node_id: format!("node-{node}"),
        pid,
        session_id: i64::from(pid),
        start_ns: start_ms * MS,
        end_ns: end_ms.map(|end| end * MS),
        outcome: end_ms.map(|_| "succeeded".to_string()),
        bytes_written,
        writes_data: true,
        io_until_ns: None,
    }
}

fn sample(node: usize, at_ms: u64, pid: u32, leader: bool) -> LeaderSample {
    LeaderSample { node, at_ns: at_ms * MS, status: Some((pid, leader, Some(pid as i64))) }
}

/// Two submits (one retried after a timeout but made once), their runs one after the other
/// (the first interrupted by a kill), a good copy, one leader handing over between samples.
fn clean() -> Facts {
    Facts {
        submits: vec![submit(1, "copy:/v/d1", Some("t1")), submit(2, "sleep:1002", None)],
        tasks: vec![task("t1", "copy:/v/d1", "succeeded"), task("t2", "sleep:1002", "cancelled")],
        runs: vec![
            run("t1", 1, 100, 0, None, 0),
            run("t1", 2, 200, 600, Some(900), 4096),
            run("t2", 3, 300, 10, Some(20), 0),
        ],
        deaths: vec![DeathFact { pid: 100, gone_ns: 500 * MS }],
        stopped: Vec::new(),
        copies: vec![CopyFact { task_id: "t1".to_string(), equal: true, holes_kept: true }],
        leader_samples: vec![
            sample(0, 0, 10, true),
            sample(1, 5, 11, false),
            sample(0, 20, 10, true),
            sample(0, 40, 10, false),
            sample(1, 45, 11, true),
            sample(1, 60, 11, true),
        ],
        leader_overlap_bound_ns: 100 * MS,
        gathered_ns: 10_000 * MS,
    }
}

#[test]
fn a_clean_history_passes() {
    let findings = check(&clean());
    assert_eq!(findings.violations(), 0, "{:#?}", findings.details);
    assert_eq!(findings.tasks_acknowledged, 1);
    assert_eq!(findings.max_concurrent_leaders, 1);
    assert_eq!(findings.runs_unended, 0);
}

#[test]
fn an_acknowledged_task_missing_is_lost() {
    let mut facts = clean();
    facts.tasks.remove(0);
    facts.runs.retain(|run| run.task_id != "t1");
    let findings = check(&facts);
    assert_eq!((findings.tasks_lost, findings.violations()), (1, 1), "{:#?}", findings.details);
}

#[test]
fn two_tasks_of_one_submit_are_a_duplicate() {
    let mut facts = clean();
    facts.tasks.push(task("t3", "sleep:1002", "succeeded"));
    let findings = check(&facts);
    assert_eq!((findings.tasks_duplicated, findings.violations()), (1, 1), "{:#?}", findings.details);
}

#[test]
fn a_task_of_no_submit_is_unexplained_but_not_a_violation() {
    let mut facts = clean();
    facts.tasks.push(task("t9", "sleep:77", "succeeded"));
    let findings = check(&facts);
    assert_eq!((findings.tasks_unexplained, findings.violations()), (1, 0));
}

#[test]
fn a_task_not_ended_after_the_settle_is_stuck() {
    let mut facts = clean();
    facts.tasks[1].state = "running".to_string();
    let findings = check(&facts);
    assert_eq!((findings.tasks_stuck, findings.violations()), (1, 1));
}

#[test]
fn overlapping_runs_are_a_double_run_and_a_writing_one_a_late_write() {
    let mut facts = clean();
    // The first run's process died only at 700 ms, after the second run began at 600 ms.
    facts.deaths[0].gone_ns = 700 * MS;
    let findings = check(&facts);
    assert_eq!((findings.double_runs, findings.late_writes), (1, 1), "{:#?}", findings.details);
    assert_eq!(findings.violations(), 2);
}

#[test]
fn a_run_stopped_throughout_the_overlap_is_a_double_run_but_no_late_write() {
    let mut facts = clean();
    // node-1 was stopped from 400 ms to its run's end at 650 ms; the other run began at 600 ms.
    facts.runs[0] = run("t1", 1, 100, 0, Some(650), 4096);
    facts.stopped.push(StoppedFact { node_id: "node-1".to_string(), from_ns: 400 * MS, to_ns: 650 * MS });
    let findings = check(&facts);
    assert_eq!((findings.double_runs, findings.late_writes), (1, 0), "{:#?}", findings.details);
    // Woken at 640 ms, it had 10 ms to write.
    facts.stopped[0].to_ns = 640 * MS;
    let findings = check(&facts);
    assert_eq!((findings.double_runs, findings.late_writes), (1, 1), "{:#?}", findings.details);
}

/// A run its lease stopped before the next run began is no double run, however late its frozen
/// process logged its end; one whose lease ran into the next run is.
#[test]
fn a_run_its_lease_stopped_before_the_next_began_is_no_double_run() {
    let mut facts = clean();
    facts.runs[0] = run("t1", 1, 100, 0, Some(900), 4096);
    facts.runs[0].outcome = Some("lease_lapsed".to_string());
    facts.runs[0].io_until_ns = Some(550 * MS);
    facts.stopped.push(StoppedFact { node_id: "node-1".to_string(), from_ns: 400 * MS, to_ns: 890 * MS });
    let findings = check(&facts);
    assert_eq!((findings.double_runs, findings.late_writes), (0, 0), "{:#?}", findings.details);
    facts.runs[0].io_until_ns = Some(620 * MS);
    let findings = check(&facts);
    assert_eq!(findings.double_runs, 1, "{:#?}", findings.details);
}

#[test]
fn an_overlapping_run_that_wrote_nothing_is_a_double_run_only() {
    let mut facts = clean();
    facts.runs[0] = run("t1", 1, 100, 0, Some(650), 0);
    let findings = check(&facts);
    assert_eq!((findings.double_runs, findings.late_writes), (1, 0), "{:#?}", findings.details);
}

#[test]
fn a_run_without_end_or_death_is_unended_and_lasts_until_the_gathering() {
    let mut facts = clean();
    facts.deaths.clear();
    let findings = check(&facts);
    assert_eq!(findings.runs_unended, 1);
    assert_eq!(findings.double_runs, 1, "it may still run: {:#?}", findings.details);
}

#[test]
fn a_copy_that_differs_or_lost_its_holes_is_corrupt() {
    let mut facts = clean();
    facts.copies[0].equal = false;
    facts.copies.push(CopyFact { task_id: "t4".to_string(), equal: true, holes_kept: false });
    let findings = check(&facts);
    assert_eq!((findings.copies_corrupt, findings.violations()), (2, 2));
}

#[test]
fn two_leaders_longer_than_the_bound_are_counted() {
    let mut facts = clean();
    facts.leader_samples.extend([
        sample(0, 100, 10, true),
        sample(1, 150, 11, true),
        sample(0, 300, 10, true),
        sample(1, 320, 11, true),
    ]);
    let findings = check(&facts);
    assert_eq!(findings.max_concurrent_leaders, 2, "{:#?}", findings.details);
    assert_eq!(findings.violations(), 1);
}

#[test]
fn a_paused_leader_that_answers_leader_once_after_waking_is_within_the_bound() {
    let mut facts = clean();
    // Node 0 stopped (no answers), node 1 leads; node 0 wakes, says leader once, then steps down.
    facts.leader_samples.extend([
        LeaderSample { node: 0, at_ns: 80 * MS, status: None },
        sample(1, 90, 11, true),
        sample(0, 100, 10, true),
        sample(1, 110, 11, true),
        sample(0, 120, 10, false),
    ]);
    let findings = check(&facts);
    assert_eq!(findings.max_concurrent_leaders, 1, "{:#?}", findings.details);
}

#[test]
fn a_killed_holders_leftover_vip_is_counted_apart_from_two_live_holders() {
    let killed = [DeadWindow { node: 1, from_ns: 1_000 * MS, restarted_ns: 3_000 * MS }];
    let samples = vec![
        (500 * MS, vec![1]),
        // Node 1 killed, node 2 took over: the dead node's leftover.
        (1_100 * MS, vec![1, 2]),
        (4_900 * MS, vec![1, 2]),
        // Past the restart and its clean-up grace: two live holders.
        (5_100 * MS, vec![1, 2]),
        // Nodes 0 and 2 both alive.
        (1_200 * MS, vec![0, 2]),
        // Three holders, one dead: still two live ones.
        (1_300 * MS, vec![0, 1, 2]),
        (6_000 * MS, vec![2]),
    ];
    assert_eq!(split_vip_two_holder_samples(&samples, &killed), (3, 2));
    assert_eq!(split_vip_two_holder_samples(&samples, &[]), (5, 0));
}
