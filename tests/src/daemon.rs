//! The `zbs-taskd` processes of a test cluster, whichever way they are started: spawned with
//! their output appended to a file, a core-size limit that lets a crash leave a core file, and
//! SIGKILL when the test process dies; then signalled, reaped, killed, and their logs, stderr,
//! core files and crash lines read back. Used by [`crate::cluster`] (processes on loopback) and
//! [`crate::netns`] (processes in network namespaces, started through `ip netns exec`, which
//! execs the daemon so the child's pid is the daemon's).

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How often the `wait_*` helpers look again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Log markers of a crash or of the original daemon's self-join.
const CRASH_MARKERS: [&str; 4] = ["Resource deadlock", "SelfJoin", "panicked", "RUST_BACKTRACE"];

/// Where one daemon keeps its files.
#[derive(Clone, Debug)]
pub struct DaemonFiles {
    pub node_id: String,
    /// Its working dir (a core file lands here).
    pub dir: PathBuf,
    pub state_dir: PathBuf,
    /// Its log file (every run, appended).
    pub log_path: PathBuf,
    /// Its stderr and stdout (every run, appended).
    pub stderr_path: PathBuf,
}

/// N daemons, by index; each may be started again after it exited.
pub struct Daemons {
    daemons: Vec<Daemon>,
    /// Names the fixture in messages ("cluster fixture", "netns fixture").
    fixture: &'static str,
    /// The daemons may outlive this process (a cluster kept up after the command that started
    /// it): no SIGKILL when it dies, and a process group of their own.
    outlive: bool,
}

struct Daemon {
    files: DaemonFiles,
    process: Mutex<DaemonProcess>,
}

#[derive(Default)]
struct DaemonProcess {
    child: Option<Child>,
    /// How the last process ended, once reaped.
    exit_status: Option<ExitStatus>,
    n_starts: u32,
}

impl DaemonProcess {
    /// Reaps the child if it has exited; the pid of a running one.
    fn reap(&mut self) -> Option<u32> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.exit_status = Some(status);
                self.child = None;
                None
            }
            _ => Some(child.id()),
        }
    }
}

impl Daemons {
    /// Daemons with these files; none runs yet.
    pub fn new(fixture: &'static str, files: Vec<DaemonFiles>) -> Daemons {
        Daemons {
            daemons: files.into_iter().map(|files| Daemon { files, process: Mutex::default() }).collect(),
            fixture,
            outlive: false,
        }
    }

    /// Lets the daemons started from now on outlive this process (see [`Daemons::detach`]).
    pub fn outliving_this_process(mut self) -> Daemons {
        self.outlive = true;
        self
    }

    pub fn len(&self) -> usize {
        self.daemons.len()
    }

    pub fn is_empty(&self) -> bool {
        self.daemons.is_empty()
    }

    /// The daemon's files.
    pub fn files(&self, node: usize) -> &DaemonFiles {
        &self.daemons[node].files
    }

    fn process(&self, node: usize) -> MutexGuard<'_, DaemonProcess> {
        self.daemons[node].process.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts `command` as the daemon (which must not be running) in its dir, stderr and stdout
    /// appended to its `stderr_path`, without the systemd and log variables of the test's own
    /// environment, with its core-size limit raised and SIGKILL when this process dies.
    pub fn spawn(&self, node: usize, mut command: Command) -> Result<u32> {
        let files = &self.daemons[node].files;
        let mut process = self.process(node);
        if let Some(pid) = process.reap() {
            bail!("{} is still running (pid {pid})", files.node_id);
        }
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&files.stderr_path)
            .with_context(|| format!("open {}", files.stderr_path.display()))?;
        let stdout = stderr.try_clone().context("duplicate the stderr file handle")?;
        command
            .current_dir(&files.dir)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if self.outlive {
            command.process_group(0);
            allow_core(&mut command);
        } else {
            die_with_parent(&mut command, true);
        }
        let child = command.spawn().with_context(|| format!("start {} ({command:?})", files.node_id))?;
        let pid = child.id();
        process.child = Some(child);
        process.exit_status = None;
        process.n_starts += 1;
        Ok(pid)
    }

    /// Sends `signal` to the daemon's running process.
    pub fn signal(&self, node: usize, signal: Signal) -> Result<()> {
        let pid = self.pid(node).ok_or_else(|| anyhow!("{} has no running process", self.files(node).node_id))?;
        kill(Pid::from_raw(pid as i32), signal).with_context(|| format!("send {signal} to pid {pid}"))
    }

    /// Waits for the daemon's process to exit and returns how it ended (not killed on timeout).
    pub fn wait_exit(&self, node: usize, timeout: Duration) -> Result<ExitStatus> {
        let started = Instant::now();
        loop {
            {
                let mut process = self.process(node);
                if process.reap().is_none() {
                    return process
                        .exit_status
                        .ok_or_else(|| anyhow!("{} was never started", self.files(node).node_id));
                }
            }
            if started.elapsed() >= timeout {
                bail!("{} did not exit within {timeout:?}", self.files(node).node_id);
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// SIGKILLs the daemon's process and reaps it; no-op when it is not running.
    pub fn kill(&self, node: usize) -> Result<()> {
        let mut process = self.process(node);
        if process.reap().is_some() {
            if let Some(child) = process.child.as_mut() {
                child.kill().context("kill a node")?;
                let status = child.wait().context("reap a killed node")?;
                process.exit_status = Some(status);
                process.child = None;
            }
        }
        Ok(())
    }

    /// The pid of the daemon's running process; None once it has exited.
    pub fn pid(&self, node: usize) -> Option<u32> {
        self.process(node).reap()
    }

    /// How many times the daemon was started.
    pub fn n_starts(&self, node: usize) -> u32 {
        self.process(node).n_starts
    }

    /// The daemon's log file.
    pub fn log(&self, node: usize) -> String {
        read_lossy(&self.files(node).log_path)
    }

    /// What the daemon's processes wrote to stderr and stdout.
    pub fn stderr(&self, node: usize) -> String {
        read_lossy(&self.files(node).stderr_path)
    }

    /// Files named `core` or `core.*` in any daemon's dir or state dir.
    pub fn core_files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for daemon in &self.daemons {
            for dir in [&daemon.files.dir, &daemon.files.state_dir] {
                let Ok(entries) = fs::read_dir(dir) else { continue };
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().to_string();
                    if name == "core" || name.starts_with("core.") {
                        found.push(entry.path());
                    }
                }
            }
        }
        found
    }

    /// Log and stderr lines of every daemon that name a crash or a self-join.
    pub fn crash_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for node in 0..self.daemons.len() {
            for (what, text) in [("log", self.log(node)), ("stderr", self.stderr(node))] {
                for line in text.lines().filter(|line| CRASH_MARKERS.iter().any(|marker| line.contains(marker))) {
                    lines.push(format!("{} {what}: {line}", self.files(node).node_id));
                }
            }
        }
        lines
    }

    /// Stops every running daemon: SIGTERM to all at once, SIGKILL to those still running after
    /// `grace`.
    pub fn stop_all(&self, grace: Duration) {
        for node in 0..self.daemons.len() {
            let _ = self.signal(node, Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        for node in 0..self.daemons.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.wait_exit(node, left).is_err() {
                eprintln!("{}: {} did not stop within {grace:?}; killing it", self.fixture, self.files(node).node_id);
                let _ = self.kill(node);
            }
        }
    }

    /// Leaves the running daemons running when this is dropped: their `Child` handles are
    /// forgotten (they stay children of this process until it exits, and then init's). For a
    /// cluster kept up after the command that started it returns; the caller records the pids.
    pub fn detach(&self) -> Vec<Option<u32>> {
        (0..self.daemons.len())
            .map(|node| {
                let mut process = self.process(node);
                let pid = process.reap();
                process.child.take();
                pid
            })
            .collect()
    }
}

/// Polls `done` every [`POLL_INTERVAL`] until it says true; an error naming `what` after
/// `timeout`. Returns how long it took.
pub fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) -> Result<Duration> {
    let started = Instant::now();
    loop {
        if done() {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Makes the child get SIGKILL when this process dies, and (`core`) lets it write a core file.
pub fn die_with_parent(command: &mut Command, core: bool) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and only calls getrlimit(2), setrlimit(2),
    // prctl(2) and getppid(2), which are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if core {
                let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                if libc::getrlimit(libc::RLIMIT_CORE, &mut limit) == 0 {
                    limit.rlim_cur = limit.rlim_max;
                    libc::setrlimit(libc::RLIMIT_CORE, &limit);
                }
            }
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("the process that started the cluster exited"));
            }
            Ok(())
        });
    }
}

/// Raises the child's core-size limit to its hard limit, so that a crash leaves a core file.
fn allow_core(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls getrlimit(2) and
    // setrlimit(2), which are async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            if libc::getrlimit(libc::RLIMIT_CORE, &mut limit) == 0 {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_CORE, &limit);
            }
            Ok(())
        });
    }
}

/// The file's text, invalid UTF-8 replaced; empty when it cannot be read.
pub fn read_lossy(path: &Path) -> String {
    fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default()
}
