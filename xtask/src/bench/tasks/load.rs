//! Closed-loop submit load: `clients` threads, each with its own connection, submit Sleep tasks
//! until `n` were acknowledged; and the wait until the cluster has run every task.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use parking_lot::Mutex;

use super::api::Api;

/// What a closed-loop submit run did.
pub struct Submitted {
    pub task_ids: Vec<String>,
    /// From the first request to the last acknowledgement.
    pub elapsed: Duration,
}

impl Submitted {
    pub fn per_s(&self) -> f64 {
        self.task_ids.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Submits `n` Sleep tasks of `duration_ms` from `clients` threads.
pub fn submit_sleeps(api: &Api, n: usize, clients: usize, duration_ms: u64) -> Result<Submitted> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<String>> = Mutex::new(Vec::with_capacity(n));
    let started = Instant::now();
    let failures: Vec<anyhow::Error> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let client = api.fresh();
                let (next, done) = (&next, &done);
                scope.spawn(move || -> Result<()> {
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        let task_id = client.submit_sleep(duration_ms)?;
                        done.lock().push(task_id);
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|worker| match worker.join() {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error),
                Err(_) => Some(anyhow!("a submit thread panicked")),
            })
            .collect()
    });
    let elapsed = started.elapsed();
    if let Some(error) = failures.into_iter().next() {
        return Err(error.context("submit Sleep tasks"));
    }
    Ok(Submitted { task_ids: done.into_inner(), elapsed })
}

/// Waits until no task is pending, running or interrupted; returns how long that took.
pub fn wait_idle(api: &Api, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    loop {
        if api.is_idle()? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("tasks are still pending or running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
