//! The typed errors of the quorum crate: every ZooKeeper failure is mapped onto one of these, with
//! the operation and the path it concerned, so callers match on kinds instead of strings.

use std::time::Duration;

/// The crate's result type.
pub type Result<T, E = ZkError> = std::result::Result<T, E>;

/// What went wrong talking to ZooKeeper (or reading what it holds).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZkError {
    /// The node (or, for a create, its parent) does not exist.
    #[error("{operation} {path}: no such node")]
    NoNode { operation: &'static str, path: String },
    /// A create found the node already there.
    #[error("{operation} {path}: the node already exists")]
    NodeExists { operation: &'static str, path: String },
    /// A conditional write or delete saw another version than the one it expected.
    #[error("{operation} {path}: the node's version is not the expected one")]
    BadVersion { operation: &'static str, path: String },
    /// A delete found children under the node.
    #[error("{operation} {path}: the node has children")]
    NotEmpty { operation: &'static str, path: String },
    /// A create under an ephemeral node.
    #[error("{operation} {path}: ephemeral nodes cannot have children")]
    NoChildrenForEphemerals { operation: &'static str, path: String },
    /// The ACLs refused the operation.
    #[error("{operation} {path}: not authorised")]
    NoAuth { operation: &'static str, path: String },
    /// The connection dropped while the request was in flight; the session may still be alive.
    #[error("{operation} {path}: connection lost ({detail})")]
    ConnectionLoss { operation: &'static str, path: String, detail: String },
    /// The session has expired: it is gone for good, with its ephemeral nodes and watches.
    #[error("{operation} {path}: the session has expired")]
    SessionExpired { operation: &'static str, path: String },
    /// The session was closed (by `close`, or it failed for good).
    #[error("{operation} {path}: the session is closed")]
    SessionClosed { operation: &'static str, path: String },
    /// No answer within the deadline.
    #[error("{operation} {path}: no answer within {timeout:?}")]
    Timeout { operation: &'static str, path: String, timeout: Duration },
    /// The request was malformed (a bad path, an empty ACL list, ...).
    #[error("{operation} {path}: bad arguments ({detail})")]
    BadArguments { operation: &'static str, path: String, detail: String },
    /// A node's data could not be decoded.
    #[error("{path}: corrupt data ({reason})")]
    CorruptData { path: String, reason: String },
    /// Any other ZooKeeper error code.
    #[error("{operation} {path}: {detail}")]
    Other { operation: &'static str, path: String, detail: String },
}

impl ZkError {
    /// Maps a client error of `operation` on `path` onto the typed kind.
    pub(crate) fn from_client(operation: &'static str, path: &str, error: zookeeper_client::Error) -> ZkError {
        use zookeeper_client::Error as ClientError;
        let path = path.to_string();
        match error {
            ClientError::NoNode => ZkError::NoNode { operation, path },
            ClientError::NodeExists => ZkError::NodeExists { operation, path },
            ClientError::BadVersion => ZkError::BadVersion { operation, path },
            ClientError::NotEmpty => ZkError::NotEmpty { operation, path },
            ClientError::NoChildrenForEphemerals => ZkError::NoChildrenForEphemerals { operation, path },
            ClientError::NoAuth | ClientError::AuthFailed => ZkError::NoAuth { operation, path },
            ClientError::SessionExpired | ClientError::SessionMoved => ZkError::SessionExpired { operation, path },
            ClientError::ClientClosed => ZkError::SessionClosed { operation, path },
            ClientError::BadArguments(detail) => ZkError::BadArguments { operation, path, detail: detail.to_string() },
            ClientError::InvalidAcl => ZkError::BadArguments { operation, path, detail: "invalid ACL".to_string() },
            // The client reports a silent server ("no response from connection") as a custom
            // error, not as ConnectionLoss (DESIGN section 6); both mean the same to callers.
            error @ (ClientError::ConnectionLoss | ClientError::Custom(_) | ClientError::Timeout) => {
                ZkError::ConnectionLoss { operation, path, detail: error.to_string() }
            }
            other => ZkError::Other { operation, path, detail: other.to_string() },
        }
    }

    /// True when the request may not have reached the server and the session may still live:
    /// wait for the session to reconnect (or expire) and retry.
    pub fn is_connection_loss(&self) -> bool {
        matches!(self, ZkError::ConnectionLoss { .. } | ZkError::Timeout { .. })
    }

    /// True when the session can never serve another request.
    pub fn is_session_gone(&self) -> bool {
        matches!(self, ZkError::SessionExpired { .. } | ZkError::SessionClosed { .. })
    }

    /// True for "no such node".
    pub fn is_no_node(&self) -> bool {
        matches!(self, ZkError::NoNode { .. })
    }
}

/// Why a quorum member could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// `initialize` (or `join`) was called twice.
    #[error("the quorum member is already initialized")]
    AlreadyInitialized,
    /// `run` or `start` before `initialize`.
    #[error("the quorum member is not initialized")]
    NotInitialized,
    /// The loop has been stopped; nothing can be scheduled on it any more.
    #[error("the quorum loop has stopped")]
    LoopStopped,
    /// The loop could not run (already running, nested, or run before).
    #[error("the quorum loop could not run: {0}")]
    Run(#[from] runtime::RunError),
    /// The server thread could not be started.
    #[error("could not start the quorum server thread: {0}")]
    SpawnThread(#[from] std::io::Error),
    /// The configuration is unusable.
    #[error("bad quorum configuration: {0}")]
    BadConfig(String),
}
