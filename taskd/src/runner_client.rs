//! How the dispatcher calls the runners: one `RunnerClient` (a shared `ureq` agent with the
//! runner-call timeout and the cluster's API token) and the runner routes' paths, which the
//! runner's server registers from the same constants.
//!
//! `post` blocks its thread for up to [`RUNNER_RPC_TIMEOUT`]: only the dispatcher's caller
//! contexts (threads of their own) use it. Everything else uses `call`, which runs the same
//! request on the client's own small pool of threads and parks only the caller's coroutine, so
//! a slow runner never holds a thread of the shared API worker pool (whose other requests would
//! wait behind it).

use std::time::Duration;

use crate::access::TOKEN_HEADER;
use crate::dispatcher::placement::Refusal;

/// How long the dispatcher's own runner calls (execute) may take: the next dispatch pass retries.
pub const RUNNER_RPC_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an operator's forwarded operation (`call`: pause, cancel, runtime, drain) may take: a
/// drain waits for its marker's ZooKeeper write, which a loaded ensemble can make slow, and the
/// operator would rather wait than be told 502 for a drain that did happen.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// The runner routes (port 10601).
pub mod paths {
    pub const STATUS: &str = "/api/v1/runner";
    pub const EXECUTE: &str = "/api/v1/runner/execute";
    pub const CANCEL: &str = "/api/v1/runner/cancel";
    pub const PAUSE: &str = "/api/v1/runner/pause";
    pub const RUNTIME: &str = "/api/v1/runner/runtime";
    pub const DRAIN: &str = "/api/v1/runner/drain";
    pub const UNDRAIN: &str = "/api/v1/runner/undrain";
}

/// A runner call that did not succeed: the runner's status and message (502 when it could not
/// be reached or answered nonsense, 503 when the call could not be made).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (status {status})")]
pub struct RunnerCallError {
    pub status: u16,
    pub message: String,
}

impl RunnerCallError {
    pub fn new(status: u16, message: impl Into<String>) -> RunnerCallError {
        RunnerCallError { status, message: message.into() }
    }

    /// What the placement rules make of an execute that failed so: 429 (or an older runner's
    /// 503 "no free slot") is a runner whose registration was behind; anything else is a
    /// runner unavailable for now.
    pub fn refusal(&self) -> Refusal {
        match self.status {
            429 => Refusal::NoFreeSlot,
            503 if self.message == crate::runner::NO_FREE_SLOT => Refusal::NoFreeSlot,
            _ => Refusal::Unavailable,
        }
    }
}

/// The dispatcher's client of the runner API. Cheap to clone (the agent is shared).
#[derive(Clone)]
pub struct RunnerClient {
    agent: ureq::Agent,
    token: Option<String>,
    /// The threads `call` blocks instead of its caller's.
    calls: std::sync::Arc<runtime::rpc::WorkerPool>,
}

/// Threads of a client's call pool: runner calls in flight at once from the API.
const CALL_THREADS: usize = 4;

impl std::fmt::Debug for RunnerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerClient").field("token", &self.token.as_ref().map(|_| "redacted")).finish()
    }
}

impl RunnerClient {
    /// A client sending `token` (the first of the node's token file) with every call, with its
    /// own pool of call threads.
    pub fn new(token: Option<String>) -> Result<RunnerClient, runtime::rpc::RpcError> {
        Ok(RunnerClient {
            agent: ureq::AgentBuilder::new().timeout(RUNNER_RPC_TIMEOUT).build(),
            token,
            calls: runtime::rpc::WorkerPool::new("taskd-runner-calls", CALL_THREADS)?,
        })
    }

    /// `post` on the client's own threads, parking only the caller (a coroutine or a thread),
    /// with the operator's [`FORWARD_TIMEOUT`].
    pub fn call(
        &self,
        address: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, RunnerCallError> {
        let (client, address, path, body) = (self.clone(), address.to_string(), path.to_string(), body.clone());
        self.calls
            .run(move || client.post_within(FORWARD_TIMEOUT, &address, &path, &body))
            .unwrap_or_else(|error| Err(RunnerCallError::new(503, format!("cannot call the runner: {error}"))))
    }

    /// POSTs `body` to `path` on the runner at `address`; the runner's JSON answer, or its
    /// status and message (502 when it cannot be reached or answers nonsense).
    pub fn post(
        &self,
        address: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, RunnerCallError> {
        self.post_within(RUNNER_RPC_TIMEOUT, address, path, body)
    }

    fn post_within(
        &self,
        timeout: Duration,
        address: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, RunnerCallError> {
        let mut request = self.agent.post(&format!("http://{address}{path}")).timeout(timeout);
        if let Some(token) = &self.token {
            request = request.set(TOKEN_HEADER, token);
        }
        match request.send_json(body) {
            Ok(response) => response
                .into_json()
                .map_err(|error| RunnerCallError::new(502, format!("bad answer from {address}: {error}"))),
            Err(ureq::Error::Status(status, response)) => {
                let message = response
                    .into_json::<serde_json::Value>()
                    .ok()
                    .and_then(|value| value.get("error").and_then(|error| error.as_str()).map(str::to_string))
                    .unwrap_or_else(|| format!("status {status}"));
                if matches!(status, 401 | 403) {
                    tracing::error!(runner = address, status, %message, "the runner refused the dispatcher's token: is [api] token_file the same on every node?");
                }
                Err(RunnerCallError::new(status, message))
            }
            Err(error) => Err(RunnerCallError::new(502, format!("cannot reach the runner at {address}: {error}"))),
        }
    }
}

#[cfg(test)]
mod tests;
