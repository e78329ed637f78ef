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

#[test]
fn vips_list_one_row_per_service_with_its_error() {
    let answer = json!({ "vips": [
        { "service": "default", "address": "10.0.0.100/24", "interface": "eth0", "source": "config", "held": true,
          "error": null, "label": "eth0:vip", "configured": { "address": "10.0.0.100/24", "interface": "eth0" }, "stored": null },
        { "service": "iscsi", "address": "10.0.1.100/24", "interface": "eth1", "source": "stored", "held": false,
          "error": "interface: interface eth1 disappeared while leader", "label": "eth1:vip",
          "configured": { "address": "10.0.1.9/24", "interface": "eth1" },
          "stored": { "version": 1, "address": "10.0.1.100/24", "interface": "eth1" } },
    ]});
    let text = vips(&answer, Output::Table);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let starts = header_starts(lines[0], &["SERVICE", "ADDRESS", "INTERFACE", "SOURCE", "HELD_HERE", "ERROR"]);
    assert!(lines[1].starts_with("default") && lines[1][starts[5]..].starts_with('-'), "{text}");
    assert!(lines[2].starts_with("iscsi") && lines[2][starts[5]..].starts_with("interface: interface eth1"), "{text}");
    assert!(lines[2][starts[1]..].starts_with("10.0.1.100/24"), "{text}");
    assert!(!text.contains("CONFIGURED"), "{text}");
    let wide = vips(&answer, Output::Wide);
    assert!(wide.contains("10.0.1.9/24 on eth1") && wide.contains("eth1:vip"), "{wide}");
}
