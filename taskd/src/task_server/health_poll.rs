//! The loop's decisions: its 1 s health poll (and the early wake-up) that publishes this node's
//! health in the quorum, keeps the probe's peers current and stops the service when a leader's
//! data network, VIP or dispatcher failed; and what the probes read of the loop and the node.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use quorum::Member;

use super::{Inner, StopReason, LOOP_STALE_AFTER};

impl Inner {
    /// The loop's 1 s poll (and the early wake-up): publish our health in the quorum, keep the
    /// probe's peers current, and stop the service when leading with a failed data network.
    pub(super) fn poll_health(&self) {
        self.last_loop_tick_ms.store(crate::run_log::monotonic_ns() / 1_000_000, Ordering::Release);
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let dispatcher_failure = self.dispatcher_failure.lock().take();
        if let Some(reason) = dispatcher_failure {
            tracing::error!(%reason, "the dispatcher cannot run on this leader: handing leadership over");
            self.stop(StopReason::DispatcherFailed(reason));
            return;
        }
        let vip_failure = self.vip_failure.lock().take();
        if let Some(failure) = vip_failure {
            tracing::error!(permanent = failure.permanent, message = %failure.message, "the vip cannot be held: stopping the service");
            self.stop(StopReason::VipFailure(failure));
            return;
        }
        self.publish_health_in_quorum();
        if !self.quorum.is_leader() {
            if self.role.lock().runs_dispatcher() {
                self.stop_dispatcher();
            }
            return;
        }
        // The dispatcher publishes every change of the health at once, bad and good, so the flag
        // is the current verdict.
        if self.published_health.is_healthy() {
            self.warned_no_healthy_peer.store(false, Ordering::Release);
            return;
        }
        let reason = self.health.status().last_reason.unwrap_or_else(|| "the data network is invalid".to_string());
        if self.config.step_down_requires_healthy_peer && !self.another_member_is_healthy() {
            if !self.warned_no_healthy_peer.swap(true, Ordering::AcqRel) {
                tracing::warn!(%reason, "data network invalid, but no other member reports healthy: keeping leadership (whole-outage guard)");
            }
            return;
        }
        tracing::error!(%reason, "leader's data network failed: stopping the service, keeping the process");
        self.stop(StopReason::NetworkFailure(reason));
    }

    /// Publishes this node's health in the quorum when it changed, and keeps the probe's
    /// peers current.
    pub(super) fn publish_health_in_quorum(&self) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let healthy = self.health.is_valid();
        let mut last = self.last_published_health.lock();
        if *last != Some(healthy) {
            *last = Some(healthy);
            self.quorum.set_health(healthy);
        }
        drop(last);
        // The probe's peers follow the membership as ZooKeeper holds it: a follower watches only
        // its predecessor, so its cached list can keep members that left and miss ones that came.
        let members = self.fresh_members.read().unwrap_or_else(|| self.quorum.members());
        self.update_peers(&members);
    }

    /// The whole-outage guard's question, asked of ZooKeeper itself: the members' cached data
    /// can be stale, since a leader watches the membership, not each member's data. When the read
    /// fails nothing proves a healthy peer, so the answer is no (keep leading): a cached flag may
    /// be one the peer has since withdrawn, and stepping down on it could leave no leader.
    fn another_member_is_healthy(&self) -> bool {
        match self.quorum.read_members() {
            Ok(members) => members.iter().any(|member| member.info.id != self.config.node_id && member.info.healthy),
            Err(error) => {
                tracing::warn!(%error, "cannot read the members from ZooKeeper: no healthy peer confirmed");
                false
            }
        }
    }

    /// Sets the probe's peers: the other members' data addresses, and those of members seen
    /// within `probe_peers::PEER_MEMORY` (a member restarting is still probed).
    pub(super) fn update_peers(&self, members: &[Member]) {
        let port = self.config.health.probe.port;
        let members: Vec<SocketAddr> = members
            .iter()
            .filter(|member| member.info.id != self.config.node_id)
            .filter_map(|member| member.info.data_address.as_deref()?.parse::<std::net::IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        let peers = self.probe_peers.lock().peers(&members, std::time::Instant::now());
        self.health_monitor.set_peers(peers);
    }

    /// A closure that asks the loop to look at health and VIP now: only a message to the loop,
    /// which alone decides and stops.
    pub(super) fn loop_waker(self: &Arc<Self>) -> impl Fn() + Send + Sync + 'static {
        let weak = Arc::downgrade(self);
        let loop_context = self.loop_context.clone();
        move || {
            let weak = weak.clone();
            let _ = loop_context.sched(move || {
                if let Some(inner) = weak.upgrade() {
                    inner.poll_health();
                }
            });
        }
    }

    /// True while the loop's 1 s health poll ran within the last `LOOP_STALE_AFTER`.
    pub(super) fn loop_answers(&self) -> bool {
        let last = self.last_loop_tick_ms.load(Ordering::Acquire);
        crate::run_log::monotonic_ns() / 1_000_000 <= last.saturating_add(LOOP_STALE_AFTER.as_millis() as u64)
    }

    /// Why this node is not ready, or None when it is: the service runs, its ZooKeeper session
    /// is connected and its data network valid. Generic reasons: `/readyz` needs no token.
    pub(super) fn not_ready_reason(&self) -> Option<&'static str> {
        if self.stopping.load(Ordering::Acquire) {
            return Some("the service is stopping");
        }
        match self.quorum.session().map(|session| session.state()) {
            Some(quorum::ZkSessionState::SyncConnected) => {}
            _ => return Some("not connected to ZooKeeper"),
        }
        if !self.health.is_valid() {
            return Some("the data network is not valid");
        }
        None
    }
}
