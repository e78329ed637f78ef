//! What the task cache tells the world about itself without being asked: how many cached records
//! there are of each type and state (`TaskTally`, shared with the threads that scrape metrics),
//! and each state change it applies (`CacheWatch::on_transition`). The cache updates both in
//! the same step that changes its state index, so a scrape reads a handful of counters and
//! never lists the tasks (a full listing once a second, behind a lock the dispatcher's worker
//! also needs, raised the dispatcher's submit→running p99 under a 100 ms scrape).

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::task::TaskState;

/// A cached record's place in the counts: its type (`TaskKind::type_name`) and state.
pub type TaskKey = (&'static str, TaskState);

/// Counts of records by type and state. Only non-zero entries are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskCounts {
    counts: BTreeMap<TaskKey, u64>,
}

impl TaskCounts {
    /// One more record at `key`.
    pub fn add(&mut self, key: TaskKey) {
        *self.counts.entry(key).or_default() += 1;
    }

    /// One record fewer at `key` (never below zero: a count that would go negative is dropped).
    pub fn remove(&mut self, key: TaskKey) {
        if let Some(count) = self.counts.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&key);
            }
        }
    }

    /// How many records are at `(task_type, state)`.
    pub fn get(&self, task_type: &str, state: TaskState) -> u64 {
        self.counts.iter().find(|((kind, at), _)| *kind == task_type && *at == state).map_or(0, |(_, count)| *count)
    }

    /// Every non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = (TaskKey, u64)> + '_ {
        self.counts.iter().map(|(key, count)| (*key, *count))
    }

    /// The total of every count.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// The cache's counts, shared: the cache writes them on the dispatcher's context, a scrape
/// copies them from any thread (a lock held for a few map operations on each side).
#[derive(Debug, Clone, Default)]
pub struct TaskTally(Arc<Mutex<TaskCounts>>);

impl TaskTally {
    /// A copy of the counts now.
    pub fn snapshot(&self) -> TaskCounts {
        self.0.lock().clone()
    }

    /// Applies `change` under the lock.
    pub(super) fn update(&self, change: impl FnOnce(&mut TaskCounts)) {
        change(&mut self.0.lock());
    }
}

/// A state change the cache applied to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskTransition {
    pub task_type: &'static str,
    /// `None` for a record the database created (a submit); a record first seen in a rebuild
    /// is no transition.
    pub from: Option<TaskState>,
    pub to: TaskState,
}

/// Who is told what the cache does: its tally, and a callback for each transition (called on
/// the dispatcher's context, right after the change is cached: it must be quick).
#[derive(Clone, Default)]
pub struct CacheWatch {
    pub tally: TaskTally,
    pub on_transition: Option<Arc<dyn Fn(TaskTransition) + Send + Sync>>,
}

impl std::fmt::Debug for CacheWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheWatch")
            .field("tally", &self.tally)
            .field("on_transition", &self.on_transition.is_some())
            .finish()
    }
}

impl CacheWatch {
    pub(super) fn transition(&self, transition: TaskTransition) {
        if let Some(on_transition) = &self.on_transition {
            on_transition(transition);
        }
    }
}

#[cfg(test)]
mod tests;
