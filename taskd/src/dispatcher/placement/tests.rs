//! Property tests of the placement rules over random views (no ZooKeeper): never two
//! assignments of one task, never more in flight to a runner than its free slots (counting the
//! engine's own assignments its registration does not show yet), never to a draining,
//! unhealthy or held-off runner, back-off respected, permanent failures never retried; and the
//! examples that pin the back-off and the refusal rules.

use proptest::prelude::*;

use super::*;

const NOW_MS: u64 = 1_800_000_000_000;

fn policy() -> impl Strategy<Value = RetryPolicy> {
    (1u64..20_000, 1u32..5, 1u64..400_000).prop_map(|(base_ms, factor, cap_ms)| RetryPolicy {
        base: Duration::from_millis(base_ms),
        factor,
        cap: Duration::from_millis(cap_ms),
    })
}

fn task_id(n: usize) -> TaskId {
    TaskId::parse(&format!("task-{n}")).expect("a valid id")
}

fn address(n: usize) -> String {
    format!("10.0.0.{n}:10601")
}

fn runners() -> impl Strategy<Value = Vec<RunnerSlots>> {
    prop::collection::vec((1u32..6, 0u32..6, prop::bool::weighted(0.2), prop::bool::weighted(0.8)), 0..5).prop_map(
        |runners| {
            runners
                .into_iter()
                .enumerate()
                .map(|(n, (slots, free, draining, healthy))| RunnerSlots {
                    address: address(n),
                    slots,
                    free_slots: free.min(slots),
                    draining,
                    healthy,
                })
                .collect()
        },
    )
}

fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
    let state = prop_oneof![Just(TaskState::Pending), Just(TaskState::Interrupted), Just(TaskState::Running)];
    let class = prop_oneof![Just(FailureClass::Transient), Just(FailureClass::Permanent)];
    prop::collection::vec(
        (state, 0u64..1000, 0u32..6, prop::option::of(0u64..600_000), class, prop::bool::weighted(0.9)),
        0..30,
    )
    .prop_map(|tasks| {
        tasks
            .into_iter()
            .enumerate()
            .map(|(n, (state, created, attempts, failed_ago, error_class, window_open))| Candidate {
                // Ids 20..30 may also be among the engine's earlier assignments (`history`).
                task_id: task_id(n),
                state,
                created_ms: NOW_MS - 1_000_000 + created,
                attempts,
                last_failed_ms: failed_ago.map(|ago| NOW_MS - ago),
                error_class,
                window_open,
            })
            .collect()
    })
}

/// The engine's earlier assignments (some to runners that are gone) and the runners held off.
fn history() -> impl Strategy<Value = (HashMap<TaskId, String>, HashMap<String, u64>)> {
    (
        prop::collection::hash_map((20usize..40).prop_map(task_id), (0usize..6).prop_map(address), 0..12),
        prop::collection::hash_map((0usize..6).prop_map(address), (NOW_MS - 10_000)..(NOW_MS + 10_000), 0..3),
    )
}

fn assignments(commands: &[Command]) -> Vec<(&TaskId, &String)> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Assign { task_id, runner_addr } => Some((task_id, runner_addr)),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_plan_keeps_every_rule(
        runners in runners(),
        candidates in candidates(),
        (assigned, held_off) in history(),
        retry in policy(),
    ) {
        let view = View { now_ms: NOW_MS, candidates: &candidates, runners: &runners, assigned: &assigned, held_off: &held_off, retry: &retry };
        let commands = plan(&view);
        let handed = assignments(&commands);

        // Never two decisions about one task, never one about a task already handed out.
        let mut decided = HashSet::new();
        for command in &commands {
            let task_id = match command {
                Command::Assign { task_id, .. } | Command::FailPermanently { task_id } | Command::RetryAt { task_id, .. } => task_id,
            };
            prop_assert!(decided.insert(task_id), "two decisions about {task_id}: {commands:?}");
            prop_assert!(!assigned.contains_key(task_id), "{task_id} was handed out again: {commands:?}");
        }

        for (task_id, runner_addr) in &handed {
            // Only to a runner that may take tasks.
            let runner = runners.iter().find(|runner| &runner.address == *runner_addr);
            prop_assert!(runner.is_some(), "{task_id} went to an unknown runner {runner_addr}");
            let runner = runner.unwrap();
            prop_assert!(runner.healthy && !runner.draining, "{task_id} went to {runner:?}");
            prop_assert!(held_off.get(*runner_addr).is_none_or(|until| *until <= NOW_MS), "{task_id} went to a held-off runner");
            // Only a due task: its back-off passed, its window open, never after a permanent failure.
            let candidate = candidates.iter().find(|candidate| &candidate.task_id == *task_id).unwrap();
            prop_assert!(candidate.window_open);
            prop_assert!(matches!(candidate.state, TaskState::Pending | TaskState::Interrupted), "{candidate:?}");
            prop_assert!(!candidate.failed_for_good(), "a permanent failure was retried: {candidate:?}");
            if candidate.state == TaskState::Pending && candidate.attempts > 0 {
                if let Some(failed_ms) = candidate.last_failed_ms {
                    prop_assert!(NOW_MS >= failed_ms + retry.backoff(candidate.attempts).as_millis() as u64, "back-off not respected: {candidate:?} {retry:?}");
                }
            }
        }

        // Never more in flight to a runner than its slots, counting the engine's own
        // assignments its registration does not show yet, nor more than it said were free.
        for runner in &runners {
            let new = handed.iter().filter(|(_, address)| **address == runner.address).count();
            let earlier = assigned.values().filter(|address| **address == runner.address).count();
            prop_assert!(new + earlier <= runner.slots as usize || new == 0, "{runner:?}: {earlier} earlier + {new} new");
            prop_assert!(new <= runner.free_slots as usize, "{runner:?}: {new} new");
        }

        // Nothing due is left waiting while a runner has a free slot.
        let left_free: u32 = free_capacity(&view).iter().map(|(_, free)| *free).sum::<u32>().saturating_sub(handed.len() as u32);
        if left_free > 0 {
            for candidate in &candidates {
                let due = candidate.is_due(NOW_MS, &retry) && !assigned.contains_key(&candidate.task_id);
                prop_assert!(!due || handed.iter().any(|(task_id, _)| **task_id == candidate.task_id),
                    "{candidate:?} is due and a slot is free, but it was not handed out: {commands:?}");
            }
        }

        // Every task failed for good is failed, not left pending.
        for candidate in candidates.iter().filter(|candidate| candidate.failed_for_good() && !assigned.contains_key(&candidate.task_id)) {
            prop_assert!(commands.contains(&Command::FailPermanently { task_id: candidate.task_id.clone() }), "{candidate:?}");
        }
    }

    #[test]
    fn the_back_off_grows_by_its_factor_up_to_its_cap(retry in policy(), attempts in 1u32..40) {
        let wait = retry.backoff(attempts);
        prop_assert!(wait <= retry.cap);
        prop_assert!(wait <= retry.backoff(attempts + 1), "the back-off shrank");
        prop_assert_eq!(retry.backoff(1), retry.base.min(retry.cap));
        if wait < retry.cap {
            prop_assert_eq!(retry.backoff(attempts + 1), (wait * retry.factor).min(retry.cap));
        }
    }
}

#[test]
fn the_default_back_off_is_ten_seconds_doubling_to_five_minutes() {
    let retry = RetryPolicy::default();
    let waits: Vec<u64> = (1..=7).map(|attempts| retry.backoff(attempts).as_secs()).collect();
    assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
    assert_eq!(retry.backoff(0), Duration::ZERO);
    assert_eq!(retry.backoff(u32::MAX), Duration::from_secs(300));
}

/// Finding 8: a runner whose registration (read before the engine's assignments) still shows
/// free slots is not handed more than its slots; and a refusal for want of a slot does not hold
/// the runner off for seconds.
#[test]
fn assignments_the_registration_does_not_show_yet_count_against_the_slots() {
    let runners = [RunnerSlots { address: address(1), slots: 2, free_slots: 2, draining: false, healthy: true }];
    let candidates: Vec<Candidate> = (0..5)
        .map(|n| Candidate {
            task_id: task_id(n),
            state: TaskState::Pending,
            created_ms: n as u64,
            attempts: 0,
            last_failed_ms: None,
            error_class: FailureClass::Transient,
            window_open: true,
        })
        .collect();
    let (held_off, retry) = (HashMap::new(), RetryPolicy::default());
    let mut assigned = HashMap::new();
    let first = plan(&View {
        now_ms: NOW_MS,
        candidates: &candidates,
        runners: &runners,
        assigned: &assigned,
        held_off: &held_off,
        retry: &retry,
    });
    assert_eq!(assignments(&first).len(), 2, "{first:?}");
    for (task_id, runner_addr) in assignments(&first) {
        assigned.insert(task_id.clone(), runner_addr.clone());
    }
    // The next pass reads the same registration (the runner has not rewritten it yet).
    let view = View {
        now_ms: NOW_MS,
        candidates: &candidates,
        runners: &runners,
        assigned: &assigned,
        held_off: &held_off,
        retry: &retry,
    };
    assert_eq!(plan(&view), Vec::new(), "the runner's two slots are taken by the engine's own assignments");
    assert_eq!(hold_off_after(Refusal::NoFreeSlot, NOW_MS), None);
    assert_eq!(hold_off_after(Refusal::Unavailable, NOW_MS), Some(NOW_MS + 5_000));
}

#[test]
fn a_running_task_without_its_owner_is_interrupted_after_the_claim_grace() {
    let grace = Duration::from_secs(10);
    assert_eq!(judge_running(false, Some(NOW_MS - 1_000), NOW_MS, grace), RunningVerdict::Watch);
    assert_eq!(judge_running(false, Some(NOW_MS - 10_001), NOW_MS, grace), RunningVerdict::Interrupt);
    assert_eq!(judge_running(false, None, NOW_MS, grace), RunningVerdict::Interrupt);
    assert_eq!(judge_running(true, None, NOW_MS, grace), RunningVerdict::Watch);
}
