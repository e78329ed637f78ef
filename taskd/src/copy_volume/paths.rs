//! Where a copy may read and write, enforced by the kernel at open time: `AllowedRoots` holds an
//! `O_PATH` descriptor per configured root, opened once at the daemon's start, and every open of
//! a source or destination is an `openat2` beneath the root that lexically holds the requested
//! path, with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`.
//!
//! # The boundary
//! The security boundary is [`CopyPaths::open`], run once per copy on the copy's own context:
//! it opens both files beneath their roots (no symlink anywhere in the path, no `..`), with
//! `O_NONBLOCK` so a FIFO or other special file can never block the open, checks the opened
//! descriptors (`fstat`: a regular file, or a block device only when its path is listed in
//! `allowed_devices`; at most one hard link unless `allow_hard_links`; source and destination
//! not the same inode), then clears `O_NONBLOCK`. From then on the engine uses those
//! descriptors only, never a path, so swapping a path component after the open changes
//! nothing. [`AllowedRoots::check`] (the dispatcher's check at submit and the runner's before it
//! builds a spec) runs the same rules on `O_PATH` probes and closes them: it refuses early what
//! would certainly fail, but it is not the boundary, since anything may change after it.
//!
//! # Block devices
//! A block device is copied only when the requested path is exactly one of `allowed_devices`
//! (compared component by component). Such a path is opened by its absolute name with
//! `RESOLVE_NO_SYMLINKS` (so `/dev/disk/by-id/...` links must be listed as the node they point
//! to) when it lies outside every root, or beneath its root when it lies inside one. A device
//! node met beneath a root but not listed is refused: a root may hold a node (`mknod`, or a hard
//! link into `/dev`) that names any disk of the machine.
//!
//! # Without openat2
//! On kernels before 5.6 (`ENOSYS`) the same rules are kept by a walk, component by component,
//! that refuses a symlink anywhere exactly as `openat2` would (see `resolve`).
//!
//! # Where things are
//! This file holds the types (the roots, a checked pair, an opened pair); the work is split by
//! job: `roots` (opening the roots' descriptors, and the early check that turns a request into
//! [`CopyPaths`]), `open` (the boundary: opening a checked pair and the rules on its
//! descriptors), `resolve` (one open beneath a directory descriptor: `openat2`, or the walk) and
//! `error` (the refusals, and how an open's error names the rule it broke). The parts depend one
//! way: `roots` uses `open`, both use `resolve` and `error`.

mod error;
mod open;
mod resolve;
mod roots;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) use error::is_permanent_io;
pub use error::PathError;
pub(crate) use resolve::Resolver;
// The confinement's unit tests drive both resolvers directly.
#[cfg(test)]
pub(crate) use resolve::{open_beneath, open_by_walk};

/// A configured root: its name as configured, its canonical name, and a descriptor of it.
#[derive(Debug)]
struct Root {
    configured: PathBuf,
    canonical: PathBuf,
    fd: OwnedFd,
}

/// The directories and devices copies may touch, with a descriptor per root. Build it once at
/// the daemon's start; clones share the descriptors.
#[derive(Debug, Clone)]
pub struct AllowedRoots {
    roots: Arc<[Root]>,
    devices: Arc<[PathBuf]>,
    allow_hard_links: bool,
    resolver: Resolver,
}

/// Where one requested path is opened.
#[derive(Debug, Clone)]
enum Location {
    /// `relative` beneath `roots[root]`; empty for the root itself.
    Beneath { root: usize, relative: PathBuf },
    /// A listed device outside every root, opened by its absolute name.
    Device,
}

/// A requested source and destination that passed `AllowedRoots::check`, with where each is
/// opened. The engine only takes this type and opens it with [`CopyPaths::open`], the boundary.
#[derive(Debug, Clone)]
pub struct CopyPaths {
    rules: AllowedRoots,
    source: PathBuf,
    source_at: Location,
    destination: PathBuf,
    destination_at: Location,
}

/// The opened pair: descriptors checked against the rules, blocking again.
#[derive(Debug)]
pub struct OpenedPair {
    /// Read only.
    pub source: File,
    /// Write only; created if it did not exist.
    pub destination: File,
    pub source_is_device: bool,
    pub destination_is_device: bool,
}

impl PartialEq for CopyPaths {
    fn eq(&self, other: &CopyPaths) -> bool {
        self.source == other.source && self.destination == other.destination
    }
}

impl CopyPaths {
    /// The source as requested (absolute, no `..`).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The destination as requested (absolute, no `..`).
    pub fn destination(&self) -> &Path {
        &self.destination
    }
}

impl AllowedRoots {
    /// Whether `path` is exactly one of `allowed_devices`, compared component by component: the
    /// device rule of both the early check and the boundary.
    fn is_listed_device(&self, path: &Path) -> bool {
        let path = normalize(path);
        self.devices.contains(&path)
    }
}

/// The path's components again, without `.` or doubled slashes, for exact comparisons.
fn normalize(path: &Path) -> PathBuf {
    path.components().collect()
}
