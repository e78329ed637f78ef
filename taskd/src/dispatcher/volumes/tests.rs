//! Tests of the one-writer-per-volume rule: examples, a property over any sequence of submits
//! and finishes, and the resolution of paths through symlinks and missing destinations.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn copy(source: &str, destination: &str) -> VolumeUse {
    VolumeUse { source: source.into(), destination: destination.into() }
}

fn id(n: u32) -> TaskId {
    TaskId::parse(&format!("task-{n}")).expect("a valid id")
}

#[test]
fn a_shared_destination_or_a_read_write_overlap_conflicts_and_a_shared_source_does_not() {
    let running = [(id(1), copy("/v/a", "/v/b"))];
    let view = || running.iter().map(|(task_id, use_)| (task_id, use_));
    assert_eq!(find_conflict(&copy("/v/c", "/v/b"), view()), Some(VolumeConflict::SameDestination { task_id: id(1) }));
    assert_eq!(find_conflict(&copy("/v/c", "/v/a"), view()), Some(VolumeConflict::WritesItsSource { task_id: id(1) }));
    assert_eq!(
        find_conflict(&copy("/v/b", "/v/c"), view()),
        Some(VolumeConflict::ReadsItsDestination { task_id: id(1) })
    );
    assert_eq!(find_conflict(&copy("/v/a", "/v/c"), view()), None);
    assert_eq!(find_conflict(&copy("/v/x", "/v/y"), view()), None);
}

#[test]
fn paths_resolve_through_symlinks_dots_and_missing_destinations() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical temp dir");
    std::fs::create_dir(root.join("real")).expect("mkdir");
    std::fs::write(root.join("real/volume"), b"data").expect("write");
    std::os::unix::fs::symlink(root.join("real"), root.join("link")).expect("symlink");
    assert_eq!(resolve(&root.join("link/volume")), root.join("real/volume"));
    assert_eq!(resolve(&root.join("link/./new")), root.join("real/new"));
    assert_eq!(resolve(&root.join("real/../real/volume")), root.join("real/volume"));
    assert_eq!(resolve(Path::new("/no/such//dir/./x")), PathBuf::from("/no/such/dir/x"));
}

#[test]
fn a_destination_holds_data_when_it_has_a_size_or_blocks() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").expect("write");
    let full = dir.path().join("full");
    std::fs::write(&full, b"x").expect("write");
    assert!(!holds_data(&dir.path().join("missing")).expect("stat"));
    assert!(!holds_data(&empty).expect("stat"));
    assert!(holds_data(&full).expect("stat"));
}

/// One step of a simulated life of the dispatcher: a submit of a copy between two of a few
/// paths, or the end of the n-th unfinished task.
#[derive(Debug, Clone)]
enum Step {
    Submit { source: u8, destination: u8 },
    Finish(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..6, 0u8..6).prop_map(|(source, destination)| Step::Submit { source, destination }),
        1 => any::<usize>().prop_map(Step::Finish),
    ]
}

proptest! {
    /// Never two unfinished copies with one destination, and never one writing what another
    /// reads, after any sequence of submits the rule accepted and finishes.
    #[test]
    fn accepted_submits_never_share_a_destination_or_overlap(steps in proptest::collection::vec(step(), 1..60)) {
        let mut unfinished: BTreeMap<TaskId, VolumeUse> = BTreeMap::new();
        let mut next_id = 0;
        for step in steps {
            match step {
                Step::Submit { source, destination } => {
                    // The two paths of a copy are distinct (another path spelled the same way
                    // would be refused by the confinement, not by this rule).
                    if source == destination {
                        continue;
                    }
                    let new = copy(&format!("/v/{source}"), &format!("/v/{destination}"));
                    if find_conflict(&new, unfinished.iter()).is_none() {
                        next_id += 1;
                        unfinished.insert(id(next_id), new);
                    }
                }
                Step::Finish(n) => {
                    if let Some(task_id) = unfinished.keys().nth(n % unfinished.len().max(1)).cloned() {
                        unfinished.remove(&task_id);
                    }
                }
            }
            for (a_id, a) in &unfinished {
                for (b_id, b) in &unfinished {
                    if a_id == b_id {
                        continue;
                    }
                    prop_assert_ne!(&a.destination, &b.destination, "{} and {} share a destination", a_id, b_id);
                    prop_assert_ne!(&a.destination, &b.source, "{} writes what {} reads", a_id, b_id);
                }
            }
        }
    }
}
