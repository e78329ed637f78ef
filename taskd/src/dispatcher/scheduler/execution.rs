//! The execution of a pass's assignments, the original's `ExecuteTask`: the records written in one
//! pipelined round trip, the owner watched, the runner's execute RPC on a caller context, and
//! its refusal answered.

use super::owners::is_current_owner;
use super::Scheduler;
use crate::clock::now_ms;
use crate::dispatcher::placement;
use crate::runner_client::{paths as runner_paths, RunnerCallError};
use crate::task::{TaskId, TaskRecord, TaskState};
use crate::task_db::{self, DbError, StoredRecord};

impl Scheduler {
    /// Writes the plan's assignments at once: one pipelined round trip, each write fenced on
    /// the version of the cached record it started from. A task whose write was fenced (someone
    /// wrote it since) is re-read and tried once more on its own.
    pub(super) fn dispatch(&mut self, assignments: Vec<(StoredRecord, String)>) {
        let mut writes: Vec<(TaskRecord, i32)> = Vec::new();
        let mut assigned: Vec<String> = Vec::new();
        for (stored, runner_addr) in assignments {
            let mut record = stored.record;
            if let Err(error) = assign(&mut record, &runner_addr) {
                tracing::debug!(task_id = %record.task_id, %error, "task not dispatched");
                continue;
            }
            // Counted at once: a pass before the write's answer must not hand out its slot again.
            self.assigned.insert(record.task_id.clone(), runner_addr.clone());
            assigned.push(runner_addr);
            writes.push((record, stored.version));
        }
        if writes.is_empty() {
            return;
        }
        let results = match self.db.update_each(&writes) {
            Ok(results) => results,
            Err(error) => {
                tracing::warn!(%error, n_tasks = writes.len(), "cannot write the tasks' assignments");
                for (record, _) in &writes {
                    self.assigned.remove(&record.task_id);
                }
                return;
            }
        };
        for (((record, _), runner_addr), result) in writes.into_iter().zip(assigned).zip(results) {
            match result {
                Ok(stored) => self.hand_over(stored, runner_addr),
                Err(DbError::Fenced { .. }) => {
                    self.assigned.remove(&record.task_id);
                    self.execute_task(&record.task_id, runner_addr)
                }
                Err(error) => {
                    self.assigned.remove(&record.task_id);
                    tracing::debug!(task_id = %record.task_id, %error, "task not dispatched")
                }
            }
        }
    }

    /// The original's `ExecuteTask` for one task, from a fresh read (see `# The check`).
    fn execute_task(&mut self, task_id: &TaskId, runner_addr: String) {
        let addr = runner_addr.clone();
        let written = self.db.read_modify_write(task_id, |record| assign(record, &addr));
        match written {
            Ok(stored) => {
                self.track(&stored.record);
                self.hand_over(stored, runner_addr)
            }
            Err(error) => tracing::debug!(%task_id, %error, "task not dispatched"),
        }
    }

    /// The rest of `ExecuteTask` once the assignment is written: watch the owner child, then
    /// call the runner's execute RPC on the "zbs-task-call" context.
    fn hand_over(&mut self, stored: StoredRecord, runner_addr: String) {
        let task_id = stored.record.task_id;
        self.watch_owner(&task_id);
        tracing::info!(%task_id, runner = %runner_addr, "task dispatched");
        let handle = self.handle.clone();
        let runner_client = self.runner_client.clone();
        let Some(caller) = self.callers.get(self.next_caller % self.callers.len().max(1)) else {
            tracing::warn!(%task_id, "no context to call the runner from");
            return;
        };
        self.next_caller = self.next_caller.wrapping_add(1);
        let scheduled = caller.sched(move || {
            let body = serde_json::json!({ "task_id": task_id });
            let result = runner_client.post(&runner_addr, runner_paths::EXECUTE, &body);
            handle.post(Box::new(move |scheduler| scheduler.execute_answered(&task_id, &runner_addr, result)));
        });
        if let Err(error) = scheduled {
            tracing::warn!(%error, "cannot call the runner");
        }
    }

    /// The runner's answer to an execute: a refusal puts the task back (`Interrupted`, due at
    /// once) and holds the runner off as `placement::hold_off_after` says — not at all when it
    /// only had no free slot (its registration was behind; the view is read again).
    fn execute_answered(
        &mut self,
        task_id: &TaskId,
        runner_addr: &str,
        result: Result<serde_json::Value, RunnerCallError>,
    ) {
        let Err(error) = result else { return };
        let refusal = error.refusal();
        tracing::warn!(%task_id, runner = runner_addr, ?refusal, %error, "runner did not take the task");
        if let Some(until) = placement::hold_off_after(refusal, now_ms()) {
            self.held_off.insert(runner_addr.to_string(), until);
        }
        self.runner_view = None;
        let session = self.session.clone();
        let result = self.db.read_modify_write(task_id, |record| {
            if record.state != TaskState::Running || record.runner_addr.as_deref() != Some(runner_addr) {
                return Ok(());
            }
            // A stale owner (an earlier assignment's) does not make the refusal a claim.
            if is_current_owner(record, task_db::owner_of(&session, &record.task_id)?.as_ref()) {
                return Ok(());
            }
            record.transition_to(TaskState::Interrupted)?;
            record.last_failed_ms = Some(now_ms());
            Ok(())
        });
        match result {
            Ok(stored) => self.track(&stored.record),
            Err(error) => tracing::warn!(%task_id, %error, "cannot put a refused task back"),
        }
        self.handle.request_check();
    }
}

/// The assignment `ExecuteTask` writes: `runner_addr`, `schedule_time_ms`, `Running`. Only a
/// `Pending` or `Interrupted` task can be assigned.
pub(super) fn assign(record: &mut TaskRecord, runner_addr: &str) -> task_db::Result<()> {
    if !matches!(record.state, TaskState::Pending | TaskState::Interrupted) {
        return Err(DbError::Rejected {
            task_id: record.task_id.clone(),
            reason: format!("the task is {}", record.state),
        });
    }
    record.runner_addr = Some(runner_addr.to_string());
    record.schedule_time_ms = Some(now_ms());
    record.transition_to(TaskState::Running)?;
    Ok(())
}
