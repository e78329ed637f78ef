//! The election driver: one coroutine on the cluster's loop that owns the ZooKeeper session, the
//! member's election node and its role, and turns everything that happens into [`Event`]s.
//!
//! Election: every member creates an ephemeral-sequential node `member-<sequence>` under the
//! service path; the lowest sequence leads. A follower watches only its predecessor (no herd
//! effect); the leader watches the service path's children, to learn of joins and leaves. With
//! priorities, a first member that sees a member of strictly higher priority yields: it stops
//! acting as leader, then moves its node to the tail in one multi-op, so the next member in line
//! evaluates (and yields too, or leads). Nobody leads before the one ahead of it has stepped down.
//!
//! No zombie leader: on `Disconnected` the leader steps down `step_down_after_disconnect` (at
//! most a third of the session timeout) after its last confirmed contact with ZooKeeper (a
//! leader pings every third of that), before the server can expire its session and let another
//! member lead; a leader frozen past that (SIGSTOP, a stalled VM) steps down the moment it learns
//! of the disconnection. On reconnection within the session it checks that its node is still its
//! own (`ephemeralOwner`) and re-evaluates. `Expired` is final: a new session is built and the
//! member rejoins at the tail, as a follower.
//!
//! A restarted member (`QuorumConfig::remove_stale_own_nodes`, given only by a daemon that holds
//! the proof that its earlier incarnations are dead) deletes the election nodes of its own id and
//! another session before it creates its own, so a crashed leader's node does not keep leading
//! until its session expires.
//!
//! Everything (session messages, watch firings, requests from other threads) reaches the driver
//! through one mailbox; helper coroutines that wait on the session state or on a watch only post
//! to it. The driver cancels each helper it replaces by dropping the helper's cancel sender.
//!
//! # Shutdown
//! `leave` runs on the driver, once, in this order, each stage logged with its duration:
//! 1. step down (`RoleChanged { leader: false }`) if leading;
//! 2. delete the election node, so the successor's ZooKeeper watch fires at once (the hand-over);
//! 3. `QuorumHandler::on_stop`: the daemon stops its own components while the session still works;
//! 4. close the ZooKeeper session (drop every client clone, wait for `Closed`);
//! 5. `Stopped`, the last event; the stop signal is raised;
//! 6. unloop the cluster's loop (helpers still parked are unwound by the loop).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::future::{select, Either};
use futures::StreamExt;
use runtime::ContextHandle;

use crate::config::QuorumConfig;
use crate::error::ZkError;
use crate::event::Event;
use crate::member::{read_member_nodes, sorted_member_nodes, Member, MemberInfo, MEMBER_NODE_PREFIX};
use crate::shared::{ClusterShared, Input};
use crate::zk::{NodeKind, NodeWatch, ZkOp, ZkOpResult, ZkSession, ZkSessionState};

mod session;

/// What a daemon built on a quorum member supplies: its reaction to events, run on the loop.
///
/// Handlers run on the election driver: while one runs, the election waits, so a handler must not
/// park for long (a fraction of the session timeout at most). Closures `FnMut(Event)` are handlers.
pub trait QuorumHandler: Send + 'static {
    /// One event; see [`Event`].
    fn on_event(&mut self, event: Event);

    /// Called once when the member leaves, after it has stepped down and given up its election
    /// node, before the ZooKeeper session is closed: stop the daemon's components here.
    fn on_stop(&mut self) {}
}

impl<F: FnMut(Event) + Send + 'static> QuorumHandler for F {
    fn on_event(&mut self, event: Event) {
        self(event)
    }
}

/// The member's own election node.
#[derive(Debug, Clone)]
struct OwnNode {
    path: String,
    sequence: i64,
}

pub(crate) struct Election {
    config: QuorumConfig,
    member_info: MemberInfo,
    shared: Arc<ClusterShared>,
    mailbox: mpsc::UnboundedReceiver<Input>,
    context: ContextHandle,
    handler: Box<dyn QuorumHandler>,
    session: Option<Arc<ZkSession>>,
    /// Counts sessions, so messages of an old session's watcher are recognised and ignored.
    session_epoch: u64,
    /// Dropping it ends the current session's state-watcher coroutine.
    session_watcher_cancel: Option<oneshot::Sender<()>>,
    connected: bool,
    disconnected_at: Option<Instant>,
    /// The send time of the latest request ZooKeeper answered on this session (a leader pings
    /// every `step_down_after / 3`): on a disconnection the step-down clock starts here, not at
    /// the event, so a leader that was frozen (SIGSTOP, a stalled VM) past its lease steps down
    /// the moment it learns of the disconnection instead of `step_down_after` later.
    last_contact: Option<Instant>,
    /// When a connected leader pings next.
    ping_at: Option<Instant>,
    step_down_after: Duration,
    service_path_ready: bool,
    own_node: Option<OwnNode>,
    leader: bool,
    watch_generation: u64,
    /// Dropping it ends the current watch coroutine.
    watch_cancel: Option<oneshot::Sender<()>>,
    needs_evaluation: bool,
    needs_owner_check: bool,
    needs_data_update: bool,
    /// No election step or connect before this instant (back-off after a failure).
    retry_at: Option<Instant>,
    leaving: bool,
    members: Vec<Member>,
}

impl Election {
    pub(crate) fn new(
        config: QuorumConfig,
        shared: Arc<ClusterShared>,
        mailbox: mpsc::UnboundedReceiver<Input>,
        context: ContextHandle,
        handler: Box<dyn QuorumHandler>,
    ) -> Election {
        Election {
            member_info: config.member.clone(),
            step_down_after: config.step_down_after_disconnect,
            config,
            shared,
            mailbox,
            context,
            handler,
            session: None,
            session_epoch: 0,
            session_watcher_cancel: None,
            connected: false,
            disconnected_at: None,
            last_contact: None,
            ping_at: None,
            service_path_ready: false,
            own_node: None,
            leader: false,
            watch_generation: 0,
            watch_cancel: None,
            needs_evaluation: true,
            needs_owner_check: false,
            needs_data_update: false,
            retry_at: None,
            leaving: false,
            members: Vec::new(),
        }
    }

    /// The driver's loop: runs until asked to leave, then leaves.
    pub(crate) fn run(mut self) {
        tracing::info!(
            member = %self.member_info.id,
            service_path = %self.config.service_path,
            "joining the quorum"
        );
        self.take_pending_inputs();
        while !self.leaving {
            let retry_due = self.retry_at.is_none_or(|retry_at| retry_at <= Instant::now());
            let has_work = self.session.is_none() || (self.needs_evaluation && self.is_connected_now());
            match (has_work, retry_due) {
                (true, true) if self.session.is_none() => self.establish_session(),
                (true, true) => self.evaluate(),
                _ if self.ping_due().is_some_and(|due| due <= Instant::now()) => self.ping(),
                // Work waits for its back-off; anything else waits for an input (a step-down, a ping).
                (true, false) => self.wait_for_input(self.retry_at),
                (false, _) => self.wait_for_input(None),
            }
            self.take_pending_inputs();
            self.step_down_if_disconnected_too_long();
        }
        self.leave();
    }

    // ----- inputs -------------------------------------------------------------------------------

    /// Parks until an input arrives, `deadline` passes or the step-down deadline passes.
    ///
    /// Scheduling is cooperative: the helper coroutines that feed the mailbox run on this thread,
    /// so the driver must park (or at least yield) here, never spin.
    fn wait_for_input(&mut self, deadline: Option<Instant>) {
        let deadline = [deadline, self.step_down_deadline(), self.ping_due()].into_iter().flatten().min();
        let input = match deadline {
            Some(deadline) => {
                let timeout = deadline.saturating_duration_since(Instant::now());
                if timeout.is_zero() {
                    runtime::yield_now();
                    return;
                }
                match runtime::block_on_timeout(self.mailbox.next(), timeout) {
                    Some(input) => input,
                    None => return,
                }
            }
            None => runtime::block_on(self.mailbox.next()),
        };
        match input {
            Some(input) => self.handle_input(input),
            // Every sender is gone: nobody can ask us to leave any more, so leave now.
            None => self.leaving = true,
        }
    }

    /// Handles every input already waiting, without parking.
    fn take_pending_inputs(&mut self) {
        while let Ok(input) = self.mailbox.try_recv() {
            self.handle_input(input);
        }
    }

    fn handle_input(&mut self, input: Input) {
        match input {
            Input::SessionState { epoch, state } if epoch == self.session_epoch => self.on_session_state(state),
            Input::SessionState { epoch, state } => {
                tracing::debug!(epoch, ?state, "ignoring a state change of an old session")
            }
            Input::WatchFired { generation, event } if generation == self.watch_generation => {
                tracing::debug!(?event, "election watch fired");
                self.needs_evaluation = true;
                self.retry_at = None;
            }
            Input::WatchFired { .. } => {}
            Input::SetHealth(healthy) => {
                if self.member_info.healthy != healthy {
                    self.member_info.healthy = healthy;
                    self.needs_data_update = true;
                    self.needs_evaluation = true;
                }
            }
            Input::Leave => self.leaving = true,
        }
    }

    fn evaluate(&mut self) {
        let Some(session) = self.session.clone() else { return };
        self.needs_evaluation = false;
        let started = Instant::now();
        match self.evaluate_once(&session) {
            Ok(()) => {
                self.last_contact = Some(started);
                self.retry_at = None;
                tracing::debug!(
                    elapsed_us = started.elapsed().as_micros() as u64,
                    leader = self.leader,
                    "election evaluated"
                );
            }
            Err(error) => {
                self.needs_evaluation = true;
                self.retry_at = Some(Instant::now() + self.config.retry_backoff);
                if error.is_connection_loss() || error.is_session_gone() {
                    tracing::info!(%error, "election step interrupted by the session; retrying when it is back");
                } else {
                    tracing::warn!(%error, "election step failed; retrying");
                }
            }
        }
    }

    fn own_prefix(&self) -> String {
        format!("{}/{}", self.config.service_path, MEMBER_NODE_PREFIX)
    }

    fn evaluate_once(&mut self, session: &ZkSession) -> Result<(), ZkError> {
        let service_path = self.config.service_path.clone();
        if !self.service_path_ready {
            session.ensure_path(&service_path)?;
            self.service_path_ready = true;
        }
        if self.needs_owner_check {
            if let Some(own_node) = self.own_node.clone() {
                if !session.is_ephemeral_owner(&own_node.path)? {
                    tracing::warn!(path = %own_node.path, "the election node is gone or not this session's; rejoining");
                    self.step_down("the election node is no longer ours");
                    self.own_node = None;
                }
            }
            self.needs_owner_check = false;
        }
        let own_node = match self.own_node.clone() {
            Some(own_node) => {
                if self.needs_data_update {
                    match session.set_data(&own_node.path, &self.member_info.encode(), None) {
                        Ok(_) => self.needs_data_update = false,
                        // Deleted under a session that never noticed (another member took over a
                        // host it could not reach, and the link came back within the session):
                        // retrying the write would loop forever; a new node carries the data.
                        Err(error) if error.is_no_node() => {
                            tracing::warn!(path = %own_node.path, "the election node was deleted by another member; rejoining");
                            self.step_down("the election node was deleted");
                            self.own_node = None;
                            self.needs_evaluation = true;
                            return Ok(());
                        }
                        Err(error) => return Err(error),
                    }
                }
                own_node
            }
            None => self.create_own_node(session)?,
        };
        let names = session.children(&service_path)?;
        let nodes = sorted_member_nodes(&service_path, &names);
        // Fast path of a hand-over: without priorities, a node with no lower sequence leads
        // without reading anybody's data (a lower node could only be skipped, never ahead).
        let first_by_name = nodes.first().is_some_and(|(sequence, _)| *sequence == own_node.sequence);
        if first_by_name && !self.config.use_priority {
            self.become_leader(own_node.sequence);
        }
        let members = self.read_members(session, nodes)?;
        if !members.iter().any(|member| member.sequence == own_node.sequence) {
            tracing::warn!(path = %own_node.path, "the election node has disappeared; rejoining");
            self.step_down("the election node has disappeared");
            self.own_node = None;
            self.needs_evaluation = true;
            self.publish_members(members);
            return Ok(());
        }
        let predecessor = members.iter().rfind(|member| member.sequence < own_node.sequence).cloned();
        match predecessor {
            None => {
                let higher_priority = self.config.use_priority
                    && members.iter().any(|member| member.info.priority > self.member_info.priority);
                if higher_priority {
                    self.yield_to_higher_priority(session, &own_node)?;
                    self.publish_members(members);
                    return Ok(());
                }
                // Lead, then watch the children to learn of joins (priority) and leaves.
                self.become_leader(own_node.sequence);
                let (names_now, watch) = session.children_and_watch(&service_path)?;
                self.arm_watch(watch);
                if sorted_names(&names_now) != sorted_names(&names) {
                    self.needs_evaluation = true;
                }
            }
            Some(predecessor) => {
                self.step_down("a member with a lower sequence exists");
                let predecessor_path = format!("{service_path}/{}", predecessor.node_name);
                let (stat, watch) = session.exists_and_watch(&predecessor_path)?;
                if stat.is_none() {
                    // Gone between the listing and the watch: look again at once.
                    self.needs_evaluation = true;
                } else {
                    tracing::debug!(predecessor = %predecessor_path, "following; watching the predecessor");
                    self.arm_watch(watch);
                }
            }
        }
        self.publish_members(members);
        Ok(())
    }

    fn create_own_node(&mut self, session: &ZkSession) -> Result<OwnNode, ZkError> {
        if self.config.remove_stale_own_nodes {
            self.remove_stale_own_nodes(session)?;
        }
        let started = Instant::now();
        let created = session.create_ephemeral_sequential(&self.own_prefix(), &self.member_info.encode())?;
        let own_node = own_node_from(created.path, created.sequence)?;
        tracing::info!(
            path = %own_node.path,
            sequence = own_node.sequence,
            elapsed_us = started.elapsed().as_micros() as u64,
            "stage done: election node created"
        );
        self.needs_data_update = false;
        self.shared.set_sequence(Some(own_node.sequence));
        self.own_node = Some(own_node.clone());
        Ok(own_node)
    }

    /// Deletes the election nodes of this member's id held by other sessions: a dead earlier
    /// incarnation's (`QuorumConfig::remove_stale_own_nodes`). Any session may delete another's
    /// ephemeral node; the successor's watch fires as if that member had left.
    fn remove_stale_own_nodes(&self, session: &ZkSession) -> Result<(), ZkError> {
        let service_path = &self.config.service_path;
        let names = session.children(service_path)?;
        let members = self.read_members(session, sorted_member_nodes(service_path, &names))?;
        for member in stale_own_members(&members, &self.member_info.id, session.session_id()) {
            let path = format!("{service_path}/{}", member.node_name);
            match session.delete(&path, None) {
                Ok(()) => tracing::warn!(
                    %path,
                    old_session = format_args!("{:#x}", member.session_id),
                    "deleted the election node of this member's previous incarnation"
                ),
                Err(ZkError::NoNode { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Moves the election node to the tail in one multi-op, after stepping down.
    fn yield_to_higher_priority(&mut self, session: &ZkSession, own_node: &OwnNode) -> Result<(), ZkError> {
        self.step_down("a member with a higher priority has joined");
        let results = session.multi(&[
            ZkOp::Delete { path: own_node.path.clone(), expected_version: None },
            ZkOp::Create {
                path: self.own_prefix(),
                data: self.member_info.encode(),
                kind: NodeKind::EphemeralSequential,
            },
        ])?;
        let created_path = results.into_iter().find_map(|result| match result {
            ZkOpResult::Created { path } => Some(path),
            _ => None,
        });
        let Some(created_path) = created_path else {
            return Err(ZkError::Other {
                operation: "yield the election node",
                path: own_node.path.clone(),
                detail: "the multi-op returned no created node".to_string(),
            });
        };
        let sequence = created_path.rsplit('/').next().and_then(crate::member::parse_sequence);
        let new_node = own_node_from(created_path, sequence)?;
        tracing::info!(
            old_sequence = own_node.sequence,
            new_sequence = new_node.sequence,
            "yielded leadership to a member with a higher priority"
        );
        self.shared.set_sequence(Some(new_node.sequence));
        self.own_node = Some(new_node);
        self.needs_evaluation = true;
        Ok(())
    }

    /// The members of `nodes`, sorted by sequence (see `member::read_member_nodes`).
    fn read_members(&self, session: &ZkSession, nodes: Vec<(i64, String)>) -> Result<Vec<Member>, ZkError> {
        read_member_nodes(session, &self.config.service_path, nodes)
    }

    fn publish_members(&mut self, members: Vec<Member>) {
        if members != self.members {
            self.members = members.clone();
            *self.shared.members.lock() = members.clone();
            self.emit(Event::MembersChanged(members));
        }
    }

    fn become_leader(&mut self, sequence: i64) {
        if self.leader {
            return;
        }
        self.leader = true;
        tracing::info!(sequence, member = %self.member_info.id, "became leader");
        self.emit(Event::RoleChanged { leader: true, sequence });
    }

    fn step_down(&mut self, reason: &str) {
        if !self.leader {
            return;
        }
        self.leader = false;
        let sequence = self.own_node.as_ref().map(|node| node.sequence).unwrap_or(-1);
        if self.leaving {
            tracing::info!(sequence, member = %self.member_info.id, reason, "stepped down");
        } else {
            tracing::warn!(sequence, member = %self.member_info.id, reason, "stepped down");
        }
        self.emit(Event::RoleChanged { leader: false, sequence });
    }

    /// Publishes the event's effect on the shared snapshot, then hands it to the handler.
    fn emit(&mut self, event: Event) {
        if let Event::RoleChanged { leader, .. } = &event {
            self.shared.set_leader(*leader);
        }
        let handler = &mut self.handler;
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| handler.on_event(event))) {
            tracing::error!(panic = %runtime::panic_message(&*panic), "the quorum event handler panicked; the member goes on");
        }
    }

    // ----- leaving ------------------------------------------------------------------------------

    /// See the module's `# Shutdown`.
    fn leave(mut self) {
        let leave_started = Instant::now();
        tracing::info!(member = %self.member_info.id, "leaving the quorum");

        let stage = Instant::now();
        self.step_down("leaving the quorum");
        tracing::info!(elapsed_us = stage.elapsed().as_micros() as u64, "stage done: stepped down");

        let stage = Instant::now();
        self.watch_cancel = None;
        let own_node = self.own_node.take();
        if let (Some(session), Some(own_node), true) = (self.session.clone(), own_node, self.is_connected_now()) {
            // Disconnected, the delete would wait for a reconnection; the node then goes with the
            // session (closed below, or expired).
            match session.delete(&own_node.path, None) {
                Ok(()) | Err(ZkError::NoNode { .. }) => {}
                Err(error) => {
                    tracing::warn!(%error, "could not delete the election node; closing the session removes it")
                }
            }
        }
        self.shared.set_sequence(None);
        tracing::info!(elapsed_us = stage.elapsed().as_micros() as u64, "stage done: election node given up");

        let stage = Instant::now();
        let handler = &mut self.handler;
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| handler.on_stop())) {
            tracing::error!(panic = %runtime::panic_message(&*panic), "the quorum stop handler panicked");
        }
        tracing::info!(elapsed_us = stage.elapsed().as_micros() as u64, "stage done: daemon components stopped");

        let stage = Instant::now();
        self.session_watcher_cancel = None;
        *self.shared.session.lock() = None;
        if let Some(session) = self.session.take() {
            if let Err(error) = session.close(self.config.close_timeout) {
                tracing::warn!(%error, "the ZooKeeper session did not report Closed; it ends by expiry");
            }
        }
        tracing::info!(elapsed_us = stage.elapsed().as_micros() as u64, "stage done: session closed");

        self.emit(Event::Stopped);
        self.shared.stopped.done();
        tracing::info!(elapsed_ms = leave_started.elapsed().as_millis() as u64, "left the quorum");
        self.context.stop();
    }
}

fn own_node_from(path: String, sequence: Option<i64>) -> Result<OwnNode, ZkError> {
    match sequence {
        Some(sequence) => Ok(OwnNode { path, sequence }),
        None => {
            Err(ZkError::CorruptData { path, reason: "a sequential create returned no sequence number".to_string() })
        }
    }
}

fn sorted_names(names: &[String]) -> Vec<&str> {
    let mut sorted: Vec<&str> = names.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted
}

/// The members that carry `member_id` under a session other than `own_session`.
pub(crate) fn stale_own_members<'a>(
    members: &'a [Member],
    member_id: &'a str,
    own_session: i64,
) -> impl Iterator<Item = &'a Member> + 'a {
    members.iter().filter(move |member| member.info.id == member_id && member.session_id != own_session)
}

/// Where a leader's step-down clock starts when it learns at `learned_at` that it is
/// disconnected: its last confirmed contact with ZooKeeper, if any (a leader frozen past its
/// lease has then already used it up), never later than when it learned.
pub(crate) fn step_down_clock_start(last_contact: Option<Instant>, learned_at: Instant) -> Instant {
    last_contact.map_or(learned_at, |contact| contact.min(learned_at))
}

#[cfg(test)]
mod stale_tests {
    use super::stale_own_members;
    use crate::member::{Member, MemberInfo};

    fn member(sequence: i64, id: &str, session_id: i64) -> Member {
        Member { sequence, node_name: format!("member-{sequence:010}"), session_id, info: MemberInfo::new(id, "a:1") }
    }

    /// Only this id's nodes of other sessions are a dead incarnation's; its own session's node
    /// and every other member's stay.
    #[test]
    fn only_this_ids_nodes_of_other_sessions_are_stale() {
        let members =
            [member(1, "node-1", 10), member(2, "node-2", 11), member(3, "node-1", 12), member(4, "node-1", 13)];
        let stale: Vec<i64> = stale_own_members(&members, "node-1", 13).map(|member| member.sequence).collect();
        assert_eq!(stale, vec![1, 3]);
        assert_eq!(stale_own_members(&members, "node-3", 13).count(), 0);
    }
}

#[cfg(test)]
mod clock_tests {
    use std::time::{Duration, Instant};

    use super::step_down_clock_start;

    /// A leader woken from a freeze learns of its disconnection long after its last contact: its
    /// step-down is due at once, not a whole `step_down_after` later.
    #[test]
    fn a_woken_leader_counts_from_its_last_contact() {
        let step_down_after = Duration::from_secs(2);
        let last_contact = Instant::now();
        let woken = last_contact + Duration::from_secs(9);
        assert!(step_down_clock_start(Some(last_contact), woken) + step_down_after <= woken);
        // A leader that was never frozen keeps its grace from the event (contact just before it).
        let learned = last_contact + Duration::from_millis(100);
        assert_eq!(step_down_clock_start(Some(last_contact), learned), last_contact);
        assert_eq!(step_down_clock_start(None, learned), learned);
    }
}
