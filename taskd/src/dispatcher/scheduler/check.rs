//! The periodic check: the `Running` records and their owners re-read in pipelined batches, the
//! runners re-read, a dispatch pass, and now and then the purge of finished tasks.

use std::time::{Duration, Instant};

use super::owners::is_current_owner;
use super::Scheduler;
use crate::task::{TaskId, TaskState};
use crate::task_db::{self, ListFilter};

/// How often the purge runs at most; a shorter retention purges more often (a quarter of it).
const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// Running tasks (and as many owners) read per pipelined batch by the periodic check.
const RUNNING_READ_BATCH: usize = 256;

impl Scheduler {
    /// The periodic check (see `# The check`). Only `Running` records are re-read from
    /// ZooKeeper: every other change of an unfinished task is this dispatcher's own write, or a
    /// runner's final write of a task the cache still shows `Running`. The runners are re-read
    /// too, so a registration change no watch reports (a drain, a health change) counts here.
    pub fn check(&mut self) {
        let listed = match self.db.list(&ListFilter::in_state(TaskState::Running)) {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%error, "cannot list the running tasks");
                return;
            }
        };
        // What the cache shows running is what counts against the runners' slots; the re-reads
        // below drop what has ended since.
        self.assigned = listed
            .iter()
            .filter_map(|stored| Some((stored.record.task_id.clone(), stored.record.runner_addr.clone()?)))
            .collect();
        let ids: Vec<TaskId> = listed.into_iter().map(|stored| stored.record.task_id).collect();
        for chunk in ids.chunks(RUNNING_READ_BATCH) {
            self.check_running_batch(chunk);
        }
        self.runner_view = None;
        self.dispatch_pass();
        if self.last_purge.elapsed() >= PURGE_INTERVAL.min(self.retention / 4) {
            self.last_purge = Instant::now();
            if let Err(error) = self.db.purge_finished(self.retention) {
                tracing::warn!(%error, "cannot purge finished tasks");
            }
        }
    }

    /// Re-reads running tasks and their owners, every read of the batch in flight at once (two
    /// round trips for the batch), then interrupts those whose owner is gone (or never came)
    /// and watches the others.
    fn check_running_batch(&mut self, task_ids: &[TaskId]) {
        let record_paths: Vec<String> = task_ids.iter().map(task_db::layout::task_path).collect();
        let owner_paths: Vec<String> = task_ids.iter().map(task_db::layout::owner_path).collect();
        let (records, owners) =
            match (self.session.get_data_of_each(&record_paths), self.session.get_data_of_each(&owner_paths)) {
                (Ok(records), Ok(owners)) => (records, owners),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(%error, "cannot re-read the running tasks");
                    return;
                }
            };
        for ((task_id, record), owner) in task_ids.iter().zip(records).zip(owners) {
            let read = match record {
                Ok(Some((data, stat))) => task_db::decode_read(task_id, &data, stat.version).map(Some),
                Ok(None) => Ok(None),
                Err(error) => {
                    tracing::warn!(%task_id, %error, "cannot re-read a task");
                    continue;
                }
            };
            let owner = match owner {
                Ok(owner) => owner.map(|(data, stat)| task_db::decode_owner_of(task_id, &data, stat.ephemeral_owner)),
                Err(error) => {
                    tracing::warn!(%task_id, %error, "cannot read a task's owner");
                    continue;
                }
            };
            let refreshed = self.db.refresh_with(task_id, read);
            match &refreshed {
                Ok(Some(fresh)) => self.track(&fresh.record),
                Ok(None) => {
                    self.assigned.remove(task_id);
                }
                Err(_) => {}
            }
            match refreshed {
                Ok(Some(fresh)) if fresh.record.state == TaskState::Running => {
                    let owner_present = is_current_owner(&fresh.record, owner.as_ref());
                    self.judge_running(&fresh, owner_present)
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%task_id, %error, "cannot re-read a task"),
            }
        }
    }
}
