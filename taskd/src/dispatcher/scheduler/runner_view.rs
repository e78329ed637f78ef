//! The dispatch pass's view of the runners: their registrations as last read (re-read when older
//! than `RUNNER_VIEW_TTL` or reset by a change), the free slots they leave, and the watch on the
//! runners' directory that resets it.

use std::time::{Duration, Instant};

use super::handle::RunnerCounts;
use super::{Scheduler, CHECK_INTERVAL};
use crate::dispatcher::placement::{self, RunnerSlots};
use crate::task_db;

/// How long the dispatch pass trusts the runners' free slots it read (less the tasks it handed
/// out since) before reading them again. Owner and runner changes and the periodic check make
/// it re-read at once; this bounds how long a change nothing reports (a runner's registration
/// rewritten as its tasks end) goes unseen while submits keep coming.
const RUNNER_VIEW_TTL: Duration = Duration::from_millis(250);

/// The runners as the dispatch pass last read their registrations.
pub(super) struct RunnerView {
    pub(super) runners: Vec<RunnerSlots>,
    pub(super) read_at: Instant,
}

impl Scheduler {
    /// Watches the runners' directory; each change asks for a check and re-arms the watch.
    pub(super) fn watch_runners(&mut self) {
        let session = self.session.clone();
        let handle = self.handle.clone();
        let spawned = self.context.sched(move || loop {
            let watch = match task_db::watch_runners(&session) {
                Ok((_, watch)) => watch,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch the runners");
                    runtime::sleep(CHECK_INTERVAL);
                    continue;
                }
            };
            let event = watch.wait();
            if matches!(event, quorum::zk::NodeEvent::SessionEnded { .. }) {
                return;
            }
            handle.post(Box::new(|scheduler| scheduler.runner_view = None));
            handle.request_check();
        });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the runners' watch");
        }
    }

    /// The free slots of the runners that may take tasks now (`placement::free_capacity`:
    /// counting this dispatcher's own assignments their registrations do not show yet); `None`
    /// when they cannot be read. The view is re-read when missing or older than
    /// `RUNNER_VIEW_TTL`.
    pub(super) fn free_capacity(&mut self, now: u64) -> Option<u32> {
        let stale = self.runner_view.as_ref().is_none_or(|view| view.read_at.elapsed() >= RUNNER_VIEW_TTL);
        if stale {
            let runners = match task_db::list_runners(&self.session) {
                Ok(list) => list.runners,
                Err(error) => {
                    tracing::warn!(%error, "cannot list the runners");
                    self.runner_view = None;
                    return None;
                }
            };
            let runners = runners
                .into_iter()
                .map(|runner| RunnerSlots {
                    address: runner.info.address,
                    slots: runner.info.slots,
                    free_slots: runner.info.free_slots,
                    draining: runner.info.draining,
                    healthy: runner.info.healthy,
                })
                .collect::<Vec<_>>();
            let n_draining = runners.iter().filter(|runner| runner.draining).count() as u64;
            let counts = RunnerCounts { n_up: runners.len() as u64 - n_draining, n_draining };
            *self.handle.shared.runner_counts.lock() = Some(counts);
            self.runner_view = Some(RunnerView { runners, read_at: Instant::now() });
        }
        self.held_off.retain(|_, until| *until > now);
        let view = self.runner_view.as_ref()?;
        let capacity = placement::free_capacity(&placement::View {
            now_ms: now,
            candidates: &[],
            runners: &view.runners,
            assigned: &self.assigned,
            held_off: &self.held_off,
            retry: &self.retry,
        });
        Some(capacity.iter().map(|(_, n_free)| *n_free).sum())
    }
}
