//! The quiet watch: a system left alone for a while on a loaded machine, counting the times the
//! VIP or the leadership moved without any cut (spurious failovers) and the samples with the VIP
//! on two nodes. The load is `stress-ng --cpu <n_cpus>` started for the watch and stopped after
//! it (SIGTERM to the pid this started), or, without stress-ng, as many busy threads of this
//! process.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::tests::netns::NetnsCluster;
use ::tests::prelude::*;
use anyhow::Result;

use super::systems::System;
use super::tools::have_command;

/// How often the leadership is asked during the watch (ours only).
const LEADER_POLL: Duration = Duration::from_millis(200);

/// What a quiet watch saw.
#[derive(Clone, Debug, Default)]
pub struct QuietOutcome {
    pub seconds: f64,
    pub vip_moves: usize,
    pub leader_moves: usize,
    pub two_holder_samples: usize,
}

impl QuietOutcome {
    /// A failover moves the VIP and (ours) the leadership together: the larger count, so one
    /// failover is not counted twice and a leadership move without the VIP still counts.
    pub fn spurious_failovers(&self) -> usize {
        self.vip_moves.max(self.leader_moves)
    }
}

/// The machine's load during a watch; stopped when dropped.
pub struct Load {
    stress_ng: Option<Child>,
    busy_threads: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Load {
    /// `stress-ng --cpu <n_cpus>` (a CPU-bound worker per CPU), or busy threads without it.
    pub fn start(seconds: u64) -> Load {
        let n_cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let stop = Arc::new(AtomicBool::new(false));
        if have_command("stress-ng") {
            let spawned = Command::new("stress-ng")
                .args(["--cpu", &n_cpus.to_string(), "--timeout", &format!("{}s", seconds + 30), "--quiet"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match spawned {
                Ok(child) => return Load { stress_ng: Some(child), busy_threads: Vec::new(), stop },
                Err(error) => eprintln!("failover bench: stress-ng did not start ({error}); busy threads instead"),
            }
        }
        let busy_threads = (0..n_cpus)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x: u64 = 1;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                    }
                })
            })
            .collect();
        Load { stress_ng: None, busy_threads, stop }
    }

    /// What the load is, for the report.
    pub fn describe() -> String {
        let n_cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        if have_command("stress-ng") {
            format!("stress-ng --cpu {n_cpus}")
        } else {
            format!("{n_cpus} busy threads (stress-ng not installed)")
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut child) = self.stress_ng.take() {
            // SIGTERM, so that stress-ng stops its own workers; only the pid this started.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM);
            let _ = child.wait();
        }
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.busy_threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Watches the cluster, running `system` untouched, for `duration` under load.
pub fn watch(cluster: &NetnsCluster, system: System, duration: Duration) -> Result<QuietOutcome> {
    eprintln!("failover bench: {} quiet watch, {duration:?} under {}", system.key(), Load::describe());
    let load = Load::start(duration.as_secs());
    let started_at = Instant::now();
    let mut leaders = Vec::new();
    while started_at.elapsed() < duration {
        if system.is_ours() {
            leaders.push(cluster.leader());
        }
        std::thread::sleep(LEADER_POLL);
    }
    drop(load);
    let samples = cluster.holder_sampler().samples_since(started_at);
    let holders: Vec<Option<Vec<usize>>> =
        samples.iter().map(|sample| (!sample.holders.is_empty()).then(|| sample.holders.clone())).collect();
    Ok(QuietOutcome {
        seconds: started_at.elapsed().as_secs_f64(),
        vip_moves: count_moves(&holders),
        leader_moves: count_moves(&leaders),
        two_holder_samples: samples.iter().filter(|sample| sample.holders.len() > 1).count(),
    })
}

/// How many times the observed value changed, ignoring the gaps (None: nobody seen) between
/// two observations: A, None, A is no move; A, None, B is one.
pub fn count_moves<T: PartialEq>(observations: &[Option<T>]) -> usize {
    let mut last: Option<&T> = None;
    let mut moves = 0;
    for observed in observations.iter().flatten() {
        if last.is_some_and(|last| last != observed) {
            moves += 1;
        }
        last = Some(observed);
    }
    moves
}

#[cfg(test)]
mod tests;
