//! The security boundary: [`CopyPaths::open`] opens a checked source and destination beneath
//! their roots, never blocking, and checks the opened descriptors (type, listed device, hard
//! links, not the same file) before the engine may use them; the same descriptor rules serve
//! [`AllowedRoots::check`]'s probes.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};

use super::error::classify;
use super::resolve::open_beneath;
use super::{AllowedRoots, CopyPaths, Location, OpenedPair, PathError};

impl CopyPaths {
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
    /// Opens `path` at `location` with `flags` (plus `O_CLOEXEC`), resolving no symlink.
    pub(super) fn open_at(&self, location: &Location, path: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
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
    pub(super) fn check_descriptor(
        &self,
        role: &'static str,
        path: &Path,
        fd: &OwnedFd,
    ) -> Result<VolumeKind, PathError> {
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
pub(super) enum VolumeKind {
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

pub(super) fn fstat(role: &'static str, path: &Path, fd: &OwnedFd) -> Result<rustix::fs::Stat, PathError> {
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
