//! The cluster's status sampler: a thread that polls every node's `/api/v1/status` every few
//! milliseconds and keeps each answer with its time, so that a test can assert that two nodes
//! never led at one instant ([`Sampler::definite_overlaps`]) and a benchmark can see when a new
//! leader appeared.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{fetch_status, status_agent, unix_micros};

/// One answer (or no answer) of one node, as the sampler saw it.
#[derive(Clone, Debug)]
pub struct Observation {
    /// When the answer arrived (or the request failed).
    pub at: Instant,
    /// The same moment on the wall clock, microseconds since the Unix epoch.
    pub unix_micros: u64,
    pub node: usize,
    /// None when the node did not answer.
    pub status: Option<Sample>,
}

/// The part of a status the sampler keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub pid: u32,
    pub leader: bool,
    pub sequence: Option<i64>,
    pub stopping: bool,
}

impl Observation {
    pub fn is_leader(&self) -> bool {
        self.status.as_ref().is_some_and(|status| status.leader)
    }
}

/// Two nodes seen leading at one instant: `other` said leader at `at` while `node` said leader
/// (same process, same election node) both before and after it.
#[derive(Clone, Debug)]
pub struct Overlap {
    pub node: usize,
    pub other: usize,
    pub at: Instant,
    pub unix_micros: u64,
}

/// A thread that polls every node's status in turn and keeps every answer.
pub struct Sampler {
    observations: Arc<Mutex<Vec<Observation>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    pub(super) fn start(urls: Vec<String>, interval: Duration, token: String) -> Sampler {
        let observations = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let observations = observations.clone();
            let stop = stop.clone();
            thread::Builder::new()
                .name("cluster-sampler".to_string())
                .spawn(move || {
                    let agent = status_agent();
                    while !stop.load(Ordering::Acquire) {
                        for (node, url) in urls.iter().enumerate() {
                            let status = fetch_status(&agent, url, &token).ok().map(|status| Sample {
                                pid: status.pid,
                                leader: status.leader,
                                sequence: status.sequence,
                                stopping: status.stopping,
                            });
                            let observation =
                                Observation { at: Instant::now(), unix_micros: unix_micros(), node, status };
                            observations.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(observation);
                        }
                        thread::sleep(interval);
                    }
                })
                .ok()
        };
        if thread.is_none() {
            eprintln!("cluster fixture: cannot start the status sampler thread");
        }
        Sampler { observations, stop, thread }
    }

    /// A sampler without a thread, holding these observations; for the fixture's own tests.
    #[cfg(test)]
    pub(super) fn from_observations(observations: Vec<Observation>) -> Sampler {
        Sampler {
            observations: Arc::new(Mutex::new(observations)),
            stop: Arc::new(AtomicBool::new(true)),
            thread: None,
        }
    }

    pub(super) fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn locked(&self) -> MutexGuard<'_, Vec<Observation>> {
        self.observations.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every observation so far, in the order they were made (and so by time: one thread makes them).
    pub fn observations(&self) -> Vec<Observation> {
        self.locked().clone()
    }

    /// Observations made at or after `since`.
    pub fn observations_since(&self, since: Instant) -> Vec<Observation> {
        let observations = self.locked();
        let start = observations.partition_point(|observation| observation.at < since);
        observations[start..].to_vec()
    }

    /// Proven moments of two leaders: node A said leader before and after node B said leader,
    /// with no observation of A in between saying otherwise and the same pid and election node
    /// throughout (a member's leadership on one election node does not come back once lost, so
    /// A led at that instant too). A hand-over between two polls of one sweep is not an overlap.
    pub fn definite_overlaps(&self) -> Vec<Overlap> {
        let observations = self.observations();
        let n_nodes = observations.iter().map(|observation| observation.node + 1).max().unwrap_or(0);
        let mut overlaps = Vec::new();
        for node in 0..n_nodes {
            for (first, last) in leadership_spans(&observations, node) {
                for other in &observations {
                    if other.node != node && other.is_leader() && other.at > first && other.at < last {
                        overlaps.push(Overlap {
                            node,
                            other: other.node,
                            at: other.at,
                            unix_micros: other.unix_micros,
                        });
                    }
                }
            }
        }
        overlaps
    }

    /// The first observation at or after `since` of a node other than `old` saying leader.
    pub fn first_leader_after(&self, since: Instant, old: usize) -> Option<Observation> {
        let observations = self.locked();
        let start = observations.partition_point(|observation| observation.at < since);
        observations[start..].iter().find(|observation| observation.node != old && observation.is_leader()).cloned()
    }

    /// Waits until the sampler has seen a node other than `old` lead at or after `since`.
    pub fn wait_for_leader_after(&self, since: Instant, old: usize, timeout: Duration) -> Result<Observation> {
        let started = Instant::now();
        loop {
            if let Some(observation) = self.first_leader_after(since, old) {
                return Ok(observation);
            }
            if started.elapsed() >= timeout {
                bail!("the sampler saw no leader other than node {old} within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// True when `node` said leader in an observation at or after `since`.
    pub fn led_since(&self, node: usize, since: Instant) -> bool {
        let observations = self.locked();
        let start = observations.partition_point(|observation| observation.at < since);
        observations[start..].iter().any(|observation| observation.node == node && observation.is_leader())
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `(first, last)` times of each run of `node`'s observations that all say leader with one pid
/// and one election node.
pub(super) fn leadership_spans(observations: &[Observation], node: usize) -> Vec<(Instant, Instant)> {
    let mut spans = Vec::new();
    let mut current: Option<(Instant, Instant, u32, Option<i64>)> = None;
    for observation in observations.iter().filter(|observation| observation.node == node) {
        match (&observation.status, &mut current) {
            (Some(status), Some((_, last, pid, sequence)))
                if status.leader && status.pid == *pid && status.sequence == *sequence =>
            {
                *last = observation.at;
            }
            (Some(status), _) if status.leader => {
                if let Some((first, last, _, _)) = current.take() {
                    spans.push((first, last));
                }
                current = Some((observation.at, observation.at, status.pid, status.sequence));
            }
            _ => {
                if let Some((first, last, _, _)) = current.take() {
                    spans.push((first, last));
                }
            }
        }
    }
    if let Some((first, last, _, _)) = current {
        spans.push((first, last));
    }
    spans
}
