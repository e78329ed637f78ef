//! The gauges that mirror a server's live state, set right before each scrape's encoding: the
//! role, the ZooKeeper session, the health, the open connections, the leader's task and runner
//! counts (copied from its scheduler's counters) and the VIPs held and their frames sent.

use std::sync::atomic::Ordering;

use super::Inner;
use crate::dispatcher::SchedulerHandle;
use crate::metrics::{zk_state_label, Metrics, ZK_STATES};

impl Inner {
    /// Sets the gauges that mirror this server's live state, right before an encoding.
    pub(super) fn refresh_metrics(&self) {
        let metrics = &self.metrics;
        let leader = self.quorum.is_leader() && !self.stopping.load(Ordering::Acquire);
        metrics.is_leader.set(i64::from(leader));
        let zk_state = self.quorum.session().map(|session| zk_state_label(session.state()));
        Metrics::set_state(&metrics.zookeeper_session_state, ZK_STATES, zk_state);
        metrics.refresh_health(&self.health);
        for server in &self.rpc_servers {
            metrics
                .rpc_open_connections
                .get_or_create(&crate::metrics::ServerLabels { server: server.name().to_string() })
                .set(server.n_connections() as i64);
        }
        self.refresh_leader_gauges(leader);
        self.count_vip_frames();
        for vip in self.vips.iter() {
            metrics.set_vip_held(vip.service(), &vip.vip().to_string(), vip.is_active());
        }
    }

    /// The leader's task and runner gauges, copied from counters its scheduler keeps (nothing is
    /// listed: a scrape every 100 ms costs the dispatcher nothing); a follower exports none.
    fn refresh_leader_gauges(&self, leader: bool) {
        let scheduler = self.role.lock().scheduler().filter(|_| leader);
        let tasks = scheduler.as_ref().and_then(SchedulerHandle::task_counts);
        let runners = scheduler.as_ref().and_then(SchedulerHandle::runner_counts);
        self.metrics.set_leader_gauges(tasks.as_ref(), runners);
    }

    /// Adds the frames this server's VIPs sent since the last look to the process's counter
    /// (each server has its own `VipServer`s; the counter outlives them).
    pub(super) fn count_vip_frames(&self) {
        if self.vips.is_empty() {
            return;
        }
        let n_sent: u64 = self.vips.iter().map(|vip| vip.n_frames_sent()).sum();
        let previous = self.vip_frames_counted.swap(n_sent, Ordering::AcqRel);
        self.metrics.vip_garps_sent.inc_by(n_sent.saturating_sub(previous));
    }
}
