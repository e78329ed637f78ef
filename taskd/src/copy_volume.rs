//! The CopyVolume engine, independent of ZooKeeper: copies a regular file or block device to a
//! destination extent by extent, keeping sparse volumes sparse, reporting progress once per
//! finished extent, and stopping cleanly on cancel, interrupt, pause or a closed runtime window.
//!
//! # How a copy runs
//! [`copy_volume`] is called by the runner (from a coroutine or a thread) with [`CopyPaths`]
//! that [`AllowedRoots::check`] accepted, a [`CopySpec`] and a [`CopyControl`]. It starts a
//! dedicated `runtime::ThreadContext` (`zbs-task-copy`), opens both files there once with
//! [`CopyPaths::open`] — the confinement's boundary (`paths/open.rs`): beneath the roots' descriptors,
//! no symlink, never blocking — and from then on uses only those descriptors, never a path. It
//! does every file syscall on that context:
//! positional IO (`FileExt::read_at`/`write_at`), `lseek(SEEK_DATA/SEEK_HOLE)`, `set_len`,
//! `fdatasync`. Those calls block the OS thread they run on; that is acceptable only because
//! that thread runs nothing but this copy's coroutines, and it is why no other work may ever be
//! scheduled on a copy context. The caller only parks (a coroutine parks alone) while the
//! context works, and runs the progress callback itself, so the callback may do blocking
//! ZooKeeper writes through `runtime::block_on` on the caller's own context.
//!
//! The volume is split into extents of `extent_size` bytes (256 MiB by default), each into
//! blocks of `block_size` (256 KiB). For each extent the engine asks the source where its data
//! is (`SEEK_DATA`/`SEEK_HOLE`); holes are never read. `io_depth` coroutines take the data
//! blocks in turn, read each, and write only its pages (4 KiB) that are not all zeros, so the
//! destination — cut to length with `set_len` — keeps a hole wherever the source has a hole or
//! a page of zeros. (The coroutines share one thread, so `io_depth` bounds the blocks in
//! flight and the buffers held; the kernel's readahead and write-back supply the parallelism.)
//! After an extent its written data is synced, and only then is the progress callback told
//! that the extent is done: a resumed copy may trust `cur_extent`. With a rate limit
//! (`CopySpec::max_bytes_per_s`, `pace.rs`) the block coroutines wait before each read.
//!
//! A destination that is a block device cannot be cut to length and may hold old data, so
//! there every block of every extent is written, zeros included.
//!
//! # Stopping
//! Cancel and interrupt take effect at the next block: each coroutine checks the control
//! before it reads a block, so at most one block per coroutine finishes after the request.
//! Pause — asked for, or a runtime window that does not contain the local time — takes effect
//! at the next extent boundary. A panic anywhere in the copy, the progress callback included,
//! is caught and fails this copy with [`CopyError::Panicked`]; the daemon goes on.
//!
//! Before every write — each block's runs of data, and the destination's truncation when a copy
//! starts — the engine asks [`CopyControl::may_write`], the runner's lease: once it is refused
//! the copy is interrupted and writes nothing more (`runner/lease.rs`).

mod engine;
mod pace;
mod paths;
mod sparse;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::task::{CopyVolumeArgs, FailureClass, Progress, RuntimeWindow, MAX_IO_DEPTH};

pub use engine::copy_volume;
pub use paths::{AllowedRoots, CopyPaths, OpenedPair, PathError};

/// What to copy and how.
#[derive(Debug, Clone)]
pub struct CopySpec {
    pub paths: CopyPaths,
    /// Coroutines copying blocks at once, 1..=`MAX_IO_DEPTH`.
    pub io_depth: u32,
    /// The first extent to copy; extents before it are taken as done (a resumed task passes
    /// its record's `progress.cur_extent`). 0 also empties an existing destination file first.
    pub start_extent: u64,
    /// Bytes per extent: the unit of progress, pause and resume. A multiple of `block_size`.
    pub extent_size: u64,
    /// Bytes per block: the unit of IO and of cancel. A multiple of 4096.
    pub block_size: u64,
    /// The most bytes per second the copy reads; `None` is unlimited.
    pub max_bytes_per_s: Option<u64>,
}

/// A runner's copy settings (the `[tasks]` table): extent and block sizes and the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopySettings {
    pub extent_size: u64,
    pub block_size: u64,
    pub max_bytes_per_s: Option<u64>,
}

impl Default for CopySettings {
    fn default() -> CopySettings {
        CopySettings {
            extent_size: CopySpec::DEFAULT_EXTENT_SIZE,
            block_size: CopySpec::DEFAULT_BLOCK_SIZE,
            max_bytes_per_s: None,
        }
    }
}

impl CopySpec {
    pub const DEFAULT_EXTENT_SIZE: u64 = 256 << 20;
    pub const DEFAULT_BLOCK_SIZE: u64 = 256 << 10;

    /// A copy of the whole volume with the default extent and block sizes.
    pub fn new(paths: CopyPaths, io_depth: u32) -> CopySpec {
        CopySpec {
            paths,
            io_depth,
            start_extent: 0,
            extent_size: CopySpec::DEFAULT_EXTENT_SIZE,
            block_size: CopySpec::DEFAULT_BLOCK_SIZE,
            max_bytes_per_s: None,
        }
    }

    /// The copy a CopyVolume task asks for, its paths checked against `roots`, with this
    /// runner's `settings`. A task that made progress resumes at `progress.cur_extent` in the
    /// extent size it was started with (`progress.extent_size`; records without one were
    /// written with the old fixed 256 MiB), whatever this runner's own setting, so that a
    /// reschedule to a differently configured runner never skips or misaligns data; the block
    /// size then becomes one that divides that extent.
    pub fn for_task(
        args: &CopyVolumeArgs,
        roots: &AllowedRoots,
        progress: &Progress,
        settings: &CopySettings,
    ) -> Result<CopySpec, PathError> {
        let paths = roots.check(&args.source, &args.destination)?;
        let (extent_size, block_size) = match (progress.cur_extent, progress.extent_size) {
            (0, _) => (settings.extent_size, settings.block_size),
            (_, 0) => (CopySpec::DEFAULT_EXTENT_SIZE, gcd(CopySpec::DEFAULT_EXTENT_SIZE, settings.block_size)),
            (_, recorded) => (recorded, gcd(recorded, settings.block_size)),
        };
        Ok(CopySpec {
            start_extent: progress.cur_extent,
            extent_size,
            block_size,
            max_bytes_per_s: settings.max_bytes_per_s,
            ..CopySpec::new(paths, args.io_depth)
        })
    }

    fn validate(&self) -> Result<(), CopyError> {
        let invalid = |message: String| Err(CopyError::InvalidSpec(message));
        if !(1..=MAX_IO_DEPTH).contains(&self.io_depth) {
            return invalid(format!("io_depth must be 1..={MAX_IO_DEPTH}, got {}", self.io_depth));
        }
        if self.block_size == 0 || !self.block_size.is_multiple_of(4096) || self.block_size > 64 << 20 {
            return invalid(format!("block_size must be a multiple of 4096 up to 64 MiB, got {}", self.block_size));
        }
        if self.extent_size == 0 || !self.extent_size.is_multiple_of(self.block_size) {
            return invalid(format!("extent_size must be a multiple of block_size, got {}", self.extent_size));
        }
        Ok(())
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// How a copy ended. `at_extent` is where a later run resumes (`CopySpec::start_extent`).
#[derive(Debug)]
pub enum CopyOutcome {
    /// Every extent is copied and synced.
    Completed,
    Cancelled,
    /// Stopped by `interrupt` (runner shutdown); extents before `at_extent` are done.
    Interrupted {
        at_extent: u64,
    },
    /// Stopped at an extent boundary by `pause` or the runtime window.
    Paused {
        at_extent: u64,
    },
    Failed(CopyError),
}

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("invalid copy: {0}")]
    InvalidSpec(String),
    #[error("cannot start the copy's thread: {0}")]
    Context(io::Error),
    #[error("the copy's thread stopped before the copy finished")]
    ContextStopped,
    /// The open of the source or destination broke a path rule (`CopyPaths::open`).
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("destination {path} holds {len} bytes, less than the source's {needed}")]
    DestinationTooSmall { path: PathBuf, len: u64, needed: u64 },
    #[error("{operation} at offset {offset}: {source}")]
    Io { operation: &'static str, offset: u64, source: io::Error },
    #[error("the copy panicked: {0}")]
    Panicked(String),
}

impl CopyError {
    /// Whether a retry may pass: arguments, refused paths, a missing source or a destination
    /// too small fail the same way every time; IO errors and the copy's own thread may not.
    pub fn class(&self) -> FailureClass {
        match self {
            CopyError::InvalidSpec(_) | CopyError::DestinationTooSmall { .. } => FailureClass::Permanent,
            CopyError::Path(error) => error.class(),
            CopyError::Io { source, .. } if paths::is_permanent_io(source) => FailureClass::Permanent,
            CopyError::Context(_) | CopyError::ContextStopped | CopyError::Io { .. } | CopyError::Panicked(_) => {
                FailureClass::Transient
            }
        }
    }
}

/// Counters of one copy run, readable while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes read from the source (holes are never read).
    pub bytes_read: u64,
    /// Bytes written to the destination (all-zero pages are not written to a file).
    pub bytes_written: u64,
}

/// Asked before every write: false once the runner may no longer write (its lease lapsed).
type WritePermit = Arc<dyn Fn() -> bool + Send + Sync>;

/// A test's observer of every block read.
#[cfg(test)]
type BlockHook = Arc<dyn Fn(&CopyControl, u64) + Send + Sync>;

const RUN: u8 = 0;
const INTERRUPT: u8 = 1;
const CANCEL: u8 = 2;

/// The shared handle of one copy run: the runner keeps a clone to cancel, interrupt, pause or
/// change the runtime window; the engine reads it at every block and extent boundary.
#[derive(Clone, Default)]
pub struct CopyControl {
    state: Arc<ControlState>,
}

#[derive(Default)]
struct ControlState {
    /// `RUN`, `INTERRUPT` or `CANCEL`; only ever raised, and cancel wins over interrupt.
    stop: AtomicU8,
    pause: AtomicBool,
    window: Mutex<Option<RuntimeWindow>>,
    /// The runner's lease check (see `set_write_permit`).
    write_permit: Mutex<Option<WritePermit>>,
    /// The write permit was refused once: no write of this run is allowed any more.
    permit_refused: AtomicBool,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    /// Called after every block read, with the count of blocks read so far (tests only).
    #[cfg(test)]
    block_hook: Mutex<Option<BlockHook>>,
    #[cfg(test)]
    blocks_read: AtomicU64,
}

impl std::fmt::Debug for CopyControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyControl")
            .field("stop", &self.state.stop.load(Ordering::Relaxed))
            .field("pause", &self.state.pause.load(Ordering::Relaxed))
            .field("stats", &self.stats())
            .finish()
    }
}

impl CopyControl {
    /// A control with no request pending and no runtime window.
    pub fn new() -> CopyControl {
        CopyControl::default()
    }

    /// A control whose copy runs only inside `window`.
    pub fn with_runtime_window(window: Option<RuntimeWindow>) -> CopyControl {
        let control = CopyControl::new();
        control.set_runtime_window(window);
        control
    }

    /// Stops the copy at the next block; it ends `Cancelled`.
    pub fn cancel(&self) {
        self.state.stop.fetch_max(CANCEL, Ordering::AcqRel);
    }

    /// Stops the copy at the next block; it ends `Interrupted` (unless also cancelled).
    pub fn interrupt(&self) {
        self.state.stop.fetch_max(INTERRUPT, Ordering::AcqRel);
    }

    /// Stops the copy at the next extent boundary; it ends `Paused`.
    pub fn pause(&self) {
        self.state.pause.store(true, Ordering::Release);
    }

    /// Replaces the runtime window (`set_runtime` on a running task); checked at each boundary.
    pub fn set_runtime_window(&self, window: Option<RuntimeWindow>) {
        *self.state.window.lock() = window;
    }

    pub fn runtime_window(&self) -> Option<RuntimeWindow> {
        *self.state.window.lock()
    }

    pub fn is_cancelled(&self) -> bool {
        self.state.stop.load(Ordering::Acquire) == CANCEL
    }

    pub fn is_interrupted(&self) -> bool {
        self.state.stop.load(Ordering::Acquire) == INTERRUPT
    }

    pub fn is_pause_requested(&self) -> bool {
        self.state.pause.load(Ordering::Acquire)
    }

    /// True when the copy may not start another extent now: pause asked for, or the local
    /// time outside the runtime window.
    pub fn should_pause(&self) -> bool {
        self.is_pause_requested() || self.runtime_window().is_some_and(|window| !window.contains_now())
    }

    /// Makes every write of the copy (and every step of a sleep) ask `permit` first. The
    /// first refusal is final for this run: the run is interrupted at once and writes nothing
    /// more, whatever `permit` says later (a runner resumes only through a new claim).
    pub fn set_write_permit(&self, permit: impl Fn() -> bool + Send + Sync + 'static) {
        *self.state.write_permit.lock() = Some(Arc::new(permit));
    }

    /// Asked just before each write: true when the write may go on. A refusal interrupts the
    /// run (see `set_write_permit`).
    pub fn may_write(&self) -> bool {
        if self.state.permit_refused.load(Ordering::Acquire) {
            return false;
        }
        let permit = self.state.write_permit.lock().clone();
        match permit {
            Some(permit) if !permit() => {
                self.state.permit_refused.store(true, Ordering::Release);
                self.interrupt();
                false
            }
            _ => true,
        }
    }

    /// True once the write permit was refused: the run stopped because its lease lapsed.
    pub fn is_permit_refused(&self) -> bool {
        self.state.permit_refused.load(Ordering::Acquire)
    }

    /// Bytes read and written so far.
    pub fn stats(&self) -> CopyStats {
        CopyStats {
            bytes_read: self.state.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.state.bytes_written.load(Ordering::Relaxed),
        }
    }

    fn stop_requested(&self) -> u8 {
        self.state.stop.load(Ordering::Acquire)
    }

    fn count_read(&self, bytes: u64) {
        self.state.bytes_read.fetch_add(bytes, Ordering::Relaxed);
        #[cfg(test)]
        {
            let blocks = self.state.blocks_read.fetch_add(1, Ordering::Relaxed) + 1;
            let hook = self.state.block_hook.lock().clone();
            if let Some(hook) = hook {
                hook(self, blocks);
            }
        }
    }

    fn count_written(&self, bytes: u64) {
        self.state.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }

    #[cfg(test)]
    fn set_block_hook(&self, hook: impl Fn(&CopyControl, u64) + Send + Sync + 'static) {
        *self.state.block_hook.lock() = Some(Arc::new(hook));
    }
}

/// The progress after `cur_extent` extents of a volume of `len` bytes.
fn progress_at(cur_extent: u64, n_extents: u64, len: u64, extent_size: u64, speed_bytes_per_s: u64) -> Progress {
    Progress {
        cur_extent,
        n_extents,
        extent_size,
        bytes_done: cur_extent.saturating_mul(extent_size).min(len),
        bytes_total: len,
        speed_bytes_per_s,
    }
}

#[cfg(test)]
mod tests;
