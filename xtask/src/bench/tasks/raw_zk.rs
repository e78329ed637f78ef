//! The reference for submit throughput: persistent-znode creates straight through the same client
//! library (`zookeeper-client` behind `quorum::ZkSession`), one session shared by `clients`
//! threads as the dispatcher shares its one session, each node holding an encoded Sleep task
//! record under a UUID name like a task's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use quorum::{ZkConfig, ZkSession};
use taskd::task::{SleepArgs, TaskId, TaskKind, TaskRecord};

const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// Where the reference nodes go: outside the task database, so they are never tasks.
const PARENT: &str = "/bench/raw_creates";

/// The bytes of a fresh Sleep task's record, as the dispatcher writes it.
pub fn sleep_record_bytes() -> Result<Vec<u8>> {
    let record = TaskRecord::new(
        TaskId::generate(),
        TaskKind::Sleep(SleepArgs { duration_ms: 0, fail: false, fail_first: 0 }),
        taskd::clock::now_ms(),
    );
    record.encode().context("encode a Sleep record")
}

/// Creates `n` nodes from `clients` threads; how long that took from the first request to the
/// last acknowledgement (the session's set-up not included).
pub fn time_creates(connect_string: &str, n: usize, clients: usize) -> Result<Duration> {
    let session =
        ZkSession::connect(&ZkConfig::new(connect_string, SESSION_TIMEOUT)).context("connect to ZooKeeper")?;
    session.ensure_path(PARENT).context("create the reference parent")?;
    let data = sleep_record_bytes()?;
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let (session, next, data) = (&session, &next, &data);
                scope.spawn(move || -> Result<()> {
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        let path = format!("{PARENT}/{}", TaskId::generate());
                        session.create_persistent(&path, data).with_context(|| format!("create {path}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().map(|worker| worker.join().unwrap_or_else(|_| Err(anyhow!("a thread panicked")))).collect()
    });
    let elapsed = started.elapsed();
    results.into_iter().collect::<Result<Vec<()>>>()?;
    let _ = session.close(Duration::from_secs(2));
    Ok(elapsed)
}
