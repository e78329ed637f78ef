//! The node's role slot and its transitions: the dispatcher (with its scheduler and the runner
//! watch) started when this node is elected and stopped when it steps down, the take-over timed,
//! and each step-down counted and recorded in the leadership history once.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Inner;
use crate::crash_watch::runners::RunnerWatch;
use crate::dispatcher::{SchedulerHandle, SchedulerSetup, TaskDispatcher, VipFailure};
use crate::metrics::TransitionReason;

/// How long a take-over is watched for its dispatcher to be ready (it gives up much sooner:
/// `OPEN_GIVE_UP`).
const TAKEOVER_WATCH_LIMIT: Duration = Duration::from_secs(600);

/// What this node runs beyond its runner, in one slot: a follower nothing, a leader its
/// dispatcher and — once its scheduling started — the handle requests reach it through.
pub(super) enum Role {
    Follower,
    Leader {
        dispatcher: TaskDispatcher,
        scheduler: Option<SchedulerHandle>,
        /// The watch over the other nodes' runners (`crash_watch::runners`): a dead runner's tasks
        /// are rescheduled at once. Asked to stop before the dispatcher, joined after it.
        runner_watch: Option<RunnerWatch>,
    },
}

impl Role {
    /// The running dispatcher's scheduler, for requests.
    pub(super) fn scheduler(&self) -> Option<SchedulerHandle> {
        match self {
            Role::Leader { scheduler, .. } => scheduler.clone(),
            Role::Follower => None,
        }
    }

    pub(super) fn runs_dispatcher(&self) -> bool {
        matches!(self, Role::Leader { .. })
    }
}

impl Inner {
    pub(super) fn start_dispatcher(self: &Arc<Self>) {
        // Started and stopped only on the loop, so the slot is not held while the dispatcher
        // starts: requests meanwhile find no scheduler (503, "starting"), never a held lock.
        if self.role.lock().runs_dispatcher() || self.stopping.load(Ordering::Acquire) {
            return;
        }
        let wake = self.loop_waker();
        let wake_for_vip = self.loop_waker();
        let weak = Arc::downgrade(self);
        let on_vip_failure = move |failure: VipFailure| {
            if let Some(inner) = weak.upgrade() {
                *inner.vip_failure.lock() = Some(failure);
            }
            wake_for_vip();
        };
        let dispatcher_server = Arc::downgrade(&self.rpc_servers[0]);
        let dispatcher_port = self.config.dispatcher_port;
        let listen_on_vip = move |ip: std::net::IpAddr| {
            let Some(server) = dispatcher_server.upgrade() else { return };
            if let Err(error) = server.listen_also(SocketAddr::new(ip, dispatcher_port), true) {
                tracing::error!(vip = %ip, %error, "the dispatcher API cannot listen on the vip");
            }
        };
        let report_unusable = self.dispatcher_failure_reporter();
        if !self.vips.is_empty() {
            // This term's fence, before the dispatcher binds the VIPs.
            let lease = self.runner.lock().as_ref().map(|runner| runner.lease());
            let session = self.quorum.session();
            self.vips.set_fence(crate::vip_keeper::vip_fence(lease, session.as_deref(), self.config.session_timeout));
        }
        let failure = match TaskDispatcher::start(
            self.health.clone(),
            self.published_health.clone(),
            wake,
            self.vips.clone(),
            on_vip_failure,
            listen_on_vip,
            self.metrics.clone(),
        ) {
            Ok(mut started) => {
                let setup = SchedulerSetup::from_daemon(
                    &self.config,
                    self.quorum.clone(),
                    self.runner_client.clone(),
                    Arc::new(report_unusable),
                    Some(self.metrics.task_transition_counter()),
                );
                let scheduling = started.start_scheduling(setup);
                let (scheduler, failure) = match scheduling {
                    Ok(handle) => (Some(handle), None),
                    Err(error) => (None, Some(format!("cannot start task scheduling: {error}"))),
                };
                let runner_watch = match RunnerWatch::start(self.quorum.clone(), self.config.node_id.clone()) {
                    Ok(watch) => Some(watch),
                    Err(error) => {
                        tracing::error!(%error, "cannot start the runner watch; a dead runner's tasks wait for its session");
                        None
                    }
                };
                *self.role.lock() = Role::Leader { dispatcher: started, scheduler, runner_watch };
                failure
            }
            Err(error) => Some(format!("cannot start the dispatcher: {error}")),
        };
        if let Some(reason) = failure {
            *self.dispatcher_failure.lock() = Some(reason);
            // On the loop already: decide now rather than at the next poll.
            self.poll_health();
        }
    }

    /// What the scheduler's worker calls when its database cannot be opened: it only records
    /// the reason and wakes the loop, which stops the service (`StopReason::DispatcherFailed`).
    fn dispatcher_failure_reporter(self: &Arc<Self>) -> impl Fn(String) + Send + Sync + 'static {
        let weak = Arc::downgrade(self);
        let wake = self.loop_waker();
        move |reason| {
            if let Some(inner) = weak.upgrade() {
                *inner.dispatcher_failure.lock() = Some(reason);
            }
            wake();
        }
    }

    /// Observes the take-over's second half once the new dispatcher is ready: a coroutine on
    /// the loop looks every 5 ms, and ends when it is ready, when the dispatcher stopped (this
    /// node no longer leads), when the server stops, or after `TAKEOVER_WATCH_LIMIT`.
    pub(super) fn time_takeover(self: &Arc<Self>, elected_at: Instant, handle: SchedulerHandle) {
        let weak = Arc::downgrade(self);
        let _ = self.loop_context.sched(move || loop {
            let Some(inner) = weak.upgrade() else { return };
            if inner.stopping.load(Ordering::Acquire)
                || inner.role.lock().scheduler().is_none()
                || elected_at.elapsed() > TAKEOVER_WATCH_LIMIT
            {
                return;
            }
            if handle.is_ready() {
                inner.metrics.takeover_seconds.observe(elected_at.elapsed().as_secs_f64());
                return;
            }
            drop(inner);
            runtime::sleep(Duration::from_millis(5));
        });
    }

    pub(super) fn stop_dispatcher(&self) {
        let role = std::mem::replace(&mut *self.role.lock(), Role::Follower);
        if let Role::Leader { dispatcher, runner_watch, .. } = role {
            // The watch is stopped without waiting for its threads: one may be waiting on
            // ZooKeeper (a lost connection, the very reason for many step-downs) or in a connect,
            // and the dispatcher's stop releases the VIP, which must not wait for that.
            if let Some(watch) = runner_watch {
                watch.stop_without_waiting();
            }
            dispatcher.stop();
        }
    }

    /// Counts this node's step-down once, with the first reason seen (see `counted_leader`),
    /// and records it in the leadership history.
    pub(super) fn count_step_down(&self, reason: TransitionReason) {
        if self.counted_leader.swap(false, Ordering::AcqRel) {
            self.metrics.transition(reason);
            self.record_event("stepped_down", reason.label());
        }
    }

    /// Appends a leadership event on a coroutine of the loop (a few ZooKeeper round trips that
    /// the event's handler need not wait for); one that cannot be written is logged.
    pub(super) fn record_event(&self, event: &str, reason: &str) {
        let event = crate::leader_events::LeaderEvent::new(&self.config.node_id, event, reason);
        let quorum = self.quorum.clone();
        let scheduled = self.loop_context.sched(move || {
            let Some(session) = quorum.session() else {
                return tracing::warn!(?event, "no ZooKeeper session: the leadership event is not recorded");
            };
            if let Err(error) = crate::leader_events::append(&session, &event) {
                tracing::warn!(?event, %error, "cannot record the leadership event");
            }
        });
        if let Err(error) = scheduled {
            tracing::warn!(%error, "cannot schedule the leadership event's write");
        }
    }

    pub(super) fn role_name(&self) -> &'static str {
        if self.quorum.is_leader() {
            "leader"
        } else {
            "follower"
        }
    }
}
