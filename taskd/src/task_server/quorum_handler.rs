//! `Handler`: the server's reaction to quorum events on the loop — a role change starts or stops
//! the dispatcher, a membership change updates the probe's peers, a lost session steps down —
//! and the stop stages the quorum runs on the loop once it has left (4 to 6).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use quorum::{Event, QuorumHandler};

use super::stop_stage::{log_done, timed, StopStage};
use super::Inner;
use crate::metrics::TransitionReason;

/// The server's reaction to quorum events, on the loop.
pub(super) struct Handler {
    pub(super) inner: Arc<Inner>,
}

impl QuorumHandler for Handler {
    fn on_event(&mut self, event: Event) {
        match event {
            Event::RoleChanged { leader: true, sequence } => {
                tracing::info!(sequence, "became leader");
                let elected_at = Instant::now();
                if !self.inner.counted_leader.swap(true, Ordering::AcqRel) {
                    self.inner.metrics.transition(TransitionReason::Elected);
                    self.inner.record_event("elected", TransitionReason::Elected.label());
                }
                self.inner.notifier.status(&format!("leader (member {sequence})"));
                if self.inner.health.is_invalid() {
                    // Elected by sequence alone: decide before any leader component starts, so
                    // an unhealthy node hands over without ever running the dispatcher.
                    self.inner.published_health.publish(false);
                    self.inner.poll_health();
                    if self.inner.stopping.load(Ordering::Acquire) {
                        return;
                    }
                }
                self.inner.start_dispatcher();
                let scheduler = self.inner.role.lock().scheduler();
                if let Some(handle) = scheduler {
                    self.inner.time_takeover(elected_at, handle);
                }
            }
            Event::RoleChanged { leader: false, sequence } => {
                tracing::info!(sequence, "acting as follower");
                // Connected, it gave way to a member of higher priority; otherwise it stepped
                // down for a lost connection.
                let connected = self
                    .inner
                    .quorum
                    .session()
                    .is_some_and(|session| session.state() == quorum::ZkSessionState::SyncConnected);
                self.inner.count_step_down(if connected {
                    TransitionReason::Priority
                } else {
                    TransitionReason::ZookeeperLost
                });
                self.inner.notifier.status("follower");
                self.inner.stop_dispatcher();
            }
            Event::MembersChanged(members) => {
                tracing::info!(n_members = members.len(), "members changed");
                self.inner.update_peers(&members);
            }
            Event::SessionLost => {
                tracing::warn!("ZooKeeper session lost; rejoining as a follower");
                self.inner.metrics.zookeeper_session_expirations.inc();
                self.inner.count_step_down(TransitionReason::SessionExpired);
                self.inner.stop_dispatcher();
            }
            Event::Stopped => {
                log_done(StopStage::CloseSession, self.stop_started(), "");
            }
        }
    }

    fn on_stop(&mut self) {
        log_done(StopStage::LeaveQuorum, self.stop_started(), "");
        if self.inner.led_at_stop.load(Ordering::Acquire) {
            self.inner.metrics.stepdown_seconds.observe(self.stop_started().elapsed().as_secs_f64());
        }
        timed(StopStage::DrainRequests, || {
            for server in &self.inner.rpc_servers {
                server.stop_accepting_and_join_outstanding_requests();
            }
            String::new()
        });
        timed(StopStage::StopDispatcher, || {
            self.inner.stop_dispatcher();
            String::new()
        });
        timed(StopStage::StopRunner, || {
            let runner = self.inner.runner.lock().take();
            let n_interrupted = runner.map(|runner| runner.stop()).unwrap_or(0);
            format!("{n_interrupted} running tasks interrupted")
        });
    }
}

impl Handler {
    fn stop_started(&self) -> Instant {
        self.inner.stop_started.lock().unwrap_or_else(Instant::now)
    }
}
