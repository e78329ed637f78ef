//! What a member publishes about itself in its election node (JSON), and how the election reads
//! the nodes back: names give the sequence, data gives the member; anything malformed is skipped
//! with a warning, never a panic.

use serde::{Deserialize, Serialize};

use crate::error::ZkError;
use crate::zk::ZkSession;

/// The prefix of every election node's name; ZooKeeper appends the sequence number.
pub const MEMBER_NODE_PREFIX: &str = "member-";

/// What a member says about itself, stored as JSON in its election node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// A stable name of the member (for example the host name).
    pub id: String,
    /// Where the member serves (for example its management address and port).
    pub address: String,
    /// With priorities enabled, a member with a strictly higher priority takes over leadership.
    #[serde(default)]
    pub priority: i32,
    /// The member's own view of its health (for example its data network).
    #[serde(default = "healthy_by_default")]
    pub healthy: bool,
    /// The member's data-network address, which its peers probe; absent in older members' data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_address: Option<String>,
}

fn healthy_by_default() -> bool {
    true
}

impl MemberInfo {
    /// A healthy member with priority 0.
    pub fn new(id: impl Into<String>, address: impl Into<String>) -> MemberInfo {
        MemberInfo { id: id.into(), address: address.into(), priority: 0, healthy: true, data_address: None }
    }

    /// The JSON stored in the election node.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising a struct of strings, an integer and a bool cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes an election node's data; `path` names the node in the error.
    pub fn decode(path: &str, data: &[u8]) -> Result<MemberInfo, ZkError> {
        serde_json::from_slice(data)
            .map_err(|error| ZkError::CorruptData { path: path.to_string(), reason: error.to_string() })
    }
}

/// One member as the election sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The election node's sequence number: the lowest leads (priority aside).
    pub sequence: i64,
    /// The election node's name under the service path.
    pub node_name: String,
    /// The session that owns the node.
    pub session_id: i64,
    pub info: MemberInfo,
}

/// The sequence number of an election node called `name`, or `None` when the name is not one
/// of ours.
pub fn parse_sequence(name: &str) -> Option<i64> {
    let digits = name.strip_prefix(MEMBER_NODE_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Election node names sorted by sequence, with the names that are not election nodes left out
/// (each logged once per listing).
pub fn sorted_member_nodes(service_path: &str, names: &[String]) -> Vec<(i64, String)> {
    let mut nodes: Vec<(i64, String)> = Vec::with_capacity(names.len());
    for name in names {
        match parse_sequence(name) {
            Some(sequence) => nodes.push((sequence, name.clone())),
            None => tracing::warn!(
                path = %format!("{service_path}/{name}"),
                "skipping a node under the election path whose name is not member-<sequence>"
            ),
        }
    }
    nodes.sort();
    nodes
}

/// Reads the data of the election nodes `nodes` (sorted `(sequence, name)` pairs under
/// `service_path`) in one pipelined round trip. Nodes gone meanwhile are left out; nodes with
/// corrupt data are left out with a warning naming the node.
pub fn read_member_nodes(
    session: &ZkSession,
    service_path: &str,
    nodes: Vec<(i64, String)>,
) -> Result<Vec<Member>, ZkError> {
    let paths: Vec<String> = nodes.iter().map(|(_, node_name)| format!("{service_path}/{node_name}")).collect();
    let replies = session.get_data_of_each(&paths)?;
    let mut members = Vec::with_capacity(nodes.len());
    for (((sequence, node_name), path), reply) in nodes.into_iter().zip(&paths).zip(replies) {
        let Some((data, stat)) = reply? else { continue };
        match MemberInfo::decode(path, &data) {
            Ok(info) => members.push(Member { sequence, node_name, session_id: stat.ephemeral_owner, info }),
            Err(error) => tracing::warn!(%error, "skipping an election node with corrupt member data"),
        }
    }
    Ok(members)
}

/// The members under `service_path` as ZooKeeper holds them now, sorted by sequence.
pub fn read_members(session: &ZkSession, service_path: &str) -> Result<Vec<Member>, ZkError> {
    let names = session.children(service_path)?;
    read_member_nodes(session, service_path, sorted_member_nodes(service_path, &names))
}
