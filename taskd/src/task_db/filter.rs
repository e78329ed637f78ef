//! `ListFilter`: which task records a client's `list` asks for (a state, finished or not, a
//! creation-time range, a limit), and the pure test a cached record passes or not.

use chrono::{Local, NaiveDate, TimeZone};

use crate::task::{TaskRecord, TaskState};

/// A listing's criteria; the default lists everything, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only finished tasks (`Some(true)`: succeeded, failed, cancelled) or only unfinished ones.
    pub finished: Option<bool>,
    /// Only tasks created at or after this time (ms since the epoch).
    pub created_from_ms: Option<u64>,
    /// Only tasks created before this time (ms since the epoch).
    pub created_before_ms: Option<u64>,
    /// At most this many records (the first that match in the listing's order).
    pub limit: Option<usize>,
    /// List the newest first (with a limit: the latest `limit` tasks).
    pub newest_first: bool,
}

impl ListFilter {
    /// Every task.
    pub fn all() -> ListFilter {
        ListFilter::default()
    }

    /// Tasks in `state`.
    pub fn in_state(state: TaskState) -> ListFilter {
        ListFilter { state: Some(state), ..ListFilter::default() }
    }

    /// Tasks created during `date` in the machine's local time zone (`zbs-task task list --date`).
    pub fn created_on(date: NaiveDate) -> ListFilter {
        let start_ms = |day: NaiveDate| {
            let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
            // A midnight that does not exist (a DST gap) falls back to the UTC reading.
            let time = Local.from_local_datetime(&midnight).earliest().map(|time| time.timestamp_millis());
            time.unwrap_or_else(|| midnight.and_utc().timestamp_millis()).max(0) as u64
        };
        let next_day = date.succ_opt().unwrap_or(date);
        ListFilter {
            created_from_ms: Some(start_ms(date)),
            created_before_ms: Some(start_ms(next_day)),
            ..ListFilter::default()
        }
    }

    /// Narrows to `state`.
    pub fn with_state(mut self, state: TaskState) -> ListFilter {
        self.state = Some(state);
        self
    }

    /// Narrows to finished (`true`) or unfinished (`false`) tasks: the original's
    /// `list_by_status finished|unfinished`.
    pub fn with_finished(mut self, finished: bool) -> ListFilter {
        self.finished = Some(finished);
        self
    }

    /// Lists the newest first.
    pub fn newest_first(mut self) -> ListFilter {
        self.newest_first = true;
        self
    }

    /// Narrows to `limit` records.
    pub fn with_limit(mut self, limit: usize) -> ListFilter {
        self.limit = Some(limit);
        self
    }

    /// True when `record` matches every criterion (the limit aside).
    pub fn matches(&self, record: &TaskRecord) -> bool {
        self.state.is_none_or(|state| record.state == state)
            && self.finished.is_none_or(|finished| record.state.is_finished() == finished)
            && self.created_from_ms.is_none_or(|from| record.created_ms >= from)
            && self.created_before_ms.is_none_or(|before| record.created_ms < before)
    }
}
