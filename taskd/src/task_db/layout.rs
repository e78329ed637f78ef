//! Where the Task Center keeps its state in ZooKeeper, and the arithmetic that keeps every znode
//! and every `getChildren` reply far below ZooKeeper's ~1 MB `jute.maxbuffer`.
//!
//! ```text
//! /zbs/taskd/db/<task_id>          persistent, a TaskRecord (JSON, schema-versioned, ≤ 4 KiB)
//! /zbs/taskd/db/<task_id>/owner    ephemeral of the runner's session, an OwnerInfo (≤ ~300 B)
//! /zbs/taskd/runners/<node_id>     ephemeral of the runner's session, a RunnerInfo (≤ ~400 B)
//! /zbs/taskd/drained/<node_id>     persistent while the node's runner is drained (≤ ~100 B), so
//!                                  a drain outlives the daemon's restart; undrain deletes it
//! /zbs/taskd/requests/<request_id> persistent, the task a client's idempotency key created and
//!                                  what it asked (JSON, ≤ ~1.5 KiB); created in one multi-op with
//!                                  the task's znode, deleted with it. Never listed: it is only
//!                                  read by name (one per task at most, so up to ~1.3 MB of names)
//! /zbs/taskd/vip/<service>         persistent, the VIP set at run time for one service
//!                                  (`vip::vip_znode`, JSON ≤ ~200 B); `<service>` is
//!                                  `[a-z0-9_-]{1,32}`. `/zbs/taskd/vip`'s own data held the single
//!                                  VIP of older versions; it is migrated to `default` (`vip::store`)
//! ```
//!
//! # Sizes
//! * One record is at most [`MAX_RECORD_BYTES`](crate::task::MAX_RECORD_BYTES) = 4 KiB: 0.4 %
//!   of the limit. Owner and runner data are bounded below ([`MAX_NODE_ID_LEN`],
//!   [`MAX_ADDRESS_LEN`]).
//! * A `getChildren` reply of `/zbs/taskd/db` is about 4 bytes per name (its length prefix) plus
//!   the name: a UUID task id (36 characters) costs 40 bytes, the longest valid id
//!   ([`TaskId::MAX_LEN`](crate::task::TaskId::MAX_LEN) = 64) 68 bytes. The database refuses
//!   new tasks ([`DbError::Full`](super::DbError::Full)) beyond
//!   [`DEFAULT_MAX_RECORDS`] = 10,000 records **or** beyond [`MAX_CHILDREN_REPLY_BYTES`] =
//!   512 KiB of names, whichever comes first: 10,000 UUID ids make a 400,000-byte reply (38 % of
//!   1 MiB); with 64-character ids the byte budget stops at 7,710 records. Either way a reply
//!   stays at or below half the limit, so the Java client and `zkCli` (which refuse replies over
//!   1 MB, ~26k UUID children) can always list the directory. 20,000 UUIDs would already be
//!   800,000 bytes (76 %), which is why the default is 10,000.
//! * Rebuilding reads every record: 10,000 × ≤ 4 KiB ≤ 40 MB worst case (~6 MB typical), in
//!   pipelined batches of [`DEFAULT_READ_BATCH`] requests.

use crate::task::TaskId;

/// The parent of every task record.
pub const DB_ROOT: &str = "/zbs/taskd/db";

/// The election path of the Task Center's quorum: each member's ephemeral-sequential node.
pub const QUORUM_PATH: &str = "/zbs/taskd/quorum";

/// The parent of every runner registration.
pub const RUNNERS_ROOT: &str = "/zbs/taskd/runners";

/// The parent of the persistent drain markers, one per drained node.
pub const DRAINED_ROOT: &str = "/zbs/taskd/drained";

/// The parent of the request znodes (see `requests`).
pub const REQUESTS_ROOT: &str = "/zbs/taskd/requests";

/// The name of a task's ephemeral owner child.
pub const OWNER_NODE: &str = "owner";

/// The default cap on task records (see `# Sizes`).
pub const DEFAULT_MAX_RECORDS: usize = 10_000;

/// The most bytes of names a `getChildren` of [`DB_ROOT`] may return (half of ~1 MiB).
pub const MAX_CHILDREN_REPLY_BYTES: usize = 512 * 1024;

/// What one child costs in a `getChildren` reply besides its name: the string's length prefix.
pub const CHILD_NAME_OVERHEAD: usize = 4;

/// Requests in flight per round trip when rebuilding the cache.
pub const DEFAULT_READ_BATCH: usize = 1000;

/// The longest runner node id, in bytes (`[A-Za-z0-9_.-]`, like a host name).
pub const MAX_NODE_ID_LEN: usize = 64;

/// The longest runner address, in bytes (`[IPv6]:port` needs 47).
pub const MAX_ADDRESS_LEN: usize = 128;

/// The znode of a task record.
pub fn task_path(task_id: &TaskId) -> String {
    format!("{DB_ROOT}/{task_id}")
}

/// The znode of a task's owner (the runner working on it).
pub fn owner_path(task_id: &TaskId) -> String {
    format!("{DB_ROOT}/{task_id}/{OWNER_NODE}")
}

/// The znode of a client's request id.
pub fn request_path(request_id: &crate::task::RequestId) -> String {
    format!("{REQUESTS_ROOT}/{request_id}")
}

/// The znode of a runner's registration.
pub fn runner_path(node_id: &str) -> String {
    format!("{RUNNERS_ROOT}/{node_id}")
}

/// The persistent marker of a drained node's runner.
pub fn drained_path(node_id: &str) -> String {
    format!("{DRAINED_ROOT}/{node_id}")
}

/// What a child named `name` adds to a `getChildren` reply.
pub fn child_reply_bytes(name: &str) -> usize {
    name.len() + CHILD_NAME_OVERHEAD
}

/// True for a node id that is a safe znode name: 1..=64 bytes of `[A-Za-z0-9_.-]`, starting
/// with a letter or digit (so never `.` or `..`).
pub fn is_valid_node_id(node_id: &str) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
    !node_id.is_empty()
        && node_id.len() <= MAX_NODE_ID_LEN
        && node_id.as_bytes()[0].is_ascii_alphanumeric()
        && node_id.bytes().all(allowed)
}
