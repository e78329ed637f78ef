//! The CLI's tables, built with `comfy-table`: columns sized from their contents and aligned
//! under their headers, no borders (kubectl's look). `--output wide` adds columns. Pure: each
//! function takes the answer and returns the text to print.

use comfy_table::{presets, CellAlignment, ColumnConstraint, ContentArrangement, Table};
use serde_json::Value;

use crate::task::{TaskKind, TaskRecord, TaskState};

/// How much a table shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// The main columns.
    #[default]
    Table,
    /// Every column.
    Wide,
}

fn table(headers: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled).set_header(headers);
    table
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

fn render(mut table: Table, right_aligned: &[usize]) -> String {
    for index in right_aligned {
        if let Some(column) = table.column_mut(*index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    for column in table.column_iter_mut() {
        column.set_constraint(ColumnConstraint::ContentWidth);
        // No space before the first column; two between columns.
        column.set_padding((0, 2));
    }
    // comfy-table pads the last column too; the lines end where their text does.
    table.lines().map(|line| line.trim_end().to_string()).collect::<Vec<_>>().join("\n")
}

/// What a task does, in a few words.
pub fn describe(kind: &TaskKind) -> String {
    match kind {
        TaskKind::CopyVolume(args) => format!("{} -> {}", args.source.display(), args.destination.display()),
        TaskKind::Sleep(args) => format!("{} ms{}", args.duration_ms, if args.fail { " (fail)" } else { "" }),
    }
}

/// How far a task is.
pub fn percent(record: &TaskRecord) -> String {
    match record.progress.bytes_total {
        0 if record.state == TaskState::Succeeded => "100%".to_string(),
        0 => "-".to_string(),
        total => format!("{}%", record.progress.bytes_done * 100 / total),
    }
}

/// `task list`.
pub fn tasks(tasks: &[TaskRecord], output: Output) -> String {
    let mut headers = vec!["TASK_ID", "TYPE", "STATE", "DONE", "RUNNER", "ARGS"];
    if output == Output::Wide {
        headers.extend(["CREATED_MS", "ATTEMPTS", "LAST_ERROR"]);
    }
    let mut table = table(&headers);
    for record in tasks {
        let mut row = vec![
            record.task_id.to_string(),
            record.kind.type_name().to_string(),
            record.state.as_str().to_string(),
            percent(record),
            record.runner_addr.clone().unwrap_or_else(|| "-".to_string()),
            describe(&record.kind),
        ];
        if output == Output::Wide {
            row.extend([
                record.created_ms.to_string(),
                record.attempts.to_string(),
                record.last_error.clone().unwrap_or_else(|| "-".to_string()),
            ]);
        }
        table.add_row(row);
    }
    render(table, &[3])
}

/// `runner list`, from the runners route's answer.
pub fn runners(answer: &Value, output: Output) -> String {
    let mut headers = vec!["NODE", "ADDRESS", "SLOTS", "FREE", "DRAINING", "HEALTHY"];
    let mut extra: Vec<String> = Vec::new();
    let runners: Vec<&Value> = answer.get("runners").and_then(Value::as_array).into_iter().flatten().collect();
    if output == Output::Wide {
        // Every other field the runners report, in a stable order.
        let shown = ["node_id", "address", "slots", "free_slots", "draining", "healthy"];
        let mut keys: Vec<String> = runners
            .iter()
            .filter_map(|runner| runner.as_object())
            .flat_map(|object| object.keys().cloned())
            .filter(|key| !shown.contains(&key.as_str()))
            .collect();
        keys.sort();
        keys.dedup();
        extra = keys;
    }
    let extra_headers: Vec<String> = extra.iter().map(|key| key.to_uppercase()).collect();
    headers.extend(extra_headers.iter().map(String::as_str));
    let mut table = table(&headers);
    for runner in runners {
        let mut row: Vec<String> = ["node_id", "address", "slots", "free_slots", "draining", "healthy"]
            .iter()
            .map(|key| text(&runner[*key]))
            .collect();
        row.extend(extra.iter().map(|key| text(&runner[key.as_str()])));
        table.add_row(row);
    }
    render(table, &[2, 3])
}

/// `cluster show`'s members and stopped nodes, from the cluster route's answer.
pub fn members(answer: &Value, output: Output) -> String {
    let mut headers = vec!["MEMBER", "ADDRESS", "SEQUENCE", "HEALTHY", "STATE"];
    if output == Output::Wide {
        headers.push("DATA_ADDRESS");
    }
    let mut table = table(&headers);
    for member in answer["members"].as_array().into_iter().flatten() {
        let mut row = vec![
            text(&member["id"]),
            text(&member["address"]),
            text(&member["sequence"]),
            text(&member["healthy"]),
            "running".to_string(),
        ];
        if output == Output::Wide {
            row.push(text(&member["data_address"]));
        }
        table.add_row(row);
    }
    for stopped in answer["stopped_nodes"].as_array().into_iter().flatten() {
        let mut row = vec![
            text(&stopped["node_id"]),
            text(&stopped["address"]),
            "-".to_string(),
            "-".to_string(),
            format!("STOPPED: {}", text(&stopped["reason"])),
        ];
        if output == Output::Wide {
            row.push("-".to_string());
        }
        table.add_row(row);
    }
    render(table, &[2])
}

/// `cluster events`, from the events route's answer.
pub fn events(answer: &Value, output: Output) -> String {
    let mut headers = vec!["TIME (UTC)", "NODE", "EVENT", "REASON"];
    if output == Output::Wide {
        headers.push("SEQUENCE");
    }
    let mut table = table(&headers);
    for event in answer["events"].as_array().into_iter().flatten() {
        let time = event["time_unix_ms"]
            .as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|time| time.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            .unwrap_or_else(|| "?".to_string());
        let mut row = vec![time, text(&event["node_id"]), text(&event["event"]), text(&event["reason"])];
        if output == Output::Wide {
            row.push(text(&event["sequence"]));
        }
        table.add_row(row);
    }
    render(table, &[])
}

/// `vip show`'s VIPs, one row per service, from the `vips` route's answer; `ERROR` is the
/// leader's latest failure with that VIP (`-` when its latest operation succeeded).
pub fn vips(answer: &Value, output: Output) -> String {
    let mut headers = vec!["SERVICE", "ADDRESS", "INTERFACE", "SOURCE", "HELD_HERE", "ERROR"];
    if output == Output::Wide {
        headers.extend(["LABEL", "CONFIGURED", "STORED"]);
    }
    let mut table = table(&headers);
    for vip in answer["vips"].as_array().into_iter().flatten() {
        let mut row = vec![
            text(&vip["service"]),
            text(&vip["address"]),
            text(&vip["interface"]),
            text(&vip["source"]),
            text(&vip["held"]),
            text(&vip["error"]),
        ];
        if output == Output::Wide {
            let on = |value: &Value| match value.as_object() {
                Some(_) => format!("{} on {}", text(&value["address"]), text(&value["interface"])),
                None => "-".to_string(),
            };
            row.extend([text(&vip["label"]), on(&vip["configured"]), on(&vip["stored"])]);
        }
        table.add_row(row);
    }
    render(table, &[])
}

#[cfg(test)]
mod tests;
