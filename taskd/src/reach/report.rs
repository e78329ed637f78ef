//! What a member publishes about whom it cannot reach: the ephemeral
//! `/zbs/taskd/unreachable/<node id>` (JSON, schema version 1), written only when it changes.
//! Decoded defensively: a report that does not decode counts as no report.

use serde::{Deserialize, Serialize};

/// Where the reports live, one ephemeral child per reporting member.
pub const UNREACHABLE_PATH: &str = "/zbs/taskd/unreachable";

/// The report's schema version.
pub const REPORT_VERSION: u32 = 1;

/// The most peers one report may name (a cluster's members; more is not a report of ours).
pub const MAX_LOST_PEERS: usize = 64;

/// One member's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreachableReport {
    pub version: u32,
    /// The reporting member's node id.
    pub node: String,
    /// The peers it cannot reach on at least one network.
    pub lost: Vec<LostPeer>,
}

/// A peer the reporter cannot reach, on which networks, since when (the reporter's wall clock, ms
/// since the epoch: for people; the rule times reports on the reader's own clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostPeer {
    /// The peer's node id.
    pub node: String,
    /// The peer's election node, when the reporter probed it as the leader (only the leader's
    /// management port is probed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub election_node: Option<String>,
    /// Since when its dispatcher port has not accepted a connection (connects timing out or
    /// refused), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_since_ms: Option<u64>,
    /// Since when its data address has not answered the health probe's echo, if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_since_ms: Option<u64>,
}

impl UnreachableReport {
    /// The JSON stored in the report's node.
    pub fn encode(&self) -> Vec<u8> {
        // Strings, integers and options: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a report's data; an error names what is wrong.
    pub fn decode(data: &[u8]) -> Result<UnreachableReport, String> {
        let report: UnreachableReport = serde_json::from_slice(data).map_err(|error| error.to_string())?;
        if report.version != REPORT_VERSION {
            return Err(format!("unknown report version {}", report.version));
        }
        if report.lost.len() > MAX_LOST_PEERS {
            return Err(format!("names {} peers, more than {MAX_LOST_PEERS}", report.lost.len()));
        }
        Ok(report)
    }

    /// Whether the report says `election_node` (the leader) is lost on both networks.
    pub fn lost_on_both(&self, election_node: &str) -> bool {
        self.lost.iter().any(|peer| {
            peer.election_node.as_deref() == Some(election_node)
                && peer.management_since_ms.is_some()
                && peer.data_since_ms.is_some()
        })
    }
}
