//! The crash detector: a crashed leader's process is replaced at once, not a session timeout
//! later. The member next in line holds one TCP connection to the leader's dispatcher port (its
//! management address). When the leader's process dies, its live host's kernel closes that
//! connection at once (EOF or reset) and refuses every new one (RST): the watcher looks again at
//! once, and after [`REFUSALS_NEEDED`] refusals in a row it takes the leader's election node over
//! (`quorum::takeover`: deleted unless the leader announced leaving), so the election's watch
//! makes it leader; then it deletes the owner nodes and the runner registration of the dead
//! session, so the dead leader's own tasks are `Interrupted` and handed out again at once.
//! The rules are pure (`verdict.rs`); the IO is here, on one thread the `TaskServer` owns.
//!
//! # Safety
//! A refusal comes from the host's kernel when nobody listens on the port. A member's dispatcher
//! port listens from before its election node exists (the RPC servers are bound in `initialize`,
//! the election is joined in `start`) until after it has announced leaving (stage 1 of the
//! server's stop announces, then stops listening; a member that cannot announce keeps listening
//! until stage 8, when its dispatcher, runner and VIP are stopped and its node is given up). So
//! while the node exists and no leaving marker does, refusals mean the process is dead — the
//! kernel closed its sockets because every thread of it is gone, so it does no more IO. The
//! take-over is one multi-op with the creation of the leaving marker: a member that announced
//! (and may be alive) is never taken over, whichever came first.
//!
//! It must not fire, and does not, for: a member whose service is stopping or restarting after a
//! network failure (it announced before closing; or it keeps listening); a member still starting
//! (its port listens before its node exists); a loaded host whose accept backlog is full (SYNs are
//! dropped, not refused: no answer proves nothing); a host that is down or cut off (no answer
//! either: that case stays bounded by the session timeout); a server that closed the held
//! connection itself (an end is only a reason to look again). It cannot tell a firewall that
//! *rejects* the management port between members (with a TCP reset) from a dead process: such a
//! rule is a misconfiguration of the cluster's management network.

mod port_probe;
pub mod runners;
pub mod verdict;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorum::takeover::{take_over, TakeOver};
use quorum::{Member, QuorumHandle};

use self::port_probe::look;
use self::verdict::{judge, watch_target, Probe, Verdict};
use crate::task_db;
use crate::watch_thread::WatchThread;

/// Refusals in a row that prove the watched process dead (two: one stray reset is not enough).
pub const REFUSALS_NEEDED: usize = 2;

/// The detector's thread name (at most 15 bytes).
const THREAD_NAME: &str = "zbs-crash-watch";

/// How often a member that watches nobody looks at the membership again.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// How old the membership the watcher picks its target from may be. It is read from ZooKeeper,
/// not taken from the election's view: a follower re-reads the members only when its
/// predecessor changes, so after a hand-over the member now next in line would not know it.
const MEMBERS_TTL: Duration = Duration::from_millis(250);

/// The pause after a probe that had no answer (the host may be down: nothing to prove fast).
pub(crate) const NO_ANSWER_PAUSE: Duration = Duration::from_millis(100);

/// The crash detector's thread; stopped and joined on drop.
pub struct CrashWatch {
    thread: WatchThread,
}

impl CrashWatch {
    /// Starts watching the leader whenever this member is next in line.
    pub fn start(quorum: QuorumHandle) -> std::io::Result<CrashWatch> {
        let thread = WatchThread::spawn(THREAD_NAME, "the crash detector", move |stop| {
            Watcher { quorum, stop, members: Default::default() }.run()
        })?;
        Ok(CrashWatch { thread })
    }

    /// Asks the watcher to stop, without waiting (from the server's loop too).
    pub fn request_stop(&self) {
        self.thread.request_stop();
    }
}

struct Watcher {
    quorum: QuorumHandle,
    stop: Arc<AtomicBool>,
    /// The members as last read from ZooKeeper, and when.
    members: std::cell::RefCell<(Vec<Member>, Option<Instant>)>,
}

impl Watcher {
    fn run(self) {
        let mut probes: Vec<Probe> = Vec::new();
        let mut watched: Option<String> = None;
        // Nodes already taken over or found announced: never probed again.
        let mut settled: Vec<String> = Vec::new();
        let mut suspect_since: Option<Instant> = None;
        while !self.stopped() {
            let Some(target) = self.target().filter(|target| !settled.contains(&target.node_name)) else {
                probes.clear();
                watched = None;
                std::thread::sleep(IDLE_POLL);
                continue;
            };
            if watched.as_deref() != Some(target.node_name.as_str()) {
                tracing::debug!(leader = %target.info.id, address = %target.info.address, "watching the leader's port");
                probes.clear();
                suspect_since = None;
                watched = Some(target.node_name.clone());
            }
            let Ok(address) = target.info.address.parse::<SocketAddr>() else {
                tracing::warn!(address = %target.info.address, "the leader's address is not ip:port; cannot watch it");
                settled.push(target.node_name.clone());
                continue;
            };
            let probe =
                look(address, || !self.stopped() && self.target().is_some_and(|now| now.node_name == target.node_name));
            probes.push(probe);
            if probes.len() > 16 {
                probes.drain(..8);
            }
            match judge(&probes, REFUSALS_NEEDED) {
                Verdict::Refused => {
                    self.take_over(&target, suspect_since.unwrap_or_else(Instant::now));
                    settled.push(target.node_name.clone());
                    self.forget_members();
                    probes.clear();
                }
                Verdict::Suspect => {
                    suspect_since.get_or_insert_with(Instant::now);
                }
                Verdict::Alive => suspect_since = None,
                Verdict::Unknown => std::thread::sleep(NO_ANSWER_PAUSE),
            }
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// The member to watch, from a membership at most `MEMBERS_TTL` old (the election's own view
    /// when ZooKeeper cannot be read).
    fn target(&self) -> Option<Member> {
        let mut members = self.members.borrow_mut();
        if members.1.is_none_or(|read_at| read_at.elapsed() >= MEMBERS_TTL) {
            let fresh = self.quorum.read_members().unwrap_or_else(|_| self.quorum.members());
            *members = (fresh, Some(Instant::now()));
        }
        watch_target(&members.0, self.quorum.sequence()).cloned()
    }

    /// Makes the next `target` read the membership again (after a take-over).
    fn forget_members(&self) {
        self.members.borrow_mut().1 = None;
    }

    /// Takes the dead leader's election node over, then removes its session's owner nodes and
    /// runner registration.
    fn take_over(&self, target: &Member, suspect_since: Instant) {
        let Some(session) = self.quorum.session() else { return };
        match take_over(&session, self.quorum.service_path(), &target.node_name) {
            Ok(TakeOver::Deleted) => {
                tracing::warn!(
                    leader = %target.info.id,
                    address = %target.info.address,
                    dead_session = format_args!("{:#x}", target.session_id),
                    detected_ms = suspect_since.elapsed().as_millis() as u64,
                    "the leader's process is dead (its port refused twice): took its election node over"
                );
            }
            Ok(TakeOver::Announced) => {
                tracing::info!(leader = %target.info.id, "the leader's port refused, but it announced leaving: not a crash");
                return;
            }
            Ok(TakeOver::Gone) => return,
            Err(error) => {
                tracing::warn!(%error, leader = %target.info.id, "cannot take the dead leader's election node over");
                return;
            }
        }
        remove_dead_session(&session, &target.info.id, target.session_id);
    }
}

/// After a take-over of a member's election node: deletes the owner nodes and the runner
/// registration of its dead session, so its tasks are `Interrupted` and handed out at once
/// (what fails is logged: it goes with the session later).
pub(crate) fn remove_dead_session(session: &quorum::ZkSession, node_id: &str, dead_session: i64) {
    match task_db::remove_owners_of_session(session, dead_session) {
        Ok(n_removed) => {
            tracing::info!(
                node = node_id,
                n_removed,
                "removed the dead session's owner nodes: its tasks are rescheduled now"
            )
        }
        Err(error) => {
            tracing::warn!(%error, node = node_id, "cannot remove the dead session's owner nodes; they go with its session")
        }
    }
    if let Err(error) = task_db::remove_registration_of_session(session, node_id, dead_session) {
        tracing::warn!(%error, node = node_id, "cannot remove the dead session's runner registration; it goes with its session");
    }
}

#[cfg(test)]
mod tests;
