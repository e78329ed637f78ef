//! Task ownership: the runner working on a task holds the ephemeral child
//! `/zbs/taskd/db/<task_id>/owner`, created with the runner's own session, so it vanishes when
//! that session closes or expires. The runner side `claim`s and `release`s; the dispatcher side
//! reads `owner_of` and `watch_owner`s to learn when a runner dies.

use quorum::zk::{NodeKind, NodeWatch, ZkOp};
use quorum::{ZkError, ZkSession};
use serde::{Deserialize, Serialize};

use super::error::{DbError, Result};
use super::layout::{
    is_valid_node_id, owner_path, task_path, DB_ROOT, DEFAULT_READ_BATCH, MAX_ADDRESS_LEN, OWNER_NODE,
};
use crate::task::TaskId;

/// How often `claim` tries when a previous owner comes and goes under it.
const CLAIM_ATTEMPTS: u32 = 3;

/// What an owner node holds: which runner works on the task, with which session, for which
/// assignment. Nodes written before `session_id` and `epoch` existed decode with `None` there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerInfo {
    /// The runner's node id (as under `/zbs/taskd/runners`).
    pub runner_id: String,
    /// The runner's RPC address.
    pub address: String,
    /// The session that claimed the task (the node's `ephemeralOwner` says it too; written so
    /// that a reader of the data alone can tell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<i64>,
    /// The assignment this claim is for: the record's `schedule_time_ms`, which every
    /// assignment of the dispatcher writes anew and nothing else changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// How an owner node stands against the task's current assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerMatch {
    /// No owner node.
    Absent,
    /// The owner claimed the current assignment (or says too little to tell otherwise: an
    /// undecodable node, or an old one without an epoch on the assigned runner's address).
    Current,
    /// The owner claimed an earlier assignment, or is a runner the task is not assigned to: it
    /// can do no IO for the current assignment (the claim is atomic with the record's version,
    /// and a task is re-assigned only once its owner was gone or it ended), so it must not keep
    /// the task looking owned.
    Stale,
}

/// Judges `owner` against the record's current assignment (`runner_addr`, `schedule_time_ms`).
pub fn owner_match(owner: Option<&Owner>, runner_addr: Option<&str>, schedule_time_ms: Option<u64>) -> OwnerMatch {
    let Some(owner) = owner else { return OwnerMatch::Absent };
    let Some(info) = &owner.info else { return OwnerMatch::Current };
    if runner_addr.is_some_and(|assigned| assigned != info.address) {
        return OwnerMatch::Stale;
    }
    match (info.epoch, schedule_time_ms) {
        (Some(epoch), Some(assigned)) if epoch != assigned => OwnerMatch::Stale,
        (Some(_), None) => OwnerMatch::Stale,
        _ => OwnerMatch::Current,
    }
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
                let Some((old_data, stat)) = session.get_data(&path).map_err(DbError::zk("check a task's owner"))?
                else {
                    continue;
                };
                if stat.ephemeral_owner == session.session_id() {
                    return Ok(());
                }
                // A node left by an earlier assignment (its runner's release failed and its
                // session lives on) is replaced, atomically with the check that the record is
                // still at the version of this assignment; any other owner stands.
                let old = decode_owner(&path, &old_data, stat.ephemeral_owner);
                let stale = expected_record_version.is_some()
                    && owner_match(Some(&old), Some(&runner.address), runner.epoch) == OwnerMatch::Stale;
                if !stale {
                    return Err(DbError::AlreadyOwned {
                        task_id: task_id.clone(),
                        owner_session: stat.ephemeral_owner,
                    });
                }
                let replaced = session.multi(&[
                    ZkOp::CheckVersion { path: task_path(task_id), version: expected_record_version.unwrap_or(-1) },
                    ZkOp::Delete { path: path.clone(), expected_version: Some(stat.version) },
                    ZkOp::Create { path: path.clone(), data: data.clone(), kind: NodeKind::Ephemeral },
                ]);
                match replaced {
                    Ok(_) => {
                        tracing::warn!(
                            %task_id,
                            old_session = format_args!("{:#x}", stat.ephemeral_owner),
                            old_owner = ?old.info,
                            "replaced a stale owner node of an earlier assignment"
                        );
                        return Ok(());
                    }
                    Err(ZkError::BadVersion { .. }) | Err(ZkError::NoNode { .. }) | Err(ZkError::NodeExists { .. }) => {
                        continue
                    }
                    Err(source) => return Err(DbError::Zk { context: "replace a stale owner", source }),
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

/// True for an owner node that names runner `node_id` under a session other than `own_session`:
/// with the proof that this process is its node's only live incarnation, a dead one's.
/// Undecodable data names nobody and is never judged stale.
pub fn is_previous_incarnations(owner: &Owner, node_id: &str, own_session: i64) -> bool {
    owner.session_id != own_session && owner.info.as_ref().is_some_and(|info| info.runner_id == node_id)
}

/// Deletes every owner node that names runner `node_id` under another session than `session`'s
/// (see `runner`'s `# Restart`: only with the proof that no other live process has this node
/// id); returns how many went.
pub fn remove_stale_owners(session: &ZkSession, node_id: &str) -> Result<usize> {
    let own_session = session.session_id();
    remove_owners_where(session, |owner| is_previous_incarnations(owner, node_id, own_session))
}

/// Deletes every owner node held by `dead_session`, a session whose process is proven dead (the
/// crash detector took its election node over); returns how many went.
pub fn remove_owners_of_session(session: &ZkSession, dead_session: i64) -> Result<usize> {
    remove_owners_where(session, |owner| owner.session_id == dead_session)
}

/// Deletes the owner nodes `doomed` picks. Reads are pipelined in batches; each delete is
/// conditional on the version read, so a node re-created meanwhile stays.
fn remove_owners_where(session: &ZkSession, doomed: impl Fn(&Owner) -> bool) -> Result<usize> {
    let task_names = match session.children(DB_ROOT) {
        Ok(names) => names,
        Err(ZkError::NoNode { .. }) => return Ok(0),
        Err(source) => return Err(DbError::Zk { context: "list the tasks", source }),
    };
    let mut n_removed = 0;
    for batch in task_names.chunks(DEFAULT_READ_BATCH) {
        let paths: Vec<String> = batch.iter().map(|name| format!("{DB_ROOT}/{name}/{OWNER_NODE}")).collect();
        let replies = session.get_data_of_each(&paths).map_err(DbError::zk("read the task owners"))?;
        for (path, reply) in paths.iter().zip(replies) {
            let Some((data, stat)) = reply.map_err(DbError::zk("read a task owner"))? else { continue };
            if !doomed(&decode_owner(path, &data, stat.ephemeral_owner)) {
                continue;
            }
            match session.delete(path, Some(stat.version)) {
                Ok(()) => {
                    tracing::info!(
                        path,
                        old_session = format_args!("{:#x}", stat.ephemeral_owner),
                        "deleted the owner node of a dead process"
                    );
                    n_removed += 1;
                }
                Err(ZkError::NoNode { .. } | ZkError::BadVersion { .. }) => {}
                Err(source) => return Err(DbError::Zk { context: "delete a dead process's owner node", source }),
            }
        }
    }
    Ok(n_removed)
}

/// Decodes an owner node's data read by the caller (the dispatcher's pipelined reads); data
/// that does not decode is an owner with `info: None`, never an error.
pub fn decode_owner_of(task_id: &TaskId, data: &[u8], session_id: i64) -> Owner {
    decode_owner(&owner_path(task_id), data, session_id)
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
