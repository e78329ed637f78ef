//! The systems the failover benchmark compares, each a way of keeping the VIP in the same
//! network-namespace cluster: ours at the fixture's settings, ours tuned, ours with early
//! takeover, and keepalived in three configurations. A system is a daemon config (written by
//! the fixture, [`NetnsCluster::rewrite_configs`]) and, for keepalived, its config on every node
//! ([`super::keepalived_conf`]); switching from one to the next stops everything, rewrites the
//! configs and starts again in the same namespaces.

use std::time::Duration;

use ::tests::netns::{NetnsCluster, NetnsClusterBuilder, Signal};
use ::tests::prelude::*;
use anyhow::{Context, Result};
use clap::ValueEnum;

use super::keepalived_conf::{self, NodeAddresses, Profile};
use super::trials::TrialType;

pub const N_NODES: usize = 3;
pub const SESSION_TIMEOUT: Duration = Duration::from_millis(4000);
pub const CLIENT_INTERVAL: Duration = Duration::from_millis(10);
pub const CLIENT_TIMEOUT: Duration = Duration::from_millis(100);
/// How long to wait for a cluster to form, a VIP to move, a node to rejoin.
pub const WAIT: Duration = Duration::from_secs(30);

/// Ours tuned, as `packaging/profiles/tuned.toml`: a probe round every 10 ms, 5 bad rounds to
/// fall (a silent cut detected in 50 ms, tuned keepalived's budget), each round's answers
/// awaited 8 ms.
pub const TUNED_PROBE_INTERVAL: Duration = Duration::from_millis(10);
pub const TUNED_PROBE_TIMEOUT: Duration = Duration::from_millis(8);
pub const TUNED_FALL: u32 = 5;
/// 20 good rounds (200 ms) to rise again: hysteresis against a node that flickers.
pub const TUNED_RISE: u32 = 20;
/// The tuned profile's `[health] realtime_priority`: the prober and the echo responder under
/// `SCHED_FIFO` (this bench runs as root, so it is granted).
pub const TUNED_REALTIME_PRIORITY: u8 = 10;
/// The early-takeover system's `early_takeover_ms`: a host lost on both networks by every other
/// healthy member for this long is taken over without waiting for its session (the take-over
/// comes about 0.45 s after it: README, `early_takeover_ms`), aiming at issue 14's ≤ 1 s.
pub const EARLY_TAKEOVER_MS: u64 = 400;

/// One way of keeping the VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum System {
    /// zbs-taskd at the bench's settings (probe every 100 ms, fall 2, rise 3).
    #[value(name = "taskd")]
    Taskd,
    /// zbs-taskd tuned: probe every 10 ms, fall 5 (50 ms), rise 20, realtime probe threads.
    #[value(name = "taskd_tuned")]
    TaskdTuned,
    /// zbs-taskd with early takeover on, 400 ms.
    #[value(name = "taskd_early_takeover")]
    TaskdEarlyTakeover,
    /// keepalived at its defaults (VRRP advert_int 1, ping check).
    #[value(name = "keepalived")]
    Keepalived,
    /// keepalived tuned, "fastest stable": VRRPv3 advert_int 0.05, weighted BFD 10 ms × 10.
    #[value(name = "keepalived_tuned")]
    KeepalivedTuned,
    /// keepalived tuned, "fastest": as keepalived_tuned with BFD 10 ms × 5.
    #[value(name = "keepalived_fastest")]
    KeepalivedFastest,
}

impl System {
    pub const ALL: [System; 6] = [
        System::Taskd,
        System::TaskdTuned,
        System::TaskdEarlyTakeover,
        System::Keepalived,
        System::KeepalivedTuned,
        System::KeepalivedFastest,
    ];

    /// The system's prefix in `failover.json`.
    pub fn key(self) -> &'static str {
        match self {
            System::Taskd => "taskd",
            System::TaskdTuned => "taskd_tuned",
            System::TaskdEarlyTakeover => "taskd_early_takeover",
            System::Keepalived => "keepalived",
            System::KeepalivedTuned => "keepalived_tuned",
            System::KeepalivedFastest => "keepalived_fastest",
        }
    }

    /// The keepalived profile, None for ours.
    pub fn keepalived_profile(self) -> Option<Profile> {
        match self {
            System::Taskd | System::TaskdTuned | System::TaskdEarlyTakeover => None,
            System::Keepalived => Some(Profile::Defaults),
            System::KeepalivedTuned => Some(Profile::FastestStable),
            System::KeepalivedFastest => Some(Profile::Fastest),
        }
    }

    pub fn is_ours(self) -> bool {
        self.keepalived_profile().is_none()
    }

    /// The trial types run when none are named: every one, for every system (early takeover's
    /// too: whether it may become the default depends on its two-holder samples over the whole
    /// fault matrix).
    pub fn default_trial_types(self) -> Vec<TrialType> {
        TrialType::ALL.to_vec()
    }

    /// The daemons' settings: ours hold the VIP; under keepalived they hold none, answer at
    /// the VIP wherever it is, and must not stop their API for the cuts (fall 1000, no
    /// interface tracking), which only keepalived should react to.
    pub fn daemon_settings(self) -> NetnsClusterBuilder {
        let base = NetnsClusterBuilder::new()
            .nodes(N_NODES)
            .session_timeout(SESSION_TIMEOUT)
            .client_timing(CLIENT_INTERVAL, CLIENT_TIMEOUT);
        match self {
            System::Taskd => base,
            System::TaskdTuned => base
                .probe_timing(TUNED_PROBE_INTERVAL, TUNED_PROBE_TIMEOUT)
                .health_fall_rise(TUNED_FALL, TUNED_RISE)
                .configure(|config| config.health.realtime_priority = TUNED_REALTIME_PRIORITY),
            System::TaskdEarlyTakeover => base.configure(|config| config.early_takeover_ms = Some(EARLY_TAKEOVER_MS)),
            System::Keepalived | System::KeepalivedTuned | System::KeepalivedFastest => {
                base.vip(false).health_fall_rise(1000, 3).track_interface(false)
            }
        }
    }

    /// One line for the report's notes.
    pub fn describe(self) -> String {
        match self.keepalived_profile() {
            Some(profile) => format!("{}: keepalived, {}", self.key(), profile.describe()),
            None => {
                let settings = self.daemon_settings();
                let config = &settings.options().config;
                let health = &config.health;
                format!(
                    "{}: zbs-taskd, probe every {} ms (timeout {} ms), fall {}, rise {}, realtime priority {}, session timeout {} ms, early takeover {}",
                    self.key(),
                    health.probe.interval_ms,
                    health.probe.timeout_ms,
                    health.fall,
                    health.rise,
                    health.realtime_priority,
                    config.session_timeout_ms.unwrap_or_default(),
                    config.early_takeover_ms.map_or("off".to_string(), |ms| format!("{ms} ms")),
                )
            }
        }
    }
}

/// The node's keepalived config for `profile`.
pub fn keepalived_config(cluster: &NetnsCluster, node: usize, profile: Profile) -> Result<String> {
    let script = cluster.write_keepalived_check_script(node)?;
    let spec = cluster.node(node);
    let peers = (0..cluster.n_nodes())
        .filter(|&peer| peer != node)
        .map(|peer| (peer, cluster.node(peer).data_address))
        .collect();
    let vip = format!("{}/{}", ::tests::netns::VIP, ::tests::netns::VIP_PREFIX);
    keepalived_conf::config(
        profile,
        &NodeAddresses {
            index: node,
            node_id: &spec.node_id,
            data_address: spec.data_address,
            peers,
            check_script: &script,
            management_interface: ::tests::netns::MANAGEMENT_INTERFACE,
            data_interface: ::tests::netns::DATA_INTERFACE,
            vip: &vip,
        },
    )
}

/// Starts keepalived with the system's profile on one node (a crashed or stopped one).
pub fn start_keepalived_on(cluster: &NetnsCluster, node: usize, profile: Profile) -> Result<()> {
    let config = keepalived_config(cluster, node, profile)?;
    cluster.start_keepalived_with(node, &config, profile.bfd_multiplier().is_some()).map(drop)
}

/// Stops whatever keeps the VIP now and starts `system` in the same namespaces: keepalived
/// stopped everywhere, every daemon stopped, leftover VIPs removed, the daemons' configs
/// rewritten and the daemons started again, then keepalived started when the system is one of
/// its profiles. Returns once the cluster has formed and one node holds the VIP.
pub fn switch_to(cluster: &NetnsCluster, system: System) -> Result<()> {
    eprintln!("failover bench: switching the cluster to {}", system.key());
    for node in 0..cluster.n_nodes() {
        cluster.stop_keepalived(node, Signal::SIGTERM)?;
    }
    cluster.stop_all(Duration::from_secs(10));
    for node in 0..cluster.n_nodes() {
        cluster.remove_vip_from(node)?;
    }
    let settings = system.daemon_settings();
    cluster.rewrite_configs(&settings)?;
    for node in 0..cluster.n_nodes() {
        cluster.restart(node)?;
    }
    start_keeper(cluster, system)
}

/// Waits for the daemons to form and, for keepalived, starts it everywhere; then waits for one
/// VIP holder.
pub fn start_keeper(cluster: &NetnsCluster, system: System) -> Result<()> {
    cluster
        .wait_formed_holding_vip(WAIT, system.is_ours())
        .with_context(|| format!("form the cluster as {}", system.key()))?;
    if let Some(profile) = system.keepalived_profile() {
        for node in 0..cluster.n_nodes() {
            start_keepalived_on(cluster, node, profile)?;
        }
    }
    cluster.wait_for_vip_holder(None, WAIT).with_context(|| format!("one VIP holder under {}", system.key()))?;
    Ok(())
}
