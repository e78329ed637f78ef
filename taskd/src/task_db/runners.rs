//! Runner registration: every runner keeps an ephemeral node `/zbs/taskd/runners/<node_id>`
//! (created with its own session) holding a small JSON `RunnerInfo`; the dispatcher lists and
//! watches the directory. Updates are conditional on the node's version, like task records.
//!
//! A drain must outlive the runner's session (an operator drains a node to take it down; its
//! restart must not hand it tasks again), so beside the ephemeral registration's `draining`
//! flag a drained node has a persistent marker `/zbs/taskd/drained/<node_id>` ([`set_drained`],
//! [`is_drained`]) that the runner reads before it first registers.

use quorum::zk::NodeWatch;
use quorum::{ZkError, ZkSession};
use serde::{Deserialize, Serialize};

use super::error::{DbError, Result};
use super::layout::{drained_path, is_valid_node_id, runner_path, DRAINED_ROOT, MAX_ADDRESS_LEN, RUNNERS_ROOT};
use super::records::CorruptRecord;

/// The most bytes a runner's registration may hold (far below ZooKeeper's ~1 MB).
pub const MAX_RUNNER_BYTES: usize = 1024;

/// What a runner publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerInfo {
    /// The node's id: its znode name, 1..=64 bytes of `[A-Za-z0-9_.-]`.
    pub node_id: String,
    /// The runner RPC address (`host:port`).
    pub address: String,
    /// How many tasks it runs at once.
    pub slots: u32,
    /// How many more it can take now.
    pub free_slots: u32,
    /// Drained: it takes no new tasks; running ones finish.
    pub draining: bool,
    /// Its data network is healthy.
    pub healthy: bool,
}

impl RunnerInfo {
    /// Checks what bounds the node's size and name.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(DbError::BadRunner { node_id: self.node_id.clone(), reason });
        if !is_valid_node_id(&self.node_id) {
            return bad("a node id is 1..=64 bytes of [A-Za-z0-9_.-], starting with a letter or digit".to_string());
        }
        if self.address.len() > MAX_ADDRESS_LEN {
            return bad(format!("the address is longer than {MAX_ADDRESS_LEN} bytes"));
        }
        if self.free_slots > self.slots {
            return bad(format!("free_slots {} exceeds slots {}", self.free_slots, self.slots));
        }
        Ok(())
    }

    fn encode(&self) -> Result<Vec<u8>> {
        self.validate()?;
        serde_json::to_vec(self)
            .map_err(|error| DbError::BadRunner { node_id: self.node_id.clone(), reason: error.to_string() })
    }

    /// Reads a registration; a bad one names its reason.
    pub fn decode(node_id: &str, data: &[u8]) -> Result<RunnerInfo> {
        let bad = |reason: String| DbError::BadRunner { node_id: node_id.to_string(), reason };
        if data.len() > MAX_RUNNER_BYTES {
            return Err(bad(format!("{} bytes, more than {MAX_RUNNER_BYTES}", data.len())));
        }
        let info: RunnerInfo = serde_json::from_slice(data).map_err(|error| bad(error.to_string()))?;
        if info.node_id != node_id {
            return Err(bad(format!("the data names node {}", info.node_id)));
        }
        info.validate()?;
        Ok(info)
    }
}

/// A registration as read from ZooKeeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredRunner {
    pub info: RunnerInfo,
    /// The node's version, for `update_runner`.
    pub version: i32,
    /// The runner's session (the node's `ephemeralOwner`).
    pub session_id: i64,
}

/// Every registration, and the nodes that could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerList {
    /// Sorted by node id.
    pub runners: Vec<RegisteredRunner>,
    pub corrupt: Vec<CorruptRecord>,
}

/// Registers this session's runner; returns the node's version. A node of the same id left by
/// an earlier session (the same node restarted before its old session expired) is replaced:
/// node ids are unique per node, so it can only be this node's previous incarnation.
pub fn register_runner(session: &ZkSession, info: &RunnerInfo) -> Result<i32> {
    let data = info.encode()?;
    let path = runner_path(&info.node_id);
    session.ensure_path(RUNNERS_ROOT).map_err(DbError::zk("create the runners directory"))?;
    for _ in 0..3 {
        match session.create_ephemeral(&path, &data) {
            Ok(_) => return Ok(0),
            Err(ZkError::NodeExists { .. }) => {}
            Err(source) => return Err(DbError::Zk { context: "register a runner", source }),
        }
        match session.exists(&path).map_err(DbError::zk("check a runner registration"))? {
            Some(stat) if stat.ephemeral_owner == session.session_id() => {
                return update_runner(session, info, stat.version);
            }
            Some(stat) => {
                tracing::warn!(
                    node_id = %info.node_id,
                    old_session = format_args!("{:#x}", stat.ephemeral_owner),
                    "replacing a registration left by an earlier session of this node"
                );
                match session.delete(&path, Some(stat.version)) {
                    Ok(()) | Err(ZkError::NoNode { .. }) | Err(ZkError::BadVersion { .. }) => {}
                    Err(source) => return Err(DbError::Zk { context: "replace a stale runner registration", source }),
                }
            }
            None => {}
        }
    }
    Err(DbError::BadRunner {
        node_id: info.node_id.clone(),
        reason: "another session keeps registering this node id".to_string(),
    })
}

/// Rewrites this runner's registration if it is still at `expected_version`; returns the new
/// version. `Fenced` when it changed since, `NotFound` when it is gone (re-register).
pub fn update_runner(session: &ZkSession, info: &RunnerInfo, expected_version: i32) -> Result<i32> {
    let data = info.encode()?;
    match session.set_data(&runner_path(&info.node_id), &data, Some(expected_version)) {
        Ok(stat) => Ok(stat.version),
        Err(ZkError::BadVersion { .. }) => {
            Err(DbError::Fenced { what: "runner", id: info.node_id.clone(), expected_version })
        }
        Err(ZkError::NoNode { .. }) => Err(DbError::NotFound { what: "runner", id: info.node_id.clone() }),
        Err(source) => Err(DbError::Zk { context: "update a runner registration", source }),
    }
}

/// Removes this session's registration (a graceful stop); false when it is not ours.
pub fn unregister_runner(session: &ZkSession, node_id: &str) -> Result<bool> {
    let path = runner_path(node_id);
    let Some(stat) = session.exists(&path).map_err(DbError::zk("check a runner registration"))? else {
        return Ok(false);
    };
    if stat.ephemeral_owner != session.session_id() {
        return Ok(false);
    }
    match session.delete(&path, Some(stat.version)) {
        Ok(()) | Err(ZkError::NoNode { .. }) => Ok(true),
        Err(source) => Err(DbError::Zk { context: "unregister a runner", source }),
    }
}

/// Removes `node_id`'s registration if `dead_session` holds it (a process proven dead); false
/// when it is not that session's.
pub fn remove_registration_of_session(session: &ZkSession, node_id: &str, dead_session: i64) -> Result<bool> {
    if !is_valid_node_id(node_id) {
        return Ok(false);
    }
    let path = runner_path(node_id);
    let Some(stat) = session.exists(&path).map_err(DbError::zk("check a runner registration"))? else {
        return Ok(false);
    };
    if stat.ephemeral_owner != dead_session {
        return Ok(false);
    }
    match session.delete(&path, Some(stat.version)) {
        Ok(()) => Ok(true),
        Err(ZkError::NoNode { .. } | ZkError::BadVersion { .. }) => Ok(false),
        Err(source) => Err(DbError::Zk { context: "remove a dead runner's registration", source }),
    }
}

/// Every registered runner (reads pipelined). Bad registrations are listed in `corrupt`,
/// logged, and never hide the others.
pub fn list_runners(session: &ZkSession) -> Result<RunnerList> {
    // The directory almost always exists: create it only when the listing says it does not
    // (one request per listing instead of the two or more `ensure_path` costs).
    let mut names = match session.children(RUNNERS_ROOT) {
        Err(ZkError::NoNode { .. }) => {
            session.ensure_path(RUNNERS_ROOT).map_err(DbError::zk("create the runners directory"))?;
            session.children(RUNNERS_ROOT).map_err(DbError::zk("list the runners"))?
        }
        listed => listed.map_err(DbError::zk("list the runners"))?,
    };
    names.sort();
    read_runners(session, &names)
}

/// The runners' node ids now, and a one-shot watch that fires when one registers or leaves.
/// Follow it with `list_runners` (or `read_runners`) and watch again.
pub fn watch_runners(session: &ZkSession) -> Result<(Vec<String>, NodeWatch)> {
    session.ensure_path(RUNNERS_ROOT).map_err(DbError::zk("create the runners directory"))?;
    let (mut names, watch) = session.children_and_watch(RUNNERS_ROOT).map_err(DbError::zk("watch the runners"))?;
    names.sort();
    Ok((names, watch))
}

/// Reads the registrations of `node_ids` in one pipelined round trip; ids that vanished are
/// left out.
pub fn read_runners(session: &ZkSession, node_ids: &[String]) -> Result<RunnerList> {
    let paths: Vec<String> = node_ids.iter().map(|node_id| runner_path(node_id)).collect();
    let mut list = RunnerList::default();
    if paths.is_empty() {
        return Ok(list);
    }
    let replies = session.get_data_of_each(&paths).map_err(DbError::zk("read the runners"))?;
    for ((node_id, path), reply) in node_ids.iter().zip(&paths).zip(replies) {
        match reply {
            Ok(Some((data, stat))) => match RunnerInfo::decode(node_id, &data) {
                Ok(info) => list.runners.push(RegisteredRunner {
                    info,
                    version: stat.version,
                    session_id: stat.ephemeral_owner,
                }),
                Err(error) => {
                    tracing::warn!(path, %error, "skipping a bad runner registration");
                    list.corrupt.push(CorruptRecord { path: path.clone(), reason: error.to_string() });
                }
            },
            Ok(None) => {}
            Err(source) => return Err(DbError::Zk { context: "read a runner", source }),
        }
    }
    Ok(list)
}

/// Records (`true`) or clears (`false`) the persistent drain marker of `node_id`; idempotent.
pub fn set_drained(session: &ZkSession, node_id: &str, drained: bool, now_ms: u64) -> Result<()> {
    if !is_valid_node_id(node_id) {
        return Err(DbError::BadRunner { node_id: node_id.to_string(), reason: "not a valid node id".to_string() });
    }
    let path = drained_path(node_id);
    if drained {
        session.ensure_path(DRAINED_ROOT).map_err(DbError::zk("create the drained directory"))?;
        let data = serde_json::json!({ "node_id": node_id, "since_ms": now_ms }).to_string();
        match session.create_persistent(&path, data.as_bytes()) {
            Ok(_) | Err(ZkError::NodeExists { .. }) => Ok(()),
            Err(source) => Err(DbError::Zk { context: "record a drain", source }),
        }
    } else {
        match session.delete(&path, None) {
            Ok(()) | Err(ZkError::NoNode { .. }) => Ok(()),
            Err(source) => Err(DbError::Zk { context: "clear a drain", source }),
        }
    }
}

/// True when `node_id` has a persistent drain marker.
pub fn is_drained(session: &ZkSession, node_id: &str) -> Result<bool> {
    Ok(session.exists(&drained_path(node_id)).map_err(DbError::zk("read a drain marker"))?.is_some())
}
