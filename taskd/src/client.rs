//! The client of the dispatcher API (`/api/v2/task_center/...`), used by `zbs-task`: one
//! blocking HTTP/JSON call per operation, errors typed by what the caller does about them.
//! A follower's 421 answer names the leader; the client follows it once. With a token
//! (`with_token`) every request carries it in `X-SmartX-Token` (see `crate::access`).

use std::time::Duration;

use serde_json::{json, Value};

use crate::api::PREFIX;
use crate::task::{RuntimeWindow, TaskRecord, TaskState};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{message} (HTTP {status})")]
    Status { status: u16, message: String },
    /// The server could not be reached or answered something unreadable.
    #[error("{0}")]
    Transport(String),
}

impl ClientError {
    /// True for a 404: the task or runner does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Status { status: 404, .. })
    }

    /// True for a 401 or 403: the token is missing or wrong.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, ClientError::Status { status: 401 | 403, .. })
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A connection to one dispatcher (`host:port`).
pub struct Client {
    server: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl Client {
    pub fn new(server: impl Into<String>, timeout: Duration) -> Client {
        Client { server: server.into(), agent: ureq::AgentBuilder::new().timeout(timeout).build(), token: None }
    }

    /// The same client sending `token` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut server = self.server.clone();
        for _ in 0..2 {
            let url = format!("http://{server}{path}");
            let mut request = self.agent.request(method, &url);
            if let Some(token) = &self.token {
                request = request.set(crate::access::TOKEN_HEADER, token);
            }
            let result = match body {
                Some(body) => request.send_json(body.clone()),
                None => request.call(),
            };
            match result {
                Ok(response) => {
                    return response
                        .into_json()
                        .map_err(|error| ClientError::Transport(format!("bad answer from {url}: {error}")))
                }
                Err(ureq::Error::Status(status, response)) => {
                    let value: Value = response.into_json().unwrap_or(Value::Null);
                    if status == 421 {
                        if let Some(leader) = value.get("leader").and_then(Value::as_str) {
                            if leader != server {
                                server = leader.to_string();
                                continue;
                            }
                        }
                    }
                    let message = value.get("error").and_then(Value::as_str).unwrap_or("request failed").to_string();
                    return Err(ClientError::Status { status, message });
                }
                Err(error) => return Err(ClientError::Transport(format!("cannot reach {url}: {error}"))),
            }
        }
        Err(ClientError::Transport("the leader keeps moving; try again".to_string()))
    }

    fn task(value: Value) -> Result<TaskRecord> {
        serde_json::from_value(value).map_err(|error| ClientError::Transport(format!("bad task record: {error}")))
    }

    pub fn create_copy_volume(&self, source: &str, destination: &str, io_depth: Option<u32>) -> Result<TaskRecord> {
        let body = json!({ "source": source, "destination": destination, "io_depth": io_depth });
        Client::task(self.request("POST", &format!("{PREFIX}/copy_volume/create"), Some(&body))?)
    }

    pub fn create_sleep(&self, duration_ms: u64, fail: bool) -> Result<TaskRecord> {
        let body = json!({ "duration_ms": duration_ms, "fail": fail });
        Client::task(self.request("POST", &format!("{PREFIX}/sleep/create"), Some(&body))?)
    }

    pub fn show(&self, task_id: &str) -> Result<TaskRecord> {
        Client::task(self.request("GET", &format!("{PREFIX}/tasks/{task_id}"), None)?)
    }

    pub fn list(&self, state: Option<TaskState>, date: Option<&str>) -> Result<Vec<TaskRecord>> {
        let mut query = Vec::new();
        if let Some(state) = state {
            query.push(format!("state={state}"));
        }
        if let Some(date) = date {
            query.push(format!("date={date}"));
        }
        let path = format!("{PREFIX}/tasks?{}", query.join("&"));
        let value = self.request("GET", &path, None)?;
        serde_json::from_value(value.get("tasks").cloned().unwrap_or(Value::Null))
            .map_err(|error| ClientError::Transport(format!("bad task list: {error}")))
    }

    /// cancel, pause or resume.
    pub fn task_op(&self, task_id: &str, op: &str) -> Result<Value> {
        self.request("POST", &format!("{PREFIX}/tasks/{task_id}/{op}"), Some(&json!({})))
    }

    pub fn set_runtime(&self, task_id: &str, window: RuntimeWindow) -> Result<Value> {
        let body = serde_json::to_value(window).map_err(|error| ClientError::Transport(error.to_string()))?;
        self.request("POST", &format!("{PREFIX}/tasks/{task_id}/runtime"), Some(&body))
    }

    pub fn runners(&self) -> Result<Value> {
        self.request("GET", &format!("{PREFIX}/runners"), None)
    }

    pub fn runner_op(&self, node_id: &str, op: &str) -> Result<Value> {
        self.request("POST", &format!("{PREFIX}/runners/{node_id}/{op}"), Some(&json!({})))
    }

    pub fn cluster(&self) -> Result<Value> {
        self.request("GET", &format!("{PREFIX}/cluster"), None)
    }

    /// `GET /vip`: the VIP served now and its sources.
    pub fn vip(&self) -> Result<Value> {
        self.request("GET", &format!("{PREFIX}/vip"), None)
    }

    /// `POST /vip/set`: a new VIP, or `None` to clear the stored one.
    pub fn set_vip(&self, vip: Option<(&str, &str)>) -> Result<Value> {
        let body = match vip {
            Some((address, interface)) => json!({ "address": address, "interface": interface }),
            None => json!({ "clear": true }),
        };
        self.request("POST", &format!("{PREFIX}/vip/set"), Some(&body))
    }
}
