//! A ZooKeeper session for coroutines: wraps the async `zookeeper-client` so that every call parks
//! only the calling coroutine (through `runtime::block_on`), maps its errors onto [`ZkError`], and
//! adds the helpers the rest of the project needs (ensure path, ephemeral and sequential nodes,
//! conditional writes, multi-op, watches, ephemeral-owner check) plus an explicit [`ZkSession::close`].
//!
//! # Shutdown
//! `zookeeper-client` has no `close()`: its session ends (CloseSession is sent, the server deletes
//! the session's ephemeral nodes at once) when the last `Client` clone is dropped. A `ZkSession`
//! holds the only long-lived clone; every request borrows a short-lived one for its duration.
//! `close` therefore: (1) takes the long-lived clone out, so later requests fail with
//! `SessionClosed`; (2) drops it, which ends the session once in-flight requests return theirs;
//! (3) waits, up to a deadline, until the session state reports `Closed`.

use std::future::Future;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use zookeeper_client::{
    Acls, Client, CreateMode, CreateOptions, EventType, OneshotWatcher, SessionState, StateWatcher,
};

use crate::error::{Result, ZkError};
use crate::observer::ZkObserver;

/// How to reach ZooKeeper and what session to ask for.
#[derive(Debug, Clone)]
pub struct ZkConfig {
    /// `host:port[,host:port...]`, loopback in tests.
    pub connect_string: String,
    /// The session timeout asked of the server (it may negotiate another within its bounds).
    pub session_timeout: Duration,
    /// How long one request may wait for its answer; requests issued while disconnected wait for
    /// the reconnection, so this is longer than the session timeout by default.
    pub operation_timeout: Duration,
    /// How long `connect` tries before giving up.
    pub connect_timeout: Duration,
    /// Told of every request's operation and latency (none by default).
    pub observer: ZkObserver,
}

impl ZkConfig {
    /// A configuration with the given session timeout and derived deadlines.
    pub fn new(connect_string: impl Into<String>, session_timeout: Duration) -> ZkConfig {
        ZkConfig {
            connect_string: connect_string.into(),
            session_timeout,
            operation_timeout: session_timeout * 2,
            connect_timeout: session_timeout * 2,
            observer: ZkObserver::default(),
        }
    }
}

/// The session's state as the client last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZkSessionState {
    /// The connection is down; the session may still be alive on the server.
    Disconnected,
    /// Connected and serving requests.
    SyncConnected,
    /// Connected to a read-only server: reads only. Treated as disconnected for leadership.
    ConnectedReadOnly,
    /// The server expired the session (or the client declared it expired locally): final.
    Expired,
    /// The session was closed on purpose: final.
    Closed,
    /// Authentication failed: final.
    AuthFailed,
}

impl ZkSessionState {
    fn from_client(state: SessionState) -> ZkSessionState {
        match state {
            SessionState::Disconnected => ZkSessionState::Disconnected,
            SessionState::SyncConnected => ZkSessionState::SyncConnected,
            SessionState::ConnectedReadOnly => ZkSessionState::ConnectedReadOnly,
            SessionState::Expired => ZkSessionState::Expired,
            SessionState::Closed => ZkSessionState::Closed,
            SessionState::AuthFailed => ZkSessionState::AuthFailed,
        }
    }

    /// True for the states a session never leaves.
    pub fn is_final(self) -> bool {
        matches!(self, ZkSessionState::Expired | ZkSessionState::Closed | ZkSessionState::AuthFailed)
    }
}

/// The kind of node a create makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Persistent,
    PersistentSequential,
    Ephemeral,
    EphemeralSequential,
}

impl NodeKind {
    fn create_mode(self) -> CreateMode {
        match self {
            NodeKind::Persistent => CreateMode::Persistent,
            NodeKind::PersistentSequential => CreateMode::PersistentSequential,
            NodeKind::Ephemeral => CreateMode::Ephemeral,
            NodeKind::EphemeralSequential => CreateMode::EphemeralSequential,
        }
    }

    fn options(self) -> CreateOptions<'static> {
        self.create_mode().with_acls(Acls::anyone_all())
    }
}

/// The parts of a znode's `Stat` the project uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStat {
    /// Data version, for conditional writes.
    pub version: i32,
    /// Children version.
    pub children_version: i32,
    /// The owning session of an ephemeral node; 0 for a persistent one.
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub n_children: i32,
    pub created_zxid: i64,
    pub modified_zxid: i64,
}

impl NodeStat {
    fn from_client(stat: &zookeeper_client::Stat) -> NodeStat {
        NodeStat {
            version: stat.version,
            children_version: stat.cversion,
            ephemeral_owner: stat.ephemeral_owner,
            data_length: stat.data_length,
            n_children: stat.num_children,
            created_zxid: stat.czxid,
            modified_zxid: stat.mzxid,
        }
    }
}

/// A node's data with its stat.
pub type NodeData = (Vec<u8>, NodeStat);

/// A node made by `create`: its full path and, for sequential nodes, its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedNode {
    pub path: String,
    pub sequence: Option<i64>,
}

/// One operation of a multi-op.
#[derive(Debug, Clone)]
pub enum ZkOp {
    Create { path: String, data: Vec<u8>, kind: NodeKind },
    SetData { path: String, data: Vec<u8>, expected_version: Option<i32> },
    Delete { path: String, expected_version: Option<i32> },
    CheckVersion { path: String, version: i32 },
}

impl ZkOp {
    fn path(&self) -> &str {
        match self {
            ZkOp::Create { path, .. }
            | ZkOp::SetData { path, .. }
            | ZkOp::Delete { path, .. }
            | ZkOp::CheckVersion { path, .. } => path,
        }
    }
}

/// The result of one operation of a successful multi-op, in the order of the operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZkOpResult {
    Created { path: String },
    DataSet { stat: NodeStat },
    Deleted,
    Checked,
}

/// What a one-shot watch saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    Created {
        path: String,
    },
    Deleted {
        path: String,
    },
    DataChanged {
        path: String,
    },
    ChildrenChanged {
        path: String,
    },
    /// The session ended (expired or closed) before the node changed: the watch is gone.
    SessionEnded {
        state: ZkSessionState,
    },
}

/// A one-shot watch set by `exists_and_watch`, `get_data_and_watch` or `children_and_watch`.
/// It survives reconnections within the session (the client re-sets it) and ends with the session.
#[derive(Debug)]
pub struct NodeWatch {
    watcher: OneshotWatcher,
}

impl NodeWatch {
    /// Waits until the watch fires.
    pub async fn changed(self) -> NodeEvent {
        let event = self.watcher.changed().await;
        let path = event.path;
        match event.event_type {
            EventType::NodeCreated => NodeEvent::Created { path },
            EventType::NodeDeleted => NodeEvent::Deleted { path },
            EventType::NodeDataChanged => NodeEvent::DataChanged { path },
            EventType::NodeChildrenChanged => NodeEvent::ChildrenChanged { path },
            EventType::Session => NodeEvent::SessionEnded { state: ZkSessionState::from_client(event.session_state) },
        }
    }

    /// Waits (parking only the coroutine) until the watch fires.
    pub fn wait(self) -> NodeEvent {
        runtime::block_on(self.changed())
    }
}

/// Follows a session's state changes.
#[derive(Debug, Clone)]
pub struct ZkStateWatcher {
    watcher: StateWatcher,
}

impl ZkStateWatcher {
    /// Waits for the next state change. After a final state it never returns.
    pub async fn changed(&mut self) -> ZkSessionState {
        ZkSessionState::from_client(self.watcher.changed().await)
    }

    /// The latest state, without consuming it.
    pub fn current(&self) -> ZkSessionState {
        ZkSessionState::from_client(self.watcher.peek_state())
    }
}

/// One ZooKeeper session. Its methods park only the calling coroutine (or thread).
pub struct ZkSession {
    /// The long-lived client clone; `None` once `close` has begun.
    client: Mutex<Option<Client>>,
    state_watcher: StateWatcher,
    session_id: i64,
    session_timeout: Duration,
    operation_timeout: Duration,
    observer: ZkObserver,
}

impl std::fmt::Debug for ZkSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkSession")
            .field("session_id", &format_args!("{:#x}", self.session_id))
            .field("session_timeout", &self.session_timeout)
            .finish()
    }
}

impl ZkSession {
    /// Establishes a new session.
    pub fn connect(config: &ZkConfig) -> Result<ZkSession> {
        let started = Instant::now();
        let connector = Client::connector().with_session_timeout(config.session_timeout);
        let connect_string = config.connect_string.clone();
        let client = runtime::block_on_timeout(connector.connect(&connect_string), config.connect_timeout)
            .ok_or_else(|| ZkError::Timeout {
                operation: "connect",
                path: config.connect_string.clone(),
                timeout: config.connect_timeout,
            })?
            .map_err(|error| ZkError::from_client("connect", &config.connect_string, error))?;
        let session_id = client.session_id().0;
        let session_timeout = client.session_timeout();
        tracing::info!(
            session_id = format_args!("{session_id:#x}"),
            negotiated_timeout_ms = session_timeout.as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "ZooKeeper session established"
        );
        Ok(ZkSession {
            state_watcher: client.state_watcher(),
            client: Mutex::new(Some(client)),
            session_id,
            session_timeout,
            operation_timeout: config.operation_timeout.max(session_timeout),
            observer: config.observer.clone(),
        })
    }

    /// The server's id of this session (what `ephemeralOwner` holds for its nodes).
    pub fn session_id(&self) -> i64 {
        self.session_id
    }

    /// The session timeout the server granted.
    pub fn session_timeout(&self) -> Duration {
        self.session_timeout
    }

    /// The session's latest state.
    pub fn state(&self) -> ZkSessionState {
        ZkSessionState::from_client(self.state_watcher.peek_state())
    }

    /// A watcher of the session's future state changes.
    pub fn state_watcher(&self) -> ZkStateWatcher {
        let mut watcher = self.state_watcher.clone();
        watcher.state();
        ZkStateWatcher { watcher }
    }

    /// True until `close` has begun.
    pub fn is_open(&self) -> bool {
        self.client.lock().is_some()
    }

    /// A short-lived client clone for one request; the lock is not held while the request runs.
    fn client(&self, operation: &'static str, path: &str) -> Result<Client> {
        self.client.lock().clone().ok_or_else(|| ZkError::SessionClosed { operation, path: path.to_string() })
    }

    fn wait<T, F>(&self, operation: &'static str, path: &str, future: F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, zookeeper_client::Error>>,
    {
        let started = Instant::now();
        let answer = runtime::block_on_timeout(future, self.operation_timeout);
        self.observer.finished(metric_name(operation), started);
        match answer {
            Some(result) => result.map_err(|error| ZkError::from_client(operation, path, error)),
            None => Err(ZkError::Timeout { operation, path: path.to_string(), timeout: self.operation_timeout }),
        }
    }

    /// Creates `path` and its missing ancestors as persistent nodes; an existing path is fine.
    pub fn ensure_path(&self, path: &str) -> Result<()> {
        let client = self.client("ensure path", path)?;
        let options = NodeKind::Persistent.options();
        self.wait("ensure path", path, client.mkdir(path, &options))
    }

    /// Creates a node of `kind`. For sequential kinds `path` is the prefix and the result holds
    /// the full path and the sequence number.
    pub fn create(&self, path: &str, data: &[u8], kind: NodeKind) -> Result<CreatedNode> {
        let client = self.client("create", path)?;
        let options = kind.options();
        let (_stat, sequence) = self.wait("create", path, client.create(path, data, &options))?;
        Ok(match kind {
            NodeKind::PersistentSequential | NodeKind::EphemeralSequential => {
                CreatedNode { path: format!("{path}{sequence}"), sequence: Some(sequence.into_i64()) }
            }
            NodeKind::Persistent | NodeKind::Ephemeral => CreatedNode { path: path.to_string(), sequence: None },
        })
    }

    /// Creates an ephemeral node: it lives as long as this session.
    pub fn create_ephemeral(&self, path: &str, data: &[u8]) -> Result<CreatedNode> {
        self.create(path, data, NodeKind::Ephemeral)
    }

    /// Creates an ephemeral node named `prefix` followed by the parent's next sequence number.
    pub fn create_ephemeral_sequential(&self, prefix: &str, data: &[u8]) -> Result<CreatedNode> {
        self.create(prefix, data, NodeKind::EphemeralSequential)
    }

    /// Creates a persistent node.
    pub fn create_persistent(&self, path: &str, data: &[u8]) -> Result<CreatedNode> {
        self.create(path, data, NodeKind::Persistent)
    }

    /// The node's stat, or `None` when it does not exist.
    pub fn exists(&self, path: &str) -> Result<Option<NodeStat>> {
        let client = self.client("exists", path)?;
        let stat = self.wait("exists", path, client.check_stat(path))?;
        Ok(stat.as_ref().map(NodeStat::from_client))
    }

    /// Like `exists`, leaving a watch that fires when the node is created, changed or deleted.
    pub fn exists_and_watch(&self, path: &str) -> Result<(Option<NodeStat>, NodeWatch)> {
        let client = self.client("exists and watch", path)?;
        let (stat, watcher) = self.wait("exists and watch", path, client.check_and_watch_stat(path))?;
        Ok((stat.as_ref().map(NodeStat::from_client), NodeWatch { watcher }))
    }

    /// The node's data and stat, or `None` when it does not exist.
    pub fn get_data(&self, path: &str) -> Result<Option<NodeData>> {
        let client = self.client("get data", path)?;
        match self.wait("get data", path, client.get_data(path)) {
            Ok((data, stat)) => Ok(Some((data, NodeStat::from_client(&stat)))),
            Err(ZkError::NoNode { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `get_data` of every path, the requests pipelined (one round trip for all). Each result is
    /// that path's own: `None` for a node that does not exist.
    pub fn get_data_of_each(&self, paths: &[String]) -> Result<Vec<Result<Option<NodeData>>>> {
        let first_path = paths.first().map(String::as_str).unwrap_or("");
        let client = self.client("get data", first_path)?;
        // The client sends each request when its future is made, so all are in flight at once.
        let started = Instant::now();
        let requests: Vec<_> = paths.iter().map(|path| client.get_data(path)).collect();
        let replies = runtime::block_on_timeout(futures::future::join_all(requests), self.operation_timeout);
        self.observer.finished("get_data_batch", started);
        let replies = replies.ok_or_else(|| ZkError::Timeout {
            operation: "get data",
            path: first_path.to_string(),
            timeout: self.operation_timeout,
        })?;
        Ok(replies
            .into_iter()
            .zip(paths)
            .map(|(reply, path)| match reply {
                Ok((data, stat)) => Ok(Some((data, NodeStat::from_client(&stat)))),
                Err(zookeeper_client::Error::NoNode) => Ok(None),
                Err(error) => Err(ZkError::from_client("get data", path, error)),
            })
            .collect())
    }

    /// Like `get_data`, leaving a watch that fires when the data changes or the node goes.
    pub fn get_data_and_watch(&self, path: &str) -> Result<(Vec<u8>, NodeStat, NodeWatch)> {
        let client = self.client("get data and watch", path)?;
        let (data, stat, watcher) = self.wait("get data and watch", path, client.get_and_watch_data(path))?;
        Ok((data, NodeStat::from_client(&stat), NodeWatch { watcher }))
    }

    /// The names (not paths) of the node's children, unsorted.
    pub fn children(&self, path: &str) -> Result<Vec<String>> {
        let client = self.client("list children", path)?;
        self.wait("list children", path, client.list_children(path))
    }

    /// Like `children`, leaving a watch that fires when a child is added or removed.
    pub fn children_and_watch(&self, path: &str) -> Result<(Vec<String>, NodeWatch)> {
        let client = self.client("list and watch children", path)?;
        let (children, watcher) = self.wait("list and watch children", path, client.list_and_watch_children(path))?;
        Ok((children, NodeWatch { watcher }))
    }

    /// Writes the node's data; with `expected_version` only if the node still has that version.
    pub fn set_data(&self, path: &str, data: &[u8], expected_version: Option<i32>) -> Result<NodeStat> {
        let client = self.client("set data", path)?;
        let stat = self.wait("set data", path, client.set_data(path, data, expected_version))?;
        Ok(NodeStat::from_client(&stat))
    }

    /// `set_data` of every `(path, data, expected_version)`, the requests pipelined (one round
    /// trip for all, each still conditional on its own version). Each result is that write's
    /// own; the outer error is a timeout or a closed session.
    pub fn set_data_of_each(&self, writes: &[(String, Vec<u8>, Option<i32>)]) -> Result<Vec<Result<NodeStat>>> {
        let first_path = writes.first().map(|(path, _, _)| path.as_str()).unwrap_or("");
        let client = self.client("set data", first_path)?;
        // The client sends each request when its future is made, so all are in flight at once.
        let started = Instant::now();
        let requests: Vec<_> = writes
            .iter()
            .map(|(path, data, expected_version)| client.set_data(path, data, *expected_version))
            .collect();
        let replies = runtime::block_on_timeout(futures::future::join_all(requests), self.operation_timeout);
        self.observer.finished("set_data_batch", started);
        let replies = replies.ok_or_else(|| ZkError::Timeout {
            operation: "set data",
            path: first_path.to_string(),
            timeout: self.operation_timeout,
        })?;
        Ok(replies
            .into_iter()
            .zip(writes)
            .map(|(reply, (path, _, _))| match reply {
                Ok(stat) => Ok(NodeStat::from_client(&stat)),
                Err(error) => Err(ZkError::from_client("set data", path, error)),
            })
            .collect())
    }

    /// Deletes the node; with `expected_version` only if the node still has that version.
    pub fn delete(&self, path: &str, expected_version: Option<i32>) -> Result<()> {
        let client = self.client("delete", path)?;
        self.wait("delete", path, client.delete(path, expected_version))
    }

    /// Applies every operation or none. An error names the operation that failed.
    pub fn multi(&self, operations: &[ZkOp]) -> Result<Vec<ZkOpResult>> {
        let first_path = operations.first().map(ZkOp::path).unwrap_or("").to_string();
        let client = self.client("multi", &first_path)?;
        let mut writer = client.new_multi_writer();
        for operation in operations {
            let added = match operation {
                ZkOp::Create { path, data, kind } => writer.add_create(path, data, &kind.options()),
                ZkOp::SetData { path, data, expected_version } => writer.add_set_data(path, data, *expected_version),
                ZkOp::Delete { path, expected_version } => writer.add_delete(path, *expected_version),
                ZkOp::CheckVersion { path, version } => writer.add_check_version(path, *version),
            };
            added.map_err(|error| ZkError::from_client("multi", operation.path(), error))?;
        }
        let started = Instant::now();
        let outcome = runtime::block_on_timeout(writer.commit(), self.operation_timeout);
        self.observer.finished("multi", started);
        let outcome = outcome.ok_or_else(|| ZkError::Timeout {
            operation: "multi",
            path: first_path.clone(),
            timeout: self.operation_timeout,
        })?;
        let results = outcome.map_err(|error| match error {
            zookeeper_client::MultiWriteError::RequestFailed { source } => {
                ZkError::from_client("multi", &first_path, source)
            }
            zookeeper_client::MultiWriteError::OperationFailed { index, source } => {
                let path = operations.get(index).map(ZkOp::path).unwrap_or(&first_path);
                ZkError::from_client("multi", path, source)
            }
        })?;
        Ok(results
            .into_iter()
            .map(|result| match result {
                zookeeper_client::MultiWriteResult::Create { path, .. } => ZkOpResult::Created { path },
                zookeeper_client::MultiWriteResult::SetData { stat } => {
                    ZkOpResult::DataSet { stat: NodeStat::from_client(&stat) }
                }
                zookeeper_client::MultiWriteResult::Delete => ZkOpResult::Deleted,
                _ => ZkOpResult::Checked,
            })
            .collect())
    }

    /// True when the node exists and is an ephemeral node of this very session: what a member
    /// checks after a reconnection before trusting a node it believes is its own.
    pub fn is_ephemeral_owner(&self, path: &str) -> Result<bool> {
        Ok(self.exists(path)?.is_some_and(|stat| stat.ephemeral_owner == self.session_id))
    }

    /// Ends the session on purpose so that its ephemeral nodes vanish at once (see `# Shutdown`).
    /// Idempotent. Returns the final state, or `Timeout` when `Closed` was not reported in time
    /// (the server is unreachable; the session then ends by expiry).
    pub fn close(&self, deadline: Duration) -> Result<ZkSessionState> {
        let started = Instant::now();
        let client = self.client.lock().take();
        let mut watcher = self.state_watcher.clone();
        if client.is_none() && !watcher.peek_state().is_terminated() {
            // A concurrent close is under way; wait for its outcome as well.
            tracing::debug!(session_id = format_args!("{:#x}", self.session_id), "close already begun");
        }
        drop(client);
        let closed = runtime::block_on_timeout(
            async move {
                loop {
                    let state = watcher.state();
                    if state.is_terminated() {
                        return state;
                    }
                    watcher.changed().await;
                }
            },
            deadline,
        );
        match closed {
            Some(state) => {
                let state = ZkSessionState::from_client(state);
                tracing::info!(
                    session_id = format_args!("{:#x}", self.session_id),
                    ?state,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "ZooKeeper session closed"
                );
                Ok(state)
            }
            None => Err(ZkError::Timeout {
                operation: "close session",
                path: format!("{:#x}", self.session_id),
                timeout: deadline,
            }),
        }
    }
}

impl Drop for ZkSession {
    fn drop(&mut self) {
        if self.client.get_mut().is_some() {
            tracing::debug!(
                session_id = format_args!("{:#x}", self.session_id),
                "ZooKeeper session dropped without close; it closes once its last request returns"
            );
        }
    }
}

/// The observer's name of an operation (the error messages' name, spaces as underscores).
fn metric_name(operation: &'static str) -> &'static str {
    match operation {
        "ensure path" => "ensure_path",
        "exists and watch" => "exists_and_watch",
        "get data" => "get_data",
        "get data and watch" => "get_data_and_watch",
        "list children" => "list_children",
        "list and watch children" => "list_and_watch_children",
        "set data" => "set_data",
        other => other,
    }
}
