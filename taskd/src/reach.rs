//! Whom this member cannot reach, published for the others, and the opt-in early take-over of a
//! leader that every healthy member has lost on both networks (`early_takeover_ms`, off by
//! default). Runs only with the option on and the `probe` health source, on one thread the
//! `TaskServer` owns.
//!
//! Each round (every [`ROUND`]) the member looks at the leader on both networks:
//! - **management**: a TCP connect to the leader's dispatcher port (its management address);
//!   [`MANAGEMENT_FALL`] failures in a row (no answer within [`CONNECT_TIMEOUT`], or a refusal)
//!   make it lost, since the start of the first one;
//! - **data**: the health probe's own per-peer view (`vip::health::PeerReach`): silent since the
//!   first echo round it missed.
//!
//! and publishes `/zbs/taskd/unreachable/<node id>` (`report.rs`: the leader on either network,
//! every other peer the data probe cannot reach, and since when), written only when it changes.
//! The member next in line, once its own report says the leader is lost on both networks, reads
//! every report and asks the rule (`early_takeover.rs`): when every healthy member but the leader
//! has said so without a break for `early_takeover_ms` (timed on the reader's clock, so clock
//! skew between hosts does not shorten it), it takes the leader's election node over through
//! `quorum::takeover` — the leaving marker of a stopping leader still wins. Unlike the crash
//! detector it leaves the lost session's owner nodes and runner registration alone: the lost
//! leader may be alive, and its runner may write until its lease lapses (F after its last
//! contact), so its tasks are handed out again only when the session expires (S after that
//! contact, the timer rule's order). The early take-over moves leadership and the VIP, never a
//! task.
//!
//! # Trade-off
//!
//! Unlike a refusal, silence is no proof of death. A host that lost power and a live leader cut
//! off on both networks look the same to its peers; the second keeps its session (if it still
//! reaches ZooKeeper through a path its peers do not share) or keeps running until its session
//! times out. What bounds the second holder of the VIP then:
//! - a leader that still reaches ZooKeeper sees its election node deleted and steps down at once
//!   (the election's watch), releasing the VIP;
//! - a leader that does not reach ZooKeeper steps down after D = S/3 without contact (the timer
//!   rule), and whatever it does, its VIP's kernel lifetime lapses by c + S − 250 ms (the fence,
//!   c its last confirmed contact). Its tasks keep their owner nodes until its session expires,
//!   so none is handed out while its runner may still write (it stops after F, the lease).
//!
//! So with the option on, two nodes may hold the VIP from the take-over (at least
//! `early_takeover_ms` after the cut) until the cut-off leader's step-down (S/3 after its last
//! contact, at most the fence's c + S − 250 ms): about S/3 − `early_takeover_ms` in the usual
//! case. Clients on the cut-off side cannot reach the old holder anyway (it has no link), which is
//! why the option suits hosts whose failure mode is power loss more than a double cut.
//!
//! It must not fire, and does not, for: a leader any healthy member still reaches on either
//! network; a member whose own data network is unhealthy (it is no judge, and cannot take over);
//! a leader that announced leaving; a cluster whose members cannot write their reports (nothing is
//! decided without every judge's report).

pub mod early_takeover;
pub mod report;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorum::takeover::{take_over, TakeOver};
use quorum::{Member, QuorumHandle, ZkError, ZkSession};
use vip::health::PeerReach;

use self::early_takeover::{decide, EarlyTakeover, EarlyTakeoverView};
use self::report::{LostPeer, UnreachableReport, REPORT_VERSION, UNREACHABLE_PATH};
use crate::clock::now_ms;
use crate::watch_thread::WatchThread;

/// The thread's name (at most 15 bytes).
const THREAD_NAME: &str = "zbs-reach";

/// The pause between two rounds.
pub const ROUND: Duration = Duration::from_millis(50);

/// How long a connect to the leader's dispatcher port may take before it counts as no answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(100);

/// Failed connects in a row that make the leader lost on the management network.
pub const MANAGEMENT_FALL: u32 = 2;

/// How old the membership a round works from may be.
const MEMBERS_TTL: Duration = Duration::from_millis(250);

/// What the reach watcher needs from the server.
pub struct ReachSettings {
    pub quorum: QuorumHandle,
    pub node_id: String,
    /// The health probe's per-peer view.
    pub peer_reach: PeerReach,
    /// `health.probe.port`: a peer's echo address is its data address and this port.
    pub probe_port: u16,
    /// `early_takeover_ms`.
    pub wait: Duration,
}

/// The reach watcher's thread; stopped and joined on drop.
pub struct ReachWatch {
    thread: WatchThread,
}

impl ReachWatch {
    /// Starts publishing this member's reach and, when next in line, judging the leader.
    pub fn start(settings: ReachSettings) -> std::io::Result<ReachWatch> {
        let thread =
            WatchThread::spawn(THREAD_NAME, "the reach watcher", move |stop| Watcher::new(settings, stop).run())?;
        Ok(ReachWatch { thread })
    }

    /// Asks the watcher to stop, without waiting.
    pub fn request_stop(&self) {
        self.thread.request_stop();
    }
}

/// The leader's management port as this member last probed it.
#[derive(Default)]
struct ManagementProbe {
    /// The election node probed; a new leader starts over.
    election_node: Option<String>,
    failures_in_a_row: u32,
    /// The start of the first failed connect of the current run.
    first_failure: Option<Instant>,
}

struct Watcher {
    settings: ReachSettings,
    stop: Arc<AtomicBool>,
    members: Vec<Member>,
    members_read_at: Option<Instant>,
    management: ManagementProbe,
    /// The report as last written, and whether this session's node holds it.
    published: Option<(UnreachableReport, i64)>,
    /// For each judge: since when (this clock) its reports have said the leader is lost on both.
    lost_leader_since: HashMap<String, Instant>,
    /// Election nodes already taken over: never again.
    settled: Vec<String>,
}

impl Watcher {
    fn new(settings: ReachSettings, stop: Arc<AtomicBool>) -> Watcher {
        Watcher {
            settings,
            stop,
            members: Vec::new(),
            members_read_at: None,
            management: ManagementProbe::default(),
            published: None,
            lost_leader_since: HashMap::new(),
            settled: Vec::new(),
        }
    }

    fn run(mut self) {
        while !self.stop.load(Ordering::Acquire) {
            self.round();
            std::thread::sleep(ROUND);
        }
    }

    fn round(&mut self) {
        self.refresh_members();
        let own_sequence = self.settings.quorum.sequence();
        let leader = self.members.first().filter(|leader| Some(leader.sequence) != own_sequence).cloned();
        match &leader {
            Some(leader) => self.probe_management(leader),
            None => self.management = ManagementProbe::default(),
        }
        let report = self.report(leader.as_ref());
        let Some(session) = self.settings.quorum.session() else { return };
        self.publish(&session, report.clone());
        let Some(leader) = leader else {
            self.lost_leader_since.clear();
            return;
        };
        if !report.lost_on_both(&leader.node_name) || self.settled.contains(&leader.node_name) {
            self.lost_leader_since.clear();
            return;
        }
        let next_in_line = self.members.get(1).is_some_and(|next| Some(next.sequence) == own_sequence);
        if next_in_line {
            self.judge(&session, &leader, own_sequence);
        }
    }

    fn refresh_members(&mut self) {
        if self.members_read_at.is_none_or(|read_at| read_at.elapsed() >= MEMBERS_TTL) {
            self.members = self.settings.quorum.read_members().unwrap_or_else(|_| self.settings.quorum.members());
            self.members_read_at = Some(Instant::now());
        }
    }

    /// One connect to the leader's dispatcher port.
    fn probe_management(&mut self, leader: &Member) {
        if self.management.election_node.as_deref() != Some(leader.node_name.as_str()) {
            self.management = ManagementProbe { election_node: Some(leader.node_name.clone()), ..Default::default() };
        }
        let Ok(address) = leader.info.address.parse::<SocketAddr>() else {
            // Not ip:port: nothing to probe, so never lost (and never taken over early).
            self.management.failures_in_a_row = 0;
            self.management.first_failure = None;
            return;
        };
        let started = Instant::now();
        match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
            Ok(_) => {
                self.management.failures_in_a_row = 0;
                self.management.first_failure = None;
            }
            Err(error) => {
                if error.kind() != ErrorKind::ConnectionRefused && error.kind() != ErrorKind::TimedOut {
                    tracing::debug!(%error, %address, "the leader's dispatcher port did not answer");
                }
                self.management.failures_in_a_row = self.management.failures_in_a_row.saturating_add(1);
                self.management.first_failure.get_or_insert(started);
            }
        }
    }

    /// This member's report now: the leader on each network, and every other silent data peer.
    fn report(&self, leader: Option<&Member>) -> UnreachableReport {
        let own_id = &self.settings.node_id;
        let echo_address = |member: &Member| -> Option<SocketAddr> {
            let ip = member.info.data_address.as_deref()?.parse::<std::net::IpAddr>().ok()?;
            Some(SocketAddr::new(ip, self.settings.probe_port))
        };
        let wall = |since: Instant| now_ms().saturating_sub(since.elapsed().as_millis() as u64);
        let mut lost = Vec::new();
        for member in self.members.iter().filter(|member| &member.info.id != own_id) {
            let data_since = echo_address(member).and_then(|address| self.settings.peer_reach.silent_since(&address));
            let is_leader = leader.is_some_and(|leader| leader.node_name == member.node_name);
            let management_since = if is_leader && self.management.failures_in_a_row >= MANAGEMENT_FALL {
                self.management.first_failure
            } else {
                None
            };
            if data_since.is_none() && management_since.is_none() {
                continue;
            }
            lost.push(LostPeer {
                node: member.info.id.clone(),
                election_node: is_leader.then(|| member.node_name.clone()),
                management_since_ms: management_since.map(wall),
                data_since_ms: data_since.map(wall),
            });
        }
        UnreachableReport { version: REPORT_VERSION, node: own_id.clone(), lost }
    }

    /// Writes the report when it changed, or when the session changed (a new session's node).
    fn publish(&mut self, session: &ZkSession, report: UnreachableReport) {
        let session_id = session.session_id();
        if self.published.as_ref().is_some_and(|(published, by)| *published == report && *by == session_id) {
            return;
        }
        let path = format!("{UNREACHABLE_PATH}/{}", self.settings.node_id);
        let data = report.encode();
        let written = if self.published.as_ref().is_some_and(|(_, by)| *by == session_id) {
            session.set_data(&path, &data, None).map(|_| ())
        } else {
            create_own_report(session, &path, &data)
        };
        match written {
            Ok(()) => {
                if !report.lost.is_empty() {
                    tracing::info!(lost = ?report.lost, "published whom this member cannot reach");
                }
                self.published = Some((report, session_id));
            }
            Err(error) => {
                tracing::warn!(%error, "cannot publish whom this member cannot reach");
                self.published = None;
            }
        }
    }

    /// Next in line, with the leader lost on both networks here: reads every report and applies
    /// the rule.
    fn judge(&mut self, session: &ZkSession, leader: &Member, own_sequence: Option<i64>) {
        let lost_by = match read_lost_by(session, &leader.node_name) {
            Ok(lost_by) => lost_by,
            Err(error) => {
                tracing::warn!(%error, "cannot read the members' reach reports");
                return;
            }
        };
        let now = Instant::now();
        self.lost_leader_since.retain(|node, _| lost_by.contains(node));
        for node in lost_by {
            self.lost_leader_since.entry(node).or_insert(now);
        }
        let view = EarlyTakeoverView {
            members: &self.members,
            own_sequence,
            lost_leader_since: &self.lost_leader_since,
            now,
            wait: self.settings.wait,
        };
        let EarlyTakeover::TakeOver { node_name, session_id } = decide(&view) else { return };
        self.settled.push(node_name.clone());
        match take_over(session, self.settings.quorum.service_path(), &node_name) {
            Ok(TakeOver::Deleted) => {
                tracing::warn!(
                    leader = %leader.info.id,
                    address = %leader.info.address,
                    lost_session = format_args!("{session_id:#x}"),
                    early_takeover_ms = self.settings.wait.as_millis() as u64,
                    "every healthy member lost the leader on both networks: took its election node over early \
                     (its tasks stay owned until its session expires)"
                );
            }
            Ok(TakeOver::Announced) => {
                tracing::info!(leader = %leader.info.id, "the lost leader announced leaving: not taken over")
            }
            Ok(TakeOver::Gone) => {}
            Err(error) => {
                tracing::warn!(%error, leader = %leader.info.id, "cannot take the lost leader's election node over");
                self.settled.retain(|settled| settled != &node_name);
            }
        }
        self.members_read_at = None;
    }
}

/// Creates this member's report node; one left by an earlier session of this node id (its
/// previous incarnation's, not yet expired) is replaced.
fn create_own_report(session: &ZkSession, path: &str, data: &[u8]) -> Result<(), ZkError> {
    session.ensure_path(UNREACHABLE_PATH)?;
    match session.create_ephemeral(path, data) {
        Ok(_) => Ok(()),
        Err(ZkError::NodeExists { .. }) => {
            match session.delete(path, None) {
                Ok(()) | Err(ZkError::NoNode { .. }) => {}
                Err(error) => return Err(error),
            }
            session.create_ephemeral(path, data).map(|_| ())
        }
        Err(error) => Err(error),
    }
}

/// The node ids whose reports say `election_node` is lost on both networks (undecodable reports
/// are skipped with a warning: no report).
fn read_lost_by(session: &ZkSession, election_node: &str) -> Result<Vec<String>, ZkError> {
    let names = session.children(UNREACHABLE_PATH)?;
    let paths: Vec<String> = names.iter().map(|name| format!("{UNREACHABLE_PATH}/{name}")).collect();
    let mut lost_by = Vec::new();
    for (path, reply) in paths.iter().zip(session.get_data_of_each(&paths)?) {
        let Ok(Some((data, _))) = reply else { continue };
        match UnreachableReport::decode(&data) {
            // A report counts for the node whose name it is stored under, whatever it claims.
            Ok(report) if report.lost_on_both(election_node) => {
                if let Some(name) = path.rsplit('/').next() {
                    lost_by.push(name.to_string());
                }
            }
            Ok(_) => {}
            Err(reason) => tracing::warn!(%path, %reason, "skipping a reach report that does not decode"),
        }
    }
    Ok(lost_by)
}

#[cfg(test)]
mod tests;
