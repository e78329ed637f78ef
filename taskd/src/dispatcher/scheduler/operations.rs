//! The operations the API's jobs run on the worker (show, list, cancel, pause, resume, runtime,
//! a runner's drain, the runners) and their domain answers, `DispatchError` and `TaskAction`.

use super::Scheduler;
use crate::clock::now_ms;
use crate::dispatcher::placement;
use crate::task::{TaskId, TaskRecord, TaskState};
use crate::task_db::{self, DbError, ListFilter};

/// Why an operation on a task (show, list, cancel, pause, resume, runtime, runners) was not
/// done: a domain value, which only `api.rs` turns into an HTTP status and JSON.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("task {task_id} not found")]
    TaskNotFound { task_id: TaskId },
    /// A record that says `Running` with no runner: damaged, not the caller's fault.
    #[error("task {task_id} is running without a runner")]
    NoRunner { task_id: TaskId },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What an operation on a task asks of the API handler afterwards.
#[derive(Debug, Clone)]
pub enum TaskAction {
    /// Done; the record as written.
    Done(Box<TaskRecord>),
    /// The task runs on this runner: the handler forwards the request there.
    Forward { runner_addr: String },
}

impl Scheduler {
    /// One task, re-read from ZooKeeper when it is not finished (its runner writes progress).
    pub fn get(&mut self, task_id: &TaskId) -> Result<TaskRecord, DispatchError> {
        let cached = self.db.get(task_id)?;
        let stored = match cached {
            Some(stored) if stored.record.state.is_finished() => Some(stored),
            _ => self.db.refresh(task_id)?,
        };
        if let Some(stored) = &stored {
            self.track(&stored.record);
        }
        stored.map(|stored| stored.record).ok_or_else(|| DispatchError::TaskNotFound { task_id: task_id.clone() })
    }

    /// Records from the cache.
    pub fn list(&mut self, filter: &ListFilter) -> Result<Vec<TaskRecord>, DispatchError> {
        Ok(self.db.list(filter)?.into_iter().map(|stored| stored.record).collect())
    }

    /// The damaged task znodes.
    pub fn corrupt(&self) -> Vec<(String, String)> {
        self.db.corrupt().iter().map(|entry| (entry.path.clone(), entry.reason.clone())).collect()
    }

    /// Cancel or pause: a running task is forwarded to its runner; others change here.
    pub fn stop_task(&mut self, task_id: &TaskId, to: TaskState) -> Result<TaskAction, DispatchError> {
        let current = self.get(task_id)?;
        if current.state == TaskState::Running {
            let runner_addr =
                current.runner_addr.clone().ok_or_else(|| DispatchError::NoRunner { task_id: task_id.clone() })?;
            return Ok(TaskAction::Forward { runner_addr });
        }
        let stored = self.db.read_modify_write(task_id, |record| {
            record.transition_to(to)?;
            Ok(())
        })?;
        tracing::info!(%task_id, state = %to, "task changed on request");
        Ok(TaskAction::Done(Box::new(stored.record)))
    }

    /// Resume: `Paused → Pending`, then a check.
    pub fn resume(&mut self, task_id: &TaskId) -> Result<TaskRecord, DispatchError> {
        let stored = self.db.read_modify_write(task_id, |record| {
            // Only a paused task resumes. `Running → Pending` is the runner's own retry: done by
            // an operator to a running task it would hand the task out again while its runner
            // still runs it (two runs at once; found by the chaos run, seed 1311).
            if record.state != TaskState::Paused {
                return Err(DbError::Rejected {
                    task_id: record.task_id.clone(),
                    reason: format!("only a paused task resumes; this one is {}", record.state),
                });
            }
            record.transition_to(TaskState::Pending)?;
            Ok(())
        })?;
        self.handle.request_check();
        Ok(stored.record)
    }

    /// Sets the runtime window; a running task's runner is told too (the handler forwards).
    pub fn set_runtime(
        &mut self,
        task_id: &TaskId,
        window: crate::task::RuntimeWindow,
    ) -> Result<TaskAction, DispatchError> {
        let stored = self.db.read_modify_write(task_id, |record| {
            if record.state.is_finished() {
                return Err(DbError::Rejected {
                    task_id: record.task_id.clone(),
                    reason: format!("the task is {}", record.state),
                });
            }
            record.runtime_window = Some(window);
            Ok(())
        })?;
        match (stored.record.state, stored.record.runner_addr.clone()) {
            (TaskState::Running, Some(runner_addr)) => Ok(TaskAction::Forward { runner_addr }),
            _ => Ok(TaskAction::Done(Box::new(stored.record))),
        }
    }

    /// A runner this dispatcher has just drained (`draining`) or undrained through the API. Its
    /// registration says so a moment later (the runner republishes it on its own context, and
    /// the watch then resets the view); until then a drained runner is held off like one that
    /// refused, so that no task is assigned to it from a view read before the drain.
    pub fn note_runner_drain(&mut self, address: &str, draining: bool) {
        if draining {
            let until = now_ms().saturating_add(placement::RUNNER_HOLD_OFF.as_millis() as u64);
            self.held_off.insert(address.to_string(), until);
        } else {
            self.held_off.remove(address);
        }
        self.runner_view = None;
    }

    /// Every registered runner.
    pub fn runners(&mut self) -> Result<task_db::RunnerList, DispatchError> {
        Ok(task_db::list_runners(&self.session)?)
    }
}
