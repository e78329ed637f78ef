//! The tables' columns line up under their headers, and `wide` adds columns.

use serde_json::json;

use super::*;

/// The start of each header's column in the header line.
fn header_starts(header: &str, names: &[&str]) -> Vec<usize> {
    names.iter().map(|name| header.find(name).unwrap_or_else(|| panic!("{name} in {header:?}"))).collect()
}

#[test]
fn runner_columns_stay_under_their_headers_whatever_the_widths() {
    let answer = json!({ "runners": [
        { "node_id": "node-1", "address": "127.0.0.1:10601", "slots": 2, "free_slots": 2, "draining": false, "healthy": true },
        { "node_id": "a-much-longer-node-name-than-sixteen", "address": "[fd00::1234:5678:9abc]:10601", "slots": 128, "free_slots": 0, "draining": true, "healthy": false },
    ]});
    let text = runners(&answer, Output::Table);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let starts = header_starts(lines[0], &["NODE", "ADDRESS", "SLOTS", "FREE", "DRAINING", "HEALTHY"]);
    // Left-aligned columns start where their header starts, on every row.
    for line in &lines[1..] {
        let address_start = starts[1];
        assert_ne!(line.as_bytes()[address_start], b' ', "ADDRESS column moved: {text}");
        assert_eq!(line.as_bytes()[address_start - 1], b' ', "ADDRESS column moved: {text}");
        let draining_start = starts[4];
        assert!(line[draining_start..].starts_with("false") || line[draining_start..].starts_with("true"), "{text}");
    }
}

#[test]
fn wide_adds_the_other_fields() {
    let answer = json!({ "runners": [
        { "node_id": "node-1", "address": "a:1", "slots": 2, "free_slots": 1, "draining": false, "healthy": true, "pid": 42 },
    ]});
    assert!(!runners(&answer, Output::Table).contains("PID"));
    let wide = runners(&answer, Output::Wide);
    assert!(wide.lines().next().is_some_and(|header| header.contains("PID")), "{wide}");
    assert!(wide.contains("42"), "{wide}");
}

#[test]
fn members_list_stopped_nodes_as_stopped() {
    let answer = json!({
        "members": [{ "id": "node-2", "address": "10.0.0.2:10600", "sequence": 7, "healthy": true }],
        "stopped_nodes": [{ "node_id": "node-1", "address": "10.0.0.1:10600", "reason": "data network failed" }],
    });
    let text = members(&answer, Output::Table);
    assert!(
        text.lines().any(|line| line.starts_with("node-1") && line.contains("STOPPED: data network failed")),
        "{text}"
    );
    assert!(text.lines().any(|line| line.starts_with("node-2") && line.contains("running")), "{text}");
}
