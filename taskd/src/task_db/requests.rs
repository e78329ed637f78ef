//! Request znodes: `/zbs/taskd/requests/<request_id>` names the task a client's idempotency key
//! created and keeps what the client asked, so that a retry returns the original task and a
//! reuse of the key with another body is told apart. A request znode is created in one multi-op
//! with its task's znode (so no leader can know the task and forget the key, or the reverse),
//! and deleted with it when the task is purged.

use quorum::zk::{NodeKind, ZkOp};
use quorum::{ZkError, ZkSession};
use serde::{Deserialize, Serialize};

use super::error::{DbError, Result};
use super::layout::{request_path, task_path};
use crate::task::{RequestId, RuntimeWindow, TaskId, TaskKind, TaskRecord};

/// The version of the request znode's layout this build writes and reads.
pub const REQUEST_SCHEMA_VERSION: u32 = 1;

/// What a client asked for in a submit: a retry with the same key must ask for the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitBody {
    pub kind: TaskKind,
    #[serde(default)]
    pub runtime_window: Option<RuntimeWindow>,
    /// The client allowed a copy over a destination that holds data.
    #[serde(default)]
    pub overwrite: bool,
}

/// The data of a request znode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestNode {
    pub schema_version: u32,
    pub task_id: TaskId,
    pub body: SubmitBody,
}

/// Creates the znode of a new task and, when it has a `request_id`, its request znode, in one
/// multi-op: both or neither. `RequestTaken` when the request znode exists (another submit with
/// the key won: read it with [`read_request`]), `Exists` when the task id is taken.
pub fn create_task_with_request(session: &ZkSession, record: &TaskRecord, body: &SubmitBody) -> Result<()> {
    let Some(request_id) = record.request_id.as_ref() else {
        return super::create_node(session, record);
    };
    let task_data = record.encode().map_err(|source| DbError::Record {
        context: "encode the new task",
        task_id: record.task_id.to_string(),
        source,
    })?;
    let node =
        RequestNode { schema_version: REQUEST_SCHEMA_VERSION, task_id: record.task_id.clone(), body: body.clone() };
    let request_data = serde_json::to_vec(&node).map_err(|error| DbError::Rejected {
        task_id: record.task_id.clone(),
        reason: format!("cannot encode the request {request_id}: {error}"),
    })?;
    let (task, request) = (task_path(&record.task_id), request_path(request_id));
    let operations = [
        ZkOp::Create { path: task.clone(), data: task_data, kind: NodeKind::Persistent },
        ZkOp::Create { path: request.clone(), data: request_data, kind: NodeKind::Persistent },
    ];
    match session.multi(&operations) {
        Ok(_) => Ok(()),
        Err(ZkError::NodeExists { path, .. }) if path == request => {
            Err(DbError::RequestTaken { request_id: request_id.clone() })
        }
        Err(ZkError::NodeExists { .. }) => Err(DbError::Exists { task_id: record.task_id.clone() }),
        Err(source) => Err(DbError::Zk { context: "create a task record with its request", source }),
    }
}

/// Reads the request znode of `request_id`; `None` when there is none (never used, or purged
/// with its task). A znode that does not decode is a `Rejected` error naming it.
pub fn read_request(session: &ZkSession, request_id: &RequestId) -> Result<Option<RequestNode>> {
    let path = request_path(request_id);
    let Some((data, _)) = session.get_data(&path).map_err(DbError::zk("read a request"))? else {
        return Ok(None);
    };
    let node: RequestNode = serde_json::from_slice(&data)
        .map_err(|error| DbError::BadRequestNode { request_id: request_id.clone(), reason: error.to_string() })?;
    if node.schema_version != REQUEST_SCHEMA_VERSION {
        return Err(DbError::BadRequestNode {
            request_id: request_id.clone(),
            reason: format!("schema {} (this build reads {REQUEST_SCHEMA_VERSION})", node.schema_version),
        });
    }
    Ok(Some(node))
}
