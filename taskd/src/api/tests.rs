//! Unit tests of the API's pure pieces: the `vip/set` body's checks and the cluster answer's
//! fresh members.

use super::*;

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

#[test]
fn the_cluster_answer_takes_fresh_members_and_says_where_they_came_from() {
    let cached = serde_json::json!({
        "node_id": "node-1",
        "members": [{ "id": "node-2", "address": "a", "sequence": 1, "healthy": true }],
    });
    let member = |id: &str, sequence: i64, healthy: bool| Member {
        sequence,
        node_name: format!("member-{sequence:010}"),
        session_id: 0,
        info: quorum::MemberInfo {
            id: id.to_string(),
            address: "a".to_string(),
            priority: 0,
            healthy,
            data_address: None,
        },
    };
    let fresh = with_fresh_members(cached.clone(), Some(vec![member("node-2", 1, false), member("node-1", 0, true)]));
    assert_eq!(fresh["members_source"], "zookeeper");
    assert_eq!(fresh["members"][0]["id"], "node-1", "sorted by sequence");
    assert_eq!(fresh["members"][1]["healthy"], false, "the member's published health, not the cached one");
    let stale = with_fresh_members(cached, None);
    assert_eq!(stale["members_source"], "cache");
    assert_eq!(stale["members"][0]["healthy"], true);
}
