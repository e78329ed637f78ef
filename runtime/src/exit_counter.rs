//! Counts process exits in a small memory-mapped file so a daemon can tell it has exited too often recently.
//!
//! systemd gives up restarting a unit that exits more than `StartLimitBurst` times within
//! `StartLimitIntervalSec`. A daemon that may choose between exiting and staying up (stopping
//! only its service, as metad does) asks an [`ExitCounter`] first: [`ExitCounter::may_exit`], or
//! atomically [`ExitCounter::try_record_exit`]. The count survives restarts because it lives in
//! a file, mapped into memory as the original ntpd keeps its counter in shared memory. Put the
//! file on a tmpfs such as `/run` to forget old exits at reboot, as systemd does.
//!
//! # File layout
//!
//! [`FILE_LEN`] bytes, little-endian:
//!
//! | offset | size | field                                                        |
//! |--------|------|--------------------------------------------------------------|
//! | 0      | 8    | magic `ZBSEXITC`                                             |
//! | 8      | 4    | layout version, [`LAYOUT_VERSION`]                           |
//! | 12     | 4    | slot count, [`SLOT_COUNT`]                                   |
//! | 16     | 4    | index of the slot the next exit is written to                |
//! | 20     | 4    | reserved, zero                                               |
//! | 24     | 8    | exits recorded since the file was created                    |
//! | 32     | 8    | FNV-1a 64 checksum of every other byte of the file           |
//! | 40     | 8 × [`SLOT_COUNT`] | ring of exit times, ms since the Unix epoch, 0 = empty |
//!
//! Every access holds an exclusive `flock` on the file, so processes never lose each other's
//! updates. A file of the wrong size, with a wrong magic, version, slot count or checksum, is
//! rewritten empty with a warning naming the file and the problem; so is one removed or
//! replaced while a counter has it open. A process killed in the middle of an update leaves a
//! bad checksum, which costs the recorded exits, never a panic.
//!
//! Exit times are wall-clock times, so that they mean the same thing in every process. A time
//! found in the future (the clock was set back) is treated as "now": such exits still count,
//! and expire one window later.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memmap2::MmapMut;
use parking_lot::Mutex;

#[cfg(test)]
mod tests;

/// How many exit times the file keeps; also the largest `limit` a counter accepts.
pub const SLOT_COUNT: usize = 32;

/// Layout version written to the header; a file with another version is rewritten.
pub const LAYOUT_VERSION: u32 = 1;

/// Size of the counter file in bytes.
pub const FILE_LEN: usize = SLOTS_OFFSET + 8 * SLOT_COUNT;

const MAGIC: [u8; 8] = *b"ZBSEXITC";
const VERSION_OFFSET: usize = 8;
const SLOT_COUNT_OFFSET: usize = 12;
const NEXT_SLOT_OFFSET: usize = 16;
const RESERVED_OFFSET: usize = 20;
const TOTAL_EXITS_OFFSET: usize = 24;
const CHECKSUM_OFFSET: usize = 32;
const SLOTS_OFFSET: usize = 40;

/// Permissions of a newly created counter file (before the umask).
const FILE_MODE: u32 = 0o644;

/// Why an exit counter could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum ExitCounterError {
    /// The window or the limit cannot describe a useful policy.
    #[error("invalid exit counter settings: {reason}")]
    InvalidSettings { reason: String },
    /// The path does not name a file.
    #[error("exit counter path {path} does not name a file")]
    NotAFileName { path: PathBuf },
    /// The directory that should hold the file does not exist; it is not created, since a
    /// missing directory usually means a wrong path rather than a first start.
    #[error("directory {directory} of exit counter file {path} does not exist")]
    MissingDirectory { path: PathBuf, directory: PathBuf },
    /// Something other than a regular file is at the path.
    #[error("exit counter path {path} is not a regular file")]
    NotARegularFile { path: PathBuf },
    /// A system call on the file failed.
    #[error("{action} exit counter file {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
}

/// Result of exit counter operations.
pub type Result<T> = std::result::Result<T, ExitCounterError>;

/// A count of recent process exits, shared through a file by every process that opens it.
///
/// Exits older than `window` do not count. `limit` is the number of exits allowed within the
/// window (systemd's `StartLimitBurst`; choose it below the unit's burst so that systemd never
/// gives up). Methods take `&self`; threads and processes may share one counter file.
#[derive(Debug)]
pub struct ExitCounter {
    path: PathBuf,
    window: Duration,
    limit: u32,
    mapped: Mutex<MappedFile>,
}

impl ExitCounter {
    /// Opens the counter file at `path`, creating it when missing and rewriting it (with a
    /// warning) when it is corrupt. The directory must exist.
    ///
    /// `window` must be at least a millisecond and `limit` at most [`SLOT_COUNT`].
    ///
    /// # Errors
    ///
    /// `InvalidSettings` for a window under a millisecond or a limit over [`SLOT_COUNT`],
    /// `NotAFileName` for a path without one, and the IO error of opening, sizing, locking or mapping
    /// the file.
    pub fn open(path: impl AsRef<Path>, window: Duration, limit: u32) -> Result<ExitCounter> {
        let path = path.as_ref().to_path_buf();
        if window < Duration::from_millis(1) {
            return Err(ExitCounterError::InvalidSettings {
                reason: format!("window {window:?} is shorter than a millisecond"),
            });
        }
        if limit as usize > SLOT_COUNT {
            return Err(ExitCounterError::InvalidSettings {
                reason: format!("limit {limit} exceeds the {SLOT_COUNT} exits the file can hold"),
            });
        }
        if path.file_name().is_none() {
            return Err(ExitCounterError::NotAFileName { path });
        }
        let counter = ExitCounter { mapped: Mutex::new(MappedFile::open(&path)?), path, window, limit };
        // Validate (and create or repair) now, so that problems show at start-up.
        counter.with_ring(now_ms(), |_ring| ())?;
        Ok(counter)
    }

    /// The counter file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Exits older than this do not count.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// How many exits are allowed within the window.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Records an exit now; returns the exits within the window, this one included.
    ///
    /// # Errors
    ///
    /// The IO error of locking or syncing the file.
    pub fn record_exit(&self) -> Result<u32> {
        self.record_exit_at(now_ms())
    }

    /// Records an exit now if one more exit stays within the limit, and returns the exits
    /// within the window, this one included; otherwise records nothing and returns `None`.
    /// Checking and recording happen under one lock, so two processes cannot both take the
    /// last allowed exit.
    ///
    /// # Errors
    ///
    /// The IO error of locking or syncing the file.
    pub fn try_record_exit(&self) -> Result<Option<u32>> {
        self.try_record_exit_at(now_ms())
    }

    /// The exits within the window.
    ///
    /// # Errors
    ///
    /// The IO error of locking the file.
    pub fn recent_exits(&self) -> Result<u32> {
        self.recent_exits_at(now_ms())
    }

    /// Whether recording one more exit now would stay within the limit.
    ///
    /// # Errors
    ///
    /// The IO error of locking the file.
    pub fn may_exit(&self) -> Result<bool> {
        Ok(self.recent_exits()? < self.limit)
    }

    /// The exits recorded since the file was (re)created, however old.
    ///
    /// # Errors
    ///
    /// The IO error of locking the file.
    pub fn total_exits(&self) -> Result<u64> {
        self.with_ring(now_ms(), |ring| ring.total_exits)
    }

    fn record_exit_at(&self, now_ms: u64) -> Result<u32> {
        let window_ms = self.window_ms();
        self.with_ring(now_ms, |ring| {
            ring.push(now_ms);
            ring.count_since(now_ms, window_ms)
        })
    }

    fn try_record_exit_at(&self, now_ms: u64) -> Result<Option<u32>> {
        let window_ms = self.window_ms();
        let limit = self.limit;
        self.with_ring(now_ms, |ring| {
            if ring.count_since(now_ms, window_ms) >= limit {
                return None;
            }
            ring.push(now_ms);
            Some(ring.count_since(now_ms, window_ms))
        })
    }

    fn recent_exits_at(&self, now_ms: u64) -> Result<u32> {
        let window_ms = self.window_ms();
        self.with_ring(now_ms, |ring| ring.count_since(now_ms, window_ms))
    }

    fn window_ms(&self) -> u64 {
        u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `update` on the ring read from the file, under the file lock, and writes the ring
    /// back when it changed.
    fn with_ring<R>(&self, now_ms: u64, update: impl FnOnce(&mut Ring) -> R) -> Result<R> {
        let mut mapped = self.mapped.lock();
        if !mapped.is_still_at(&self.path)? {
            tracing::warn!(
                "exit counter file {} was removed or replaced while open; using the file now at \
                 that path (created empty if there is none)",
                self.path.display()
            );
            *mapped = MappedFile::open(&self.path)?;
        }
        let _lock = FileLock::exclusive(&mapped.file, &self.path)?;
        let (bytes, mut ring) = mapped.validated(&self.path)?;
        let before = ring.clone();
        ring.clamp_future_times(now_ms);
        let result = update(&mut ring);
        if ring != before {
            ring.encode(bytes);
        }
        Ok(result)
    }
}

/// The open counter file and its mapping; the mapping is made once the file has its size.
#[derive(Debug)]
struct MappedFile {
    file: File,
    map: Option<MmapMut>,
}

impl MappedFile {
    fn open(path: &Path) -> Result<MappedFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(path)
            .map_err(|source| open_error(path, source))?;
        let metadata = file.metadata().map_err(|source| io_error("inspect", path, source))?;
        if !metadata.is_file() {
            return Err(ExitCounterError::NotARegularFile { path: path.to_path_buf() });
        }
        Ok(MappedFile { file, map: None })
    }

    /// Whether `path` still names the file this one has open.
    fn is_still_at(&self, path: &Path) -> Result<bool> {
        let at_path = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(io_error("inspect", path, source)),
        };
        let open = self.file.metadata().map_err(|source| io_error("inspect", path, source))?;
        Ok(at_path.dev() == open.dev() && at_path.ino() == open.ino())
    }

    /// The mapped bytes and the ring they hold, after making sure the file has the right size
    /// and valid content, recreating it when not. Must be called with the file lock held.
    fn validated(&mut self, path: &Path) -> Result<(&mut [u8], Ring)> {
        let len = self.file.metadata().map_err(|source| io_error("inspect", path, source))?.len();
        if len != FILE_LEN as u64 {
            if len == 0 {
                tracing::debug!(path = %path.display(), "creating exit counter file");
            } else {
                warn_corrupt(path, &Corruption::WrongSize { len });
            }
            // Unmap before resizing: touching a mapping beyond the end of the file faults.
            self.map = None;
            self.file.set_len(FILE_LEN as u64).map_err(|source| io_error("resize", path, source))?;
            let map = self.map_file(path)?;
            let ring = Ring::empty();
            ring.encode(map);
            return Ok((map, ring));
        }
        let map = match self.map {
            Some(ref mut map) => map,
            None => self.map_file(path)?,
        };
        let ring = match Ring::decode(map) {
            Ok(ring) => ring,
            Err(problem) => {
                warn_corrupt(path, &problem);
                let ring = Ring::empty();
                ring.encode(map);
                ring
            }
        };
        Ok((map, ring))
    }

    fn map_file(&mut self, path: &Path) -> Result<&mut MmapMut> {
        // SAFETY: the mapping is only touched with the file lock held and after checking that
        // the file has its full size; every process using the file follows the same protocol,
        // and the bytes are treated as untrusted input, never as references.
        let map = unsafe { MmapMut::map_mut(&self.file) }.map_err(|source| io_error("map", path, source))?;
        Ok(self.map.insert(map))
    }
}

/// An exclusive `flock` on the counter file, released on drop. It holds the raw descriptor
/// rather than a borrow so that the mapping beside the file stays mutable; the caller keeps the
/// file open for as long as the lock lives.
struct FileLock {
    fd: RawFd,
}

impl FileLock {
    fn exclusive(file: &File, path: &Path) -> Result<FileLock> {
        let fd = file.as_raw_fd();
        loop {
            // SAFETY: flock on an open descriptor has no memory-safety preconditions.
            if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0 {
                return Ok(FileLock { fd });
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(io_error("lock", path, error));
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: as above. An unlock failure leaves nothing to act on: closing the descriptor
        // releases the lock anyway.
        unsafe { libc::flock(self.fd, libc::LOCK_UN) };
    }
}

/// What was wrong with a counter file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Corruption {
    WrongSize { len: u64 },
    BadMagic,
    UnsupportedVersion { version: u32 },
    WrongSlotCount { slot_count: u32 },
    NextSlotOutOfRange { next_slot: u32 },
    NonZeroReserved,
    ChecksumMismatch { stored: u64, computed: u64 },
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corruption::WrongSize { len } => {
                write!(f, "it is {len} bytes long, expected {FILE_LEN} (truncated or not ours)")
            }
            Corruption::BadMagic => write!(f, "it does not start with the magic bytes ZBSEXITC"),
            Corruption::UnsupportedVersion { version } => {
                write!(f, "its layout version is {version}, expected {LAYOUT_VERSION}")
            }
            Corruption::WrongSlotCount { slot_count } => {
                write!(f, "it declares {slot_count} slots, expected {SLOT_COUNT}")
            }
            Corruption::NextSlotOutOfRange { next_slot } => {
                write!(f, "its next slot index {next_slot} is not below {SLOT_COUNT}")
            }
            Corruption::NonZeroReserved => write!(f, "its reserved header field is not zero"),
            Corruption::ChecksumMismatch { stored, computed } => {
                write!(f, "its checksum {stored:#018x} does not match its content ({computed:#018x})")
            }
        }
    }
}

fn warn_corrupt(path: &Path, problem: &Corruption) {
    tracing::warn!("exit counter file {} is corrupt: {problem}; recreating it with no recorded exits", path.display());
}

/// The decoded content of a counter file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ring {
    next_slot: usize,
    total_exits: u64,
    /// Exit times in ms since the Unix epoch; 0 marks an empty slot.
    slots: [u64; SLOT_COUNT],
}

impl Ring {
    fn empty() -> Ring {
        Ring { next_slot: 0, total_exits: 0, slots: [0; SLOT_COUNT] }
    }

    /// Reads a ring from `bytes`, which must be [`FILE_LEN`] long.
    fn decode(bytes: &[u8]) -> std::result::Result<Ring, Corruption> {
        if bytes.len() != FILE_LEN {
            return Err(Corruption::WrongSize { len: bytes.len() as u64 });
        }
        if bytes[..MAGIC.len()] != MAGIC {
            return Err(Corruption::BadMagic);
        }
        let version = read_u32(bytes, VERSION_OFFSET);
        if version != LAYOUT_VERSION {
            return Err(Corruption::UnsupportedVersion { version });
        }
        let slot_count = read_u32(bytes, SLOT_COUNT_OFFSET);
        if slot_count as usize != SLOT_COUNT {
            return Err(Corruption::WrongSlotCount { slot_count });
        }
        let next_slot = read_u32(bytes, NEXT_SLOT_OFFSET);
        if next_slot as usize >= SLOT_COUNT {
            return Err(Corruption::NextSlotOutOfRange { next_slot });
        }
        if read_u32(bytes, RESERVED_OFFSET) != 0 {
            return Err(Corruption::NonZeroReserved);
        }
        let stored = read_u64(bytes, CHECKSUM_OFFSET);
        let computed = checksum(bytes);
        if stored != computed {
            return Err(Corruption::ChecksumMismatch { stored, computed });
        }
        let mut slots = [0; SLOT_COUNT];
        for (index, slot) in slots.iter_mut().enumerate() {
            *slot = read_u64(bytes, SLOTS_OFFSET + 8 * index);
        }
        Ok(Ring { next_slot: next_slot as usize, total_exits: read_u64(bytes, TOTAL_EXITS_OFFSET), slots })
    }

    /// Writes the ring into `bytes`, which must be [`FILE_LEN`] long.
    fn encode(&self, bytes: &mut [u8]) {
        bytes[..MAGIC.len()].copy_from_slice(&MAGIC);
        write_u32(bytes, VERSION_OFFSET, LAYOUT_VERSION);
        write_u32(bytes, SLOT_COUNT_OFFSET, SLOT_COUNT as u32);
        write_u32(bytes, NEXT_SLOT_OFFSET, self.next_slot as u32);
        write_u32(bytes, RESERVED_OFFSET, 0);
        write_u64(bytes, TOTAL_EXITS_OFFSET, self.total_exits);
        for (index, slot) in self.slots.iter().enumerate() {
            write_u64(bytes, SLOTS_OFFSET + 8 * index, *slot);
        }
        let sum = checksum(bytes);
        write_u64(bytes, CHECKSUM_OFFSET, sum);
    }

    fn push(&mut self, now_ms: u64) {
        // 0 marks an empty slot; a clock before 1970 still records an exit.
        self.slots[self.next_slot] = now_ms.max(1);
        self.next_slot = (self.next_slot + 1) % SLOT_COUNT;
        self.total_exits = self.total_exits.saturating_add(1);
    }

    /// Exits less than `window_ms` before `now_ms`.
    fn count_since(&self, now_ms: u64, window_ms: u64) -> u32 {
        let recent = self.slots.iter().filter(|&&time| time != 0 && now_ms.saturating_sub(time) < window_ms).count();
        recent as u32
    }

    /// Moves exit times later than `now_ms` — the clock was set back — to `now_ms`, so that
    /// they count for one window from now instead of until the clock catches up.
    fn clamp_future_times(&mut self, now_ms: u64) {
        for slot in self.slots.iter_mut() {
            if *slot > now_ms {
                *slot = now_ms.max(1);
            }
        }
    }
}

/// FNV-1a 64 over the file, skipping the checksum field itself.
fn checksum(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let (before, rest) = bytes.split_at(CHECKSUM_OFFSET.min(bytes.len()));
    let after = rest.get(8..).unwrap_or(&[]);
    before.iter().chain(after).fold(OFFSET_BASIS, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME))
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut field = [0; 4];
    field.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(field)
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut field = [0; 8];
    field.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(field)
}

fn write_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn write_u64(bytes: &mut [u8], offset: usize, value: u64) {
    bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

fn now_ms() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> ExitCounterError {
    ExitCounterError::Io { action, path: path.to_path_buf(), source }
}

fn open_error(path: &Path, source: io::Error) -> ExitCounterError {
    if source.kind() == io::ErrorKind::NotFound {
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !directory.is_dir() {
            return ExitCounterError::MissingDirectory { path: path.to_path_buf(), directory };
        }
    }
    io_error("open", path, source)
}
