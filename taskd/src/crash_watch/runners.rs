//! The leader's watch over its runners: the crash detector's proof applied to every other node's
//! runner, so a SIGKILLed runner's tasks are rescheduled at once, not a session timeout later.
//!
//! While this node leads, one thread ([`RunnerWatch`], owned by the leader's `Role`; stopped
//! without waiting when it steps down, its threads joined by a short-lived thread of their own so
//! the hand-over never waits for a connect or a ZooKeeper call of theirs) reads the
//! runner registrations and the members every [`REFRESH`] and keeps one watcher thread per
//! runner to watch (`verdict::runners_to_watch`: every runner but this node's whose session also
//! holds an election node). A watcher holds a TCP connection to the runner's port (its management
//! address, from the registration) like the crash detector holds the leader's: an end is a reason
//! to look again at once, and [`REFUSALS_NEEDED`] refusals in a row prove that nobody listens.
//! Then the leader takes the runner's election node over (`quorum::takeover`: one multi-op with
//! the creation of the leaving marker, so a runner that announced leaving is never taken over)
//! and deletes the owner nodes and the registration of its session: its tasks are `Interrupted`
//! and handed out again at once.
//!
//! # Safety
//! The proof is the crash detector's (`crash_watch`'s `# Safety`): a node's runner port is one of
//! the server's two RPC ports, which listen from before its runner registers (the registration
//! needs the session, the listeners come first) until after stage 1 of its stop has announced
//! leaving through its election node — or, when it cannot announce, until stage 8, after its
//! runner stopped and unregistered. A graceful stop (SIGTERM) therefore never looks like a crash:
//! its runner drains its tasks itself (each records `Interrupted`) and unregisters. A
//! registration whose session holds no election node is never watched, since such a member could
//! not announce. Not watched either: this node's own runner (it lives as long as the leader).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorum::takeover::{take_over, TakeOver};
use quorum::QuorumHandle;

use super::port_probe::look;
use super::verdict::{judge, runners_to_watch, Probe, RunnerTarget, Verdict};
use super::{remove_dead_session, NO_ANSWER_PAUSE, REFUSALS_NEEDED};
use crate::task_db;
use crate::watch_thread::WatchThread;

/// How often the registrations and members are read again.
pub const REFRESH: Duration = Duration::from_millis(250);

/// The manager's thread name, and each watcher's (at most 15 bytes).
const MANAGER_THREAD_NAME: &str = "zbs-runner-mgr";
const WATCHER_THREAD_NAME: &str = "zbs-runner-wat";
const REAPER_THREAD_NAME: &str = "zbs-runner-end";

/// The leader's watch over its runners; stopped and joined on drop, or left to end on its own
/// ([`RunnerWatch::stop_without_waiting`]).
pub struct RunnerWatch {
    thread: WatchThread,
}

impl RunnerWatch {
    /// Starts watching every other runner (see the module documentation). `own_node_id` is
    /// this node's, whose runner is not watched.
    pub fn start(quorum: QuorumHandle, own_node_id: String) -> std::io::Result<RunnerWatch> {
        let thread = WatchThread::spawn(MANAGER_THREAD_NAME, "the runner watch", move |stop| {
            Manager { quorum, own_node_id, stop, watchers: HashMap::new(), settled: HashSet::new() }.run()
        })?;
        Ok(RunnerWatch { thread })
    }

    /// Asks the watch to stop and leaves its threads to end on their own, joined by a short-lived
    /// thread of their own: a step-down must not wait for them. The manager sleeps up to
    /// [`REFRESH`] between reads and a watcher may be in a connect (up to half a second) or a
    /// ZooKeeper call; joining them before the election node is given up delayed every hand-over
    /// by up to that long (bench failover: SIGTERM 192 ms instead of 14). A stopped watch acts on
    /// nothing new, and a take-over already under way is safe whoever leads: it needs the proof.
    pub fn stop_without_waiting(self) {
        self.thread.stop_without_waiting(REAPER_THREAD_NAME);
    }
}

/// A runner registration by node id and session: a restarted runner is another one.
type RunnerKey = (String, i64);

struct Manager {
    quorum: QuorumHandle,
    own_node_id: String,
    stop: Arc<AtomicBool>,
    watchers: HashMap<RunnerKey, WatchThread>,
    /// Runners whose watcher ended (taken over, or found announced): never watched again.
    settled: HashSet<RunnerKey>,
}

impl Manager {
    fn run(mut self) {
        while !self.stop.load(Ordering::Acquire) {
            let started = Instant::now();
            if let Some(targets) = self.targets() {
                self.follow(targets);
            }
            std::thread::sleep(REFRESH.saturating_sub(started.elapsed()));
        }
        for (_, mut watcher) in self.watchers.drain() {
            watcher.stop();
        }
    }

    /// The runners to watch now; `None` when ZooKeeper cannot be read (the watchers stay).
    fn targets(&self) -> Option<Vec<RunnerTarget>> {
        let session = self.quorum.session()?;
        let runners = match task_db::list_runners(&session) {
            Ok(list) => list.runners,
            Err(error) => {
                tracing::debug!(%error, "runner watch: cannot list the runners");
                return None;
            }
        };
        let members = match self.quorum.read_members() {
            Ok(members) => members,
            Err(error) => {
                tracing::debug!(%error, "runner watch: cannot read the members");
                return None;
            }
        };
        let registrations: Vec<(String, String, i64)> =
            runners.into_iter().map(|runner| (runner.info.node_id, runner.info.address, runner.session_id)).collect();
        Some(runners_to_watch(&registrations, &members, &self.own_node_id))
    }

    /// Starts a watcher for each new target, stops those whose runner is gone or changed.
    fn follow(&mut self, targets: Vec<RunnerTarget>) {
        let wanted: HashSet<RunnerKey> =
            targets.iter().map(|target| (target.node_id.clone(), target.session_id)).collect();
        let gone: Vec<RunnerKey> = self.watchers.keys().filter(|key| !wanted.contains(*key)).cloned().collect();
        for key in gone {
            if let Some(mut watcher) = self.watchers.remove(&key) {
                watcher.stop();
            }
        }
        let finished: Vec<RunnerKey> =
            self.watchers.iter().filter(|(_, watcher)| watcher.is_finished()).map(|(key, _)| key.clone()).collect();
        for key in finished {
            if let Some(mut watcher) = self.watchers.remove(&key) {
                watcher.stop();
            }
            self.settled.insert(key);
        }
        self.settled.retain(|key| wanted.contains(key));
        for target in targets {
            let key = (target.node_id.clone(), target.session_id);
            if self.watchers.contains_key(&key) || self.settled.contains(&key) {
                continue;
            }
            let Ok(address) = target.address.parse::<SocketAddr>() else {
                tracing::warn!(runner = %target.node_id, address = %target.address, "the runner's address is not ip:port; cannot watch it");
                self.settled.insert(key);
                continue;
            };
            let (quorum, manager_stop) = (self.quorum.clone(), self.stop.clone());
            let watch = move |stop| WatchOne { quorum, target, address, stop, manager_stop }.run();
            match WatchThread::spawn(WATCHER_THREAD_NAME, "a runner watcher", watch) {
                Ok(watcher) => {
                    self.watchers.insert(key, watcher);
                }
                Err(error) => tracing::warn!(%error, "cannot start a runner watcher"),
            }
        }
    }
}

/// One runner's watcher.
struct WatchOne {
    quorum: QuorumHandle,
    target: RunnerTarget,
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    manager_stop: Arc<AtomicBool>,
}

impl WatchOne {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire) || self.manager_stop.load(Ordering::Acquire)
    }

    fn run(self) {
        tracing::debug!(runner = %self.target.node_id, address = %self.address, "watching the runner's port");
        let mut probes: Vec<Probe> = Vec::new();
        let mut suspect_since: Option<Instant> = None;
        while !self.stopped() {
            probes.push(look(self.address, || !self.stopped()));
            if probes.len() > 16 {
                probes.drain(..8);
            }
            match judge(&probes, REFUSALS_NEEDED) {
                Verdict::Refused => {
                    self.take_over(suspect_since.unwrap_or_else(Instant::now));
                    return;
                }
                Verdict::Suspect => {
                    suspect_since.get_or_insert_with(Instant::now);
                }
                Verdict::Alive => suspect_since = None,
                Verdict::Unknown => std::thread::sleep(NO_ANSWER_PAUSE),
            }
        }
    }

    /// Takes the dead runner's election node over, then removes its session's owner nodes and
    /// registration.
    fn take_over(&self, suspect_since: Instant) {
        let Some(session) = self.quorum.session() else { return };
        let target = &self.target;
        match take_over(&session, self.quorum.service_path(), &target.election_node) {
            Ok(TakeOver::Deleted) => {
                tracing::warn!(
                    runner = %target.node_id,
                    address = %self.address,
                    dead_session = format_args!("{:#x}", target.session_id),
                    detected_ms = suspect_since.elapsed().as_millis() as u64,
                    "a runner's process is dead (its port refused twice): took its node over, its tasks are rescheduled now"
                );
            }
            // Its election node is gone already (it left, or its session ended): nothing to prove
            // by this path; what is left goes with its session.
            Ok(TakeOver::Gone) => return,
            Ok(TakeOver::Announced) => {
                tracing::info!(runner = %target.node_id, "the runner's port refused, but it announced leaving: not a crash");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, runner = %target.node_id, "cannot take the dead runner's election node over");
                return;
            }
        }
        remove_dead_session(&session, &target.node_id, target.session_id);
    }
}
