//! `cargo xtask deploy --root DIR [--dry-run]`: installs the `dist` tarball's files into a root
//! directory (`DIR/usr/bin`, `DIR/etc/zbs/taskd.toml`, `DIR/lib/systemd/system/...`, man page and
//! completions under `DIR/usr/share/`).
//!
//! The tarball's checksums are verified before anything is written. An existing configuration
//! file is never written over: the operator's settings win over the shipped defaults. The host's
//! own root `/` is refused unless `--root /` comes with `--yes`; even then deploy only writes
//! files and never calls `systemctl`: it prints what to run next.
//!
//! The shipped configuration names an API token file (`etc/zbs/taskd.token`); when the root
//! has none, deploy writes one with a fresh token (mode 0640, group `zbs-taskd` when that group
//! exists, else it says to `chgrp` once `systemd-sysusers` made it). Every node of a cluster
//! needs the same token: copy the first node's file to the others.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;

use crate::dist::{self, PayloadFile};

#[derive(Args)]
pub struct DeployArgs {
    /// The root to install into; `/` (the host itself) also needs `--yes`.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// List what would be installed or kept, and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Confirm an install into the host's own root `/`.
    #[arg(long)]
    pub yes: bool,
    /// Install this tarball instead of building one with `cargo xtask dist`.
    #[arg(long, value_name = "PATH")]
    pub tarball: Option<PathBuf>,
}

/// One step of a deploy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write the file (creating or replacing it) with this mode.
    Install { source: String, target: PathBuf, mode: u32 },
    /// Leave the existing file alone (a configuration file).
    Keep { source: String, target: PathBuf },
}

pub fn run(args: DeployArgs) -> Result<()> {
    // Refuse a bad root before spending minutes on a release build.
    let root = check_root(&args.root, args.yes)?;
    let tarball = match args.tarball {
        Some(tarball) => tarball,
        None => dist::build(true)?,
    };
    let files = dist::read_tarball(&tarball)?;
    let actions = plan(&files, &root);
    let mut stdout = std::io::stdout().lock();
    report(&actions, args.dry_run, &mut stdout)?;
    if args.dry_run {
        writeln!(stdout, "dry run: nothing written ({} from {})", root.display(), tarball.display())?;
        return Ok(());
    }
    apply(&files, &actions)?;
    writeln!(stdout, "deployed {} into {}", tarball.display(), root.display())?;
    ensure_token(&root, &mut stdout)?;
    if root == Path::new("/") {
        writeln!(
            stdout,
            "next: systemd-sysusers zbs-taskd.conf && systemctl daemon-reload && systemctl enable --now zbs-taskd"
        )?;
    } else {
        writeln!(stdout, "the tree under {} is what a package would ship", root.display())?;
    }
    Ok(())
}

/// Where the shipped configuration keeps the API token, relative to the root.
pub const TOKEN_PATH: &str = "etc/zbs/taskd.token";

/// The daemon's group (its sysusers entry), which may read the token.
const DAEMON_GROUP: &str = "zbs-taskd";

/// Writes a token file under `root` unless one exists (see the module doc).
pub fn ensure_token(root: &Path, out: &mut impl Write) -> Result<()> {
    let path = root.join(TOKEN_PATH);
    let group = nix::unistd::Group::from_name(DAEMON_GROUP).ok().flatten();
    let created = taskd::access::create_token_file(&path, group.as_ref().map(|group| group.gid.as_raw()))
        .with_context(|| format!("create the API token {}", path.display()))?;
    if !created {
        writeln!(out, "keep {} (exists)", path.display())?;
        return Ok(());
    }
    writeln!(out, "wrote a new API token to {} (0640): copy this file to every node of the cluster", path.display())?;
    if group.is_none() {
        writeln!(
            out,
            "the group {DAEMON_GROUP} does not exist yet: after systemd-sysusers, run `chgrp {DAEMON_GROUP} /{TOKEN_PATH}`"
        )?;
    }
    Ok(())
}

/// The root as an absolute path; `/` (however spelt) only with `yes`.
pub fn check_root(root: &Path, yes: bool) -> Result<PathBuf> {
    ensure!(!root.as_os_str().is_empty(), "--root is empty");
    let absolute = if root.is_absolute() {
        root.to_path_buf()
    } else {
        std::env::current_dir().context("find the current dir")?.join(root)
    };
    // Resolve `..` and symlinks where the path exists, so that `/tmp/..` is seen as `/`.
    let resolved = fs::canonicalize(&absolute).unwrap_or_else(|_| normalize(&absolute));
    if resolved == Path::new("/") && !yes {
        bail!("refusing to deploy into the host's own root `/`; pass `--root / --yes` if that is what you mean");
    }
    Ok(resolved)
}

/// `..` and `.` removed lexically (for a root that does not exist yet).
fn normalize(path: &Path) -> PathBuf {
    let mut normal = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                normal.pop();
            }
            Component::Normal(name) => normal.push(name),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    normal
}

/// What deploying `files` into `root` does: install each file, except a configuration file
/// (under `etc/`) that already exists.
pub fn plan(files: &[PayloadFile], root: &Path) -> Vec<Action> {
    files
        .iter()
        .map(|file| {
            let target = root.join(&file.path);
            if file.path.starts_with("etc/") && target.exists() {
                Action::Keep { source: file.path.clone(), target }
            } else {
                Action::Install { source: file.path.clone(), target, mode: file.mode }
            }
        })
        .collect()
}

/// One line per action; `would` in a dry run.
pub fn report(actions: &[Action], dry_run: bool, out: &mut impl Write) -> Result<()> {
    let (install, keep) = if dry_run { ("would install", "would keep") } else { ("install", "keep") };
    for action in actions {
        match action {
            Action::Install { source, target, mode } => {
                writeln!(out, "{install} {source} -> {} ({mode:04o})", target.display())?
            }
            Action::Keep { source, target } => {
                writeln!(out, "{keep} {} (exists; the shipped {source} is not written over it)", target.display())?
            }
        }
    }
    Ok(())
}

/// Carries out the plan: each file written to a temp name beside its target, given its mode,
/// then renamed over it (so a running binary is replaced, never truncated).
pub fn apply(files: &[PayloadFile], actions: &[Action]) -> Result<()> {
    for action in actions {
        let Action::Install { source, target, mode } = action else { continue };
        let file = files
            .iter()
            .find(|file| &file.path == source)
            .with_context(|| format!("{source} is not in the payload"))?;
        let parent = target.parent().with_context(|| format!("{} has no parent dir", target.display()))?;
        fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        let file_name = target.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = parent.join(format!(".{file_name}.deploy-tmp"));
        fs::write(&temp, &file.contents).with_context(|| format!("write {}", temp.display()))?;
        fs::set_permissions(&temp, fs::Permissions::from_mode(*mode))
            .with_context(|| format!("chmod {}", temp.display()))?;
        fs::rename(&temp, target).with_context(|| format!("rename {} to {}", temp.display(), target.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
