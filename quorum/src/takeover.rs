//! Early take-over of a crashed member's election node, and the announcement that makes it safe.
//!
//! A member whose process died keeps its election node until its session expires (a whole
//! session timeout). A peer that has a *proof* of the death (its daemon's crash detector: the
//! dead process's port refused by its live host's kernel) may delete the node at once — any
//! session may delete another's ephemeral node — and the election's watch does the rest.
//!
//! The proof must never hold for a live member. A live member's ports refuse while its election
//! node exists only when it is stopping, so before it closes a port it **announces leaving**: an
//! ephemeral marker `<service_path>-leaving/<node name>` of its own session. A take-over is one
//! multi-op that creates that same marker and deletes the node: if the member announced, the
//! create fails and nothing is deleted. ZooKeeper orders the two: a refusal seen after the member
//! closed its port comes after its announcement was acknowledged, so the take-over that follows
//! the refusal always finds the marker. The take-over's marker is deleted just after (it would
//! otherwise go with the taker's session).

use crate::error::ZkError;
use crate::zk::{NodeKind, ZkOp, ZkSession};

/// Where the leaving markers of the election under `service_path` live.
pub fn leaving_dir(service_path: &str) -> String {
    format!("{service_path}-leaving")
}

/// The name ZooKeeper gives the election node of `sequence` (`member-` and ten digits).
pub fn member_node_name(sequence: i64) -> String {
    format!("{}{sequence:010}", crate::member::MEMBER_NODE_PREFIX)
}

/// Announces that the member with election node `node_name` is leaving: from now on its ports
/// may refuse while it is alive, and no take-over may delete its node. Idempotent.
pub fn announce_leaving(session: &ZkSession, service_path: &str, node_name: &str) -> Result<(), ZkError> {
    let dir = leaving_dir(service_path);
    session.ensure_path(&dir)?;
    match session.create_ephemeral(&format!("{dir}/{node_name}"), b"") {
        Ok(_) | Err(ZkError::NodeExists { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

/// What a take-over did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeOver {
    /// The node was deleted: its member's successor is elected through the watch.
    Deleted,
    /// The member announced leaving: it may be alive, and the node stays.
    Announced,
    /// The node was gone already.
    Gone,
}

/// Deletes the election node `node_name` of a member proven dead, unless it announced leaving
/// (see the module documentation).
pub fn take_over(session: &ZkSession, service_path: &str, node_name: &str) -> Result<TakeOver, ZkError> {
    let dir = leaving_dir(service_path);
    session.ensure_path(&dir)?;
    let marker = format!("{dir}/{node_name}");
    let taken = session.multi(&[
        ZkOp::Create { path: marker.clone(), data: b"taken over".to_vec(), kind: NodeKind::Ephemeral },
        ZkOp::Delete { path: format!("{service_path}/{node_name}"), expected_version: None },
    ]);
    match taken {
        Ok(_) => {
            match session.delete(&marker, None) {
                Ok(()) | Err(ZkError::NoNode { .. }) => {}
                Err(error) => tracing::debug!(%error, "the take-over's marker stays until its session ends"),
            }
            Ok(TakeOver::Deleted)
        }
        Err(ZkError::NodeExists { .. }) => Ok(TakeOver::Announced),
        Err(ZkError::NoNode { .. }) => Ok(TakeOver::Gone),
        Err(error) => Err(error),
    }
}
