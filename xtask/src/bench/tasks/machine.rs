//! What the machine and ZooKeeper did during a phase, for the timing breakdown: how busy both
//! CPUs were (`/proc/stat`), and how many requests ZooKeeper received (`mntr`), so that a rate
//! can be read as CPU-bound or round-trip-bound and a task's cost counted in ZooKeeper requests.

use anyhow::{Context, Result};
use tests::zk::ZooKeeper;

/// The machine's CPU time counters at one moment (clock ticks since boot).
#[derive(Clone, Copy)]
pub struct CpuSample {
    busy: u64,
    total: u64,
}

impl CpuSample {
    pub fn now() -> Result<CpuSample> {
        let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("cpu "))
            .context("no `cpu` line in /proc/stat")?
            .split_whitespace()
            .map(|field| field.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal: idle and iowait are the idle part.
        let total: u64 = ticks.iter().take(8).sum();
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        Ok(CpuSample { busy: total - idle, total })
    }

    /// The share (0..=1) of all CPUs' time that was busy since `earlier`.
    pub fn busy_since(&self, earlier: &CpuSample) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return f64::NAN;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }
}

/// Packets (requests) ZooKeeper has received so far, from `mntr`.
pub fn zk_packets_received(zookeeper: &ZooKeeper) -> Result<u64> {
    let reply = zookeeper.four_letter_word(0, "mntr").context("ask ZooKeeper for mntr")?;
    reply
        .lines()
        .find_map(|line| line.strip_prefix("zk_packets_received"))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("no zk_packets_received in mntr: {reply}"))
}
