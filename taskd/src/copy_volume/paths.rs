//! Where a copy may read and write: `AllowedRoots` turns a requested source and destination
//! into `CopyPaths` only when both resolve (symlinks and all) under a configured root, so no
//! request can read or overwrite a file elsewhere. Every check runs before any data IO.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// A refused source or destination; the message names the path and the rule.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("no allowed roots are configured: every copy is refused")]
    NoAllowedRoots,
    #[error("allowed root {path} is not usable: {source}")]
    BadRoot { path: PathBuf, source: io::Error },
    #[error("allowed root {0} is not a directory")]
    RootNotDirectory(PathBuf),
    #[error("{role} path {path} is not absolute")]
    NotAbsolute { role: &'static str, path: PathBuf },
    #[error("{role} path {path} contains `..`")]
    ParentComponent { role: &'static str, path: PathBuf },
    #[error("source {path} cannot be opened: {source}")]
    SourceMissing { path: PathBuf, source: io::Error },
    #[error("{role} {path} resolves to {resolved}, which is outside every allowed root")]
    OutsideRoots { role: &'static str, path: PathBuf, resolved: PathBuf },
    #[error("{role} {path} is neither a regular file nor a block device")]
    NotAVolume { role: &'static str, path: PathBuf },
    #[error("destination {path} has no file name")]
    NoFileName { path: PathBuf },
    #[error("the directory of destination {path} does not exist or cannot be read: {source}")]
    DestinationParentMissing { path: PathBuf, source: io::Error },
    #[error("destination {path} cannot be inspected: {source}")]
    DestinationUnreadable { path: PathBuf, source: io::Error },
    #[error("source {source_path} and destination {destination} are the same file")]
    SameFile { source_path: PathBuf, destination: PathBuf },
}

/// The canonical directories copies may touch. Build it once from the configuration.
#[derive(Debug, Clone)]
pub struct AllowedRoots {
    roots: Vec<PathBuf>,
}

/// A source and destination that passed `AllowedRoots::check`: canonical, inside a root.
/// The copy engine only takes this type, so an unchecked path cannot reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPaths {
    source: PathBuf,
    destination: PathBuf,
}

impl CopyPaths {
    /// The canonical source: no symlink, no `..`.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The canonical destination (its directory canonical, its name not a symlink when it exists).
    pub fn destination(&self) -> &Path {
        &self.destination
    }
}

impl AllowedRoots {
    /// Canonicalises every root; each must be an existing directory. An empty list is allowed
    /// here and refuses every copy in `check`.
    pub fn new<P: AsRef<Path>>(roots: impl IntoIterator<Item = P>) -> Result<AllowedRoots, PathError> {
        let mut canonical = Vec::new();
        for root in roots {
            let root = root.as_ref();
            let resolved =
                fs::canonicalize(root).map_err(|source| PathError::BadRoot { path: root.to_path_buf(), source })?;
            if !resolved.is_dir() {
                return Err(PathError::RootNotDirectory(root.to_path_buf()));
            }
            canonical.push(resolved);
        }
        Ok(AllowedRoots { roots: canonical })
    }

    /// The canonical roots.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Accepts `source` and `destination` only when:
    /// * both are absolute and contain no `..` component;
    /// * the source exists and resolves, through any symlinks, to a regular file or block
    ///   device under a root;
    /// * the destination's directory exists and resolves under a root, and the destination, if
    ///   it exists, resolves under a root to a regular file or block device;
    /// * they are not the same file (by device and inode, so hard links count).
    pub fn check(&self, source: &Path, destination: &Path) -> Result<CopyPaths, PathError> {
        if self.roots.is_empty() {
            return Err(PathError::NoAllowedRoots);
        }
        check_shape("source", source)?;
        check_shape("destination", destination)?;

        let source_resolved = fs::canonicalize(source)
            .map_err(|error| PathError::SourceMissing { path: source.to_path_buf(), source: error })?;
        self.check_inside("source", source, &source_resolved)?;
        let source_metadata = fs::metadata(&source_resolved)
            .map_err(|error| PathError::SourceMissing { path: source.to_path_buf(), source: error })?;
        if !is_volume(&source_metadata) {
            return Err(PathError::NotAVolume { role: "source", path: source.to_path_buf() });
        }

        let file_name = match destination.components().next_back() {
            Some(Component::Normal(name)) => name.to_os_string(),
            _ => return Err(PathError::NoFileName { path: destination.to_path_buf() }),
        };
        let parent = destination.parent().ok_or_else(|| PathError::NoFileName { path: destination.to_path_buf() })?;
        let parent_resolved = fs::canonicalize(parent)
            .map_err(|source| PathError::DestinationParentMissing { path: destination.to_path_buf(), source })?;
        self.check_inside("destination", destination, &parent_resolved)?;
        let mut destination_resolved = parent_resolved.join(&file_name);

        match fs::symlink_metadata(&destination_resolved) {
            Ok(_) => {
                // It exists (maybe as a symlink): follow it and check where it really is.
                destination_resolved = fs::canonicalize(&destination_resolved)
                    .map_err(|source| PathError::DestinationUnreadable { path: destination.to_path_buf(), source })?;
                self.check_inside("destination", destination, &destination_resolved)?;
                let metadata = fs::metadata(&destination_resolved)
                    .map_err(|source| PathError::DestinationUnreadable { path: destination.to_path_buf(), source })?;
                if !is_volume(&metadata) {
                    return Err(PathError::NotAVolume { role: "destination", path: destination.to_path_buf() });
                }
                if metadata.dev() == source_metadata.dev() && metadata.ino() == source_metadata.ino() {
                    return Err(PathError::SameFile {
                        source_path: source.to_path_buf(),
                        destination: destination.to_path_buf(),
                    });
                }
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(PathError::DestinationUnreadable { path: destination.to_path_buf(), source }),
        }
        if destination_resolved == source_resolved {
            return Err(PathError::SameFile {
                source_path: source.to_path_buf(),
                destination: destination.to_path_buf(),
            });
        }
        Ok(CopyPaths { source: source_resolved, destination: destination_resolved })
    }

    fn check_inside(&self, role: &'static str, path: &Path, resolved: &Path) -> Result<(), PathError> {
        // `starts_with` compares whole components: `/data2` is not inside `/data`.
        if self.roots.iter().any(|root| resolved.starts_with(root)) {
            Ok(())
        } else {
            Err(PathError::OutsideRoots { role, path: path.to_path_buf(), resolved: resolved.to_path_buf() })
        }
    }
}

fn check_shape(role: &'static str, path: &Path) -> Result<(), PathError> {
    if !path.is_absolute() {
        return Err(PathError::NotAbsolute { role, path: path.to_path_buf() });
    }
    // Refused outright, even when it would resolve inside a root: a request with `..` is
    // either a mistake or a probe.
    if path.components().any(|component| component == Component::ParentDir) {
        return Err(PathError::ParentComponent { role, path: path.to_path_buf() });
    }
    Ok(())
}

fn is_volume(metadata: &fs::Metadata) -> bool {
    metadata.is_file() || metadata.file_type().is_block_device()
}
