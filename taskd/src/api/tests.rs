//! Unit tests of the API's pure pieces: the `vip/set` body's checks and the status of each
//! domain error.

use super::*;
use vip::StoredVip;

fn base() -> vip::VipConfig {
    vip::VipConfig::new("10.0.0.100/24", "eth0")
}

fn set(body: serde_json::Value) -> Result<Option<StoredVip>, Response> {
    let body: VipSet = serde_json::from_value(body).map_err(|error| Response::error(400, &error.to_string()))?;
    body.stored(&base())
}

#[test]
fn a_vip_set_body_is_checked_before_anything_is_stored() {
    let stored = set(serde_json::json!({ "address": "10.0.0.101/24", "interface": "eth0" })).expect("valid");
    assert_eq!(stored, Some(StoredVip::new("10.0.0.101/24", "eth0")));
    assert_eq!(set(serde_json::json!({ "clear": true })).expect("clear"), None);
    for bad in [
        serde_json::json!({ "address": "10.0.0.300/24", "interface": "eth0" }),
        serde_json::json!({ "address": "10.0.0.101/33", "interface": "eth0" }),
        serde_json::json!({ "address": "10.0.0.101/24", "interface": "bad/name" }),
        serde_json::json!({ "address": "10.0.0.101/24" }),
        serde_json::json!({ "interface": "eth0" }),
        serde_json::json!({}),
        serde_json::json!({ "clear": true, "address": "10.0.0.101/24" }),
    ] {
        let refused = set(bad.clone()).expect_err("refused");
        assert_eq!(refused.status(), 400, "{bad}");
        let answer: serde_json::Value = serde_json::from_slice(refused.body()).expect("a JSON error");
        assert!(answer["error"].as_str().is_some_and(|error| !error.is_empty()), "{bad}: {answer}");
    }
    assert!(serde_json::from_value::<VipSet>(serde_json::json!({ "vip": "10.0.0.101/24" })).is_err());
}

/// Only the API knows statuses: each domain error of a task operation maps to one.
#[test]
fn dispatch_errors_map_to_http_statuses() {
    let task_id = TaskId::generate();
    let status = |error: DispatchError| dispatch_status(&error);
    assert_eq!(status(DispatchError::TaskNotFound { task_id: task_id.clone() }), 404);
    assert_eq!(status(DispatchError::NoRunner { task_id: task_id.clone() }), 500);
    assert_eq!(status(DbError::NotFound { what: "task", id: "x".to_string() }.into()), 404);
    assert_eq!(status(DbError::Rejected { task_id, reason: "no".to_string() }.into()), 409);
    assert_eq!(status(DbError::Full { n_records: 1, reply_bytes: 1, max_records: 1, max_reply_bytes: 1 }.into()), 507);
    let transition =
        DbError::Transition(crate::task::TransitionError { from: TaskState::Succeeded, to: TaskState::Pending });
    assert_eq!(status(transition.into()), 409);
}

#[test]
fn a_vip_set_body_names_a_service_or_means_default_and_hostile_names_are_400() {
    let body = |value: serde_json::Value| serde_json::from_value::<VipSet>(value).expect("a body");
    assert_eq!(body(serde_json::json!({ "clear": true })).service().ok().as_deref(), Some("default"));
    assert_eq!(body(serde_json::json!({ "service": "iscsi", "clear": true })).service().ok().as_deref(), Some("iscsi"));
    for hostile in ["../quorum", "a/b", "", "ISCSI", "..", "x y", &"x".repeat(33)] {
        let refused = body(serde_json::json!({ "service": hostile, "clear": true })).service().expect_err("refused");
        assert_eq!(refused.status(), 400, "{hostile:?}");
    }
}
