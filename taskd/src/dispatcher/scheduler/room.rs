//! `Room`: the room under the task database's caps that submits reserve without a trip to the
//! worker, from the counts the worker publishes.

use crate::task::TaskId;
use crate::task_db::{self, DbError, TaskDb};

/// The database's counts as the worker last published them, and the submits in flight (reserved,
/// not yet adopted). A reservation is refused when both together would pass a cap; a record
/// being adopted is briefly counted twice, never less than once.
#[derive(Default)]
pub(super) struct Room {
    pub(super) n_records: usize,
    pub(super) reply_bytes: usize,
    pub(super) max_records: usize,
    pub(super) in_flight_records: usize,
    pub(super) in_flight_bytes: usize,
}

impl Room {
    pub(super) fn reserve(&mut self, task_id: &TaskId) -> Result<(), DbError> {
        let bytes = task_db::layout::child_reply_bytes(task_id.as_str());
        if self.n_records + self.in_flight_records + 1 > self.max_records
            || self.reply_bytes + self.in_flight_bytes + bytes > task_db::layout::MAX_CHILDREN_REPLY_BYTES
        {
            return Err(DbError::Full {
                n_records: self.n_records,
                reply_bytes: self.reply_bytes,
                max_records: self.max_records,
                max_reply_bytes: task_db::layout::MAX_CHILDREN_REPLY_BYTES,
            });
        }
        self.in_flight_records += 1;
        self.in_flight_bytes += bytes;
        Ok(())
    }

    pub(super) fn release(&mut self, task_id: &TaskId) {
        self.in_flight_records = self.in_flight_records.saturating_sub(1);
        self.in_flight_bytes =
            self.in_flight_bytes.saturating_sub(task_db::layout::child_reply_bytes(task_id.as_str()));
    }

    pub(super) fn publish(&mut self, db: &TaskDb) {
        self.n_records = db.len();
        self.reply_bytes = db.reply_bytes();
        self.max_records = db.max_records();
    }
}
