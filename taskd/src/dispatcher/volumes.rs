//! One writer per volume: the rule that no two unfinished copies share a destination and that no
//! unfinished copy writes what another reads ([`find_conflict`], a pure function over the
//! unfinished copies), and, at the edge, how a submit's paths are resolved as the daemon sees
//! them ([`resolve`]) and whether a destination already holds data ([`holds_data`]).
//!
//! The rule compares resolved paths: canonical where the file exists (symlinks and `..`
//! followed), the canonical parent joined with the name where only the parent exists, the path
//! with `.` and repeated `/` removed otherwise. The runner's confinement (`copy_volume::paths`)
//! is still the boundary; this is the dispatcher's bookkeeping of who writes what.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::task::{CopyVolumeArgs, TaskId};

/// What one copy reads and writes, as resolved paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeUse {
    pub source: PathBuf,
    pub destination: PathBuf,
}

impl VolumeUse {
    /// The resolved paths of `args` (file system reads: call it off the dispatcher's worker
    /// when it can be).
    pub fn resolve(args: &CopyVolumeArgs) -> VolumeUse {
        VolumeUse { source: resolve(&args.source), destination: resolve(&args.destination) }
    }
}

/// Why a new copy cannot be accepted while another unfinished one exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeConflict {
    /// Both would write the same destination.
    SameDestination { task_id: TaskId },
    /// The new copy would write what the other one reads.
    WritesItsSource { task_id: TaskId },
    /// The new copy would read what the other one writes.
    ReadsItsDestination { task_id: TaskId },
}

impl VolumeConflict {
    /// The unfinished task the new copy conflicts with.
    pub fn task_id(&self) -> &TaskId {
        match self {
            VolumeConflict::SameDestination { task_id }
            | VolumeConflict::WritesItsSource { task_id }
            | VolumeConflict::ReadsItsDestination { task_id } => task_id,
        }
    }

    /// What the conflict is, as a sentence fragment for error messages.
    pub fn describe(&self) -> String {
        match self {
            VolumeConflict::SameDestination { task_id } => format!("task {task_id} writes the same destination"),
            VolumeConflict::WritesItsSource { task_id } => format!("task {task_id} reads this destination"),
            VolumeConflict::ReadsItsDestination { task_id } => format!("task {task_id} writes this source"),
        }
    }
}

/// The first unfinished copy in `unfinished` that `new` would conflict with, if any: the same
/// destination, a destination another one reads, or a source another one writes. Two copies may
/// read the same source.
pub fn find_conflict<'a>(
    new: &VolumeUse,
    unfinished: impl IntoIterator<Item = (&'a TaskId, &'a VolumeUse)>,
) -> Option<VolumeConflict> {
    unfinished.into_iter().find_map(|(task_id, other)| {
        let task_id = task_id.clone();
        if new.destination == other.destination {
            Some(VolumeConflict::SameDestination { task_id })
        } else if new.destination == other.source {
            Some(VolumeConflict::WritesItsSource { task_id })
        } else if new.source == other.destination {
            Some(VolumeConflict::ReadsItsDestination { task_id })
        } else {
            None
        }
    })
}

/// `path` as the daemon resolves it (see the module's doc).
pub fn resolve(path: &Path) -> PathBuf {
    if let Ok(canonical) = std::fs::canonicalize(path) {
        return canonical;
    }
    // A destination that does not exist yet: its parent resolved, its own name kept.
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        if let Ok(parent) = std::fs::canonicalize(parent) {
            return parent.join(name);
        }
    }
    path.components().collect()
}

/// True when `destination` exists and holds data: a file with a size or any allocated block, or
/// a block device (whose size the metadata does not tell: writing one always needs consent).
/// Missing is empty; any other error is returned.
pub fn holds_data(destination: &Path) -> std::io::Result<bool> {
    let metadata = match std::fs::metadata(destination) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    Ok(metadata.file_type().is_block_device() || metadata.len() > 0 || metadata.blocks() > 0)
}

#[cfg(test)]
mod tests;
