//! The cache's key layout: byte strings whose order is the order a listing wants, so that a
//! listing by creation date (optionally of one state) is one ordered LevelDB scan.
//!
//! * `d` ‖ created_ms (u64 big-endian) ‖ task_id → the stored record (version ‖ JSON);
//! * `s` ‖ state index (u8) ‖ created_ms ‖ task_id → empty (the state index);
//! * `i` ‖ task_id → created_ms ‖ state index (to find the other two keys from an id).
//!
//! * `\xff` → empty: a sentinel above every other key, so that a descending scan can always
//!   seek to the end of its range and step back.
//!
//! Big-endian fixed-width times sort like numbers; task ids are ASCII with no separator needed
//! after a fixed-width field.

use crate::task::{TaskId, TaskState};

const DATE_PREFIX: u8 = b'd';
const STATE_PREFIX: u8 = b's';
const ID_PREFIX: u8 = b'i';

/// Sorts after every other key.
pub const SENTINEL_KEY: &[u8] = &[0xff];

/// The position of `state` in `TaskState::ALL`: its byte in the state index.
pub fn state_index(state: TaskState) -> u8 {
    TaskState::ALL.iter().position(|candidate| *candidate == state).unwrap_or(0) as u8
}

/// The state at `index` in `TaskState::ALL`, if any.
pub fn state_from_index(index: u8) -> Option<TaskState> {
    TaskState::ALL.get(usize::from(index)).copied()
}

/// The key of a record in date order.
pub fn date_key(created_ms: u64, task_id: &TaskId) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + 8 + task_id.as_str().len());
    key.push(DATE_PREFIX);
    key.extend_from_slice(&created_ms.to_be_bytes());
    key.extend_from_slice(task_id.as_str().as_bytes());
    key
}

/// The first date key at or after `created_ms`.
pub fn date_key_from(created_ms: u64) -> Vec<u8> {
    let mut key = vec![DATE_PREFIX];
    key.extend_from_slice(&created_ms.to_be_bytes());
    key
}

/// The `[low, high)` keys of the date keys created in `[from, before)` (open ends when `None`).
pub fn date_range(from_ms: Option<u64>, before_ms: Option<u64>) -> (Vec<u8>, Vec<u8>) {
    let low = date_key_from(from_ms.unwrap_or(0));
    let high = match before_ms {
        Some(before) => date_key_from(before),
        None => vec![DATE_PREFIX + 1],
    };
    (low, high)
}

/// The `[low, high)` keys of `state`'s index entries created in `[from, before)`.
pub fn state_range(state: TaskState, from_ms: Option<u64>, before_ms: Option<u64>) -> (Vec<u8>, Vec<u8>) {
    let low = state_key_from(state, from_ms.unwrap_or(0));
    let high = match before_ms {
        Some(before) => state_key_from(state, before),
        None => vec![STATE_PREFIX, state_index(state) + 1],
    };
    (low, high)
}

/// The key of a record in the state index.
pub fn state_key(state: TaskState, created_ms: u64, task_id: &TaskId) -> Vec<u8> {
    let mut key = state_key_from(state, created_ms);
    key.extend_from_slice(task_id.as_str().as_bytes());
    key
}

/// The first state-index key of `state` at or after `created_ms`.
pub fn state_key_from(state: TaskState, created_ms: u64) -> Vec<u8> {
    let mut key = vec![STATE_PREFIX, state_index(state)];
    key.extend_from_slice(&created_ms.to_be_bytes());
    key
}

/// The key that maps an id to its date and state.
pub fn id_key(task_id: &TaskId) -> Vec<u8> {
    let mut key = vec![ID_PREFIX];
    key.extend_from_slice(task_id.as_str().as_bytes());
    key
}

/// The first id key: a scan from here visits every id key, in id order.
pub fn id_key_prefix() -> Vec<u8> {
    vec![ID_PREFIX]
}

/// Reads an id key back; `None` for another kind of key or a damaged one.
pub fn parse_id_key(key: &[u8]) -> Option<TaskId> {
    let rest = key.strip_prefix(&[ID_PREFIX])?;
    TaskId::parse(std::str::from_utf8(rest).ok()?).ok()
}

/// The value of an id key.
pub fn id_value(created_ms: u64, state: TaskState) -> Vec<u8> {
    let mut value = created_ms.to_be_bytes().to_vec();
    value.push(state_index(state));
    value
}

/// Reads an id key's value back; `None` when it is damaged.
pub fn parse_id_value(value: &[u8]) -> Option<(u64, TaskState)> {
    let (time, rest) = value.split_first_chunk::<8>()?;
    match rest {
        [index] => Some((u64::from_be_bytes(*time), state_from_index(*index)?)),
        _ => None,
    }
}

/// A decoded date or state key: creation time and task id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedKey {
    pub created_ms: u64,
    pub task_id: TaskId,
}

/// Reads a date key back; `None` for another kind of key or a damaged one.
pub fn parse_date_key(key: &[u8]) -> Option<ListedKey> {
    let rest = key.strip_prefix(&[DATE_PREFIX])?;
    parse_time_and_id(rest)
}

/// Reads a state key of `state` back; `None` for any other key.
pub fn parse_state_key(key: &[u8], state: TaskState) -> Option<ListedKey> {
    let rest = key.strip_prefix(&[STATE_PREFIX, state_index(state)])?;
    parse_time_and_id(rest)
}

fn parse_time_and_id(bytes: &[u8]) -> Option<ListedKey> {
    let (time, id) = bytes.split_first_chunk::<8>()?;
    let task_id = TaskId::parse(std::str::from_utf8(id).ok()?).ok()?;
    Some(ListedKey { created_ms: u64::from_be_bytes(*time), task_id })
}

/// A cached record's value: the znode version (i32 big-endian) followed by the record's JSON.
pub fn record_value(version: i32, json: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(4 + json.len());
    value.extend_from_slice(&version.to_be_bytes());
    value.extend_from_slice(json);
    value
}

/// Splits a cached record's value; `None` when it is too short.
pub fn parse_record_value(value: &[u8]) -> Option<(i32, &[u8])> {
    let (version, json) = value.split_first_chunk::<4>()?;
    Some((i32::from_be_bytes(*version), json))
}
