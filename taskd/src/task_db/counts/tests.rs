//! The cache's counts and transitions against a model: after any mix of creates, reads,
//! state changes and removals, the tally equals a recount of what the cache lists, and each
//! state change was reported once.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use proptest::prelude::*;

use super::super::cache::{Origin, RecordCache};
use super::super::{ListFilter, StoredRecord};
use super::{CacheWatch, TaskCounts, TaskTransition};
use crate::task::{CopyVolumeArgs, SleepArgs, TaskId, TaskKind, TaskRecord, TaskState};

#[derive(Debug, Clone)]
enum Op {
    Put { task: usize, copy: bool, state: usize, created: bool },
    Remove { task: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6usize, any::<bool>(), 0..TaskState::ALL.len(), any::<bool>())
            .prop_map(|(task, copy, state, created)| Op::Put { task, copy, state, created }),
        1 => (0..6usize).prop_map(|task| Op::Remove { task }),
    ]
}

fn kind(copy: bool) -> TaskKind {
    if copy {
        TaskKind::CopyVolume(CopyVolumeArgs {
            source: "/dev/a".into(),
            destination: "/dev/b".into(),
            io_depth: CopyVolumeArgs::DEFAULT_IO_DEPTH,
        })
    } else {
        TaskKind::Sleep(SleepArgs { duration_ms: 1, fail: false, fail_first: 0 })
    }
}

fn recount(cache: &mut RecordCache) -> TaskCounts {
    let mut counts = TaskCounts::default();
    for stored in cache.list(&ListFilter::all()).expect("list the cache") {
        counts.add((stored.record.kind.type_name(), stored.record.state));
    }
    counts
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn counts_follow_every_change_and_transitions_are_reported_once(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let seen: Arc<Mutex<Vec<TaskTransition>>> = Arc::default();
        let sink = seen.clone();
        let watch = CacheWatch {
            on_transition: Some(Arc::new(move |transition| sink.lock().push(transition))),
            ..CacheWatch::default()
        };
        let tally = watch.tally.clone();
        let mut cache = RecordCache::create_empty(&dir.path().join("cache"), watch).expect("create the cache");
        // The model: task → (type, state); a task keeps its type for life.
        let mut model: BTreeMap<usize, (bool, TaskState)> = BTreeMap::new();
        for op in ops {
            let mut expected = None;
            match op {
                Op::Put { task, copy, state, created } => {
                    let copy = model.get(&task).map_or(copy, |(copy, _)| *copy);
                    let state = TaskState::ALL[state];
                    let task_id = TaskId::parse(&format!("task-{task}")).expect("an id");
                    let mut record = TaskRecord::new(task_id, kind(copy), 1_000 + task as u64);
                    record.state = state;
                    let origin = if created { Origin::Created } else { Origin::Read };
                    let from = model.insert(task, (copy, state)).map(|(_, from)| from);
                    let changed = match from { Some(from) => from != state, None => created };
                    if changed {
                        expected = Some(TaskTransition { task_type: record.kind.type_name(), from, to: state });
                    }
                    cache.put(&StoredRecord { record, version: 0 }, origin).expect("put");
                }
                Op::Remove { task } => {
                    model.remove(&task);
                    cache.remove(&TaskId::parse(&format!("task-{task}")).expect("an id")).expect("remove");
                }
            }
            let reported: Vec<TaskTransition> = std::mem::take(&mut *seen.lock());
            prop_assert_eq!(reported, expected.into_iter().collect::<Vec<_>>());
            let counts = tally.snapshot();
            prop_assert_eq!(&counts, &recount(&mut cache));
            prop_assert_eq!(counts.total(), model.len() as u64);
        }
        // A new cache over the old one starts from zero.
        drop(cache);
        let _fresh = RecordCache::create_empty(&dir.path().join("cache"), CacheWatch { tally: tally.clone(), on_transition: None })
            .expect("recreate the cache");
        prop_assert_eq!(tally.snapshot().total(), 0);
    }
}

#[test]
fn counts_never_go_below_zero() {
    let mut counts = TaskCounts::default();
    counts.remove(("sleep", TaskState::Pending));
    counts.add(("sleep", TaskState::Pending));
    counts.add(("sleep", TaskState::Pending));
    counts.remove(("sleep", TaskState::Pending));
    assert_eq!(counts.get("sleep", TaskState::Pending), 1);
    assert_eq!(counts.get("copy_volume", TaskState::Pending), 0);
    assert_eq!(counts.total(), 1);
}
