//! The worker's steps of a submit: a copy's check against the one-writer-per-volume rule and its
//! reservation until cached, and the adoption of the records submitters created.

use super::Scheduler;
use crate::dispatcher::submit::SubmitError;
use crate::dispatcher::volumes::{self, VolumeUse};
use crate::task::{RequestId, TaskId, TaskKind, TaskState};
use crate::task_db::{DbError, ListFilter};

/// A copy reserved by `Scheduler::reserve_copy` and not yet adopted.
pub(super) struct ReservedCopy {
    request_id: Option<RequestId>,
    volumes: VolumeUse,
}

/// How many cached copies the volume rule re-reads from ZooKeeper, per submit, before refusing
/// (the cache may not know yet that a runner finished them).
const MAX_CONFLICT_REFRESHES: usize = 8;

impl Scheduler {
    /// The worker's step of a copy's submit: room under the cap, then the one-writer-per-volume
    /// rule against every unfinished copy in the cache and every copy reserved and not yet
    /// adopted; on success the copy is reserved until `adopt_created` caches it (or its create
    /// fails). Race-free because the worker runs one job at a time: two submits' checks and
    /// reservations cannot interleave, and a reservation covers the time its znode is being
    /// created on the submitter's coroutine, when the cache does not show it yet.
    ///
    /// Copies with the same request id are not held against each other: at most one of them
    /// gets created (the multi-op's `NodeExists` on the request znode decides), and the others
    /// answer with it.
    ///
    /// `refuse_data` names the destination when it holds data and the client did not ask to
    /// overwrite it: refused after the volume rule, so that a busy volume is reported first
    /// (the copy writing it is the likelier reason the destination holds data).
    pub(super) fn reserve_copy(
        &mut self,
        task_id: TaskId,
        request_id: Option<RequestId>,
        volumes: VolumeUse,
        refuse_data: Option<std::path::PathBuf>,
    ) -> Result<(), SubmitError> {
        let mut refreshed = 0;
        loop {
            let unfinished = self.unfinished_copies(request_id.as_ref())?;
            let reserved = self
                .reserved_copies
                .iter()
                .filter(|(_, reserved)| request_id.is_none() || reserved.request_id != request_id)
                .map(|(task_id, reserved)| (task_id, &reserved.volumes));
            let Some(conflict) =
                volumes::find_conflict(&volumes, unfinished.iter().map(|(id, use_)| (id, use_)).chain(reserved))
            else {
                break;
            };
            // The cache learns of a runner's final write only at the next check: re-read the
            // other copy before refusing.
            let other = conflict.task_id().clone();
            let cached = unfinished.iter().any(|(id, _)| *id == other);
            if cached && refreshed < MAX_CONFLICT_REFRESHES {
                refreshed += 1;
                match self.db.refresh(&other)? {
                    Some(fresh) if !fresh.record.state.is_finished() => {}
                    _ => continue,
                }
            }
            return Err(SubmitError::VolumeBusy { conflict });
        }
        if let Some(destination) = refuse_data {
            return Err(SubmitError::DestinationHoldsData { destination });
        }
        let mut room = self.handle.shared.room.lock();
        room.publish(&self.db);
        room.reserve(&task_id)?;
        drop(room);
        self.reserved_copies.insert(task_id, ReservedCopy { request_id, volumes });
        Ok(())
    }

    /// The unfinished copies in the cache, with their resolved paths (but those submitted with
    /// `except_request`, a retry's own original). Paths this leader has not resolved yet (tasks
    /// of an earlier leader) are resolved here, once.
    fn unfinished_copies(&mut self, except_request: Option<&RequestId>) -> Result<Vec<(TaskId, VolumeUse)>, DbError> {
        let mut copies = Vec::new();
        for state in TaskState::ALL.into_iter().filter(|state| !state.is_finished()) {
            for stored in self.db.list(&ListFilter::in_state(state))? {
                let TaskKind::CopyVolume(args) = &stored.record.kind else { continue };
                if except_request.is_some() && stored.record.request_id.as_ref() == except_request {
                    continue;
                }
                let volumes = self
                    .resolved_copies
                    .entry(stored.record.task_id.clone())
                    .or_insert_with(|| VolumeUse::resolve(args))
                    .clone();
                copies.push((stored.record.task_id, volumes));
            }
        }
        self.resolved_copies.retain(|task_id, _| copies.iter().any(|(id, _)| id == task_id));
        Ok(copies)
    }

    /// The last step of `SchedulerHandle::submit`: the created records are cached and counted,
    /// their reservations end, and a dispatch pass follows.
    pub(super) fn adopt_created(&mut self) {
        let records = std::mem::take(&mut *self.handle.shared.created.lock());
        if let Err(error) = self.db.adopt_all_created(&records) {
            tracing::error!(n_tasks = records.len(), %error, "cannot cache submitted tasks");
        }
        {
            let mut room = self.handle.shared.room.lock();
            room.publish(&self.db);
            for record in &records {
                room.release(&record.task_id);
            }
        }
        for record in &records {
            if let Some(reserved) = self.reserved_copies.remove(&record.task_id) {
                self.resolved_copies.insert(record.task_id.clone(), reserved.volumes);
            }
        }
        self.handle.request_check();
    }
}
