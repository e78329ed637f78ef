//! The reconciliation of owners: each `Running` task's owner child watched until it goes, and a
//! task whose owner vanished (or never came within the claim grace) interrupted.

use std::time::Duration;

use super::Scheduler;
use crate::clock::now_ms;
use crate::dispatcher::placement::{self, RunningVerdict};
use crate::task::{TaskId, TaskRecord, TaskState};
use crate::task_db::{self, StoredRecord};

impl Scheduler {
    /// Follows `task_id`'s owner child until it goes: a coroutine that re-arms the one-shot
    /// watch by itself while the owner is only created or rewritten (a runner's claim), and
    /// hands the task back to the scheduler when the owner is deleted, or when it is found
    /// gone after having been seen (it came and went between two watches), or when the
    /// session ends. One `exists` per arming; the record is re-read only at the end.
    pub(super) fn watch_owner(&mut self, task_id: &TaskId) {
        if !self.watched.insert(task_id.clone()) {
            return;
        }
        let (session, handle, watched_id) = (self.session.clone(), self.handle.clone(), task_id.clone());
        // A claim that never comes (or came and went before the watch was armed) ends the wait.
        let claim_wait = self.claim_grace + Duration::from_secs(1);
        let spawned = self.context.sched(move || {
            let mut seen_owner = false;
            let event = loop {
                let (present, watch) = match task_db::watch_owner_presence(&session, &watched_id) {
                    Ok(armed) => armed,
                    Err(error) => {
                        tracing::warn!(task_id = %watched_id, %error, "cannot watch a task's owner");
                        handle.post(Box::new(move |scheduler| {
                            scheduler.watched.remove(&watched_id);
                        }));
                        return;
                    }
                };
                if !present && seen_owner {
                    // The watch stays armed for a creation; a later claim re-reads anyway.
                    break quorum::zk::NodeEvent::Deleted { path: task_db::layout::owner_path(&watched_id) };
                }
                let fired = if seen_owner {
                    Some(watch.wait())
                } else {
                    runtime::block_on_timeout(watch.changed(), claim_wait)
                };
                match fired {
                    Some(quorum::zk::NodeEvent::Created { .. } | quorum::zk::NodeEvent::DataChanged { .. }) => {
                        seen_owner = true;
                    }
                    Some(event) => break event,
                    // No owner within the claim grace: the scheduler re-reads the task and judges
                    // it as the periodic check does (interrupted if its claim is late).
                    None => {
                        break quorum::zk::NodeEvent::DataChanged { path: task_db::layout::owner_path(&watched_id) }
                    }
                }
            };
            // The record is read here, not on the worker, so its round trip holds up no job.
            let read = match event {
                quorum::zk::NodeEvent::SessionEnded { .. } => None,
                _ => Some(task_db::read_record(&session, &watched_id)),
            };
            handle.post(Box::new(move |scheduler| scheduler.owner_changed(&watched_id, event, read)));
        });
        if spawned.is_err() {
            self.watched.remove(task_id);
        }
    }

    /// The end of an owner watch, with the task's record as read just after it fired.
    fn owner_changed(
        &mut self,
        task_id: &TaskId,
        event: quorum::zk::NodeEvent,
        read: Option<task_db::Result<Option<StoredRecord>>>,
    ) {
        self.watched.remove(task_id);
        let Some(read) = read else { return };
        if matches!(event, quorum::zk::NodeEvent::SessionEnded { .. }) {
            return;
        }
        // A slot may have come free on its runner: worth a re-read of the runners only when the
        // view has none left (otherwise its age bounds how long the slot goes unseen).
        let no_slot_left = self
            .runner_view
            .as_ref()
            .is_some_and(|view| view.runners.iter().all(|runner| placement::free_slots(runner, &self.assigned) == 0));
        if no_slot_left {
            self.runner_view = None;
        }
        let read_version = match &read {
            Ok(Some(stored)) => Some(stored.version),
            _ => None,
        };
        let refreshed = self.db.refresh_with(task_id, read);
        match &refreshed {
            Ok(Some(stored)) => self.track(&stored.record),
            Ok(None) => {
                self.assigned.remove(task_id);
            }
            Err(_) => {}
        }
        match refreshed {
            // This dispatcher wrote the task after the read (it was handed out again): the
            // event is about the previous assignment; the new one gets its own watch.
            Ok(Some(stored)) if read_version.is_some_and(|version| version != stored.version) => {
                if stored.record.state == TaskState::Running {
                    self.watch_owner(task_id);
                }
            }
            // The owner node existed and is gone: the runner released it or died. No claim grace.
            Ok(Some(stored))
                if stored.record.state == TaskState::Running
                    && matches!(event, quorum::zk::NodeEvent::Deleted { .. }) =>
            {
                self.interrupt(task_id, "its runner's owner node vanished");
                self.watch_owner_if_owned(&stored);
            }
            Ok(Some(stored)) if stored.record.state == TaskState::Running => {
                self.check_running(&stored);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%task_id, %error, "cannot re-read a task after its owner changed"),
        }
        self.handle.request_check();
    }

    /// Re-arms the owner watch of a task `interrupt` left running (a new owner claimed it).
    fn watch_owner_if_owned(&mut self, stored: &StoredRecord) {
        if let Ok(Some(fresh)) = self.db.get(&stored.record.task_id) {
            if fresh.record.state == TaskState::Running {
                self.watch_owner(&fresh.record.task_id);
            }
        }
    }

    /// A running task: interrupted when its owner is gone (or never came); watched otherwise.
    fn check_running(&mut self, stored: &StoredRecord) {
        let task_id = &stored.record.task_id;
        let owner = match task_db::owner_of(&self.session, task_id) {
            Ok(owner) => owner,
            Err(error) => {
                tracing::warn!(%task_id, %error, "cannot read a task's owner");
                return;
            }
        };
        self.judge_running(stored, is_current_owner(&stored.record, owner.as_ref()));
    }

    /// `check_running` once it is known whether the current assignment's owner is there (a
    /// stale owner, of an earlier assignment, counts as none: `task_db::OwnerMatch`).
    pub(super) fn judge_running(&mut self, stored: &StoredRecord, owner_present: bool) {
        let task_id = &stored.record.task_id;
        match placement::judge_running(owner_present, stored.record.schedule_time_ms, now_ms(), self.claim_grace) {
            RunningVerdict::Interrupt => self.interrupt(task_id, "its runner is gone"),
            RunningVerdict::Watch => self.watch_owner(task_id),
        }
    }

    /// `Running → Interrupted` with `last_failed_ms`, if it is still running with no owner.
    fn interrupt(&mut self, task_id: &TaskId, why: &str) {
        let session = self.session.clone();
        let result = self.db.read_modify_write(task_id, |record| {
            if record.state != TaskState::Running {
                return Ok(());
            }
            if is_current_owner(record, task_db::owner_of(&session, &record.task_id)?.as_ref()) {
                return Ok(());
            }
            record.transition_to(TaskState::Interrupted)?;
            record.last_failed_ms = Some(now_ms());
            Ok(())
        });
        if let Ok(stored) = &result {
            self.track(&stored.record);
        }
        match result {
            Ok(stored) if stored.record.state == TaskState::Interrupted => {
                tracing::warn!(%task_id, runner = ?stored.record.runner_addr, why, "task interrupted; rescheduling");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%task_id, %error, "cannot mark a task interrupted"),
        }
    }
}

/// True when `owner` claimed the record's current assignment; false when there is none or it is
/// stale (an earlier assignment's, left behind: it can do no IO for this one).
pub(super) fn is_current_owner(record: &TaskRecord, owner: Option<&task_db::Owner>) -> bool {
    let judged = task_db::owner_match(owner, record.runner_addr.as_deref(), record.schedule_time_ms);
    if judged == task_db::OwnerMatch::Stale {
        tracing::info!(task_id = %record.task_id, owner = ?owner.and_then(|owner| owner.info.as_ref()), "a stale owner node: ignored");
    }
    judged == task_db::OwnerMatch::Current
}
