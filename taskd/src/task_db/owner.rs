//! Task ownership: the runner working on a task holds the ephemeral child
//! `/zbs/taskd/db/<task_id>/owner`, created with the runner's own session, so it vanishes when
//! that session closes or expires. The runner side `claim`s and `release`s; the dispatcher side
//! reads `owner_of` and `watch_owner`s to learn when a runner dies.

use quorum::zk::{NodeKind, NodeWatch, ZkOp};
use quorum::{ZkError, ZkSession};
use serde::{Deserialize, Serialize};

use super::error::{DbError, Result};
use super::layout::{is_valid_node_id, owner_path, task_path, MAX_ADDRESS_LEN};
use crate::task::TaskId;

/// How often `claim` tries when a previous owner comes and goes under it.
const CLAIM_ATTEMPTS: u32 = 3;

/// What an owner node holds: which runner works on the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerInfo {
    /// The runner's node id (as under `/zbs/taskd/runners`).
    pub runner_id: String,
    /// The runner's RPC address.
    pub address: String,
}

impl OwnerInfo {
    fn encode(&self) -> Result<Vec<u8>> {
        let bad = |reason: String| DbError::BadRunner { node_id: self.runner_id.clone(), reason };
        if !is_valid_node_id(&self.runner_id) {
            return Err(bad("not a valid node id".to_string()));
        }
        if self.address.len() > MAX_ADDRESS_LEN {
            return Err(bad(format!("address longer than {MAX_ADDRESS_LEN} bytes")));
        }
        serde_json::to_vec(self).map_err(|error| bad(error.to_string()))
    }
}

/// The current owner of a task as ZooKeeper holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The decoded data, or `None` when it does not decode (the session below still counts).
    pub info: Option<OwnerInfo>,
    /// The session that holds the ephemeral node.
    pub session_id: i64,
}

/// Makes this session the owner of `task_id`. With `expected_record_version`, the claim is
/// atomic with a check that the record is still at that version (the one the dispatcher wrote
/// when it assigned the task): a runner told about an assignment that was since replaced gets
/// `Fenced`. Claiming a task this session already owns succeeds; one owned by another session
/// is `AlreadyOwned`; a task that does not exist is `NotFound`.
pub fn claim(
    session: &ZkSession,
    task_id: &TaskId,
    runner: &OwnerInfo,
    expected_record_version: Option<i32>,
) -> Result<()> {
    let data = runner.encode()?;
    let path = owner_path(task_id);
    // A previous owner may leave between our create and our check: look again, a few times.
    for _ in 0..CLAIM_ATTEMPTS {
        let created = match expected_record_version {
            Some(version) => session
                .multi(&[
                    ZkOp::CheckVersion { path: task_path(task_id), version },
                    ZkOp::Create { path: path.clone(), data: data.clone(), kind: NodeKind::Ephemeral },
                ])
                .map(drop),
            None => session.create_ephemeral(&path, &data).map(drop),
        };
        match created {
            Ok(()) => return Ok(()),
            Err(ZkError::NodeExists { .. }) => {
                match session.exists(&path).map_err(DbError::zk("check a task's owner"))? {
                    Some(stat) if stat.ephemeral_owner == session.session_id() => return Ok(()),
                    Some(stat) => {
                        return Err(DbError::AlreadyOwned {
                            task_id: task_id.clone(),
                            owner_session: stat.ephemeral_owner,
                        })
                    }
                    None => continue,
                }
            }
            Err(ZkError::BadVersion { .. }) => {
                return Err(DbError::Fenced {
                    what: "task",
                    id: task_id.to_string(),
                    expected_version: expected_record_version.unwrap_or(-1),
                })
            }
            Err(ZkError::NoNode { .. }) => return Err(DbError::NotFound { what: "task", id: task_id.to_string() }),
            Err(source) => return Err(DbError::Zk { context: "claim a task", source }),
        }
    }
    Err(DbError::Conflict { task_id: task_id.clone(), attempts: CLAIM_ATTEMPTS })
}

/// Gives up this session's ownership of `task_id`. Returns false (and deletes nothing) when
/// this session does not own it: another runner's node is never touched.
pub fn release(session: &ZkSession, task_id: &TaskId) -> Result<bool> {
    let path = owner_path(task_id);
    let Some(stat) = session.exists(&path).map_err(DbError::zk("check a task's owner"))? else {
        return Ok(false);
    };
    if stat.ephemeral_owner != session.session_id() {
        return Ok(false);
    }
    match session.delete(&path, Some(stat.version)) {
        Ok(()) | Err(ZkError::NoNode { .. }) => Ok(true),
        Err(source) => Err(DbError::Zk { context: "release a task", source }),
    }
}

/// Who owns `task_id` now; `None` when nobody does (or the task does not exist).
pub fn owner_of(session: &ZkSession, task_id: &TaskId) -> Result<Option<Owner>> {
    let path = owner_path(task_id);
    let Some((data, stat)) = session.get_data(&path).map_err(DbError::zk("read a task's owner"))? else {
        return Ok(None);
    };
    Ok(Some(decode_owner(&path, &data, stat.ephemeral_owner)))
}

/// The owner of `task_id` now, and a one-shot watch that fires when the owner node is created,
/// changed or deleted (the runner released the task, or its session ended).
pub fn watch_owner(session: &ZkSession, task_id: &TaskId) -> Result<(Option<Owner>, NodeWatch)> {
    let path = owner_path(task_id);
    let (stat, watch) = session.exists_and_watch(&path).map_err(DbError::zk("watch a task's owner"))?;
    if stat.is_none() {
        return Ok((None, watch));
    }
    // The node may vanish between the two reads; the watch then fires anyway.
    let owner = session
        .get_data(&path)
        .map_err(DbError::zk("read a task's owner"))?
        .map(|(data, stat)| decode_owner(&path, &data, stat.ephemeral_owner));
    Ok((owner, watch))
}

/// Whether `task_id` has an owner now, and a one-shot watch on its owner node (fires when it
/// is created, changed or deleted). One request: what the dispatcher's watch loop needs, where
/// `watch_owner` also reads who the owner is.
pub fn watch_owner_presence(session: &ZkSession, task_id: &TaskId) -> Result<(bool, NodeWatch)> {
    let path = owner_path(task_id);
    let (stat, watch) = session.exists_and_watch(&path).map_err(DbError::zk("watch a task's owner"))?;
    Ok((stat.is_some(), watch))
}

fn decode_owner(path: &str, data: &[u8], session_id: i64) -> Owner {
    let info = match serde_json::from_slice::<OwnerInfo>(data) {
        Ok(info) => Some(info),
        Err(error) => {
            tracing::warn!(path, %error, "undecodable task owner data");
            None
        }
    };
    Owner { info, session_id }
}
