//! The checker: pure rules over a whole run's history and what the system recorded (task
//! records, run logs, leader samples), returning every violation found. No IO here: the
//! harness gathers the facts, these functions judge them, and the unit tests feed them
//! synthetic histories.

use std::collections::{BTreeMap, BTreeSet};

/// A logical submit of the workload (its retries are one submit).
#[derive(Clone, Debug)]
pub struct SubmitFact {
    pub op: u64,
    /// What identifies its task among all records: `sleep:<duration_ms>` or `copy:<destination>`.
    pub key: String,
    /// The task id of the answer that acknowledged it (201), if one did.
    pub acknowledged: Option<String>,
}

/// A task record as the leader listed it after the settle.
#[derive(Clone, Debug)]
pub struct TaskFact {
    pub task_id: String,
    pub key: String,
    pub state: String,
}

/// One run from a run log: a `start` line and, unless its process died first, an `end` line.
#[derive(Clone, Debug, PartialEq)]
pub struct RunFact {
    pub task_id: String,
    pub node_id: String,
    pub pid: u32,
    pub session_id: i64,
    pub start_ns: u64,
    pub end_ns: Option<u64>,
    pub outcome: Option<String>,
    pub bytes_written: u64,
    /// A copy (it writes), not a sleep.
    pub writes_data: bool,
    /// A run its lease stopped: no IO after this instant (the runner checks the lease before
    /// every write), however much later it ended.
    pub io_until_ns: Option<u64>,
}

/// A process that the nemesis ended (SIGKILL, or SIGTERM then its exit), and when it was gone.
#[derive(Clone, Debug)]
pub struct DeathFact {
    pub pid: u32,
    pub gone_ns: u64,
}

/// A node's processes stopped (SIGSTOP to SIGCONT) by the nemesis: a run cannot write then.
#[derive(Clone, Debug)]
pub struct StoppedFact {
    pub node_id: String,
    pub from_ns: u64,
    pub to_ns: u64,
}

/// One status sample of one node: None when it did not answer.
#[derive(Clone, Debug)]
pub struct LeaderSample {
    pub node: usize,
    pub at_ns: u64,
    /// `(pid, leader, election sequence)`.
    pub status: Option<(u32, bool, Option<i64>)>,
}

/// A succeeded copy compared with its source.
#[derive(Clone, Debug)]
pub struct CopyFact {
    pub task_id: String,
    pub equal: bool,
    pub holes_kept: bool,
}

/// Everything the checker judges.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub submits: Vec<SubmitFact>,
    pub tasks: Vec<TaskFact>,
    pub runs: Vec<RunFact>,
    pub deaths: Vec<DeathFact>,
    pub stopped: Vec<StoppedFact>,
    pub copies: Vec<CopyFact>,
    pub leader_samples: Vec<LeaderSample>,
    /// Two leaders seen for no longer than this are a hand-over between samples, not a violation.
    pub leader_overlap_bound_ns: u64,
    /// When the facts were gathered: the end of a run that has neither an `end` nor a death.
    pub gathered_ns: u64,
}

/// What the checker found; every count 0 (and `max_concurrent_leaders` ≤ 1) is a clean run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Findings {
    pub tasks_acknowledged: u64,
    pub tasks_lost: u64,
    pub tasks_duplicated: u64,
    /// Task records that no submit of the workload explains.
    pub tasks_unexplained: u64,
    pub tasks_stuck: u64,
    pub double_runs: u64,
    pub late_writes: u64,
    /// Runs with a `start` and neither an `end` nor a known death of their process.
    pub runs_unended: u64,
    pub copies_corrupt: u64,
    pub max_concurrent_leaders: u64,
    /// The longest time two nodes were both seen leading, in milliseconds.
    pub leader_overlap_ms: f64,
    /// One sentence per violation, with the evidence.
    pub details: Vec<String>,
}

impl Findings {
    /// The violations that fail a run.
    pub fn violations(&self) -> u64 {
        self.tasks_lost
            + self.tasks_duplicated
            + self.tasks_stuck
            + self.double_runs
            + self.late_writes
            + self.copies_corrupt
            + self.max_concurrent_leaders.saturating_sub(1)
    }
}

/// The states a task ends in.
pub const TERMINAL_STATES: [&str; 3] = ["succeeded", "failed", "cancelled"];

/// Judges every rule.
pub fn check(facts: &Facts) -> Findings {
    let mut findings = Findings::default();
    check_submits(facts, &mut findings);
    check_stuck(facts, &mut findings);
    check_runs(facts, &mut findings);
    check_copies(facts, &mut findings);
    check_leaders(facts, &mut findings);
    findings
}

/// Every acknowledged submit is exactly one task; no submit (acknowledged or not) made two.
fn check_submits(facts: &Facts, findings: &mut Findings) {
    let mut by_key: BTreeMap<&str, Vec<&TaskFact>> = BTreeMap::new();
    for task in &facts.tasks {
        by_key.entry(task.key.as_str()).or_default().push(task);
    }
    let submitted: BTreeSet<&str> = facts.submits.iter().map(|submit| submit.key.as_str()).collect();
    for submit in &facts.submits {
        let tasks = by_key.get(submit.key.as_str()).map(Vec::as_slice).unwrap_or_default();
        if let Some(task_id) = &submit.acknowledged {
            findings.tasks_acknowledged += 1;
            if !tasks.iter().any(|task| &task.task_id == task_id) {
                findings.tasks_lost += 1;
                findings.details.push(format!(
                    "lost: submit {} ({}) was acknowledged as task {task_id}, which no record holds",
                    submit.op, submit.key
                ));
            }
        }
        if tasks.len() > 1 {
            findings.tasks_duplicated += tasks.len() as u64 - 1;
            let ids: Vec<&str> = tasks.iter().map(|task| task.task_id.as_str()).collect();
            findings.details.push(format!(
                "duplicated: submit {} ({}) made {} tasks: {}",
                submit.op,
                submit.key,
                tasks.len(),
                ids.join(", ")
            ));
        }
    }
    for task in facts.tasks.iter().filter(|task| !submitted.contains(task.key.as_str())) {
        findings.tasks_unexplained += 1;
        findings.details.push(format!("unexplained: task {} ({}) matches no submit", task.task_id, task.key));
    }
}

/// After the settle every task has ended.
fn check_stuck(facts: &Facts, findings: &mut Findings) {
    for task in facts.tasks.iter().filter(|task| !TERMINAL_STATES.contains(&task.state.as_str())) {
        findings.tasks_stuck += 1;
        findings
            .details
            .push(format!("stuck: task {} ({}) is still {} after the settle", task.task_id, task.key, task.state));
    }
}

/// A run's end: its `end` line, else its process's death, else the gathering (counted unended).
fn run_end(run: &RunFact, facts: &Facts) -> (u64, bool) {
    if let Some(end) = run.end_ns {
        // A run did no IO after its lease's end: that is when it stopped acting, even when its
        // process, frozen meanwhile, logged the end later.
        return (run.io_until_ns.map_or(end, |until| until.min(end)), true);
    }
    match facts
        .deaths
        .iter()
        .filter(|death| death.pid == run.pid && death.gone_ns >= run.start_ns)
        .map(|death| death.gone_ns)
        .min()
    {
        Some(gone) => (gone, true),
        None => (facts.gathered_ns, false),
    }
}

/// How long `node_id` was awake (not stopped by the nemesis) within `[from, to)`.
fn awake_ns(facts: &Facts, node_id: &str, from: u64, to: u64) -> u64 {
    let mut stopped: Vec<(u64, u64)> = facts
        .stopped
        .iter()
        .filter(|stop| stop.node_id == node_id)
        .map(|stop| (stop.from_ns.max(from), stop.to_ns.min(to)))
        .filter(|(start, end)| end > start)
        .collect();
    stopped.sort_unstable();
    let (mut asleep, mut covered_to) = (0, from);
    for (start, end) in stopped {
        let start = start.max(covered_to);
        if end > start {
            asleep += end - start;
            covered_to = end;
        }
    }
    to.saturating_sub(from).saturating_sub(asleep)
}

/// No task ran twice at once; no run wrote after another run of its task had started.
///
/// The run log bounds a run by its start and end, not by its last write, so a late write is a
/// run that wrote (a copy with bytes written, or a copy whose end is its process's death) and
/// was awake — not stopped by the nemesis — for some time after a later run of the same task
/// started: it could have written then. Without the runner recording its lease, this is the
/// most the logs can prove. A double run is two runs acting at once: a run acts from its start
/// until its end or, when earlier, the end of its IO by its lease (`io_until_ns`: the runner asks
/// its lease before every write and logs the lease's end as of its last check, so a process
/// frozen mid-copy stopped acting when its lease ran out, not when it woke to log its end).
fn check_runs(facts: &Facts, findings: &mut Findings) {
    let mut by_task: BTreeMap<&str, Vec<(&RunFact, u64)>> = BTreeMap::new();
    for run in &facts.runs {
        let (end, known) = run_end(run, facts);
        if !known {
            findings.runs_unended += 1;
        }
        by_task.entry(run.task_id.as_str()).or_default().push((run, end));
    }
    for (task_id, mut runs) in by_task {
        runs.sort_by_key(|(run, _)| run.start_ns);
        for (index, (first, first_end)) in runs.iter().enumerate() {
            for (second, second_end) in &runs[index + 1..] {
                // `second` started no earlier than `first`.
                if second.start_ns >= *first_end || first.start_ns >= *second_end {
                    continue;
                }
                findings.double_runs += 1;
                let overlap_ms = (first_end.min(second_end) - second.start_ns) as f64 / 1e6;
                findings.details.push(format!(
                    "double run: task {task_id} ran on {} (pid {}, session {:#x}, ended {}) and on {} (pid {}, session {:#x}) for {overlap_ms:.0} ms at once",
                    first.node_id,
                    first.pid,
                    first.session_id,
                    first.outcome.as_deref().unwrap_or("without an end line"),
                    second.node_id,
                    second.pid,
                    second.session_id,
                ));
                let awake_ms =
                    awake_ns(facts, &first.node_id, second.start_ns, *first_end.min(second_end)) as f64 / 1e6;
                let may_have_written = first.writes_data && (first.bytes_written > 0 || first.end_ns.is_none());
                if may_have_written && awake_ms > 0.0 {
                    findings.late_writes += 1;
                    findings.details.push(format!(
                        "late write: task {task_id}'s run on {} (pid {}) wrote {} bytes in all and was awake for {awake_ms:.1} ms after the run on {} began, before it ended ({})",
                        first.node_id,
                        first.pid,
                        first.bytes_written,
                        second.node_id,
                        first.outcome.as_deref().unwrap_or("its process died"),
                    ));
                }
            }
        }
    }
}

fn check_copies(facts: &Facts, findings: &mut Findings) {
    for copy in facts.copies.iter().filter(|copy| !copy.equal || !copy.holes_kept) {
        findings.copies_corrupt += 1;
        findings.details.push(format!(
            "corrupt copy: task {} succeeded but its destination {}",
            copy.task_id,
            if copy.equal { "lost the source's holes" } else { "differs from its source (SHA-256)" }
        ));
    }
}

/// Spans of one node saying leader with one pid and election node, broken by any other answer
/// or no answer (a stopped process is not acting).
pub fn leadership_spans(samples: &[LeaderSample]) -> Vec<(usize, u64, u64)> {
    let mut open: BTreeMap<usize, (u64, u64, u32, Option<i64>)> = BTreeMap::new();
    let mut spans = Vec::new();
    for sample in samples {
        let current = open.get(&sample.node).copied();
        match (sample.status, current) {
            (Some((pid, true, sequence)), Some((first, _, open_pid, open_sequence)))
                if pid == open_pid && sequence == open_sequence =>
            {
                open.insert(sample.node, (first, sample.at_ns, pid, sequence));
            }
            (Some((pid, true, sequence)), _) => {
                if let Some((first, last, _, _)) = current {
                    spans.push((sample.node, first, last));
                }
                open.insert(sample.node, (sample.at_ns, sample.at_ns, pid, sequence));
            }
            _ => {
                if let Some((first, last, _, _)) = open.remove(&sample.node) {
                    spans.push((sample.node, first, last));
                }
            }
        }
    }
    spans.extend(open.into_iter().map(|(node, (first, last, _, _))| (node, first, last)));
    spans
}

/// The most nodes seen leading together for longer than the bound.
fn check_leaders(facts: &Facts, findings: &mut Findings) {
    let spans = leadership_spans(&facts.leader_samples);
    findings.max_concurrent_leaders = u64::from(!spans.is_empty());
    for &(node, first, last) in &spans {
        // Every other span that overlaps this one for longer than the bound.
        let overlapping: Vec<(usize, u64)> = spans
            .iter()
            .filter(|&&(other, ..)| other != node)
            .filter_map(|&(other, other_first, other_last)| {
                let (from, to) = (first.max(other_first), last.min(other_last));
                (to > from).then(|| (other, to - from))
            })
            .collect();
        for &(_, overlap) in &overlapping {
            findings.leader_overlap_ms = findings.leader_overlap_ms.max(overlap as f64 / 1e6);
        }
        let long: BTreeSet<usize> = overlapping
            .iter()
            .filter(|&&(_, overlap)| overlap > facts.leader_overlap_bound_ns)
            .map(|&(other, _)| other)
            .collect();
        if !long.is_empty() {
            let count = 1 + long.len() as u64;
            if count > findings.max_concurrent_leaders {
                findings.details.push(format!(
                    "two leaders: node {} led from {:.3} s to {:.3} s (monotonic) while node(s) {:?} led too, longer than {} ms",
                    node + 1,
                    first as f64 / 1e9,
                    last as f64 / 1e9,
                    long.iter().map(|other| other + 1).collect::<Vec<_>>(),
                    facts.leader_overlap_bound_ns / 1_000_000
                ));
            }
            findings.max_concurrent_leaders = findings.max_concurrent_leaders.max(count);
        }
    }
}

#[cfg(test)]
mod tests;

/// How long after a killed daemon is started again its node's leftover VIP still counts as a dead
/// holder's: the new process removes every leftover VIP at start, before it joins the election.
pub const RESTART_CLEANUP_GRACE_NS: u64 = 2_000_000_000;

/// A node whose daemon was SIGKILLed: from the kill until its restart plus
/// [`RESTART_CLEANUP_GRACE_NS`], its VIP address is a dead process's leftover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadWindow {
    pub node: usize,
    pub from_ns: u64,
    pub restarted_ns: u64,
}

/// The VIP samples that saw two or more holders, split: `(live, dead)`. A sample is a dead
/// holder's when every holder but one is a node whose daemon was SIGKILLed and not yet started
/// again (see [`DeadWindow`]): the kernel of that host still has the address, no process is
/// behind it, and a SIGKILL leaves nobody to remove it — what the crash fast path trades for
/// taking over at once (the fence removes it within the session timeout, the restart at once).
/// Every other two-holder sample is live: two live processes holding the VIP.
pub fn split_vip_two_holder_samples(samples: &[(u64, Vec<usize>)], dead: &[DeadWindow]) -> (usize, usize) {
    let (mut live, mut dead_holder) = (0, 0);
    for (at_ns, holders) in samples.iter().filter(|(_, holders)| holders.len() > 1) {
        let is_dead = |node: usize| {
            dead.iter().any(|window| {
                window.node == node
                    && window.from_ns <= *at_ns
                    && *at_ns <= window.restarted_ns.saturating_add(RESTART_CLEANUP_GRACE_NS)
            })
        };
        let alive = holders.iter().filter(|node| !is_dead(**node)).count();
        if alive <= 1 {
            dead_holder += 1;
        } else {
            live += 1;
        }
    }
    (live, dead_holder)
}
