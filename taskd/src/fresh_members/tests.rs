//! The members' part of the status and cluster answers.

use super::*;

fn member(id: &str, sequence: i64, healthy: bool) -> Member {
    Member {
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
    }
}

#[test]
fn the_answer_takes_fresh_members_and_says_where_they_came_from() {
    let cached = || vec![member("node-2", 1, true)];
    let fresh = Some(vec![member("node-2", 1, false), member("node-1", 0, true)]);
    let (members, source) = members_answer(fresh, || panic!("the cache is not read when a fresh read exists"));
    assert_eq!(source, "zookeeper");
    assert_eq!(members[0]["id"], "node-1", "sorted by sequence");
    assert_eq!(members[1]["healthy"], false, "the member's published health, not the cached one");
    let (members, source) = members_answer(None, cached);
    assert_eq!(source, "cache");
    assert_eq!(members[0]["healthy"], true);
}
