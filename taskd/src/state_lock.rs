//! The state directory's lock: one exclusive `flock` on `<state_dir>/lock`, taken before anything
//! else at start and held for the process's life, so that at most one `zbs-taskd` runs per state
//! directory (a second one refuses to start, naming the holder's pid).
//!
//! The lock is also a proof. The kernel releases a `flock` only when the last descriptor of its
//! open file goes, that is when every thread of the holder has exited (a SIGKILLed process
//! included; the descriptor is close-on-exec, so no child inherits it). A daemon that takes the
//! lock therefore knows that its previous incarnation on this node — the same node id, since a
//! node id belongs to one host and one state directory — does no more IO: the election node,
//! the task owner nodes and the runner registration it left (with its own, other, session) are
//! dead, and the new incarnation deletes them at start instead of waiting for their session to
//! expire ([`SoleIncarnation`]).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the state directory.
pub const LOCK_FILE_NAME: &str = "lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum StateLockError {
    #[error(
        "another zbs-taskd{holder} holds the lock {path}: one daemon per state directory \
         (stop it, or give this one another state_dir and node_id)"
    )]
    HeldByAnother { path: PathBuf, holder: String },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The exclusive lock on the state directory, held until dropped (the process's end).
#[derive(Debug)]
pub struct StateDirLock {
    path: PathBuf,
    _file: File,
}

/// A token only a held [`StateDirLock`] hands out: this process is the only live incarnation of
/// its node id, so nodes in ZooKeeper with this node id and another session are dead and may be
/// deleted at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoleIncarnation(());

impl StateDirLock {
    /// Takes the lock on `state_dir` (which must exist) without waiting, and writes this
    /// process's pid in the file for the error a second daemon reports.
    pub fn acquire(state_dir: &Path) -> Result<StateDirLock, StateLockError> {
        let path = state_dir.join(LOCK_FILE_NAME);
        let io_error = |source| StateLockError::Io { path: path.clone(), source };
        // Not truncated on open: the holder's pid must survive a second daemon's attempt.
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let holder = match file.read_to_string(&mut text) {
                    Ok(_) => holder_text(&text),
                    Err(_) => String::new(),
                };
                return Err(StateLockError::HeldByAnother { path, holder });
            }
            Err(TryLockError::Error(source)) => return Err(io_error(source)),
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(io_error)?;
        Ok(StateDirLock { path, _file: file })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The proof that this process is its node's only live incarnation.
    pub fn sole_incarnation(&self) -> SoleIncarnation {
        SoleIncarnation(())
    }
}

/// " (pid N)" when the file names a pid, nothing otherwise (the file is only informative).
fn holder_text(text: &str) -> String {
    match text.trim().parse::<u32>() {
        Ok(pid) => format!(" (pid {pid})"),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_state_dir_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().expect("temp dir");
        let held = StateDirLock::acquire(dir.path()).expect("the first lock");
        let refused = StateDirLock::acquire(dir.path()).expect_err("a second lock on the same dir");
        let message = refused.to_string();
        assert!(matches!(refused, StateLockError::HeldByAnother { .. }), "{message}");
        assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
        drop(held);
        StateDirLock::acquire(dir.path()).expect("the lock is free once its holder is gone");
    }

    #[test]
    fn a_missing_state_dir_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("temp dir");
        let error = StateDirLock::acquire(&dir.path().join("absent")).expect_err("no dir");
        assert!(matches!(error, StateLockError::Io { .. }), "{error}");
    }

    #[test]
    fn holder_text_names_only_a_pid() {
        assert_eq!(holder_text("1234\n"), " (pid 1234)");
        assert_eq!(holder_text("garbage"), "");
        assert_eq!(holder_text(""), "");
    }
}
