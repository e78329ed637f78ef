//! The answers of the probe routes both a running and a stopped service give on their ports:
//! `/healthz` (the process and its loop answer), `/readyz` (the service can do its work),
//! `/leader` (for an HTTP load balancer's health check: 200 on the leader only) and `/metrics`.
//! Pure: each takes what its caller found and returns the response.

use runtime::rpc::Response;

use crate::metrics::Metrics;

/// `GET /healthz`: 200 while the loop answers, 503 when it is wedged.
pub fn healthz(loop_answers: bool) -> Response {
    if loop_answers {
        Response::json(200, &serde_json::json!({ "ok": true }))
    } else {
        Response::json(503, &serde_json::json!({ "ok": false, "reason": "the server loop is not answering" }))
    }
}

/// `GET /readyz`: 200 when nothing stops this node from working, else 503 with the reason.
pub fn readyz(not_ready: Option<&str>) -> Response {
    match not_ready {
        None => Response::json(200, &serde_json::json!({ "ready": true })),
        Some(reason) => Response::json(503, &serde_json::json!({ "ready": false, "reason": reason })),
    }
}

/// `GET /leader`: 200 on the leader whose dispatcher is ready, `standby_status` elsewhere.
pub fn leader(is_leader: bool, standby_status: u16) -> Response {
    if is_leader {
        Response::json(200, &serde_json::json!({ "leader": true }))
    } else {
        Response::json(standby_status, &serde_json::json!({ "leader": false }))
    }
}

/// `GET /metrics`: every family in the OpenMetrics text format.
pub fn metrics(metrics: &Metrics) -> Response {
    Response::new(200)
        .with_header("Content-Type", crate::metrics::CONTENT_TYPE)
        .with_body(metrics.encode().into_bytes())
}

#[cfg(test)]
mod tests;
