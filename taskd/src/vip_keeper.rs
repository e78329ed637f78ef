//! The leader's VIP duty: every configured VIP (one per service, [`Vips`]) bound at takeover
//! (`ConfigVIP`), kept bound, renewed and announced every `sync_interval_ms` (`SyncVIP`, each on
//! its own timer and gratuitous-ARP schedule), moved when `zbs-task vip set --service` stores a
//! new one, and released on the way out. Runs on the dispatcher's context; the dispatcher starts
//! it and stops it, the server's loop acts on its verdicts.
//!
//! Each VIP has its own retry policy; the policy across them (`policy`) lets a VIP that fails
//! alone (its interface vanished) be reported for its service — in `vip show`, the log and the
//! `vip_errors` metric — and retried while the leader keeps serving the others; only an error of
//! the node as a whole, or every VIP failing, reaches the server's loop as a [`VipFailure`].
//!
//! The VIPs are fenced for the term ([`vip_fence`], set by the server before the dispatcher
//! starts): every add and renewal ends its kernel lifetime by the runner's last confirmed contact
//! on the leading session plus the fence's window, so a frozen leader's VIPs lapse by themselves.

pub mod policy;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use runtime::{ThreadContext, TimerHandle};
use vip::{Retarget, VipRetry, VipServer, VipStoreError};

use crate::runner::lease::RunnerLease;
use policy::{affects_node, leader_verdict, LeaderVerdict, VipStanding};

/// A VIP failure the server's loop must act on: `permanent` stops the service for good (the
/// configuration cannot work), otherwise the leader steps down and may lead again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipFailure {
    pub permanent: bool,
    pub message: String,
}

/// The node's VIPs, one per service, in configuration order. Cheap to clone.
#[derive(Clone, Default)]
pub struct Vips {
    servers: Arc<Vec<Arc<VipServer>>>,
}

impl Vips {
    /// The set of `servers` (one per service, checked at configuration load).
    pub fn new(servers: Vec<Arc<VipServer>>) -> Vips {
        Vips { servers: Arc::new(servers) }
    }

    /// No VIP is configured.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Every VIP, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<VipServer>> {
        self.servers.iter()
    }

    /// The VIP of `service`.
    pub fn get(&self, service: &str) -> Option<Arc<VipServer>> {
        self.servers.iter().find(|server| server.service() == service).cloned()
    }

    /// Sets the term's fence on every VIP.
    pub fn set_fence(&self, hold_until: vip::HoldUntil) {
        for server in self.iter() {
            server.set_fence(Some(hold_until.clone()));
            server.note_error(None);
        }
    }

    /// What a node that starts does: removes every VIP left under a VIP's label (by a run killed
    /// with SIGKILL); logged per service.
    pub fn remove_leftovers(&self) {
        for server in self.iter() {
            match server.remove_leftover() {
                Ok(true) => {
                    tracing::warn!(service = server.service(), vip = %server.vip(), "removed a leftover vip at start")
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(service = server.service(), vip = %server.vip(), %error, "cannot check for a leftover vip")
                }
            }
        }
    }

    /// Releases every VIP (idempotent, each logged); what it did, for the stop stage's log.
    pub fn release_all(&self) -> String {
        if self.is_empty() {
            return "no vip configured".to_string();
        }
        let released: Vec<String> =
            self.iter().map(|server| format!("{}: {}", server.service(), release_vip(server))).collect();
        released.join(", ")
    }
}

/// Starts holding every VIP on `context`: one takeover job and one sync timer per VIP. The
/// timers are the caller's to cancel (then [`Vips::release_all`]).
pub fn start(
    context: &ThreadContext,
    vips: &Vips,
    on_failure: Arc<dyn Fn(VipFailure) + Send + Sync>,
    listen_on_vip: Arc<dyn Fn(std::net::IpAddr) + Send + Sync>,
    metrics: Arc<crate::metrics::Metrics>,
) -> std::io::Result<Vec<TimerHandle>> {
    let standings = Arc::new(Mutex::new(vec![VipStanding::PENDING; vips.servers.len()]));
    let mut timers = Vec::with_capacity(vips.servers.len());
    for (index, server) in vips.iter().enumerate() {
        let reporter = Reporter {
            index,
            server: server.clone(),
            retry: Mutex::new(server.config().retry_policy()),
            standings: standings.clone(),
            on_failure: on_failure.clone(),
            metrics: metrics.clone(),
        };
        timers.push(keep_one(context, server.clone(), Arc::new(reporter), listen_on_vip.clone())?);
    }
    Ok(timers)
}

/// One VIP's results: its retry policy, its standing among the others, what it reports.
struct Reporter {
    index: usize,
    server: Arc<VipServer>,
    retry: Mutex<VipRetry>,
    standings: Arc<Mutex<Vec<VipStanding>>>,
    on_failure: Arc<dyn Fn(VipFailure) + Send + Sync>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Reporter {
    fn report(&self, result: &vip::VipResult<()>) {
        let service = self.server.service();
        if let Err(error) = result {
            self.metrics.vip_error(service, error);
        }
        let verdict = self.retry.lock().record(result);
        self.server.note_error(result.as_ref().err().map(ToString::to_string));
        let standing =
            VipStanding { verdict: Some(verdict), node_wide: result.as_ref().err().is_some_and(affects_node) };
        let (was_given_up, leader) = {
            let mut standings = self.standings.lock();
            let was = standings.get(self.index).is_some_and(VipStanding::given_up);
            if let Some(slot) = standings.get_mut(self.index) {
                *slot = standing;
            }
            (was, leader_verdict(&standings))
        };
        let Err(error) = result else {
            if was_given_up {
                tracing::info!(service, vip = %self.server.vip(), "the vip is held again");
            }
            return;
        };
        let message = format!("vip of service {service}: {error}");
        match leader {
            LeaderVerdict::StopService => (self.on_failure)(VipFailure { permanent: true, message }),
            LeaderVerdict::StepDown => (self.on_failure)(VipFailure { permanent: false, message }),
            LeaderVerdict::Keep if standing.given_up() && !was_given_up => {
                tracing::error!(
                    service,
                    vip = %self.server.vip(),
                    %error,
                    "the vip of this service cannot be held; the leader keeps its other vips and retries this one"
                );
            }
            LeaderVerdict::Keep if standing.given_up() => {
                tracing::debug!(service, %error, "the vip of this service still cannot be held");
            }
            LeaderVerdict::Keep => tracing::warn!(service, %message, "vip operation failed; retrying"),
        }
    }
}

/// Binds one VIP (ConfigVIP) and keeps it (SyncVIP) on the dispatcher's context. Before each,
/// the VIP stored in ZooKeeper for its service (`zbs-task vip set --service`) is read, so a new
/// leader takes the stored VIP and a leader moves to a newly set one within one
/// `sync_interval_ms`. `listen_on_vip` is told the VIP's address before it is added (at takeover
/// and whenever the stored VIP moves it), so that the dispatcher API listens there before
/// clients are sent to it.
fn keep_one(
    context: &ThreadContext,
    vip: Arc<VipServer>,
    reporter: Arc<Reporter>,
    listen_on_vip: Arc<dyn Fn(std::net::IpAddr) + Send + Sync>,
) -> std::io::Result<TimerHandle> {
    let (config_vip, config_reporter, config_listen) = (vip.clone(), reporter.clone(), listen_on_vip.clone());
    context
        .sched(move || {
            // The file's VIP first, so a store that cannot be read delays nothing.
            config_listen(config_vip.vip().ip);
            if let Err(error) = refresh_stored_vip(&config_vip) {
                config_reporter.report(&Err(error));
            }
            config_listen(config_vip.vip().ip);
            let result = config_vip.config_vip().map(|presence| {
                tracing::info!(service = config_vip.service(), vip = %config_vip.vip(), ?presence, "vip bound on takeover");
            });
            config_reporter.report(&result);
        })
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    let interval = vip.config().sync_interval();
    TimerHandle::new(
        context,
        move || {
            let refreshed = refresh_stored_vip(&vip);
            listen_on_vip(vip.vip().ip);
            if let Err(error) = refreshed {
                reporter.report(&Err(error));
                return;
            }
            // `keep_vip`: `sync_vip`, or the takeover again while it has not succeeded.
            let result = vip.keep_vip().map(|report| {
                if report.re_added {
                    tracing::warn!(service = vip.service(), vip = %vip.vip(), "the vip had disappeared; added it back");
                }
            });
            reporter.report(&result);
        },
        interval,
        true,
    )
    .map_err(|error| std::io::Error::other(error.to_string()))
}

/// Serves the stored VIP if it changed. Only a stored VIP that cannot be taken here is an error
/// for the retry policy; an unreadable store (no session, ZooKeeper slow) keeps the current VIP,
/// and an invalid stored VIP is logged once by the server and ignored.
fn refresh_stored_vip(vip: &VipServer) -> vip::VipResult<()> {
    match vip.refresh_stored() {
        Ok(Retarget::Moved) => {
            tracing::info!(service = vip.service(), vip = %vip.vip(), interface = %vip.interface(), "the leader moved to the stored vip");
            Ok(())
        }
        Ok(Retarget::Changed | Retarget::Unchanged) | Err(VipStoreError::Corrupt(_)) => Ok(()),
        Err(VipStoreError::Vip(error)) => Err(error),
        Err(error) => {
            tracing::debug!(service = vip.service(), %error, "cannot read the stored vip; keeping the current one");
            Ok(())
        }
    }
}

/// The VIPs' fence for a term that leads on `session` (see `vip::VipServer::set_fence`): the
/// runner's latest confirmed contact on that very session (a later session's contact proves
/// nothing of this term's election node) plus the fence's window for the session timeout the
/// server granted, or the configured one if shorter. Without a session or a runner the fence
/// never opens: no VIP is held, and the VIP loop's failures make the leader step down.
pub fn vip_fence(
    lease: Option<Arc<RunnerLease>>,
    session: Option<&quorum::ZkSession>,
    configured_session_timeout: Duration,
) -> vip::HoldUntil {
    let (Some(lease), Some(session)) = (lease, session) else {
        tracing::error!("no runner or no session for the vip's fence: the vip cannot be held in this term");
        return Arc::new(|| None);
    };
    let session_id = session.session_id();
    let window = vip::fence_window(configured_session_timeout.min(session.session_timeout()));
    Arc::new(move || lease.contact_of(session_id).map(|contact| contact + window))
}

/// Releases one VIP; idempotent, logged. What it did, in a word.
pub fn release_vip(vip: &VipServer) -> &'static str {
    match vip.clean_vip() {
        Ok(true) => {
            tracing::info!(service = vip.service(), vip = %vip.vip(), "vip released");
            "released"
        }
        Ok(false) => "not held",
        Err(error) => {
            tracing::error!(service = vip.service(), vip = %vip.vip(), %error, "cannot release the vip");
            "release failed"
        }
    }
}

#[cfg(test)]
mod tests;
