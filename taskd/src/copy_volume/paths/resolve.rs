//! One open beneath a directory descriptor, following no symlink and never leaving the
//! directory: the kernel's `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS`, or the walk that stands in for it.
//!
//! # Without openat2
//! On kernels before 5.6 (`ENOSYS`) the same rules are kept by a walk: each directory component
//! is opened with `openat(O_PATH | O_DIRECTORY | O_NOFOLLOW)` relative to the one before, the
//! last with `O_NOFOLLOW`, so a symlink at any component is refused exactly as `openat2` would.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

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
