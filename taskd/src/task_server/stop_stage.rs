//! The stop order as data: every stage of a `TaskServer`'s stop, in order, with what it logs.
//! The stages run on three threads (the caller of `stop`, the quorum's loop, the owner that
//! drops the server), so the order lives here once, and each place that runs a stage runs it
//! through [`timed`] (or reports one measured elsewhere with [`log_done`]), which logs
//! `stop stage N: what (x ms)` — the lines operators, tests and `bench stepdown` read.

use std::time::Instant;

/// One stage of the stop, in the order `task_server`'s `# Shutdown` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopStage {
    /// The member announces leaving, then the RPC servers stop listening.
    StopListening,
    /// The VIP is released, before the quorum is left.
    ReleaseVip,
    /// The quorum is left: step down, give up the election node (measured from the stop's start).
    LeaveQuorum,
    /// RPC requests in flight drain, up to the drain deadline.
    DrainRequests,
    /// The dispatcher stops.
    StopDispatcher,
    /// The runner stops, interrupting its running tasks.
    StopRunner,
    /// The ZooKeeper session is closed and the loop unloops (measured from the stop's start).
    CloseSession,
    /// After the loop: the RPC servers' IO is stopped and joined.
    StopRpcIo,
}

impl StopStage {
    /// Every stage, in the order they run.
    pub const ORDER: [StopStage; 8] = [
        StopStage::StopListening,
        StopStage::ReleaseVip,
        StopStage::LeaveQuorum,
        StopStage::DrainRequests,
        StopStage::StopDispatcher,
        StopStage::StopRunner,
        StopStage::CloseSession,
        StopStage::StopRpcIo,
    ];

    /// Its place in the order, from 1.
    pub fn number(self) -> usize {
        StopStage::ORDER.iter().position(|stage| *stage == self).map_or(0, |index| index + 1)
    }

    /// What the stage did, as its log line says.
    pub fn describe(self) -> &'static str {
        match self {
            StopStage::StopListening => "leaving announced; rpc servers stopped listening",
            StopStage::ReleaseVip => "vip released",
            StopStage::LeaveQuorum => "quorum: stepped down and gave up the election node",
            StopStage::DrainRequests => "rpc requests drained",
            StopStage::StopDispatcher => "dispatcher stopped",
            StopStage::StopRunner => "runner stopped",
            StopStage::CloseSession => "quorum left (ZooKeeper session closed); unlooping",
            StopStage::StopRpcIo => "rpc io stopped and joined",
        }
    }
}

/// Runs `stage` and logs it with its duration; `run` returns a detail for the line (empty for
/// none).
pub fn timed(stage: StopStage, run: impl FnOnce() -> String) {
    let started = Instant::now();
    let detail = run();
    log_done(stage, started, &detail);
}

/// Logs `stage` as done, `since` when it (or the stop) began, with `detail` when not empty.
pub fn log_done(stage: StopStage, since: Instant, detail: &str) {
    let ms = since.elapsed().as_secs_f64() * 1000.0;
    let what = stage.describe();
    if detail.is_empty() {
        tracing::info!("stop stage {}: {what} ({ms:.1} ms)", stage.number());
    } else {
        tracing::info!("stop stage {}: {what} ({detail}) ({ms:.1} ms)", stage.number());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stages_are_numbered_one_to_eight_in_their_order() {
        let numbers: Vec<usize> = StopStage::ORDER.iter().map(|stage| stage.number()).collect();
        assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
        let described: std::collections::HashSet<&str> =
            StopStage::ORDER.iter().map(|stage| stage.describe()).collect();
        assert_eq!(described.len(), 8, "every stage says something of its own");
    }
}
