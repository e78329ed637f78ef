//! The label sets of the daemon's metric families and the values some of them take (states,
//! reasons, kinds), known in advance so that every series exists at zero from the start.

use prometheus_client::encoding::EncodeLabelSet;

/// Why leadership changed hands on this node (`zbs_taskd_leader_transitions_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionReason {
    /// This node became leader.
    Elected,
    /// This leader stopped its service for a failed data network.
    DataNetworkFailed,
    /// This leader lost its ZooKeeper connection and stepped down (the session may live on).
    ZookeeperLost,
    /// This leader's ZooKeeper session expired.
    SessionExpired,
    /// This leader stopped on a signal or an operator's request.
    Shutdown,
    /// This leader gave way to a member of higher priority.
    Priority,
    /// This leader could not hold the VIP.
    VipFailed,
    /// This leader could not run its dispatcher.
    DispatcherFailed,
}

impl TransitionReason {
    pub const ALL: [TransitionReason; 8] = [
        TransitionReason::Elected,
        TransitionReason::DataNetworkFailed,
        TransitionReason::ZookeeperLost,
        TransitionReason::SessionExpired,
        TransitionReason::Shutdown,
        TransitionReason::Priority,
        TransitionReason::VipFailed,
        TransitionReason::DispatcherFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TransitionReason::Elected => "elected",
            TransitionReason::DataNetworkFailed => "data_network_failed",
            TransitionReason::ZookeeperLost => "zookeeper_lost",
            TransitionReason::SessionExpired => "session_expired",
            TransitionReason::Shutdown => "shutdown",
            TransitionReason::Priority => "priority",
            TransitionReason::VipFailed => "vip_failed",
            TransitionReason::DispatcherFailed => "dispatcher_failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VipLabels {
    pub service: String,
    pub vip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VipErrorLabels {
    pub service: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    #[prometheus(flatten)]
    pub task: TaskTypeLabels,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskTypeLabels {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub r#type: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub server: String,
    pub method: String,
    pub route: String,
    pub status: String,
}

/// The states of `zbs_taskd_service_state`.
pub const SERVICE_STATES: &[&str] = &["running", "stopping", "stopped"];

/// The reasons of `zbs_taskd_service_stops_total` (see `task_server::StopReason`).
pub const STOP_REASONS: &[&str] = &["requested", "network_failure", "vip_failure", "dispatcher_failed"];

/// The kinds of `zbs_taskd_vip_errors_total` (see `Metrics::vip_error`).
pub const VIP_ERROR_KINDS: &[&str] = &["bad_request", "not_found", "netlink", "garp", "interface", "socket", "fenced"];

/// The states of `zbs_taskd_runners`.
pub const RUNNER_STATES: &[&str] = &["up", "draining"];

/// The states of `zbs_taskd_zookeeper_session_state`.
pub const ZK_STATES: &[&str] = &["connected", "read_only", "disconnected", "expired", "closed", "auth_failed"];

/// The operations of `zbs_taskd_zookeeper_operation_seconds` created at start (others appear
/// at their first request): the sessions' requests (`quorum::OperationObserver`) and the
/// members' read (`read_members`: a listing and its reads, as the status answers wait for it).
pub const ZK_OPERATIONS: &[&str] = &[
    "exists",
    "get_data",
    "get_data_batch",
    "list_children",
    "create",
    "set_data",
    "set_data_batch",
    "delete",
    "multi",
    "read_members",
];

/// The states of `zbs_taskd_data_network_state`.
pub const HEALTH_STATES: &[&str] = &["unknown", "valid", "invalid"];

/// The label of a session state in `zbs_taskd_zookeeper_session_state`.
pub fn zk_state_label(state: quorum::ZkSessionState) -> &'static str {
    match state {
        quorum::ZkSessionState::SyncConnected => "connected",
        quorum::ZkSessionState::ConnectedReadOnly => "read_only",
        quorum::ZkSessionState::Disconnected => "disconnected",
        quorum::ZkSessionState::Expired => "expired",
        quorum::ZkSessionState::Closed => "closed",
        quorum::ZkSessionState::AuthFailed => "auth_failed",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub r#type: String,
    pub from: String,
    pub to: String,
}
