//! What can go wrong in the RPC framework.

use super::status::ServerStatus;

/// What can go wrong in the RPC framework.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("cannot bind {address}: {source}")]
    Bind { address: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot start {what}: {source}")]
    Spawn { what: String, source: std::io::Error },
    #[error("server {name} cannot be set up while it is {status}")]
    NotStopped { name: String, status: ServerStatus },
    #[error("server {0} is not set up")]
    NotSetUp(String),
    #[error("worker pool {0} is stopped")]
    PoolStopped(String),
    #[error("a worker-pool job panicked: {0}")]
    JobPanicked(String),
    #[error("the serving thread of server {name} failed: {message}")]
    ServeThread { name: String, message: String },
    #[error("{0} was called from the thread it would wait for")]
    SelfJoin(String),
}

/// Result of this module.
pub type Result<T, E = RpcError> = std::result::Result<T, E>;
