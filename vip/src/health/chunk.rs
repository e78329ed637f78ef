//! The `chunk` source: an HTTP GET of the co-located chunk service's health URL, whose JSON
//! reply's boolean `sec_valid` field says whether the secondary (data) network is valid.
//!
//! `sec_valid: false` is the chunk service's own verdict, so it makes the state invalid at once
//! ([`HealthSample::Down`]); a request that fails (refused, timed out, an HTTP error status, a
//! reply without a boolean `sec_valid`) says nothing about the network and is a bad round,
//! counted through `fall`. Each change of outcome is logged once.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use runtime::Thread;

use super::config::ChunkConfig;
use super::error::{HealthError, Result};
use super::flag::Shared;
use super::rounds::spawn_rounds;
use super::state::HealthSample;
use super::stop::StopSignal;

/// The most of a reply that is read; a health reply is a small JSON object.
const MAX_REPLY: u64 = 64 * 1024;

/// An HTTP client with the source's deadline on the whole request.
pub(crate) fn chunk_agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(timeout).redirects(0).build()
}

/// One request; every failure is a sample with a reason, never an error or a panic.
pub(crate) fn check_chunk(agent: &ureq::Agent, url: &str) -> HealthSample {
    let response = match agent.get(url).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(status, _)) => {
            return HealthSample::Bad(format!("chunk service health {url} answered HTTP {status}"))
        }
        Err(ureq::Error::Transport(error)) => {
            return HealthSample::Bad(format!("cannot reach chunk service health {url}: {error}"))
        }
    };
    let mut body = Vec::new();
    if let Err(error) = response.into_reader().take(MAX_REPLY).read_to_end(&mut body) {
        return HealthSample::Bad(format!("cannot read the reply of chunk service health {url}: {error}"));
    }
    let reply: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(reply) => reply,
        Err(error) => return HealthSample::Bad(format!("chunk service health {url} did not answer JSON: {error}")),
    };
    match reply.get("sec_valid").and_then(serde_json::Value::as_bool) {
        Some(true) => HealthSample::Good,
        Some(false) => HealthSample::Down(format!("chunk service reports sec_valid = false ({url})")),
        None => HealthSample::Bad(format!("reply of chunk service health {url} has no boolean sec_valid field")),
    }
}

/// Starts the thread that asks the chunk service every interval.
pub(crate) fn start_chunk_source(shared: Arc<Shared>, config: &ChunkConfig, stop: StopSignal) -> Result<Thread<()>> {
    let url = config
        .url
        .clone()
        .ok_or_else(|| HealthError::config("health.chunk.url", "is required when health.source = \"chunk\""))?;
    let agent = chunk_agent(config.timeout());
    let mut last_sample: Option<HealthSample> = None;
    spawn_rounds("zbs-health-chk", shared, config.interval(), stop, move |_| {
        let sample = check_chunk(&agent, &url);
        if last_sample.as_ref() != Some(&sample) {
            match &sample {
                HealthSample::Good | HealthSample::Alone => {
                    tracing::info!(%url, "chunk service reports sec_valid = true")
                }
                HealthSample::Bad(reason) | HealthSample::Down(reason) => {
                    tracing::warn!(%url, %reason, "chunk service health check failed")
                }
            }
            last_sample = Some(sample.clone());
        }
        Some(sample)
    })
}

#[cfg(test)]
mod tests;
