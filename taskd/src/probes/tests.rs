//! The probe answers' statuses and bodies.

use super::*;

fn body(response: &Response) -> serde_json::Value {
    serde_json::from_slice(response.body()).expect("a JSON body")
}

#[test]
fn healthz_is_503_when_the_loop_is_wedged() {
    assert_eq!(healthz(true).status(), 200);
    let wedged = healthz(false);
    assert_eq!(wedged.status(), 503);
    assert_eq!(body(&wedged)["ok"], false);
}

#[test]
fn readyz_names_the_reason_it_is_not_ready() {
    assert_eq!(readyz(None).status(), 200);
    let not_ready = readyz(Some("not connected to ZooKeeper"));
    assert_eq!(not_ready.status(), 503);
    assert_eq!(body(&not_ready)["reason"], "not connected to ZooKeeper");
}

#[test]
fn leader_answers_the_configured_status_on_a_standby() {
    assert_eq!(leader(true, 503).status(), 200);
    assert_eq!(leader(false, 503).status(), 503);
    assert_eq!(leader(false, 429).status(), 429);
}

#[test]
fn metrics_are_openmetrics_text() {
    let metrics = Metrics::new();
    let response = super::metrics(&metrics);
    assert_eq!(response.status(), 200);
    assert_eq!(response.header("Content-Type"), Some(crate::metrics::CONTENT_TYPE));
    let text = String::from_utf8(response.body().to_vec()).expect("UTF-8");
    assert!(text.ends_with("# EOF\n"), "{text}");
}
