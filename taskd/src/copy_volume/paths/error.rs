//! Why a source or destination is refused: [`PathError`], whether a retry may pass, and how an
//! open's error (`ELOOP`, `EXDEV`, ...) is turned into the rule it broke.

use std::io;
use std::path::{Path, PathBuf};

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

/// Turns an open's error into the rule it broke: `ELOOP` (a symlink, refused by
/// `RESOLVE_NO_SYMLINKS` or `O_NOFOLLOW`) and `EXDEV` (an escape, refused by `RESOLVE_BENEATH`)
/// name the rule; `ENXIO` (a FIFO without a reader, opened for writing without blocking) and
/// `EISDIR` name the wrong type; the rest goes to `otherwise`.
pub(super) fn classify(
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
