//! `HealthMonitor`: starts the configured source on threads it owns, applies the hysteresis and
//! publishes the result through [`HealthFlag`]; stopping (or dropping) it joins every thread.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;
use runtime::Thread;

use super::chunk::start_chunk_source;
use super::config::{HealthConfig, ProbeConfig, SourceKind};
use super::echo::EchoResponder;
use super::error::{HealthError, Result};
use super::file::start_file_source;
use super::flag::{HealthFlag, Shared};
use super::link::{interface_of_address, LinkWatcher};
use super::peer_reach::PeerReach;
use super::probe::{start_prober, PeerList, ProberSettings};
use super::state::{HealthSample, HealthState};
use super::stop::StopSignal;

/// The secondary-network health of this node, kept up to date by the configured source.
///
/// # Threads
///
/// Each source runs on threads the monitor owns: `zbs-health-prb` (probe rounds),
/// `zbs-health-link` (netlink link state), `zbs-health-echo` (answers the peers' probes),
/// `zbs-health-file` or `zbs-health-chk`. All sockets are opened on the thread that calls
/// [`HealthMonitor::start`], so a caller inside a network namespace gets a monitor in it.
///
/// # Shutdown
///
/// [`HealthMonitor::stop`] (or drop) raises one stop signal that wakes every thread at once,
/// then joins, in order: the round thread (no sample is recorded after it returns), the link
/// watcher, the echo responder (the peers see this node stop answering only after it stopped
/// judging them). The flag keeps the last state.
pub struct HealthMonitor {
    shared: Arc<Shared>,
    source: Option<SourceKind>,
    peers: PeerList,
    /// Whom the probe source reaches (empty with any other source).
    reach: PeerReach,
    own_probe_addr: Option<SocketAddr>,
    stop: StopSignal,
    rounds: Option<Thread<()>>,
    link: Option<LinkWatcher>,
    echo: Option<EchoResponder>,
}

impl HealthMonitor {
    /// Validates `config` and starts its source. `data_ip` is this node's data-network
    /// address: the probe source answers and probes from it and, unless
    /// `health.probe.interface` names one, follows the link of the interface that carries it.
    /// The file and chunk sources do not use it.
    ///
    /// The state starts [`HealthState::Unknown`] (see the [module documentation](super)).
    pub fn start(config: &HealthConfig, data_ip: IpAddr) -> Result<HealthMonitor> {
        config.validate()?;
        let mut monitor = HealthMonitor::without_source(config.fall, config.rise)?;
        monitor.source = Some(config.source);
        match config.source {
            SourceKind::Probe => monitor.start_probe(&config.probe, data_ip, config.realtime_priority)?,
            SourceKind::File => {
                let thread = start_file_source(monitor.shared.clone(), &config.file, monitor.stop.clone())?;
                monitor.rounds = Some(thread);
            }
            SourceKind::Chunk => {
                let thread = start_chunk_source(monitor.shared.clone(), &config.chunk, monitor.stop.clone())?;
                monitor.rounds = Some(thread);
            }
        }
        tracing::info!(source = ?config.source, fall = config.fall, rise = config.rise, "health monitor started");
        Ok(monitor)
    }

    /// A monitor without a source: samples come only from [`HealthMonitor::record`]. For tests
    /// of code that reacts to health, and for embedding another check.
    pub fn without_source(fall: u32, rise: u32) -> Result<HealthMonitor> {
        Ok(HealthMonitor {
            shared: Shared::new(fall, rise),
            source: None,
            peers: Arc::new(Mutex::new(None)),
            reach: PeerReach::default(),
            own_probe_addr: None,
            stop: StopSignal::new().map_err(HealthError::io("create the health monitor's stop event"))?,
            rounds: None,
            link: None,
            echo: None,
        })
    }

    fn start_probe(&mut self, config: &ProbeConfig, data_ip: IpAddr, realtime_priority: u8) -> Result<()> {
        // The link first, so that a link already down is known before the first round.
        if config.track_interface {
            let interface = match &config.interface {
                Some(interface) => interface.clone(),
                None => interface_of_address(data_ip)?,
            };
            let shared = self.shared.clone();
            let watcher = LinkWatcher::start(&interface, move |down| {
                shared.set_link_down(down);
            })?;
            tracing::info!(%interface, "following the data interface's link state");
            self.link = Some(watcher);
        }
        let own_probe_addr = SocketAddr::new(data_ip, config.port);
        self.own_probe_addr = Some(own_probe_addr);
        if config.respond {
            self.echo = Some(EchoResponder::start_with_priority(own_probe_addr, realtime_priority)?);
        }
        let settings = ProberSettings {
            bind_ip: data_ip,
            interval: config.interval(),
            timeout: config.timeout(),
            reach: self.reach.clone(),
            realtime_priority,
        };
        let thread = start_prober(self.shared.clone(), self.peers.clone(), settings, self.stop.clone())?;
        self.rounds = Some(thread);
        Ok(())
    }

    /// The reader to hand out (cheap to clone).
    pub fn flag(&self) -> HealthFlag {
        HealthFlag::from_shared(self.shared.clone())
    }

    /// The current state.
    pub fn state(&self) -> HealthState {
        self.flag().state()
    }

    /// The source it runs; `None` for [`HealthMonitor::without_source`].
    pub fn source(&self) -> Option<SourceKind> {
        self.source
    }

    /// Sets the peers' echo addresses (data address and `health.probe.port`), as learned from
    /// the quorum membership; this node's own address is left out, duplicates are dropped. The
    /// next round uses the new list. An empty list makes this a one-node cluster: always valid.
    /// Until the first call the prober records nothing and the state stays unknown.
    pub fn set_peers(&self, mut peers: Vec<SocketAddr>) {
        peers.retain(|peer| Some(*peer) != self.own_probe_addr);
        peers.sort();
        peers.dedup();
        let mut current = self.peers.lock();
        if current.as_ref() != Some(&peers) {
            tracing::info!(?peers, "health probe peers changed");
            *current = Some(peers);
        }
    }

    /// The peers the prober uses now (`None` before the first [`HealthMonitor::set_peers`]).
    pub fn peers(&self) -> Option<Vec<SocketAddr>> {
        self.peers.lock().clone()
    }

    /// Whom the probe source's rounds reach, peer by peer, and since when one is silent (cheap to
    /// clone; always empty with another source).
    pub fn peer_reach(&self) -> PeerReach {
        self.reach.clone()
    }

    /// The address this node's echo responder answers on, if it runs one.
    pub fn echo_addr(&self) -> Option<SocketAddr> {
        self.echo.as_ref().map(EchoResponder::local_addr)
    }

    /// Records one sample as if a source had produced it.
    pub fn record(&self, sample: HealthSample) {
        self.shared.record(sample);
    }

    /// Stops every source thread and joins it (see `# Shutdown`). Idempotent.
    pub fn stop(&mut self) {
        self.stop.stop();
        if let Some(thread) = self.rounds.take() {
            if let Err(error) = thread.join() {
                tracing::error!(%error, "a health source thread failed");
            }
        }
        if let Some(mut link) = self.link.take() {
            link.stop();
        }
        if let Some(mut echo) = self.echo.take() {
            echo.stop();
        }
    }
}

impl Drop for HealthMonitor {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("HealthMonitor").field("source", &self.source).field("state", &self.state()).finish()
    }
}
