//! The leadership history: every election and step-down with its reason, time and node, kept in
//! ZooKeeper as a bounded ring of persistent-sequential znodes under [`EVENTS_PATH`] (the last
//! [`MAX_EVENTS`]; the writer trims the oldest), read by `GET /api/v2/task_center/events` and
//! `zbs-task cluster events`. Whichever node changes role writes its own event; an event that
//! cannot be written (no session) is logged and lost, never retried into a later session's
//! history out of order.

use quorum::zk::NodeKind;
use quorum::{ZkError, ZkSession};
use serde::{Deserialize, Serialize};

/// Where the events live.
pub const EVENTS_PATH: &str = "/zbs/taskd/events";

/// The ring's size: older events are deleted by the writer of a newer one.
pub const MAX_EVENTS: usize = 1000;

/// The prefix of an event's znode name (followed by ZooKeeper's 10-digit sequence).
const EVENT_PREFIX: &str = "e-";

/// One change of leadership on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderEvent {
    /// Wall-clock time, ms since the epoch.
    pub time_unix_ms: u64,
    pub node_id: String,
    /// `elected` or `stepped_down`.
    pub event: String,
    /// For a step-down: why (the `reason` label of `zbs_taskd_leader_transitions_total`).
    pub reason: String,
    /// The ring's sequence of this event (set when read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
}

impl LeaderEvent {
    pub fn new(node_id: &str, event: &str, reason: &str) -> LeaderEvent {
        LeaderEvent {
            time_unix_ms: crate::clock::now_ms(),
            node_id: node_id.to_string(),
            event: event.to_string(),
            reason: reason.to_string(),
            sequence: None,
        }
    }
}

/// Appends `event` and trims the ring to [`MAX_EVENTS`]. Blocks (parks) for a few round trips.
pub fn append(session: &ZkSession, event: &LeaderEvent) -> Result<(), ZkError> {
    let data = serde_json::to_vec(event).unwrap_or_default();
    session.ensure_path(EVENTS_PATH)?;
    session.create(&format!("{EVENTS_PATH}/{EVENT_PREFIX}"), &data, NodeKind::PersistentSequential)?;
    let names = session.children(EVENTS_PATH)?;
    for name in names_to_trim(&names, MAX_EVENTS) {
        match session.delete(&format!("{EVENTS_PATH}/{name}"), None) {
            // Another writer trimmed it first.
            Ok(()) | Err(ZkError::NoNode { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The latest `limit` events, oldest first; corrupt ones are skipped with a warning.
pub fn read(session: &ZkSession, limit: usize) -> Result<Vec<LeaderEvent>, ZkError> {
    let names = match session.children(EVENTS_PATH) {
        Ok(names) => names,
        Err(ZkError::NoNode { .. }) => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut ordered = sequenced(&names);
    let skip = ordered.len().saturating_sub(limit);
    ordered.drain(..skip);
    let paths: Vec<String> = ordered.iter().map(|(_, name)| format!("{EVENTS_PATH}/{name}")).collect();
    let data = session.get_data_of_each(&paths)?;
    Ok(ordered
        .iter()
        .zip(data)
        .filter_map(|((sequence, name), data)| match data {
            Ok(Some((bytes, _))) => match serde_json::from_slice::<LeaderEvent>(&bytes) {
                Ok(event) => Some(LeaderEvent { sequence: Some(*sequence), ..event }),
                Err(error) => {
                    tracing::warn!(%name, %error, "skipping a corrupt leadership event");
                    None
                }
            },
            // Trimmed between the listing and the read.
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%name, %error, "cannot read a leadership event");
                None
            }
        })
        .collect())
}

/// The event znodes among `names`, with their sequence, oldest first; other names are ignored.
fn sequenced(names: &[String]) -> Vec<(i64, String)> {
    let mut events: Vec<(i64, String)> = names
        .iter()
        .filter_map(|name| {
            let digits = name.strip_prefix(EVENT_PREFIX)?;
            let sequence = digits.parse::<i64>().ok().filter(|_| digits.bytes().all(|byte| byte.is_ascii_digit()))?;
            Some((sequence, name.clone()))
        })
        .collect();
    events.sort();
    events
}

/// The oldest event znodes past the newest `keep`.
fn names_to_trim(names: &[String], keep: usize) -> Vec<String> {
    let events = sequenced(names);
    let n_trim = events.len().saturating_sub(keep);
    events.into_iter().take(n_trim).map(|(_, name)| name).collect()
}

#[cfg(test)]
mod tests;
