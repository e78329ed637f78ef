//! The members as ZooKeeper holds them now, for the status and cluster routes. A node's cached
//! membership changes only when members come and go, not when a member publishes new health, so
//! these routes read the members' data themselves; requests in a burst share one read, which is
//! never older than [`MEMBERS_TTL`].

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quorum::{Member, QuorumHandle, ZkSessionState};
use serde_json::Value;

/// How long one read of the members answers the routes.
pub const MEMBERS_TTL: Duration = Duration::from_millis(500);

pub struct FreshMembers {
    quorum: QuorumHandle,
    last_read: Mutex<Option<(Instant, Vec<Member>)>>,
    /// Where the reads are timed (`zookeeper_operation_seconds{operation="read_members"}`).
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl FreshMembers {
    pub fn new(quorum: QuorumHandle) -> FreshMembers {
        FreshMembers { quorum, last_read: Mutex::new(None), metrics: None }
    }

    /// Times every read into `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> FreshMembers {
        self.metrics = Some(metrics);
        self
    }

    /// The members read at most [`MEMBERS_TTL`] ago; None without a connected session (a read
    /// on a failing connection would wait for the operation timeout) or when the read fails.
    /// Blocks the caller (parks a coroutine): call it from the worker pool, not the event loop.
    pub fn read(&self) -> Option<Vec<Member>> {
        // The lock is never held across the ZooKeeper read: that read parks the coroutine, and
        // another coroutine of the same worker thread blocking on this (thread) mutex would then
        // hold the thread the parked one must resume on. Concurrent misses may read twice.
        if let Some((at, members)) = self.last_read.lock().as_ref() {
            if at.elapsed() < MEMBERS_TTL {
                return Some(members.clone());
            }
        }
        let connected = self.quorum.session().is_some_and(|session| session.state() == ZkSessionState::SyncConnected);
        if !connected {
            return None;
        }
        let started = Instant::now();
        match self.quorum.read_members() {
            Ok(members) => {
                if let Some(metrics) = &self.metrics {
                    metrics.zookeeper_operation("read_members", started.elapsed());
                }
                *self.last_read.lock() = Some((Instant::now(), members.clone()));
                Some(members)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the members from ZooKeeper; answering the cached ones");
                None
            }
        }
    }
}

/// The members' part of a status answer: the fresh read when there is one, else the cached
/// membership (`cached` is called only then), sorted by sequence, and which it was
/// (`zookeeper` or `cache`).
pub fn members_answer(fresh: Option<Vec<Member>>, cached: impl FnOnce() -> Vec<Member>) -> (Value, &'static str) {
    let (mut members, source) = match fresh {
        Some(members) => (members, "zookeeper"),
        None => (cached(), "cache"),
    };
    members.sort_by_key(|member| member.sequence);
    let members = members
        .iter()
        .map(|member| {
            serde_json::json!({
                "id": member.info.id,
                "address": member.info.address,
                "sequence": member.sequence,
                "healthy": member.info.healthy,
            })
        })
        .collect();
    (Value::Array(members), source)
}

#[cfg(test)]
mod tests;
