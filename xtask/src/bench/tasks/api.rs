//! A small client of the leader's dispatcher API (`/api/v2/task_center`) for the benchmark: one
//! keep-alive connection per `Api` value, so that each load thread clones its own.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use tests::cluster::Cluster;

const PREFIX: &str = "/api/v2/task_center";

/// One request's bound: a submit or a query answers in milliseconds on an idle machine.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Api {
    base: String,
    /// The cluster's API token, sent with every change.
    token: String,
    agent: ureq::Agent,
}

impl Api {
    /// The dispatcher API of `node` (the leader: followers answer 421).
    pub fn new(cluster: &Cluster, node: usize) -> Api {
        let spec = cluster.node(node);
        Api::with_base(format!("http://{}:{}{PREFIX}", spec.address, spec.dispatcher_port), cluster.token().to_string())
    }

    fn with_base(base: String, token: String) -> Api {
        Api { base, token, agent: ureq::AgentBuilder::new().timeout(REQUEST_TIMEOUT).max_idle_connections(4).build() }
    }

    /// Another client of the same node with its own connection.
    pub fn fresh(&self) -> Api {
        Api::with_base(self.base.clone(), self.token.clone())
    }

    /// `(status, body)` of `GET <prefix><path>`, the body unparsed (what the latency samples time).
    pub fn get_text(&self, path: &str) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let response = match self.agent.get(&url).call() {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(error) => bail!("GET {url}: {error}"),
        };
        let status = response.status();
        Ok((status, response.into_string().with_context(|| format!("GET {url}: read the answer"))?))
    }

    fn get(&self, path: &str) -> Result<Value> {
        let (status, text) = self.get_text(path)?;
        ensure!(status == 200, "GET {path}: {status} {text}");
        serde_json::from_str(&text).with_context(|| format!("GET {path}: not JSON"))
    }

    fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let response = match self.agent.post(&url).set(taskd::access::TOKEN_HEADER, &self.token).send_json(body) {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(error) => bail!("POST {url}: {error}"),
        };
        let status = response.status();
        let text = response.into_string().with_context(|| format!("POST {url}: read the answer"))?;
        let value = serde_json::from_str(&text).with_context(|| format!("POST {url}: not JSON: {text}"))?;
        Ok((status, value))
    }

    fn create(&self, path: &str, body: &Value) -> Result<String> {
        let (status, answer) = self.post(path, body)?;
        ensure!(status == 201, "POST {path} {body}: {status} {answer}");
        answer["task_id"].as_str().map(str::to_string).context("no task_id in the answer")
    }

    /// Submits a Sleep task; its id once the dispatcher acknowledged it (persisted in ZooKeeper).
    pub fn submit_sleep(&self, duration_ms: u64) -> Result<String> {
        self.create("/sleep/create", &json!({ "duration_ms": duration_ms }))
    }

    /// Submits a CopyVolume task.
    pub fn submit_copy(&self, source: &Path, destination: &Path) -> Result<String> {
        self.create("/copy_volume/create", &json!({ "source": source, "destination": destination }))
    }

    pub fn show(&self, task_id: &str) -> Result<Value> {
        self.get(&format!("/tasks/{task_id}"))
    }

    /// The records `GET /tasks?<query>` lists.
    pub fn list(&self, query: &str) -> Result<Vec<Value>> {
        let answer = self.get(&format!("/tasks?{query}"))?;
        answer["tasks"].as_array().cloned().context("no `tasks` in the list answer")
    }

    /// True when no task is pending, running or interrupted.
    pub fn is_idle(&self) -> Result<bool> {
        for state in ["pending", "running", "interrupted"] {
            if !self.list(&format!("state={state}&limit=1"))?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub fn runners(&self) -> Result<Vec<Value>> {
        self.get("/runners")?["runners"].as_array().cloned().context("no `runners` in the answer")
    }

    /// Drains (`true`) or undrains a runner.
    pub fn set_draining(&self, node_id: &str, draining: bool) -> Result<()> {
        let verb = if draining { "drain" } else { "undrain" };
        let (status, answer) = self.post(&format!("/runners/{node_id}/{verb}"), &json!({}))?;
        ensure!(status < 300, "{verb} {node_id}: {status} {answer}");
        Ok(())
    }
}
