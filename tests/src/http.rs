//! One JSON request to a daemon's API, as the fixtures and the chaos harness make it.

use anyhow::{bail, Context, Result};

/// Sends `request` (with `body` as JSON when given) and returns the status and the JSON answer
/// (`null` when the body is not JSON): 4xx and 5xx are answers, a transport failure an error.
pub fn json_answer(request: ureq::Request, body: Option<&serde_json::Value>) -> Result<(u16, serde_json::Value)> {
    let (method, url) = (request.method().to_string(), request.url().to_string());
    let response = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    };
    let response = match response {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => bail!("{method} {url}: {error}"),
    };
    let status = response.status();
    let text = response.into_string().with_context(|| format!("read the answer to {method} {url}"))?;
    Ok((status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)))
}
