//! Submit-to-running latency at a fixed open-loop rate.
//!
//! Sender threads take the next slot `i` and send its submit at `start + i / rate` whatever
//! the earlier submits did (open loop: a slow answer does not delay later sends, as long as
//! there are enough threads; the largest send lag is reported). Each sample starts at the wall
//! clock read just before the request is sent. The moments after it come from the daemons' own
//! glog lines (local wall clock, microseconds, same machine): the leader's `task submitted`
//! (after the ZooKeeper create), its `task dispatched` (after the fenced `Running` write), and
//! the runner's `task started` (after its claim: the task's coroutine is scheduled), which is
//! the sample's end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};
use parking_lot::Mutex;
use tests::cluster::{glog_time, Cluster};
use tests::prelude::*;

use super::api::Api;

/// One submit of the open-loop run.
pub struct Sent {
    pub task_id: String,
    /// The wall clock just before the request.
    pub sent: SystemTime,
    /// How late the send was against its slot.
    pub lag: Duration,
    /// The submit's round trip (its acknowledgement).
    pub ack: Duration,
}

/// Sends `n` Sleep submits of `duration_ms` at `per_s` from `threads` threads.
pub fn open_loop(api: &Api, n: usize, per_s: f64, threads: usize, duration_ms: u64) -> Result<Vec<Sent>> {
    let interval = Duration::from_secs_f64(1.0 / per_s);
    let next = AtomicUsize::new(0);
    let sent: Mutex<Vec<Sent>> = Mutex::new(Vec::with_capacity(n));
    // Slot 0 a little ahead, so that every thread is waiting when it comes.
    let start = Instant::now() + Duration::from_millis(50);
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let client = api.fresh();
                let (next, sent) = (&next, &sent);
                scope.spawn(move || -> Result<()> {
                    loop {
                        let slot = next.fetch_add(1, Ordering::Relaxed);
                        if slot >= n {
                            return Ok(());
                        }
                        let due = start + interval * slot as u32;
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let lag = Instant::now().saturating_duration_since(due);
                        let wall = SystemTime::now();
                        let requested = Instant::now();
                        let task_id = client.submit_sleep(duration_ms)?;
                        let ack = requested.elapsed();
                        sent.lock().push(Sent { task_id, sent: wall, lag, ack });
                    }
                })
            })
            .collect();
        workers.into_iter().map(|worker| worker.join().unwrap_or_else(|_| Err(anyhow!("a thread panicked")))).collect()
    });
    results.into_iter().collect::<Result<Vec<()>>>().context("open-loop submits")?;
    Ok(sent.into_inner())
}

/// The first glog time per task of the lines containing `needle` (with a `task_id=` field) in
/// every node's log.
pub fn task_times(cluster: &Cluster, needle: &str) -> HashMap<String, SystemTime> {
    let mut times = HashMap::new();
    for node in 0..cluster.n_nodes() {
        for line in cluster.log(node).lines().filter(|line| line.contains(needle)) {
            let Some(task_id) = line.split_whitespace().find_map(|word| word.strip_prefix("task_id=")) else {
                continue;
            };
            if let Some(time) = glog_time(line) {
                times.entry(task_id.to_string()).or_insert(time);
            }
        }
    }
    times
}

/// Milliseconds from `earlier` to `later` (negative when `later` is earlier).
pub fn millis_between(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(elapsed) => elapsed.as_secs_f64() * 1000.0,
        Err(error) => -error.duration().as_secs_f64() * 1000.0,
    }
}
