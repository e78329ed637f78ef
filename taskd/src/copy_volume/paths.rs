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
//! On kernels before 5.6 (`ENOSYS`) the same rules are kept by a walk: each directory component
//! is opened with `openat(O_PATH | O_DIRECTORY | O_NOFOLLOW)` relative to the one before, the
//! last with `O_NOFOLLOW`, so a symlink at any component is refused exactly as `openat2` would.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

use crate::task::FailureClass;

/// A refused source or destination; the message names the path and the rule.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("no allowed roots are configured: every copy is refused")]
    NoAllowedRoots,
    #[error("allowed root {path} is not usable: {source}")]
    BadRoot { path: PathBuf, source: io::Error },
    #[error("allowed root {0} is not a directory")]
    RootNotDirectory(PathBuf),
    #[error("allowed device {0} is not an absolute path without `..`")]
    BadDevicePath(PathBuf),
    #[error("{role} path {path} is not absolute")]
    NotAbsolute { role: &'static str, path: PathBuf },
    #[error("{role} path {path} contains `..`")]
    ParentComponent { role: &'static str, path: PathBuf },
    #[error("source {path} cannot be opened: {source}")]
    SourceMissing { path: PathBuf, source: io::Error },
    #[error("{role} {path} is outside every allowed root and not a listed allowed device")]
    OutsideRoots { role: &'static str, path: PathBuf },
    #[error("{role} {path} goes through a symlink; copies follow no symlink (ELOOP)")]
    Symlink { role: &'static str, path: PathBuf },
    #[error("{role} {path} is a {kind}, neither a regular file nor a block device")]
    NotAVolume { role: &'static str, path: PathBuf, kind: &'static str },
    #[error("{role} {path} is a block device not listed in allowed_devices")]
    DeviceNotListed { role: &'static str, path: PathBuf },
    #[error(
        "{role} {path} has {links} hard links and allow_hard_links is off: a link may name a file outside the roots"
    )]
    HardLinked { role: &'static str, path: PathBuf, links: u64 },
    #[error("destination {path} has no file name")]
    NoFileName { path: PathBuf },
    #[error("the directory of destination {path} does not exist or cannot be read: {source}")]
    DestinationParentMissing { path: PathBuf, source: io::Error },
    #[error("destination {path} cannot be opened: {source}")]
    DestinationUnreadable { path: PathBuf, source: io::Error },
    #[error("destination {path} kept appearing and disappearing while it was opened")]
    DestinationUnstable { path: PathBuf },
    #[error("source {source_path} and destination {destination} are the same file")]
    SameFile { source_path: PathBuf, destination: PathBuf },
    #[error("{role} {path}: {operation}: {source}")]
    Descriptor { role: &'static str, path: PathBuf, operation: &'static str, source: io::Error },
}

impl PathError {
    /// Whether a retry may pass. A refused path (outside the roots, a symlink, not a volume, a
    /// hard link, the same file twice, no file name) is refused the same way every time, and so
    /// is a source or destination that is missing or denied; this runner's unusable roots (its
    /// configuration, not the task's), a destination that kept changing while it was opened and
    /// other IO errors may not recur (another runner, a later try).
    pub fn class(&self) -> FailureClass {
        match self {
            PathError::NoAllowedRoots
            | PathError::BadRoot { .. }
            | PathError::RootNotDirectory(_)
            | PathError::BadDevicePath(_)
            | PathError::DestinationUnstable { .. } => FailureClass::Transient,
            PathError::NotAbsolute { .. }
            | PathError::ParentComponent { .. }
            | PathError::OutsideRoots { .. }
            | PathError::Symlink { .. }
            | PathError::NotAVolume { .. }
            | PathError::DeviceNotListed { .. }
            | PathError::HardLinked { .. }
            | PathError::NoFileName { .. }
            | PathError::SameFile { .. } => FailureClass::Permanent,
            PathError::SourceMissing { source, .. }
            | PathError::DestinationParentMissing { source, .. }
            | PathError::DestinationUnreadable { source, .. }
            | PathError::Descriptor { source, .. } => {
                if is_permanent_io(source) {
                    FailureClass::Permanent
                } else {
                    FailureClass::Transient
                }
            }
        }
    }
}

/// An IO error a retry cannot fix: the file is not there, or this daemon may not use it.
pub(crate) fn is_permanent_io(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOENT | libc::ENOTDIR | libc::EACCES | libc::EPERM | libc::ELOOP | libc::EROFS | libc::ENXIO)
    ) || matches!(error.kind(), io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied)
}

/// How paths are resolved beneath a root: the kernel's `openat2`, or the `openat` walk that
/// stands in for it where the kernel lacks it (and in tests that force it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolver {
    /// `openat2`, falling back to the walk on `ENOSYS`.
    Openat2,
    /// Always the component-by-component walk (tests force it; the daemon reaches the walk
    /// through `Openat2`'s `ENOSYS` fallback).
    #[cfg_attr(not(test), allow(dead_code))]
    Walk,
}

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

    /// Opens the source read only and the destination for writing (created when missing)
    /// beneath their roots, and checks both descriptors: the security boundary (see the module
    /// documentation). Never blocks on a FIFO.
    pub fn open(&self) -> Result<OpenedPair, PathError> {
        let rules = &self.rules;
        let read = OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK;
        let source_fd = rules.open_at(&self.source_at, &self.source, read, Mode::empty()).map_err(|error| {
            classify("source", &self.source, error, |path, source| PathError::SourceMissing { path, source })
        })?;
        let source_kind = rules.check_descriptor("source", &self.source, &source_fd)?;
        let destination_fd = self.open_destination()?;
        let destination_kind = rules.check_descriptor("destination", &self.destination, &destination_fd)?;
        let same = |a: &OwnedFd, b: &OwnedFd| -> Result<bool, PathError> {
            let a = fstat("source", &self.source, a)?;
            let b = fstat("destination", &self.destination, b)?;
            Ok(a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        };
        if same(&source_fd, &destination_fd)? {
            return Err(PathError::SameFile {
                source_path: self.source.clone(),
                destination: self.destination.clone(),
            });
        }
        for (role, path, fd) in
            [("source", &self.source, &source_fd), ("destination", &self.destination, &destination_fd)]
        {
            clear_nonblock(fd).map_err(|source| PathError::Descriptor {
                role,
                path: path.clone(),
                operation: "clear O_NONBLOCK",
                source,
            })?;
        }
        Ok(OpenedPair {
            source: File::from(source_fd),
            destination: File::from(destination_fd),
            source_is_device: source_kind == VolumeKind::BlockDevice,
            destination_is_device: destination_kind == VolumeKind::BlockDevice,
        })
    }

    /// Opens an existing destination, or creates it with `O_EXCL` (never through a symlink);
    /// a destination that appears or vanishes between the two is tried again a few times.
    fn open_destination(&self) -> Result<OwnedFd, PathError> {
        const ATTEMPTS: usize = 8;
        let path = &self.destination;
        let write = OFlags::WRONLY | OFlags::NOCTTY | OFlags::NONBLOCK;
        let unreadable = |path: PathBuf, source| PathError::DestinationUnreadable { path, source };
        for _ in 0..ATTEMPTS {
            match self.rules.open_at(&self.destination_at, path, write, Mode::empty()) {
                Ok(fd) => return Ok(fd),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(classify("destination", path, error, unreadable)),
            }
            if matches!(self.destination_at, Location::Device) {
                // A listed device is never created.
                return Err(PathError::DestinationUnreadable {
                    path: path.clone(),
                    source: io::ErrorKind::NotFound.into(),
                });
            }
            let create = write | OFlags::CREATE | OFlags::EXCL;
            match self.rules.open_at(&self.destination_at, path, create, Mode::from_raw_mode(0o666)) {
                Ok(fd) => return Ok(fd),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    return Err(PathError::DestinationParentMissing { path: path.clone(), source: error })
                }
                Err(error) => return Err(classify("destination", path, error, unreadable)),
            }
        }
        Err(PathError::DestinationUnstable { path: path.clone() })
    }
}

impl AllowedRoots {
    /// Opens a descriptor of every root (each must be an existing directory), with no allowed
    /// devices and hard links refused. An empty list is allowed here and refuses every copy.
    pub fn new<P: AsRef<Path>>(roots: impl IntoIterator<Item = P>) -> Result<AllowedRoots, PathError> {
        AllowedRoots::with_rules(roots, Vec::<PathBuf>::new(), false)
    }

    /// [`AllowedRoots::new`] with the listed block devices (absolute paths without `..`) and
    /// the hard-link rule.
    pub fn with_rules<P: AsRef<Path>, D: AsRef<Path>>(
        roots: impl IntoIterator<Item = P>,
        devices: impl IntoIterator<Item = D>,
        allow_hard_links: bool,
    ) -> Result<AllowedRoots, PathError> {
        let mut opened = Vec::new();
        for root in roots {
            let root = root.as_ref();
            let bad_root = |source| PathError::BadRoot { path: root.to_path_buf(), source };
            let canonical = std::fs::canonicalize(root).map_err(bad_root)?;
            let fd = rustix::fs::open(&canonical, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
                .map_err(|errno| bad_root(errno.into()))?;
            let stat = rustix::fs::fstat(&fd).map_err(|errno| bad_root(errno.into()))?;
            if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
                return Err(PathError::RootNotDirectory(root.to_path_buf()));
            }
            opened.push(Root { configured: normalize(root), canonical, fd });
        }
        let mut listed = Vec::new();
        for device in devices {
            let device = device.as_ref();
            if !device.is_absolute() || device.components().any(|component| component == Component::ParentDir) {
                return Err(PathError::BadDevicePath(device.to_path_buf()));
            }
            listed.push(normalize(device));
        }
        Ok(AllowedRoots { roots: opened.into(), devices: listed.into(), allow_hard_links, resolver: Resolver::Openat2 })
    }

    /// The canonical roots.
    pub fn roots(&self) -> Vec<PathBuf> {
        self.roots.iter().map(|root| root.canonical.clone()).collect()
    }

    /// Resolves everything beneath the roots with the `openat` walk, never `openat2`.
    #[cfg(test)]
    pub(crate) fn force_resolver(mut self, resolver: Resolver) -> AllowedRoots {
        self.resolver = resolver;
        self
    }

    /// Accepts `source` and `destination` when both are absolute without `..`, each lies
    /// lexically under a root (or is a listed device), and best-effort probes (`O_PATH`, no
    /// symlink followed, nothing opened for IO, nothing created) find a volume for the source,
    /// the destination's directory, and an acceptable destination when it exists. Not the
    /// security boundary: [`CopyPaths::open`] is (see the module documentation).
    pub fn check(&self, source: &Path, destination: &Path) -> Result<CopyPaths, PathError> {
        if self.roots.is_empty() {
            return Err(PathError::NoAllowedRoots);
        }
        let source_at = self.locate("source", source)?;
        let destination_at = self.locate("destination", destination)?;
        if !matches!(destination.components().next_back(), Some(Component::Normal(_))) {
            return Err(PathError::NoFileName { path: destination.to_path_buf() });
        }
        if matches!(&destination_at, Location::Beneath { relative, .. } if relative.as_os_str().is_empty()) {
            return Err(PathError::NoFileName { path: destination.to_path_buf() });
        }

        let probe = OFlags::PATH;
        let source_fd = self.open_at(&source_at, source, probe, Mode::empty()).map_err(|error| {
            classify("source", source, error, |path, source| PathError::SourceMissing { path, source })
        })?;
        self.check_descriptor("source", source, &source_fd)?;

        if let Location::Beneath { root, relative } = &destination_at {
            let parent = relative.parent().unwrap_or(Path::new(""));
            let parent_at = Location::Beneath { root: *root, relative: parent.to_path_buf() };
            let parent_fd = self
                .open_at(&parent_at, destination, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
                .map_err(|error| {
                    classify("destination", destination, error, |path, source| PathError::DestinationParentMissing {
                        path,
                        source,
                    })
                })?;
            drop(parent_fd);
        }
        match self.open_at(&destination_at, destination, probe, Mode::empty()) {
            Ok(destination_fd) => {
                self.check_descriptor("destination", destination, &destination_fd)?;
                let a = fstat("source", source, &source_fd)?;
                let b = fstat("destination", destination, &destination_fd)?;
                if a.st_dev == b.st_dev && a.st_ino == b.st_ino {
                    return Err(PathError::SameFile {
                        source_path: source.to_path_buf(),
                        destination: destination.to_path_buf(),
                    });
                }
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound && !matches!(destination_at, Location::Device) => {}
            Err(error) => {
                return Err(classify("destination", destination, error, |path, source| {
                    PathError::DestinationUnreadable { path, source }
                }))
            }
        }
        Ok(CopyPaths {
            rules: self.clone(),
            source: source.to_path_buf(),
            source_at,
            destination: destination.to_path_buf(),
            destination_at,
        })
    }

    /// Where `path` is opened: beneath the root that holds it lexically (the longest one), or
    /// by its own name when it is a listed device outside every root.
    fn locate(&self, role: &'static str, path: &Path) -> Result<Location, PathError> {
        if !path.is_absolute() {
            return Err(PathError::NotAbsolute { role, path: path.to_path_buf() });
        }
        // Refused outright, even when it would stay inside a root: a request with `..` is
        // either a mistake or a probe, and `RESOLVE_BENEATH` would refuse most of them anyway.
        if path.components().any(|component| component == Component::ParentDir) {
            return Err(PathError::ParentComponent { role, path: path.to_path_buf() });
        }
        // `strip_prefix` compares whole components: `/data2` is not under `/data`.
        let beneath = self
            .roots
            .iter()
            .enumerate()
            .flat_map(|(index, root)| {
                [&root.configured, &root.canonical]
                    .into_iter()
                    .filter_map(move |prefix| path.strip_prefix(prefix).ok().map(|relative| (index, prefix, relative)))
            })
            .max_by_key(|(_, prefix, _)| prefix.components().count());
        if let Some((root, _, relative)) = beneath {
            return Ok(Location::Beneath { root, relative: relative.to_path_buf() });
        }
        if self.is_listed_device(path) {
            return Ok(Location::Device);
        }
        Err(PathError::OutsideRoots { role, path: path.to_path_buf() })
    }

    fn is_listed_device(&self, path: &Path) -> bool {
        let path = normalize(path);
        self.devices.contains(&path)
    }

    /// Opens `path` at `location` with `flags` (plus `O_CLOEXEC`), resolving no symlink.
    fn open_at(&self, location: &Location, path: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        match location {
            Location::Beneath { root, relative } => {
                open_beneath(self.roots[*root].fd.as_fd(), relative, flags, mode, self.resolver)
            }
            Location::Device => {
                // Resolved from `/` with the same rules: no symlink anywhere in the listed path.
                let relative = path.strip_prefix("/").map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                let slash = rustix::fs::open("/", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
                open_beneath(slash.as_fd(), relative, flags, mode, self.resolver)
            }
        }
    }

    /// The type and link rules on an opened descriptor.
    fn check_descriptor(&self, role: &'static str, path: &Path, fd: &OwnedFd) -> Result<VolumeKind, PathError> {
        let stat = fstat(role, path, fd)?;
        let kind = match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => VolumeKind::RegularFile,
            FileType::BlockDevice if self.is_listed_device(path) => VolumeKind::BlockDevice,
            FileType::BlockDevice => return Err(PathError::DeviceNotListed { role, path: path.to_path_buf() }),
            FileType::Symlink => return Err(PathError::Symlink { role, path: path.to_path_buf() }),
            other => return Err(PathError::NotAVolume { role, path: path.to_path_buf(), kind: kind_name(other) }),
        };
        // A device is confined by its listed path instead; device nodes have one link anyway.
        // `nlink_t` is 64 bits on x86_64 and 32 on some other targets.
        #[allow(clippy::unnecessary_cast)]
        let links = stat.st_nlink as u64;
        if kind == VolumeKind::RegularFile && links > 1 && !self.allow_hard_links {
            return Err(PathError::HardLinked { role, path: path.to_path_buf(), links });
        }
        Ok(kind)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VolumeKind {
    RegularFile,
    BlockDevice,
}

fn kind_name(file_type: FileType) -> &'static str {
    match file_type {
        FileType::Directory => "directory",
        FileType::Fifo => "FIFO",
        FileType::CharacterDevice => "character device",
        FileType::Socket => "socket",
        FileType::Symlink => "symlink",
        FileType::BlockDevice => "block device",
        FileType::RegularFile => "regular file",
        FileType::Unknown => "file of unknown type",
    }
}

/// The path's components again, without `.` or doubled slashes, for exact comparisons.
fn normalize(path: &Path) -> PathBuf {
    path.components().collect()
}

fn fstat(role: &'static str, path: &Path, fd: &OwnedFd) -> Result<rustix::fs::Stat, PathError> {
    rustix::fs::fstat(fd).map_err(|errno| PathError::Descriptor {
        role,
        path: path.to_path_buf(),
        operation: "fstat",
        source: errno.into(),
    })
}

fn clear_nonblock(fd: &OwnedFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    rustix::fs::fcntl_setfl(fd, flags - OFlags::NONBLOCK)?;
    Ok(())
}

/// Turns an open's error into the rule it broke: `ELOOP` (a symlink, refused by
/// `RESOLVE_NO_SYMLINKS` or `O_NOFOLLOW`) and `EXDEV` (an escape, refused by `RESOLVE_BENEATH`)
/// name the rule; `ENXIO` (a FIFO without a reader, opened for writing without blocking) and
/// `EISDIR` name the wrong type; the rest goes to `otherwise`.
fn classify(
    role: &'static str,
    path: &Path,
    error: io::Error,
    otherwise: impl FnOnce(PathBuf, io::Error) -> PathError,
) -> PathError {
    let path_buf = path.to_path_buf();
    match error.raw_os_error() {
        Some(libc::ELOOP) => PathError::Symlink { role, path: path_buf },
        Some(libc::EXDEV) => PathError::OutsideRoots { role, path: path_buf },
        Some(libc::ENXIO) => PathError::NotAVolume { role, path: path_buf, kind: "FIFO or device without a reader" },
        Some(libc::EISDIR) => PathError::NotAVolume { role, path: path_buf, kind: "directory" },
        _ => otherwise(path_buf, error),
    }
}

/// The resolve rules of every open beneath a root.
fn resolve_flags() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// Opens `relative` (empty: the directory itself) beneath `directory` with `flags | O_CLOEXEC`,
/// following no symlink and never leaving `directory`: `openat2`, or the walk where the kernel
/// has no `openat2` or `resolver` asks for it. `relative` must hold only normal components
/// (`.` is skipped); anything else is refused with `EXDEV`.
pub(crate) fn open_beneath(
    directory: BorrowedFd<'_>,
    relative: &Path,
    flags: OFlags,
    mode: Mode,
    resolver: Resolver,
) -> io::Result<OwnedFd> {
    let mut names = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(name) => names.push(name),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => {
                return Err(io::Error::from_raw_os_error(libc::EXDEV))
            }
        }
    }
    let relative: PathBuf = if names.is_empty() { PathBuf::from(".") } else { names.iter().collect() };
    if resolver == Resolver::Openat2 {
        // EAGAIN: a rename or mount raced the lookup; the kernel asks for a retry.
        for _ in 0..4 {
            match rustix::fs::openat2(directory, &relative, flags | OFlags::CLOEXEC, mode, resolve_flags()) {
                Ok(fd) => return Ok(fd),
                Err(rustix::io::Errno::AGAIN) => continue,
                Err(rustix::io::Errno::NOSYS) => return open_by_walk(directory, &names, flags, mode),
                Err(errno) => return Err(errno.into()),
            }
        }
        return Err(io::Error::from_raw_os_error(libc::EAGAIN));
    }
    open_by_walk(directory, &names, flags, mode)
}

/// The walk that stands in for `openat2`: every directory opened `O_PATH | O_DIRECTORY |
/// O_NOFOLLOW` relative to the one before, the last name `O_NOFOLLOW`; a symlink anywhere is
/// refused with `ELOOP`, as `RESOLVE_NO_SYMLINKS` would.
pub(crate) fn open_by_walk(
    directory: BorrowedFd<'_>,
    names: &[&OsStr],
    flags: OFlags,
    mode: Mode,
) -> io::Result<OwnedFd> {
    let Some((last, parents)) = names.split_last() else {
        return Ok(rustix::fs::openat(directory, ".", flags | OFlags::CLOEXEC, mode)?);
    };
    let mut current: Option<OwnedFd> = None;
    for name in parents {
        let at = current.as_ref().map_or(directory, |fd| fd.as_fd());
        let next = rustix::fs::openat(
            at,
            *name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| symlink_as_eloop(at, name, errno))?;
        current = Some(next);
    }
    let at = current.as_ref().map_or(directory, |fd| fd.as_fd());
    let fd = rustix::fs::openat(at, *last, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, mode)?;
    // With `O_PATH`, `O_NOFOLLOW` opens a symlink itself instead of failing.
    if flags.contains(OFlags::PATH) {
        let stat = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
    }
    Ok(fd)
}

/// `O_DIRECTORY | O_NOFOLLOW` on a symlink fails with `ENOTDIR`; report it as the symlink it is.
fn symlink_as_eloop(at: BorrowedFd<'_>, name: &OsStr, errno: rustix::io::Errno) -> io::Error {
    if errno == rustix::io::Errno::NOTDIR {
        if let Ok(stat) = rustix::fs::statat(at, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
                return io::Error::from_raw_os_error(libc::ELOOP);
            }
        }
    }
    errno.into()
}
