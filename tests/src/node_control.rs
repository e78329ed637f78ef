//! What both cluster fixtures ([`crate::cluster`] on loopback, [`crate::netns`] in network
//! namespaces) offer on their nodes, written once: the process controls that go to their
//! [`Daemons`] (signal, kill, wait for the exit, logs, core files, crash lines) and the waits
//! built on a node's status (serving, one leader). A fixture provides its daemons and how it asks
//! a node's status; every other method has its default here.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Result};
use nix::sys::signal::Signal;

use crate::cluster::{glog_time, NodeStatus};
use crate::daemon::Daemons;

/// A cluster fixture's nodes: their processes and their status.
pub trait NodeControl {
    /// The nodes' processes.
    fn daemons(&self) -> &Daemons;

    /// The node's status, or the reason it has none (not listening, bad answer).
    fn status(&self, node: usize) -> Result<NodeStatus>;

    /// How many nodes the cluster has.
    fn n_nodes(&self) -> usize {
        self.daemons().len()
    }

    /// The node's status, or None when it does not answer.
    fn try_status(&self, node: usize) -> Option<NodeStatus> {
        self.status(node).ok()
    }

    /// Every node's status, None where it does not answer.
    fn statuses(&self) -> Vec<Option<NodeStatus>> {
        (0..self.n_nodes()).map(|node| self.try_status(node)).collect()
    }

    /// The one node whose status says leader; None when none or more than one does.
    fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = self
            .statuses()
            .iter()
            .enumerate()
            .filter(|(_, status)| status.as_ref().is_some_and(|status| status.leader))
            .map(|(node, _)| node)
            .collect();
        match leaders.as_slice() {
            [leader] => Some(*leader),
            _ => None,
        }
    }

    /// Waits until exactly one node says leader; returns it.
    fn wait_for_leader(&self, timeout: Duration) -> Result<usize> {
        let mut leader = None;
        self.wait_until(timeout, "one leader", || {
            leader = self.leader();
            leader.is_some()
        })?;
        leader.ok_or_else(|| anyhow!("no leader"))
    }

    /// Waits until the node answers its status and is not stopping.
    fn wait_serving(&self, node: usize, timeout: Duration) -> Result<NodeStatus> {
        let mut last = None;
        self.wait_until(timeout, &format!("{} serving", self.daemons().files(node).node_id), || {
            last = self.try_status(node).filter(NodeStatus::is_serving);
            last.is_some()
        })?;
        last.ok_or_else(|| anyhow!("no status"))
    }

    /// Polls `done` every 10 ms until it says true; an error naming `what` after `timeout`.
    fn wait_until(&self, timeout: Duration, what: &str, done: impl FnMut() -> bool) -> Result<Duration> {
        crate::daemon::wait_until(timeout, what, done)
    }

    /// Sends `signal` to the node's running process.
    fn signal(&self, node: usize, signal: Signal) -> Result<()> {
        self.daemons().signal(node, signal)
    }

    /// Waits for the node's process to exit and returns how it ended (it is not killed on timeout).
    fn wait_exit(&self, node: usize, timeout: Duration) -> Result<ExitStatus> {
        self.daemons().wait_exit(node, timeout)
    }

    /// SIGKILLs the node's process and reaps it; no-op when it is not running.
    fn kill(&self, node: usize) -> Result<()> {
        self.daemons().kill(node)
    }

    /// The pid of the node's running process; None once it has exited.
    fn pid(&self, node: usize) -> Option<u32> {
        self.daemons().pid(node)
    }

    /// True while the node's process runs.
    fn is_running(&self, node: usize) -> bool {
        self.pid(node).is_some()
    }

    /// How many times the node's process was started.
    fn n_starts(&self, node: usize) -> u32 {
        self.daemons().n_starts(node)
    }

    /// The node's log file (glog lines of every run, appended).
    fn log(&self, node: usize) -> String {
        self.daemons().log(node)
    }

    /// What the node's processes wrote to stderr and stdout (every run, appended).
    fn stderr(&self, node: usize) -> String {
        self.daemons().stderr(node)
    }

    /// The wall-clock times of the node's log lines that contain `needle`, from their glog
    /// header (local time, microseconds).
    fn log_times(&self, node: usize, needle: &str) -> Vec<SystemTime> {
        self.log(node).lines().filter(|line| line.contains(needle)).filter_map(glog_time).collect()
    }

    /// Files named `core` or `core.*` in any node's dir or state dir.
    fn core_files(&self) -> Vec<PathBuf> {
        self.daemons().core_files()
    }

    /// Log lines of every node that name a crash or a self-join: the original daemon's failure.
    fn crash_lines(&self) -> Vec<String> {
        self.daemons().crash_lines()
    }

    /// Stops every running node: SIGTERM to all at once, SIGKILL to those still running after `grace`.
    fn stop_all(&self, grace: Duration) {
        self.daemons().stop_all(grace)
    }
}
