//! Building [`AllowedRoots`] (a descriptor per root, opened once at the daemon's start) and its
//! early check: [`AllowedRoots::check`] locates a requested source and destination beneath their
//! roots and probes them, refusing early what would certainly fail. It is not the boundary;
//! [`CopyPaths::open`] is.

use std::io;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};

use super::error::classify;
use super::open::fstat;
use super::{normalize, AllowedRoots, CopyPaths, Location, PathError, Resolver, Root};

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
}
