//! Unit tests of the parts that need no ZooKeeper: node names, member data, configuration.

use crate::member::{parse_sequence, sorted_member_nodes, MemberInfo};
use crate::{QuorumConfig, ZkConfig, ZkError};
use std::time::Duration;

#[test]
fn sequences_are_parsed_only_from_member_names() {
    assert_eq!(parse_sequence("member-0000000012"), Some(12));
    assert_eq!(parse_sequence("member-0000000000"), Some(0));
    assert_eq!(parse_sequence("member-"), None);
    assert_eq!(parse_sequence("member-12a"), None);
    assert_eq!(parse_sequence("member--12"), None);
    assert_eq!(parse_sequence("lock-0000000001"), None);
    assert_eq!(parse_sequence("member-99999999999999999999999"), None);
}

#[test]
fn member_nodes_are_sorted_by_sequence_and_strangers_skipped() {
    let names: Vec<String> =
        ["member-0000000010", "garbage", "member-0000000002", "member-x"].iter().map(|name| name.to_string()).collect();
    let nodes = sorted_member_nodes("/service", &names);
    assert_eq!(nodes, vec![(2, "member-0000000002".to_string()), (10, "member-0000000010".to_string())]);
}

#[test]
fn member_info_round_trips_and_corrupt_data_is_an_error() {
    let info = MemberInfo {
        id: "node-1".into(),
        address: "127.0.0.1:10600".into(),
        priority: 3,
        healthy: false,
        data_address: None,
    };
    assert_eq!(MemberInfo::decode("/p/member-1", &info.encode()), Ok(info));
    for corrupt in [&b"not json"[..], b"", b"{\"id\": 5}", b"\xff\xfe", b"[1,2,3]"] {
        match MemberInfo::decode("/p/member-1", corrupt) {
            Err(ZkError::CorruptData { path, .. }) => assert_eq!(path, "/p/member-1"),
            other => panic!("expected corrupt data for {corrupt:?}, got {other:?}"),
        }
    }
    // Older writers without priority and health still decode.
    let minimal = MemberInfo::decode("/p/member-2", br#"{"id":"a","address":"b"}"#).expect("decode minimal");
    assert_eq!((minimal.priority, minimal.healthy), (0, true));
}

#[test]
fn bad_service_paths_are_refused() {
    let zk = ZkConfig::new("127.0.0.1:2181", Duration::from_secs(2));
    for path in ["relative", "/trailing/", "/double//slash"] {
        let config = QuorumConfig::new(zk.clone(), path, MemberInfo::new("a", "b"));
        assert!(crate::QuorumCluster::new(config).is_err(), "{path} should be refused");
    }
    let config = QuorumConfig::new(zk, "/zbs/taskd/quorum", MemberInfo::new("a", "b"));
    // A disconnected leader steps down well before the server could expire its session.
    assert_eq!(config.step_down_after_disconnect, Duration::from_secs(2) / 3);
}
