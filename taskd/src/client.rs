//! The client of the dispatcher API (`/api/v2/task_center/...`), used by `zbs-task`: one
//! blocking HTTP/JSON call per operation, errors typed by what the caller does about them.
//! A follower's 421 answer names the leader; the client follows it once. With a token
//! (`with_token`) every request carries it in `X-SmartX-Token` (see `crate::access`).
//!
//! A submit carries a fresh `request_id` (a UUID v4) and is retried with that same id after a
//! timeout, a connection error or a 5xx answer (`SUBMIT_ATTEMPTS` tries, doubling back-off): the
//! dispatcher answers a retry of a submit it already took with the original task, so a retry
//! never creates a second one.

use std::time::Duration;

use serde_json::{json, Value};

use crate::api::PREFIX;
use crate::task::{RequestId, RuntimeWindow, TaskRecord, TaskState};

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

impl ClientError {
    /// True when a submit may be retried with the same request id: the server may not have
    /// taken it (no answer, an unreadable answer, or a 5xx).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClientError::Transport(_) | ClientError::Status { status: 500..=599, .. })
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// How often a submit is tried with one request id before its last error is returned.
pub const SUBMIT_ATTEMPTS: u32 = 4;

/// The wait before a submit's first retry; each further one waits twice as long.
pub const SUBMIT_BACKOFF: Duration = Duration::from_millis(500);

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

    /// Submits `body` (a JSON object) to `create_path` with a fresh request id, retried with the
    /// same id while the error `is_retryable` (see the module's doc).
    fn submit(&self, create_path: &str, mut body: Value) -> Result<TaskRecord> {
        let request_id = RequestId::generate();
        if let Some(object) = body.as_object_mut() {
            object.insert("request_id".to_string(), Value::String(request_id.to_string()));
        }
        let path = format!("{PREFIX}/{create_path}");
        let mut backoff = SUBMIT_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.request("POST", &path, Some(&body)) {
                Ok(value) => return Client::task(value),
                Err(error) if error.is_retryable() && attempt < SUBMIT_ATTEMPTS => {
                    tracing::debug!(%error, %request_id, attempt, "submit failed; retrying with the same request id");
                    std::thread::sleep(backoff);
                    backoff *= 2;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Submits a copy; `overwrite` allows a destination that holds data.
    pub fn create_copy_volume(
        &self,
        source: &str,
        destination: &str,
        io_depth: Option<u32>,
        overwrite: bool,
    ) -> Result<TaskRecord> {
        let body =
            json!({ "source": source, "destination": destination, "io_depth": io_depth, "overwrite": overwrite });
        self.submit("copy_volume/create", body)
    }

    pub fn create_sleep(&self, duration_ms: u64, fail: bool) -> Result<TaskRecord> {
        self.submit("sleep/create", json!({ "duration_ms": duration_ms, "fail": fail }))
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
        self.tasks_at(&format!("{PREFIX}/tasks?{}", query.join("&")))
    }

    /// Finished (`true`: succeeded, failed, cancelled) or unfinished tasks: the original's
    /// `list_by_status`.
    pub fn list_by_status(&self, finished: bool) -> Result<Vec<TaskRecord>> {
        let status = if finished { "finished" } else { "unfinished" };
        self.tasks_at(&format!("{PREFIX}/tasks?status={status}"))
    }

    /// The `tasks` of a listing's answer.
    fn tasks_at(&self, path: &str) -> Result<Vec<TaskRecord>> {
        let value = self.request("GET", path, None)?;
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

    /// `GET /events`: the latest `limit` leadership events, oldest first.
    pub fn leader_events(&self, limit: usize) -> Result<Value> {
        self.request("GET", &format!("{PREFIX}/events?limit={limit}"), None)
    }

    /// `GET /vip`: the service `default`'s VIP served now and its sources.
    pub fn vip(&self) -> Result<Value> {
        self.request("GET", &format!("{PREFIX}/vip"), None)
    }

    /// `GET /vip/<service>`: one service's VIP. The name is checked here too, so it cannot change
    /// the path.
    pub fn service_vip(&self, service: &str) -> Result<Value> {
        vip::check_service_name(service)
            .map_err(|message| ClientError::Status { status: 400, message: format!("not sent: {message}") })?;
        self.request("GET", &format!("{PREFIX}/vip/{service}"), None)
    }

    /// `GET /vips`: every VIP, one per service.
    pub fn vips(&self) -> Result<Value> {
        self.request("GET", &format!("{PREFIX}/vips"), None)
    }

    /// `POST /vip/set`: a new VIP for `service`, or `None` to clean the stored one.
    pub fn set_vip(&self, service: &str, vip: Option<(&str, &str)>) -> Result<Value> {
        let body = match vip {
            Some((address, interface)) => json!({ "service": service, "address": address, "interface": interface }),
            None => json!({ "service": service, "clear": true }),
        };
        self.request("POST", &format!("{PREFIX}/vip/set"), Some(&body))
    }
}
