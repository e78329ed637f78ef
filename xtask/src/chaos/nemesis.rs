//! The nemesis: faults drawn from a seeded RNG, one every few seconds and sometimes two at
//! once, each started and healed on the thread that owns the cluster (restarted daemons and
//! ZooKeeper servers die with the thread that started them). Every fault is logged with its
//! start and end; every process it ended is a [`DeathFact`] for the checker; a daemon that
//! exits when no fault ended it is counted and started again.

use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tests::cluster::Signal;
use tests::netns::Network;

use super::checker::DeathFact;
use super::target::Target;
use super::{unix_ms, workload};

/// How long a SIGTERMed daemon may take to exit before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(15);

/// The pause between two faults' starts: drawn in this range (ms); an overlapping second fault
/// comes sooner (`OVERLAP_*`).
const GAP_MS: (u64, u64) = (2000, 5000);
const OVERLAP_PROBABILITY: f64 = 0.3;
const OVERLAP_GAP_MS: (u64, u64) = (300, 1200);

/// What a fault does.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL or SIGTERM of a daemon, restarted after `down_ms`.
    KillDaemon { node: usize, signal: String, down_ms: u64 },
    /// SIGSTOP of the leader for 1.5× the session timeout.
    PauseLeader { node: usize },
    /// SIGSTOP of a runner while it copies `task_id`, for 1.5× the session timeout.
    PauseRunner { node: usize, task_id: String },
    /// The node's health failed for a while.
    HealthFlap { node: usize },
    /// SIGSTOP of a ZooKeeper server.
    PauseZooKeeper { server: usize },
    /// SIGKILL of the ensemble's leader, restarted after `down_ms`.
    KillZooKeeperLeader { server: usize, down_ms: u64 },
    /// A link of a netns node cut.
    CutLink { node: usize, network: String },
}

impl Fault {
    /// The daemon node it holds, if any: two faults never hold one node.
    fn node(&self) -> Option<usize> {
        match self {
            Fault::KillDaemon { node, .. }
            | Fault::PauseLeader { node }
            | Fault::PauseRunner { node, .. }
            | Fault::HealthFlap { node }
            | Fault::CutLink { node, .. } => Some(*node),
            Fault::PauseZooKeeper { .. } | Fault::KillZooKeeperLeader { .. } => None,
        }
    }

    fn is_zookeeper(&self) -> bool {
        matches!(self, Fault::PauseZooKeeper { .. } | Fault::KillZooKeeperLeader { .. })
    }
}

/// One fault as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub id: u64,
    pub fault: Fault,
    pub start_unix_ms: u64,
    pub start_mono_ns: u64,
    pub end_unix_ms: Option<u64>,
    pub end_mono_ns: Option<u64>,
    /// Errors met while injecting or healing it.
    pub errors: Vec<String>,
}

/// Where a started fault is.
enum Phase {
    /// Heal at this instant.
    HealAt(Instant),
    /// A SIGTERMed daemon (this pid) not yet gone; killed at the instant.
    Stopping { pid: u32, kill_at: Instant, down: Duration },
    /// The daemon is gone; restart it at this instant.
    Down(Instant),
}

struct Active {
    index: usize,
    phase: Phase,
}

pub struct Nemesis<'a> {
    target: &'a Target,
    rng: ChaCha8Rng,
    pub records: Vec<FaultRecord>,
    pub deaths: Vec<DeathFact>,
    /// Daemon exits no fault caused (each restarted), with what was seen.
    pub unexpected_exits: Vec<String>,
    active: Vec<Active>,
    next_fault_at: Instant,
}

impl<'a> Nemesis<'a> {
    pub fn new(target: &'a Target, rng: ChaCha8Rng) -> Nemesis<'a> {
        Nemesis {
            target,
            rng,
            records: Vec::new(),
            deaths: Vec::new(),
            unexpected_exits: Vec::new(),
            active: Vec::new(),
            next_fault_at: Instant::now() + Duration::from_secs(3),
        }
    }

    /// Injects and heals faults until `until`, then heals every active fault.
    pub fn run_until(&mut self, until: Instant) {
        while Instant::now() < until {
            self.tick(true);
            std::thread::sleep(Duration::from_millis(50));
        }
        let heal_deadline = Instant::now() + TERM_GRACE + Duration::from_secs(30);
        while !self.active.is_empty() && Instant::now() < heal_deadline {
            for active in &mut self.active {
                if let Phase::HealAt(at) | Phase::Down(at) = &mut active.phase {
                    *at = (*at).min(Instant::now());
                }
            }
            self.tick(false);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn tick(&mut self, inject: bool) {
        let mut still = Vec::new();
        for active in std::mem::take(&mut self.active) {
            if let Some(active) = self.advance(active) {
                still.push(active);
            }
        }
        self.active = still;
        self.watch_exits();
        if inject && Instant::now() >= self.next_fault_at && self.active.len() < 2 {
            self.inject();
            let (low, high) =
                if self.active.len() < 2 && self.rng.gen_bool(OVERLAP_PROBABILITY) { OVERLAP_GAP_MS } else { GAP_MS };
            self.next_fault_at = Instant::now() + Duration::from_millis(self.rng.gen_range(low..high));
        }
    }

    /// Starts a daemon that exited when no fault of ours ended it.
    fn watch_exits(&mut self) {
        for node in 0..self.target.n_nodes() {
            let held = self.active.iter().any(|active| self.records[active.index].fault.node() == Some(node));
            if held || self.target.pid(node).is_some() {
                continue;
            }
            let message =
                format!("node-{} exited with no fault ending it at {} ms (unix); restarted", node + 1, unix_ms());
            eprintln!("chaos: {message}");
            self.unexpected_exits.push(message);
            if let Err(error) = self.target.restart(node) {
                eprintln!("chaos: cannot restart node-{}: {error:#}", node + 1);
            }
        }
    }

    fn pick_fault(&mut self) -> Option<Fault> {
        let n_nodes = self.target.n_nodes();
        let busy_nodes: Vec<usize> =
            self.active.iter().filter_map(|active| self.records[active.index].fault.node()).collect();
        let zookeeper_busy = self.active.iter().any(|active| self.records[active.index].fault.is_zookeeper());
        let free_node = |rng: &mut ChaCha8Rng| {
            let free: Vec<usize> = (0..n_nodes).filter(|node| !busy_nodes.contains(node)).collect();
            (!free.is_empty()).then(|| free[rng.gen_range(0..free.len())])
        };
        let choice = self.rng.gen_range(0..100);
        let fault = match choice {
            0..=14 => free_node(&mut self.rng).map(|node| Fault::KillDaemon {
                node,
                signal: "SIGKILL".to_string(),
                down_ms: self.rng.gen_range(500..4000),
            }),
            15..=29 => free_node(&mut self.rng).map(|node| Fault::KillDaemon {
                node,
                signal: "SIGTERM".to_string(),
                down_ms: self.rng.gen_range(500..4000),
            }),
            30..=44 => {
                self.target.leader().filter(|node| !busy_nodes.contains(node)).map(|node| Fault::PauseLeader { node })
            }
            45..=64 => {
                let copying = workload::running_copies(self.target);
                let candidates: Vec<(usize, String)> = copying
                    .into_iter()
                    .filter_map(|(runner_addr, task_id)| {
                        let node = (0..n_nodes).find(|&node| self.target.runner_addr(node) == runner_addr)?;
                        (!busy_nodes.contains(&node)).then_some((node, task_id))
                    })
                    .collect();
                if candidates.is_empty() {
                    None
                } else {
                    let (node, task_id) = candidates[self.rng.gen_range(0..candidates.len())].clone();
                    Some(Fault::PauseRunner { node, task_id })
                }
            }
            65..=79 => free_node(&mut self.rng).map(|node| Fault::HealthFlap { node }),
            _ if self.target.is_netns() => free_node(&mut self.rng).map(|node| Fault::CutLink {
                node,
                network: if choice < 90 { "management" } else { "data" }.to_string(),
            }),
            80..=89 if !zookeeper_busy => {
                let n_servers = self.target.zookeeper().map_or(0, |zookeeper| zookeeper.n_servers());
                (n_servers > 1).then(|| Fault::PauseZooKeeper { server: self.rng.gen_range(0..n_servers) })
            }
            _ if !zookeeper_busy => self.target.zookeeper().and_then(|zookeeper| {
                let server = zookeeper.leader()?;
                (zookeeper.n_servers() > 1)
                    .then(|| Fault::KillZooKeeperLeader { server, down_ms: self.rng.gen_range(1000..5000) })
            }),
            _ => None,
        };
        // A fault that cannot be had now (no leader, no copy running) becomes a health flap.
        fault.or_else(|| free_node(&mut self.rng).map(|node| Fault::HealthFlap { node }))
    }

    fn inject(&mut self) {
        let Some(fault) = self.pick_fault() else { return };
        let pause = self.target.session_timeout().mul_f64(1.5);
        let index = self.records.len();
        let mut record = FaultRecord {
            id: index as u64 + 1,
            fault: fault.clone(),
            start_unix_ms: unix_ms(),
            start_mono_ns: taskd::run_log::monotonic_ns(),
            end_unix_ms: None,
            end_mono_ns: None,
            errors: Vec::new(),
        };
        let target = self.target;
        let result: anyhow::Result<Phase> = (|| match &fault {
            Fault::KillDaemon { node, signal, down_ms } => {
                let down = Duration::from_millis(*down_ms);
                let pid = target.pid(*node).ok_or_else(|| anyhow::anyhow!("node-{} is not running", node + 1))?;
                if signal == "SIGKILL" {
                    target.kill(*node)?;
                    self.deaths.push(DeathFact { pid, gone_ns: taskd::run_log::monotonic_ns() });
                    Ok(Phase::Down(Instant::now() + down))
                } else {
                    target.signal(*node, Signal::SIGTERM)?;
                    Ok(Phase::Stopping { pid, kill_at: Instant::now() + TERM_GRACE, down })
                }
            }
            Fault::PauseLeader { node } | Fault::PauseRunner { node, .. } => {
                target.signal(*node, Signal::SIGSTOP)?;
                Ok(Phase::HealAt(Instant::now() + pause))
            }
            Fault::HealthFlap { node } => {
                target.set_health(*node, false)?;
                Ok(Phase::HealAt(Instant::now() + Duration::from_millis(self.rng.gen_range(1000..6000))))
            }
            Fault::PauseZooKeeper { server } => {
                target.zookeeper().ok_or_else(|| anyhow::anyhow!("no ensemble"))?.pause_server(*server)?;
                Ok(Phase::HealAt(Instant::now() + Duration::from_millis(self.rng.gen_range(2000..8000))))
            }
            Fault::KillZooKeeperLeader { server, down_ms } => {
                target.zookeeper().ok_or_else(|| anyhow::anyhow!("no ensemble"))?.kill_server(*server)?;
                Ok(Phase::HealAt(Instant::now() + Duration::from_millis(*down_ms)))
            }
            Fault::CutLink { node, network } => {
                target.link(*node, network_of(network), false)?;
                Ok(Phase::HealAt(Instant::now() + Duration::from_millis(self.rng.gen_range(2000..8000))))
            }
        })();
        println!("chaos: fault {} {:?}", record.id, fault);
        match result {
            Ok(phase) => {
                self.records.push(record);
                self.active.push(Active { index, phase });
            }
            Err(error) => {
                record.errors.push(format!("inject: {error:#}"));
                record.end_unix_ms = Some(unix_ms());
                record.end_mono_ns = Some(taskd::run_log::monotonic_ns());
                eprintln!("chaos: fault {} not injected: {error:#}", record.id);
                self.records.push(record);
            }
        }
    }

    /// Moves a fault on; None once it is healed.
    fn advance(&mut self, mut active: Active) -> Option<Active> {
        let now = Instant::now();
        let fault = self.records[active.index].fault.clone();
        let target = self.target;
        let healed: anyhow::Result<bool> = match (&fault, &active.phase) {
            (Fault::KillDaemon { node, .. }, Phase::Stopping { pid, kill_at, down }) => {
                let (node, pid, kill_at, down) = (*node, *pid, *kill_at, *down);
                if target.pid(node) == Some(pid) && now < kill_at {
                    return Some(active);
                }
                if target.pid(node) == Some(pid) {
                    self.records[active.index]
                        .errors
                        .push(format!("pid {pid} did not exit within {TERM_GRACE:?} of SIGTERM; killed"));
                    let _ = target.kill(node);
                }
                self.deaths.push(DeathFact { pid, gone_ns: taskd::run_log::monotonic_ns() });
                active.phase = Phase::Down(now + down);
                return Some(active);
            }
            (_, Phase::HealAt(at) | Phase::Down(at)) if now < *at => return Some(active),
            (Fault::KillDaemon { node, .. }, _) => target.restart(*node).map(|_| true),
            (Fault::PauseLeader { node } | Fault::PauseRunner { node, .. }, _) => {
                target.signal(*node, Signal::SIGCONT).map(|()| true)
            }
            (Fault::HealthFlap { node }, _) => target.set_health(*node, true).map(|()| true),
            (Fault::PauseZooKeeper { server }, _) => {
                target.zookeeper().map_or(Ok(true), |zookeeper| zookeeper.resume_server(*server).map(|()| true))
            }
            (Fault::KillZooKeeperLeader { server, .. }, _) => {
                target.zookeeper().map_or(Ok(true), |zookeeper| zookeeper.start_server(*server).map(|()| true))
            }
            (Fault::CutLink { node, network }, _) => target.link(*node, network_of(network), true).map(|()| true),
        };
        let record = &mut self.records[active.index];
        match healed {
            Ok(_) => {
                record.end_unix_ms = Some(unix_ms());
                record.end_mono_ns = Some(taskd::run_log::monotonic_ns());
                println!(
                    "chaos: fault {} healed after {:.1} s",
                    record.id,
                    (record.end_mono_ns.unwrap_or(0) - record.start_mono_ns) as f64 / 1e9
                );
                None
            }
            Err(error) => {
                record.errors.push(format!("heal: {error:#}"));
                eprintln!("chaos: fault {} not healed yet: {error:#}", record.id);
                active.phase = Phase::HealAt(now + Duration::from_millis(500));
                Some(active)
            }
        }
    }
}

fn network_of(name: &str) -> Network {
    if name == "data" {
        Network::Data
    } else {
        Network::Management
    }
}
