//! The dispatch pass: the due tasks and the runners' free slots handed to `placement::plan`,
//! whose commands it then carries out (assignments go to `execution.rs`).

use std::collections::HashMap;

use super::Scheduler;
use crate::clock::now_ms;
use crate::dispatcher::placement::{self, Candidate, Command};
use crate::task::{TaskId, TaskRecord, TaskState};
use crate::task_db::{ListFilter, StoredRecord};

impl Scheduler {
    /// Hands due tasks (`Interrupted` ones inside their window, `Pending` ones whose back-off
    /// passed), oldest first, to the runners with free slots: the decisions are
    /// `placement::plan`'s, this executes them. What a submit, an owner change or a runner change
    /// asks for: nothing is re-read from ZooKeeper but the runners (when the view of them is
    /// stale), and with no free slot nothing is listed at all.
    pub fn dispatch_pass(&mut self) {
        let now = now_ms();
        if self.retry_wake.is_some_and(|at| at <= now) {
            self.retry_wake = None;
        }
        let Some(capacity) = self.free_capacity(now) else { return };
        if capacity == 0 {
            return;
        }
        let mut listed: Vec<StoredRecord> = Vec::new();
        for state in [TaskState::Interrupted, TaskState::Pending] {
            // Oldest first: a page a little larger than the free slots usually holds enough due
            // tasks; when it does not (back-offs, closed windows), the whole state is read.
            let page = capacity as usize * 2 + 16;
            let mut found = self.list_state(state, Some(page));
            if found.len() == page {
                let n_due =
                    found.iter().filter(|stored| self.candidate(&stored.record).is_due(now, &self.retry)).count();
                if n_due < capacity as usize {
                    found = self.list_state(state, None);
                }
            }
            listed.extend(found);
        }
        if listed.is_empty() {
            return;
        }
        let candidates: Vec<Candidate> = listed.iter().map(|stored| self.candidate(&stored.record)).collect();
        let Some(view) = self.runner_view.as_ref() else { return };
        let commands = placement::plan(&placement::View {
            now_ms: now,
            candidates: &candidates,
            runners: &view.runners,
            assigned: &self.assigned,
            held_off: &self.held_off,
            retry: &self.retry,
        });
        let mut records: HashMap<TaskId, StoredRecord> =
            listed.into_iter().map(|stored| (stored.record.task_id.clone(), stored)).collect();
        let mut assignments = Vec::new();
        for command in commands {
            match command {
                Command::Assign { task_id, runner_addr } => {
                    if let Some(stored) = records.remove(&task_id) {
                        assignments.push((stored, runner_addr));
                    }
                }
                Command::FailPermanently { task_id } => self.fail_permanently(&task_id),
                Command::RetryAt { at_ms, .. } => {
                    self.retry_wake = Some(self.retry_wake.map_or(at_ms, |wake| wake.min(at_ms)));
                }
            }
        }
        if !assignments.is_empty() {
            self.dispatch(assignments);
        }
    }

    /// The placement rules' view of a cached record (its runtime window judged now).
    fn candidate(&self, record: &TaskRecord) -> Candidate {
        Candidate::of(record, record.runtime_window.is_none_or(|window| window.contains_now()))
    }

    /// When the earliest retry back-off the last pass saw ends, if one does.
    pub fn retry_wake(&self) -> Option<u64> {
        self.retry_wake
    }

    /// `Pending → Failed` for a task whose last failure was permanent (an older runner left it
    /// pending): it is never tried again.
    fn fail_permanently(&mut self, task_id: &TaskId) {
        let result = self.db.read_modify_write(task_id, |record| {
            if record.state != TaskState::Pending || record.last_error_class() != crate::task::FailureClass::Permanent {
                return Ok(());
            }
            record.transition_to(TaskState::Failed)?;
            Ok(())
        });
        match result {
            Ok(stored) => {
                tracing::warn!(%task_id, last_error = ?stored.record.last_error, "a permanent failure: the task fails without a retry");
                self.track(&stored.record);
            }
            Err(error) => tracing::warn!(%task_id, %error, "cannot fail a task"),
        }
    }

    fn list_state(&mut self, state: TaskState, limit: Option<usize>) -> Vec<StoredRecord> {
        match self.db.list(&ListFilter { limit, ..ListFilter::in_state(state) }) {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%error, %state, "cannot list the tasks");
                Vec::new()
            }
        }
    }
}
