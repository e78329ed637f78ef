//! The placement and ownership rules, apart from IO: pure functions over a view of the
//! dispatcher's world (tasks, runners with their slots, drain and health, the engine's own
//! assignments not yet seen to end, runners held off, the time) that return decisions. Like
//! openraft's engine, which "outputs commands" for a runtime to execute, nothing here reads
//! ZooKeeper or calls a runner: `scheduler.rs` builds the view, runs the rules and executes
//! what they return.
//!
//! # The rules
//! * A task is **due** when it is `Interrupted` (not a failed attempt: rescheduled at once) or
//!   `Pending` with its retry back-off passed, and inside its runtime window if it has one.
//! * The back-off before the retry after `n` failed attempts is `base × factor^(n−1)`, capped
//!   (`RetryPolicy`, the `[tasks] retry_*` keys: 10 s doubling to 5 min by default, as
//!   Kubernetes Jobs do).
//! * A failure is transient or permanent (`FailureClass`, reported by the runner). A permanent
//!   one fails the task at once (`task::after_failure`); a `Pending` task whose last failure was
//!   permanent (written by an older runner) is failed, never handed out (`FailPermanently`).
//! * A runner takes tasks only while registered healthy, not draining and not held off; its
//!   free slots are its slots less the larger of what its registration counts busy and the tasks
//!   this dispatcher handed it and has not seen end (`free_slots`): a registration read before
//!   an assignment does not show it, so the engine counts its own assignments itself.
//! * Due tasks go oldest first, each to the runner with the most free slots; a task is handed
//!   out at most once (never one the engine already counts as assigned).
//! * A runner that refused for want of a free slot is not held off (its registration was
//!   behind: the view is read again); one that refused otherwise or did not answer is held off
//!   for `RUNNER_HOLD_OFF` (`hold_off_after`).
//! * A `Running` task whose current owner is missing is interrupted once its claim grace since
//!   the assignment has passed (`judge_running`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::task::{FailureClass, TaskId, TaskRecord, TaskState};

/// How long a runner that refused a task (other than for want of a slot) or did not answer is
/// held off.
pub const RUNNER_HOLD_OFF: Duration = Duration::from_secs(5);

/// The capped exponential back-off between a transient failure and the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait before the first retry.
    pub base: Duration,
    /// Each further retry waits this many times longer.
    pub factor: u32,
    /// No retry waits longer.
    pub cap: Duration,
}

impl RetryPolicy {
    /// 10 s doubling to 5 min, as Kubernetes Jobs back off.
    pub const DEFAULT: RetryPolicy =
        RetryPolicy { base: Duration::from_secs(10), factor: 2, cap: Duration::from_secs(300) };

    /// The wait before the retry that follows `attempts` failed attempts (1: the first retry):
    /// `base × factor^(attempts−1)`, never more than `cap`; no wait before a first attempt.
    pub fn backoff(&self, attempts: u32) -> Duration {
        if attempts == 0 {
            return Duration::ZERO;
        }
        let mut wait = self.base.min(self.cap);
        for _ in 1..attempts {
            if wait >= self.cap {
                break;
            }
            wait = wait.saturating_mul(self.factor).min(self.cap);
        }
        wait
    }

    /// When a task that failed at `failed_ms` after `attempts` failed attempts may run again.
    pub fn retry_at(&self, attempts: u32, failed_ms: u64) -> u64 {
        failed_ms.saturating_add(self.backoff(attempts).as_millis() as u64)
    }
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy::DEFAULT
    }
}

/// A runner as its registration last said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerSlots {
    pub address: String,
    pub slots: u32,
    /// Free slots as the runner counted them when it wrote its registration.
    pub free_slots: u32,
    pub draining: bool,
    pub healthy: bool,
}

/// A task the dispatch pass may hand out: a `Pending` or `Interrupted` record as the cache
/// holds it, with whether its runtime window is open now (the window reads the local clock,
/// so the caller judges it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub task_id: TaskId,
    pub state: TaskState,
    pub created_ms: u64,
    pub attempts: u32,
    pub last_failed_ms: Option<u64>,
    pub error_class: FailureClass,
    pub window_open: bool,
}

impl Candidate {
    /// The candidate a record is, its window judged by `window_open`.
    pub fn of(record: &TaskRecord, window_open: bool) -> Candidate {
        Candidate {
            task_id: record.task_id.clone(),
            state: record.state,
            created_ms: record.created_ms,
            attempts: record.attempts,
            last_failed_ms: record.last_failed_ms,
            error_class: record.last_error_class(),
            window_open,
        }
    }

    /// A `Pending` task that a permanent failure left waiting (an older runner wrote it so):
    /// it must fail, never run again.
    pub fn failed_for_good(&self) -> bool {
        self.state == TaskState::Pending && self.attempts > 0 && self.error_class == FailureClass::Permanent
    }

    /// When it may be handed out (see `# The rules`); `None` when never (not a state the pass
    /// hands out, or failed for good).
    pub fn due_at(&self, retry: &RetryPolicy) -> Option<u64> {
        match self.state {
            TaskState::Interrupted => Some(0),
            TaskState::Pending if self.failed_for_good() => None,
            TaskState::Pending => match (self.attempts, self.last_failed_ms) {
                (0, _) | (_, None) => Some(0),
                (attempts, Some(failed_ms)) => Some(retry.retry_at(attempts, failed_ms)),
            },
            _ => None,
        }
    }

    /// Whether it may be handed out at `now_ms`.
    pub fn is_due(&self, now_ms: u64, retry: &RetryPolicy) -> bool {
        self.window_open && self.due_at(retry).is_some_and(|at| now_ms >= at)
    }
}

/// What the dispatch pass sees.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub now_ms: u64,
    /// Tasks it may hand out, in any order.
    pub candidates: &'a [Candidate],
    /// Every registered runner.
    pub runners: &'a [RunnerSlots],
    /// The engine's own assignments not yet seen to end: task → runner address.
    pub assigned: &'a HashMap<TaskId, String>,
    /// Runners held off until then (ms since the epoch).
    pub held_off: &'a HashMap<String, u64>,
    pub retry: &'a RetryPolicy,
}

/// A decision of the dispatch pass, for the scheduler to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Write the assignment (`Running` on `runner_addr`) and call the runner's execute.
    Assign { task_id: TaskId, runner_addr: String },
    /// Record `Failed`: its last failure was permanent.
    FailPermanently { task_id: TaskId },
    /// Not due before `at_ms` (its retry back-off): look again then.
    RetryAt { task_id: TaskId, at_ms: u64 },
}

/// Whether `runner` may be given tasks now (healthy, not draining, not held off).
pub fn may_take_tasks(runner: &RunnerSlots, held_off: &HashMap<String, u64>, now_ms: u64) -> bool {
    runner.healthy && !runner.draining && held_off.get(&runner.address).is_none_or(|until| *until <= now_ms)
}

/// A runner's free slots: its slots less the larger of what its registration counts busy and
/// the engine's assignments to it not yet seen to end.
pub fn free_slots(runner: &RunnerSlots, assigned: &HashMap<TaskId, String>) -> u32 {
    let registered_busy = runner.slots.saturating_sub(runner.free_slots);
    let assigned_here = assigned.values().filter(|address| **address == runner.address).count();
    let busy = (registered_busy as usize).max(assigned_here);
    (runner.slots as usize).saturating_sub(busy) as u32
}

/// The free slots of every runner that may take tasks now, by address.
pub fn free_capacity(view: &View<'_>) -> Vec<(String, u32)> {
    let mut seen = HashSet::new();
    view.runners
        .iter()
        .filter(|runner| seen.insert(runner.address.as_str()))
        .filter(|runner| may_take_tasks(runner, view.held_off, view.now_ms))
        .map(|runner| (runner.address.clone(), free_slots(runner, view.assigned)))
        .filter(|(_, free)| *free > 0)
        .collect()
}

/// The dispatch pass's decisions (see `# The rules`): every task failed for good is failed;
/// due tasks, oldest first, go to the runner with the most free slots while any has one;
/// candidates waiting for their back-off say when they will be due.
pub fn plan(view: &View<'_>) -> Vec<Command> {
    let mut free = free_capacity(view);
    let mut candidates: Vec<&Candidate> = view.candidates.iter().collect();
    candidates.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then_with(|| a.task_id.cmp(&b.task_id)));
    let mut decided: HashSet<&TaskId> = HashSet::new();
    let mut commands = Vec::new();
    for candidate in candidates {
        // One decision per task, and none for a task already handed out.
        if view.assigned.contains_key(&candidate.task_id) || !decided.insert(&candidate.task_id) {
            continue;
        }
        if candidate.failed_for_good() {
            commands.push(Command::FailPermanently { task_id: candidate.task_id.clone() });
            continue;
        }
        if !candidate.window_open {
            continue;
        }
        let Some(due_at) = candidate.due_at(view.retry) else { continue };
        if view.now_ms < due_at {
            commands.push(Command::RetryAt { task_id: candidate.task_id.clone(), at_ms: due_at });
            continue;
        }
        // The most free slots; the first such runner on a tie, so the plan is deterministic.
        let best =
            free.iter_mut().filter(|(_, n_free)| *n_free > 0).fold(None, |best: Option<&mut (String, u32)>, slot| {
                match best {
                    Some(best) if best.1 >= slot.1 => Some(best),
                    _ => Some(slot),
                }
            });
        let Some(best) = best else { continue };
        best.1 -= 1;
        commands.push(Command::Assign { task_id: candidate.task_id.clone(), runner_addr: best.0.clone() });
    }
    commands
}

/// Why a runner did not take a task it was handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It had no free slot: its registration was behind what it runs.
    NoFreeSlot,
    /// Anything else: draining, stopping, starting, unreachable, no answer in time.
    Unavailable,
}

/// Until when (ms) a runner that refused at `now_ms` is held off, if at all: not for want of a
/// slot (the pass reads the runners again and counts what it handed out, so it does not
/// over-commit the same runner twice), `RUNNER_HOLD_OFF` otherwise.
pub fn hold_off_after(refusal: Refusal, now_ms: u64) -> Option<u64> {
    match refusal {
        Refusal::NoFreeSlot => None,
        Refusal::Unavailable => Some(now_ms.saturating_add(RUNNER_HOLD_OFF.as_millis() as u64)),
    }
}

/// What to do about a `Running` task after looking at its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunningVerdict {
    /// Its runner holds it (or may still claim it): follow its owner node.
    Watch,
    /// No current owner and the claim grace has passed: `Interrupted`, to be handed out again.
    Interrupt,
}

/// A `Running` task whose current owner is `owner_present` (a stale owner, of an earlier
/// assignment, counts as none), assigned at `schedule_time_ms` (`None`: long ago).
pub fn judge_running(
    owner_present: bool,
    schedule_time_ms: Option<u64>,
    now_ms: u64,
    claim_grace: Duration,
) -> RunningVerdict {
    let claim_late = schedule_time_ms.is_none_or(|at| now_ms.saturating_sub(at) > claim_grace.as_millis() as u64);
    if !owner_present && claim_late {
        RunningVerdict::Interrupt
    } else {
        RunningVerdict::Watch
    }
}

#[cfg(test)]
mod tests;
