//! The copy loop: opens the files and walks the extents on the caller, sends every file syscall
//! to the copy's own `ThreadContext`, and runs `io_depth` block coroutines there per extent.
//! The module documentation of `copy_volume` says why the IO may block that thread.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use runtime::{SyncPoint, ThreadContext};

use super::pace::Pacer;
use super::sparse::{self, Block};
use super::{progress_at, CopyControl, CopyError, CopyOutcome, CopySpec, CANCEL, INTERRUPT, RUN};
use crate::task::Progress;

/// The name of every copy's thread (at most 15 bytes, the kernel's limit).
const CONTEXT_NAME: &str = "zbs-task-copy";

/// Copies `spec.paths.source()` to `spec.paths.destination()` from `spec.start_extent` on,
/// calling `on_extent` on the caller after each extent is copied and synced. Returns how the
/// copy ended; it never panics, whatever the files or the callback do.
pub fn copy_volume<F>(spec: &CopySpec, control: &CopyControl, mut on_extent: F) -> CopyOutcome
where
    F: FnMut(&Progress),
{
    if let Err(error) = spec.validate() {
        return CopyOutcome::Failed(error);
    }
    let context = match ThreadContext::new(CONTEXT_NAME) {
        Ok(context) => context,
        Err(error) => return CopyOutcome::Failed(CopyError::Context(error)),
    };
    let pacer = spec.max_bytes_per_s.map(|rate| Arc::new(Pacer::new(rate)));
    let copier = Copier { spec, control, context: &context, pacer };
    let outcome = match catch_unwind(AssertUnwindSafe(|| copier.run(&mut on_extent))) {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(error)) => CopyOutcome::Failed(error),
        Err(panic) => CopyOutcome::Failed(CopyError::Panicked(caller_panic_message(panic))),
    };
    // Dropping the context stops and joins its thread; no block coroutine is left by then,
    // since every extent waits for all of its coroutines.
    drop(context);
    outcome
}

/// The opened pair and what the copy learned about them.
struct Files {
    source: File,
    destination: File,
    len: u64,
    /// The destination is a block device: write every block, zeros included.
    write_zeros: bool,
}

struct Copier<'a> {
    spec: &'a CopySpec,
    control: &'a CopyControl,
    context: &'a ThreadContext,
    /// The rate limit of this run, shared by every extent's block coroutines.
    pacer: Option<Arc<Pacer>>,
}

impl Copier<'_> {
    fn run(&self, on_extent: &mut dyn FnMut(&Progress)) -> Result<CopyOutcome, CopyError> {
        // Opening sets the destination's length (and empties it for a fresh copy): a write.
        if !self.control.may_write() {
            return Ok(CopyOutcome::Interrupted { at_extent: self.spec.start_extent });
        }
        let spec = self.spec.clone();
        let files = Arc::new(self.on_context(move || open_files(&spec))??);
        let extent_size = self.spec.extent_size;
        let n_extents = files.len.div_ceil(extent_size);
        if self.spec.start_extent > n_extents {
            return Err(CopyError::InvalidSpec(format!(
                "start_extent {} is past the volume's {n_extents} extents",
                self.spec.start_extent
            )));
        }
        let started = Instant::now();
        for extent in self.spec.start_extent..n_extents {
            if let Some(outcome) = self.stop_outcome(extent) {
                return Ok(outcome);
            }
            if self.control.should_pause() {
                return Ok(CopyOutcome::Paused { at_extent: extent });
            }
            let start = extent * extent_size;
            let end = (start + extent_size).min(files.len);
            let written_before = self.control.stats().bytes_written;
            match self.copy_extent(&files, start..end)? {
                ExtentEnd::Finished => {}
                // Stop requests are never withdrawn, so there is always one to report here.
                ExtentEnd::Stopped => {
                    return Ok(self.stop_outcome(extent).unwrap_or(CopyOutcome::Interrupted { at_extent: extent }))
                }
            }
            if self.control.stats().bytes_written > written_before {
                let files = files.clone();
                self.on_context(move || files.destination.sync_data())?.map_err(|source| CopyError::Io {
                    operation: "sync destination",
                    offset: end,
                    source,
                })?;
            }
            let elapsed = started.elapsed().as_secs_f64();
            let done_this_run = end - self.spec.start_extent * extent_size;
            let speed = if elapsed > 0.0 { (done_this_run as f64 / elapsed) as u64 } else { 0 };
            let progress = progress_at(extent + 1, n_extents, files.len, extent_size, speed);
            catch_unwind(AssertUnwindSafe(|| on_extent(&progress))).map_err(|panic| {
                CopyError::Panicked(format!("in the progress callback: {}", caller_panic_message(panic)))
            })?;
        }
        // Persist the length too, which `sync_data` after a data-less copy may not have.
        let files = files.clone();
        self.on_context(move || files.destination.sync_all())?.map_err(|source| CopyError::Io {
            operation: "sync destination",
            offset: 0,
            source,
        })?;
        Ok(CopyOutcome::Completed)
    }

    /// The outcome a cancel or interrupt asks for, with `extent` as the resume point.
    fn stop_outcome(&self, extent: u64) -> Option<CopyOutcome> {
        match self.control.stop_requested() {
            RUN => None,
            INTERRUPT => Some(CopyOutcome::Interrupted { at_extent: extent }),
            CANCEL => Some(CopyOutcome::Cancelled),
            _ => Some(CopyOutcome::Cancelled),
        }
    }

    /// Copies the data blocks of one extent with up to `io_depth` coroutines and waits for them.
    fn copy_extent(&self, files: &Arc<Files>, extent: std::ops::Range<u64>) -> Result<ExtentEnd, CopyError> {
        let block_size = self.spec.block_size;
        let finder = files.clone();
        let range = extent.clone();
        let blocks = self
            .on_context(move || {
                if finder.write_zeros {
                    Ok(every_block(range, block_size))
                } else {
                    sparse::data_blocks(&finder.source, range, block_size)
                }
            })?
            .map_err(|source| CopyError::Io { operation: "find data in source", offset: extent.start, source })?;
        if blocks.is_empty() {
            return Ok(ExtentEnd::Finished);
        }
        let n_workers = blocks.len().min(self.spec.io_depth as usize);
        let job = Arc::new(ExtentJob {
            files: files.clone(),
            control: self.control.clone(),
            pacer: self.pacer.clone(),
            blocks,
            block_size,
            next_block: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            stopped: AtomicBool::new(false),
            n_running: AtomicUsize::new(n_workers),
            all_done: SyncPoint::new(),
        });
        for _ in 0..n_workers {
            let worker_job = job.clone();
            if self.context.sched(move || worker_job.run_worker()).is_err() {
                job.fail(CopyError::ContextStopped);
                job.worker_finished();
            }
        }
        job.all_done.wait();
        if let Some(error) = job.error.lock().take() {
            return Err(error);
        }
        Ok(if job.stopped.load(Ordering::Acquire) { ExtentEnd::Stopped } else { ExtentEnd::Finished })
    }

    /// Runs `f` on the copy's context and waits for its value, parking only the caller.
    fn on_context<T, F>(&self, f: F) -> Result<T, CopyError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let result: SyncPoint<std::thread::Result<T>> = SyncPoint::new();
        let completion = result.clone();
        self.context
            .sched(move || completion.done_with(catch_unwind(AssertUnwindSafe(f))))
            .map_err(|_| CopyError::ContextStopped)?;
        result.wait();
        match result.take() {
            Some(Ok(value)) => Ok(value),
            Some(Err(panic)) => Err(CopyError::Panicked(runtime::panic_message(&*panic))),
            None => Err(CopyError::ContextStopped),
        }
    }
}

enum ExtentEnd {
    Finished,
    /// A cancel or interrupt stopped the coroutines before every block was copied.
    Stopped,
}

/// One extent's work, shared by its block coroutines.
struct ExtentJob {
    files: Arc<Files>,
    control: CopyControl,
    pacer: Option<Arc<Pacer>>,
    blocks: Vec<Block>,
    block_size: u64,
    next_block: AtomicUsize,
    failed: AtomicBool,
    error: Mutex<Option<CopyError>>,
    stopped: AtomicBool,
    n_running: AtomicUsize,
    all_done: SyncPoint,
}

impl ExtentJob {
    /// One block coroutine: takes blocks until none is left, the copy is stopped, or a
    /// coroutine failed. A panic is caught here (the context would only log and drop it, and
    /// the waiting caller would never hear of it).
    fn run_worker(self: Arc<Self>) {
        let outcome = catch_unwind(AssertUnwindSafe(|| self.copy_blocks()));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.fail(error),
            Err(panic) => self.fail(CopyError::Panicked(runtime::panic_message(&*panic))),
        }
        self.worker_finished();
    }

    fn copy_blocks(&self) -> Result<(), CopyError> {
        let mut buffer = vec![0u8; self.block_size as usize];
        loop {
            if self.failed.load(Ordering::Acquire) {
                return Ok(());
            }
            if self.control.stop_requested() != RUN {
                self.stopped.store(true, Ordering::Release);
                return Ok(());
            }
            let index = self.next_block.fetch_add(1, Ordering::AcqRel);
            let Some(block) = self.blocks.get(index).copied() else {
                return Ok(());
            };
            if let Some(pacer) = &self.pacer {
                let due = pacer.reserve(block.len);
                if !Pacer::wait_until(due, || self.control.stop_requested() != RUN) {
                    self.stopped.store(true, Ordering::Release);
                    return Ok(());
                }
            }
            let data = &mut buffer[..block.len as usize];
            self.files.source.read_exact_at(data, block.offset).map_err(|source| CopyError::Io {
                operation: "read source",
                offset: block.offset,
                source,
            })?;
            self.control.count_read(block.len);
            let written = if self.files.write_zeros {
                self.write(data, block.offset)?
            } else {
                // Zero pages stay holes in the destination, which `set_len` filled with zeros.
                let mut written = true;
                for run in sparse::nonzero_runs(data) {
                    if !self.write(&data[run.clone()], block.offset + run.start as u64)? {
                        written = false;
                        break;
                    }
                }
                written
            };
            if !written {
                self.stopped.store(true, Ordering::Release);
                return Ok(());
            }
            // Let the other block coroutines (and a stop request) in between blocks.
            runtime::yield_now();
        }
    }

    /// Writes `data` at `offset` if the runner's lease still allows it (false: not written, the
    /// copy is interrupted).
    fn write(&self, data: &[u8], offset: u64) -> Result<bool, CopyError> {
        if !self.control.may_write() {
            return Ok(false);
        }
        self.files.destination.write_all_at(data, offset).map_err(|source| CopyError::Io {
            operation: "write destination",
            offset,
            source,
        })?;
        self.control.count_written(data.len() as u64);
        Ok(true)
    }

    fn fail(&self, error: CopyError) {
        self.failed.store(true, Ordering::Release);
        let mut slot = self.error.lock();
        if slot.is_none() {
            *slot = Some(error);
        }
    }

    fn worker_finished(&self) {
        if self.n_running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_done.done();
        }
    }
}

/// Every block of `extent`, for destinations that need zeros written.
fn every_block(extent: std::ops::Range<u64>, block_size: u64) -> Vec<Block> {
    (extent.start..extent.end)
        .step_by(block_size as usize)
        .map(|offset| Block { offset, len: block_size.min(extent.end - offset) })
        .collect()
}

/// Opens both files (on the copy's context) through `CopyPaths::open`, the security boundary:
/// beneath their roots, no symlink followed, types and links checked on the descriptors. From
/// here on the copy uses only these descriptors, never a path. Then prepares the destination's
/// length.
fn open_files(spec: &CopySpec) -> Result<Files, CopyError> {
    let destination_path = spec.paths.destination();
    let opened = spec.paths.open()?;
    let (mut source, destination) = (opened.source, opened.destination);
    let len = source.seek(SeekFrom::End(0)).map_err(|source| CopyError::Io {
        operation: "measure source",
        offset: 0,
        source,
    })?;
    let write_zeros = if opened.destination_is_device {
        let mut device = &destination;
        let device_len = device.seek(SeekFrom::End(0)).map_err(|source| CopyError::Io {
            operation: "measure destination",
            offset: 0,
            source,
        })?;
        if device_len < len {
            return Err(CopyError::DestinationTooSmall {
                path: destination_path.to_path_buf(),
                len: device_len,
                needed: len,
            });
        }
        true
    } else {
        // A fresh copy empties the file first, so that every block it skips reads as zeros.
        // A resumed copy keeps what earlier runs wrote.
        let set_len = |len| {
            destination.set_len(len).map_err(|source| CopyError::Io {
                operation: "set destination length",
                offset: len,
                source,
            })
        };
        if spec.start_extent == 0 {
            set_len(0)?;
        }
        set_len(len)?;
        false
    };
    Ok(Files { source, destination, len, write_zeros })
}

/// The message of a panic caught on the caller's side. The unwind that cancels a coroutine
/// whose context is stopping is not a failure of the copy: it goes on up to the runtime. (A
/// runner interrupts a copy and waits for its outcome before it stops its own context.)
fn caller_panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    if runtime::is_cancel_unwind(&*panic) {
        std::panic::resume_unwind(panic);
    }
    runtime::panic_message(&*panic)
}
