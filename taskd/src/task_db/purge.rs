//! The purge of finished tasks past their retention: which records are old enough (their last
//! activity, `last_activity_ms`), and their deletion with their request znode (and a leftover
//! owner child), fenced on the cached version, in batches that fall back to one delete at a time.

use super::*;

/// What a purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Finished records deleted.
    pub n_purged: usize,
    /// Old enough but changed or failing underneath; left for the next purge.
    pub n_skipped: usize,
}

impl TaskDb {
    /// Deletes finished tasks (`Succeeded`, `Failed`, `Cancelled`) whose last activity is older
    /// than `older_than`. The last activity is the latest of `created_ms`, `schedule_time_ms`
    /// and `last_failed_ms` (the record keeps no finish time), so retention counts from the
    /// start of a task's last run. Each delete is fenced on the cached version: a record that
    /// changed underneath is refreshed and left for the next purge. Deletes go in multi-ops of
    /// `purge_batch`; a batch that fails falls back to one delete at a time.
    pub fn purge_finished(&mut self, older_than: Duration) -> Result<PurgeReport> {
        let cutoff_ms = crate::clock::now_ms().saturating_sub(older_than.as_millis() as u64);
        let mut candidates = Vec::new();
        for state in TaskState::ALL.into_iter().filter(|state| state.is_finished()) {
            let filter = ListFilter { state: Some(state), created_before_ms: Some(cutoff_ms), ..ListFilter::default() };
            candidates.extend(
                self.cache.list(&filter)?.into_iter().filter(|stored| last_activity_ms(&stored.record) < cutoff_ms),
            );
        }
        let mut report = PurgeReport::default();
        for batch in candidates.chunks(self.config.purge_batch) {
            let operations: Vec<ZkOp> =
                batch.iter().flat_map(|stored| delete_ops(&stored.record, stored.version, false)).collect();
            match self.session.multi(&operations) {
                Ok(_) => {
                    for stored in batch {
                        self.forget(&stored.record.task_id)?;
                    }
                    report.n_purged += batch.len();
                }
                Err(source) if source.is_connection_loss() || source.is_session_gone() => {
                    return Err(DbError::Zk { context: "purge finished tasks", source });
                }
                Err(_) => {
                    for stored in batch {
                        if self.purge_one(stored)? {
                            report.n_purged += 1;
                        } else {
                            report.n_skipped += 1;
                        }
                    }
                }
            }
        }
        if report.n_purged + report.n_skipped > 0 {
            tracing::info!(n_purged = report.n_purged, n_skipped = report.n_skipped, "purged finished tasks");
        }
        Ok(report)
    }

    /// Deletes one finished record (with its request znode and a leftover owner child); false
    /// when it changed.
    fn purge_one(&mut self, stored: &StoredRecord) -> Result<bool> {
        let task_id = &stored.record.task_id;
        let mut record = stored.record.clone();
        let mut outcome = self.session.multi(&delete_ops(&record, stored.version, false)).map(drop);
        if let (Err(ZkError::NoNode { path, .. }), Some(request_id)) = (&outcome, &record.request_id) {
            // The request znode is gone already (deleted by hand): the task still goes.
            if *path == request_path(request_id) {
                record.request_id = None;
                outcome = self.session.multi(&delete_ops(&record, stored.version, false)).map(drop);
            }
        }
        if matches!(outcome, Err(ZkError::NotEmpty { .. })) {
            // A runner that finished but has not released yet: its owner node goes too.
            outcome = self.session.multi(&delete_ops(&record, stored.version, true)).map(drop);
        }
        match outcome {
            Ok(()) | Err(ZkError::NoNode { .. }) => {
                self.forget(task_id)?;
                Ok(true)
            }
            Err(ZkError::BadVersion { .. }) | Err(ZkError::NotEmpty { .. }) => {
                self.refresh(task_id)?;
                Ok(false)
            }
            Err(source) => Err(DbError::Zk { context: "purge a finished task", source }),
        }
    }
}

/// The deletes that purge `record` at `version`: its owner child (when `with_owner`), its
/// znode, and its request znode, all in one multi-op.
fn delete_ops(record: &TaskRecord, version: i32, with_owner: bool) -> Vec<ZkOp> {
    let mut operations = Vec::with_capacity(3);
    if with_owner {
        operations.push(ZkOp::Delete { path: owner_path(&record.task_id), expected_version: None });
    }
    operations.push(ZkOp::Delete { path: task_path(&record.task_id), expected_version: Some(version) });
    if let Some(request_id) = &record.request_id {
        operations.push(ZkOp::Delete { path: request_path(request_id), expected_version: None });
    }
    operations
}

/// The latest time a record shows activity: creation, last dispatch, last failure, its end.
pub fn last_activity_ms(record: &TaskRecord) -> u64 {
    [Some(record.created_ms), record.schedule_time_ms, record.last_failed_ms, record.finished_ms]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
}
