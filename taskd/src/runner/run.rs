//! A task's run on the runner's context, from its claim to its recorded end (see the runner's
//! `# A task's run`, `# Lease` and `# Release`): a Sleep in short steps, a CopyVolume through
//! `copy_volume`, every record write fenced on the version this runner last wrote (or taken over
//! again when the dispatcher's own `set_runtime` write came between), and the final state written
//! with `task::after_failure`'s rule.

use super::*;

/// How a task's run ended, before it is written.
pub(super) enum RunEnd {
    Succeeded,
    /// The run's error, with whether a retry may pass.
    Failed(String, FailureClass),
    Cancelled,
    /// Paused on request.
    Paused,
    /// Stopped at an extent boundary because its runtime window closed.
    WindowClosed,
    Interrupted,
    /// The runner's lease lapsed: its IO stopped; recorded `Interrupted` if it still owns the task.
    LeaseLapsed,
    /// A fenced write: another owner took over; write nothing more.
    Lost,
}

impl RunEnd {
    /// The outcome's name in the run log.
    pub(super) fn name(&self) -> &'static str {
        match self {
            RunEnd::Succeeded => "succeeded",
            RunEnd::Failed(..) => "failed",
            RunEnd::Cancelled => "cancelled",
            RunEnd::Paused => "paused",
            RunEnd::WindowClosed => "window_closed",
            RunEnd::Interrupted => "interrupted",
            RunEnd::LeaseLapsed => "lease_lapsed",
            RunEnd::Lost => "lost",
        }
    }
}

/// Runs one claimed task to its end and records it (see `# A task's run`).
pub(super) fn run_task(
    inner: &Inner,
    session: &Arc<ZkSession>,
    stored: StoredRecord,
    control: &CopyControl,
    io_until: &Mutex<Option<Instant>>,
) {
    let task_id = stored.record.task_id.clone();
    let mut record = stored.record;
    let mut version = stored.version;
    let started = Instant::now();
    let run = crate::run_log::start(&task_id, &inner.config.node_id, session.session_id());
    let task_type = record.kind.type_name();
    if let Some(metrics) = &inner.config.metrics {
        // A task's first run: no failed or interrupted attempt before it.
        let first_run = record.attempts == 0 && record.last_failed_ms.is_none();
        let queue_wait = first_run.then(|| Duration::from_millis(now_ms().saturating_sub(record.created_ms)));
        metrics.run_started(task_type, queue_wait);
    }
    let end = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match record.kind.clone() {
        TaskKind::Sleep(args) => run_sleep(args.duration_ms, args.fails_after(record.attempts), control),
        TaskKind::CopyVolume(args) => {
            let roots = match &inner.roots {
                Ok(roots) => roots,
                // This runner's configuration, not the task's: another runner may do it.
                Err(reason) => {
                    return RunEnd::Failed(format!("allowed roots unusable: {reason}"), FailureClass::Transient)
                }
            };
            let spec = match CopySpec::for_task(&args, roots, &record.progress, &inner.config.copy) {
                Ok(spec) => spec,
                Err(error) => return RunEnd::Failed(error.to_string(), error.class()),
            };
            // Tests and operators read how much a resumed copy redoes from this line.
            tracing::info!(
                %task_id,
                start_extent = spec.start_extent,
                extent_size = spec.extent_size,
                block_size = spec.block_size,
                "copy started"
            );
            let mut lost = false;
            let outcome = copy_volume(&spec, control, |progress| {
                if lost {
                    return;
                }
                record.progress = *progress;
                match write_as_owner(session, &mut record, &mut version, control) {
                    Ok(()) => {
                        tracing::debug!(%task_id, cur_extent = progress.cur_extent, "copy progress recorded");
                    }
                    Err(error) => {
                        tracing::warn!(%task_id, %error, "progress write refused; stopping the copy");
                        lost = true;
                        control.interrupt();
                    }
                }
            });
            if lost {
                return RunEnd::Lost;
            }
            match outcome {
                CopyOutcome::Completed => RunEnd::Succeeded,
                CopyOutcome::Cancelled => RunEnd::Cancelled,
                CopyOutcome::Interrupted { .. } => RunEnd::Interrupted,
                CopyOutcome::Paused { .. } => RunEnd::Paused,
                CopyOutcome::Failed(error) => RunEnd::Failed(error.to_string(), error.class()),
            }
        }
    }));
    let end = match end {
        Ok(end) => end,
        Err(panic) if runtime::is_cancel_unwind(panic.as_ref()) => std::panic::resume_unwind(panic),
        Err(_) => RunEnd::Failed("the task panicked".to_string(), FailureClass::Transient),
    };
    let end = match end {
        // Whatever else the run saw, it stopped because it may not write: see `# Lease`.
        _ if control.is_permit_refused() => RunEnd::LeaseLapsed,
        RunEnd::Paused if !control.is_pause_requested() => RunEnd::WindowClosed,
        end => end,
    };
    let outcome = end.name();
    finish(session, &mut record, version, end, inner.config.max_attempts, control, started);
    if let Some(metrics) = &inner.config.metrics {
        let stats = control.stats();
        metrics.run_finished(task_type, outcome, started.elapsed(), stats.bytes_read, stats.bytes_written);
        if matches!(record.state, TaskState::Pending | TaskState::Interrupted) && outcome != "window_closed" {
            metrics.retry(outcome);
        }
    }
    // Only an end of IO earlier than the run's own end says anything.
    let io_until = io_until.lock().filter(|until| *until < Instant::now());
    crate::run_log::end(&run, outcome, control.stats(), inner.config.copy.block_size, io_until);
}

pub(super) fn run_sleep(duration_ms: u64, fail: bool, control: &CopyControl) -> RunEnd {
    let deadline = Instant::now() + Duration::from_millis(duration_ms);
    loop {
        // A sleep "writes" at every step: it stops like a copy when the lease lapses.
        if !control.may_write() {
            return RunEnd::LeaseLapsed;
        }
        if control.is_cancelled() {
            return RunEnd::Cancelled;
        }
        if control.is_interrupted() {
            return RunEnd::Interrupted;
        }
        if control.is_pause_requested() {
            return RunEnd::Paused;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        runtime::sleep(left.min(SLEEP_STEP));
    }
    if fail {
        RunEnd::Failed("the sleep task was asked to fail".to_string(), FailureClass::Transient)
    } else {
        RunEnd::Succeeded
    }
}

/// Writes `record` fenced on `version` (then the written version). A fenced write is not
/// always a lost task: the dispatcher also writes a running task's record (`set_runtime`). So
/// when the stored record still says `Running` on this runner and this session holds the
/// owner child — which no one else can hold while this session lives — the runner takes the
/// fields it does not own (the runtime window, applied to `control` too) and writes again on
/// the new version. Anything else is `Fenced`: another owner took over, or the task changed
/// for good.
pub(super) fn write_as_owner(
    session: &ZkSession,
    record: &mut TaskRecord,
    version: &mut i32,
    control: &CopyControl,
) -> Result<(), DbError> {
    let mut last_error = None;
    for _ in 0..3 {
        match task_db::write_record(session, record, *version) {
            Ok(written) => {
                *version = written.version;
                return Ok(());
            }
            Err(fenced @ DbError::Fenced { .. }) => {
                let Some(current) = task_db::read_record(session, &record.task_id)? else {
                    return Err(DbError::NotFound { what: "task", id: record.task_id.to_string() });
                };
                let still_ours = current.record.state == TaskState::Running
                    && current.record.runner_addr == record.runner_addr
                    && task_db::owner_of(session, &record.task_id)?
                        .is_some_and(|owner| owner.session_id == session.session_id());
                if !still_ours {
                    return Err(fenced);
                }
                if current.record.runtime_window != record.runtime_window {
                    tracing::info!(
                        task_id = %record.task_id,
                        window = ?current.record.runtime_window.map(|window| window.to_string()),
                        "the task's runtime window changed; taking it"
                    );
                    record.runtime_window = current.record.runtime_window;
                    control.set_runtime_window(record.runtime_window);
                }
                *version = current.version;
                last_error = Some(fenced);
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or(DbError::Conflict { task_id: record.task_id.clone(), attempts: 3 }))
}

/// Writes the final state, fenced on the version this runner last wrote.
pub(super) fn finish(
    session: &ZkSession,
    record: &mut TaskRecord,
    version: i32,
    end: RunEnd,
    max_attempts: u32,
    control: &CopyControl,
    started: Instant,
) {
    let task_id = &record.task_id.clone();
    let state = match end {
        RunEnd::Lost => {
            tracing::warn!(%task_id, "task taken over by another owner; leaving its record alone");
            return;
        }
        RunEnd::Succeeded => TaskState::Succeeded,
        RunEnd::Cancelled => TaskState::Cancelled,
        // Paused by its runtime window, not on request: it waits as `Pending`, and the
        // dispatcher hands it out again once the window opens.
        RunEnd::WindowClosed => TaskState::Pending,
        RunEnd::Paused => TaskState::Paused,
        RunEnd::LeaseLapsed => {
            tracing::warn!(%task_id, "task IO stopped: the runner's lease lapsed (no confirmed contact with ZooKeeper)");
            record.last_failed_ms = Some(now_ms());
            TaskState::Interrupted
        }
        RunEnd::Interrupted => {
            record.last_failed_ms = Some(now_ms());
            TaskState::Interrupted
        }
        RunEnd::Failed(message, class) => {
            record.attempts += 1;
            record.last_failed_ms = Some(now_ms());
            record.set_last_error(&message, class);
            after_failure(class, record.attempts, max_attempts)
        }
    };
    if let Err(error) = record.transition_to(state) {
        tracing::error!(%task_id, %error, "cannot record the task's end");
        return;
    }
    let mut version = version;
    match write_as_owner(session, record, &mut version, control) {
        Ok(()) => tracing::info!(
            %task_id,
            state = %record.state,
            elapsed_ms = started.elapsed().as_millis() as u64,
            last_error = record.last_error.as_deref().unwrap_or(""),
            "task ended"
        ),
        Err(error) => tracing::warn!(%task_id, %error, "cannot record the task's end"),
    }
}
