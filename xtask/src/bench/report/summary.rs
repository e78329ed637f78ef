//! `target/bench/report.md` from the JSON reports in `target/bench/`: for each benchmark the
//! figures, the ratio to what it was measured side by side with, the goals of its issue (met or
//! not), when and on what machine, and a plot of the margins. Regenerated without re-running
//! anything by `cargo xtask bench report`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Report;
use crate::bench::plot::{self, MarginBar, MarginKind};

/// Whether a smaller or a larger figure is better.
#[derive(Clone, Copy)]
enum Better {
    Lower,
    Higher,
}

/// What a figure is compared with.
#[derive(Clone)]
enum Reference {
    /// Another figure of the same report (label, key), measured side by side.
    Key(String, String),
    /// A figure quoted by the issue (measured once, not in this run).
    Quoted(String, f64),
}

/// A goal from the benchmark's issue.
#[derive(Clone)]
enum Goal {
    AtMost(f64),
    /// On ours ÷ reference.
    RatioAtMost(f64),
    RatioAtLeast(f64),
    /// At most `factor` times another figure (p99 ≤ 2 × p50).
    AtMostTimes(f64, String),
}

struct Row {
    label: String,
    key: String,
    unit: &'static str,
    better: Better,
    reference: Option<Reference>,
    goal: Option<Goal>,
}

fn row(label: impl Into<String>, key: impl Into<String>, unit: &'static str, better: Better) -> Row {
    Row { label: label.into(), key: key.into(), unit, better, reference: None, goal: None }
}

impl Row {
    fn vs(mut self, label: impl Into<String>, key: impl Into<String>) -> Row {
        self.reference = Some(Reference::Key(label.into(), key.into()));
        self
    }

    fn quoted(mut self, label: &str, value: f64) -> Row {
        self.reference = Some(Reference::Quoted(label.to_string(), value));
        self
    }

    fn goal(mut self, goal: Goal) -> Row {
        self.goal = Some(goal);
        self
    }
}

/// One benchmark: its JSON file's stem, the command that writes it, what it measures.
struct Spec {
    name: &'static str,
    what: &'static str,
    rows: Vec<Row>,
}

/// Every benchmark, in the order `bench all` runs them, with the goals of its issue.
fn specs() -> Vec<Spec> {
    use Better::{Higher, Lower};
    use Goal::*;
    let mut failover_rows = Vec::new();
    for (scenario, label, goal_ms, keepalived_label) in [
        ("link_cut", "data link down", 400.0, "keepalived (same namespaces)"),
        ("silent_cut", "silent data cut", 1200.0, "keepalived (same namespaces)"),
        ("sigterm", "SIGTERM of the leader", 300.0, "keepalived (same namespaces)"),
    ] {
        let key = |suffix: &str| format!("{scenario}_{suffix}");
        let label_of = |what: &str| format!("{label}: {what}");
        failover_rows.push(
            row(label_of("client unavailable, p50"), key("unavailable_ms_p50"), "ms", Lower)
                .vs(keepalived_label, format!("keepalived_{scenario}_unavailable_ms_p50"))
                .goal(AtMost(goal_ms)),
        );
        failover_rows.push(
            row(label_of("client unavailable, p99"), key("unavailable_ms_p99"), "ms", Lower)
                .vs(keepalived_label, format!("keepalived_{scenario}_unavailable_ms_p99"))
                .goal(AtMostTimes(2.0, key("unavailable_ms_p50"))),
        );
        failover_rows.push(
            row(label_of("VIP up on the new leader, p50"), key("vip_up_ms_p50"), "ms", Lower)
                .vs(keepalived_label, format!("keepalived_{scenario}_vip_up_ms_p50")),
        );
    }
    failover_rows.push(
        row("failed requests during fail-back", "failback_failed_requests", "", Lower)
            .vs("keepalived", "keepalived_failback_failed_requests"),
    );
    failover_rows
        .push(row("samples with the VIP on two nodes", "vip_on_two_nodes_samples", "", Lower).goal(AtMost(0.0)));
    // Issue 14: ours tuned against keepalived tuned ("fastest stable"), a crash, a host down.
    let keepalived_tuned = "keepalived tuned (VRRPv3 0.05 s, BFD 10 ms × 10)";
    for (trial_type, label) in
        [("link_cut", "data link down"), ("silent_cut", "silent data cut"), ("sigterm", "SIGTERM"), ("crash", "crash")]
    {
        failover_rows.push(
            row(format!("tuned, {label}: VIP up, p50"), format!("taskd_tuned_{trial_type}_vip_up_ms_p50"), "ms", Lower)
                .vs(keepalived_tuned, format!("keepalived_tuned_{trial_type}_vip_up_ms_p50"))
                .goal(RatioAtMost(1.0)),
        );
    }
    failover_rows.push(
        row("crash (SIGKILL, restart after 100 ms): VIP up, p50", "taskd_crash_vip_up_ms_p50", "ms", Lower)
            .vs("keepalived", "keepalived_crash_vip_up_ms_p50")
            .goal(AtMost(150.0)),
    );
    failover_rows.push(
        row("host down (both links): VIP up, p50", "taskd_host_down_vip_up_ms_p50", "ms", Lower)
            .vs("keepalived", "keepalived_host_down_vip_up_ms_p50")
            .goal(AtMost(4200.0)),
    );
    failover_rows.push(
        row("host down, early takeover on: VIP up, p50", "taskd_early_takeover_host_down_vip_up_ms_p50", "ms", Lower)
            .vs("keepalived", "keepalived_host_down_vip_up_ms_p50")
            .goal(AtMost(1000.0)),
    );
    failover_rows.push(
        row("tuned: spurious failovers in the quiet watch under load", "taskd_tuned_spurious_failovers", "", Lower)
            .vs(keepalived_tuned, "keepalived_tuned_spurious_failovers")
            .goal(AtMost(0.0)),
    );
    vec![
        Spec {
            name: "runtime",
            what: "the coroutine runtime's costs next to `may`, `generator` and `std::thread` (issue 2)",
            rows: vec![
                row("sched + run of an empty coroutine", "spawn_run_ns_ctx", "ns", Lower)
                    .vs("may go! + join", "spawn_run_ns_may")
                    .goal(RatioAtMost(1.5)),
                row("yield/resume round trip", "yield_ns_ctx", "ns", Lower)
                    .vs("raw generator resume", "resume_ns_generator")
                    .goal(RatioAtMost(1.5)),
                row("SyncPoint round trip between contexts, p50", "syncpoint_rtt_us_p50", "µs", Lower)
                    .vs("crossbeam channel between threads", "thread_channel_rtt_us_p50")
                    .goal(AtMost(20.0)),
                row("SyncPoint round trip between contexts, p99", "syncpoint_rtt_us_p99", "µs", Lower)
                    .vs("crossbeam channel between threads", "thread_channel_rtt_us_p99"),
                row("CoMutex uncontended", "comutex_uncontended_ns", "ns", Lower)
                    .vs("std::sync::Mutex", "std_mutex_uncontended_ns"),
                row("CoMutex contended", "comutex_contended_ns", "ns", Lower)
                    .vs("std::sync::Mutex (threads, no yield)", "std_mutex_contended_ns"),
            ],
        },
        Spec {
            name: "rpc",
            what: "the RPC server: JSON echo next to `may_minihttp`, and a drain under load (issue 4)",
            rows: vec![
                row("JSON echo, 64 keep-alive connections", "echo_rps", "req/s", Higher)
                    .vs("may_minihttp", "echo_rps_reference"),
                row("JSON echo latency, p50", "echo_p50_us", "µs", Lower).vs("may_minihttp", "echo_p50_us_reference"),
                row("JSON echo latency, p99", "echo_p99_us", "µs", Lower).vs("may_minihttp", "echo_p99_us_reference"),
                row("requests lost when stopping with 1,000 in flight", "drain_lost_requests", "", Lower)
                    .goal(AtMost(0.0)),
                row("drain overrun past the longest request", "drain_overrun_ms", "ms", Lower).goal(AtMost(100.0)),
            ],
        },
        Spec {
            name: "quorum",
            what: "leader hand-over through ZooKeeper (issue 3)",
            rows: vec![
                row("hand-over after stop() of the leader, p50", "handover_after_stop_ms_p50", "ms", Lower)
                    .vs("ZooKeeper close → watch floor", "floor_close_to_watch_ms_p50")
                    .goal(AtMost(50.0)),
                row("hand-over after stop() of the leader, p99", "handover_after_stop_ms_p99", "ms", Lower)
                    .vs("ZooKeeper close → watch floor", "floor_close_to_watch_ms_p99"),
                row("hand-over after SIGKILL, p50", "handover_after_kill_ms_p50", "ms", Lower)
                    .vs("the session timeout", "session_timeout_ms"),
            ],
        },
        Spec {
            name: "stepdown",
            what: "zbs-taskd step-down, three real daemons on loopback (issue 5)",
            rows: vec![
                row("health failure → new leader, p50", "health_fail_to_new_leader_ms_p50", "ms", Lower)
                    .quoted("keepalived, ping check (quoted by issue 5)", 2300.0)
                    .goal(AtMost(400.0)),
                row("health failure → new leader, p99", "health_fail_to_new_leader_ms_p99", "ms", Lower)
                    .quoted("keepalived, ping check (quoted by issue 5)", 2300.0),
                row("SIGTERM → new leader, p50", "sigterm_to_new_leader_ms_p50", "ms", Lower)
                    .quoted("keepalived, SIGTERM (quoted by issue 5)", 620.0)
                    .goal(AtMost(150.0)),
                row("SIGTERM → new leader, p99", "sigterm_to_new_leader_ms_p99", "ms", Lower)
                    .quoted("keepalived, SIGTERM (quoted by issue 5)", 620.0),
                row("core files", "core_files", "", Lower).goal(AtMost(0.0)),
                row("two leaders at once", "two_leader_overlaps", "", Lower).goal(AtMost(0.0)),
            ],
        },
        Spec {
            name: "copy",
            what: "the CopyVolume engine on a 2 GiB sparse file (issue 6)",
            rows: vec![row("CopyVolume engine", "copy_mib_per_s", "MiB/s", Higher)
                .vs("cp --sparse=always + fsync", "cp_mib_per_s")
                .goal(RatioAtLeast(0.8))],
        },
        Spec {
            name: "tasks",
            what: "the Task Center through three real daemons (issue 6)",
            rows: vec![
                row("task submits (acknowledged = persisted)", "submit_per_s", "/s", Higher)
                    .vs("raw ZooKeeper creates, same client", "raw_zk_create_per_s")
                    .goal(RatioAtLeast(0.5)),
                row("submit → running at 200 tasks/s, p50", "submit_to_running_ms_p50", "ms", Lower),
                row("submit → running at 200 tasks/s, p99", "submit_to_running_ms_p99", "ms", Lower).goal(AtMost(50.0)),
                // Issue 15: a 100 ms scrape leaves it unchanged within noise (same run, ABBA rounds).
                row("submit → running p99, /metrics scraped every 100 ms", "submit_to_running_ms_p99", "ms", Lower)
                    .vs("not scraped, same run", "unscraped_submit_to_running_ms_p99")
                    .goal(RatioAtMost(1.25)),
                row("a /metrics scrape of the leader, p99", "metrics_scrape_ms_p99", "ms", Lower),
                row("show from the cache, p99", "cache_show_us_p99", "µs", Lower),
                row("list of 100 from the cache, p99", "cache_list_100_ms_p99", "ms", Lower),
                row("CopyVolume task, 2 GiB sparse file", "copy_mib_per_s", "MiB/s", Higher)
                    .vs("cp --sparse=always + fsync", "cp_mib_per_s")
                    .goal(RatioAtLeast(0.8)),
                row("dispatcher RSS with 10,000 retained tasks", "dispatcher_rss_mib_10k_tasks", "MiB", Lower),
            ],
        },
        Spec {
            name: "failover",
            what: "the VIP in a network-namespace cluster, side by side with keepalived at defaults and tuned (issues 7 and 14; root)",
            rows: failover_rows,
        },
    ]
}

/// A row's figures, looked up in a report.
struct Outcome {
    ours: Option<f64>,
    reference: Option<(String, f64)>,
    goal: Option<(String, bool, f64)>,
}

fn finite(value: Option<&f64>) -> Option<f64> {
    value.copied().filter(|value| value.is_finite())
}

fn evaluate(row: &Row, results: &BTreeMap<String, f64>) -> Outcome {
    let ours = finite(results.get(&row.key));
    let reference = match &row.reference {
        Some(Reference::Key(label, key)) => finite(results.get(key)).map(|value| (label.clone(), value)),
        Some(Reference::Quoted(label, value)) => Some((label.clone(), *value)),
        None => None,
    };
    let ratio = match (ours, &reference) {
        (Some(ours), Some((_, reference))) if *reference != 0.0 => Some(ours / reference),
        _ => None,
    };
    let margin = |good: f64, bad: f64| if bad == 0.0 { f64::INFINITY } else { good / bad };
    let goal = match (row.goal.as_ref(), ours) {
        (Some(&Goal::AtMost(bound)), Some(ours)) => {
            Some((format!("≤ {}", number(bound, row.unit)), ours <= bound, margin(bound, ours)))
        }
        (Some(&Goal::RatioAtMost(bound)), _) => {
            ratio.map(|ratio| (format!("ratio ≤ {bound}"), ratio <= bound, margin(bound, ratio)))
        }
        (Some(&Goal::RatioAtLeast(bound)), _) => {
            ratio.map(|ratio| (format!("ratio ≥ {bound}"), ratio >= bound, margin(ratio, bound)))
        }
        (Some(Goal::AtMostTimes(factor, key)), Some(ours)) => finite(results.get(key)).map(|other| {
            let factor = *factor;
            let bound = factor * other;
            (format!("≤ {factor} × `{key}` ({})", number(bound, row.unit)), ours <= bound, margin(bound, ours))
        }),
        _ => None,
    };
    Outcome { ours, reference, goal }
}

/// How many times better than its reference a figure is (> 1: better), whichever way is better.
fn times_better(row: &Row, ours: f64, reference: f64) -> f64 {
    match row.better {
        Better::Lower if ours == 0.0 => f64::INFINITY,
        Better::Lower => reference / ours,
        Better::Higher if reference == 0.0 => f64::INFINITY,
        Better::Higher => ours / reference,
    }
}

/// A figure with its unit, to three or four significant digits.
fn number(value: f64, unit: &str) -> String {
    let digits = if value.fract() == 0.0 || value.abs() >= 100.0 {
        0
    } else if value.abs() >= 10.0 {
        1
    } else if value.abs() >= 1.0 {
        2
    } else {
        3
    };
    let mut text = format!("{value:.digits$}");
    if digits == 0 && value.abs() >= 10_000.0 {
        let (sign, body) = if let Some(body) = text.strip_prefix('-') { ("-", body.to_string()) } else { ("", text) };
        let grouped: Vec<String> =
            body.as_bytes().rchunks(3).rev().map(|chunk| String::from_utf8_lossy(chunk).into_owned()).collect();
        text = format!("{sign}{}", grouped.join(","));
    }
    if unit.is_empty() {
        text
    } else if unit.starts_with('/') {
        format!("{text}{unit}")
    } else {
        format!("{text} {unit}")
    }
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time (Howard Hinnant's days-to-civil).
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let seconds = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", seconds / 3600, seconds % 3600 / 60)
}

fn machine(report: &Report) -> String {
    let machine = &report.machine;
    let model = if machine.cpu_model.is_empty() { String::new() } else { format!("{}, ", machine.cpu_model) };
    format!("{model}{} CPUs, Linux {}", machine.n_cpus, machine.kernel)
}

/// Reads every `*.json` report in `dir` (skipping, with a warning, files that are not one).
pub fn load_reports(dir: &Path) -> Result<BTreeMap<String, Report>> {
    let mut reports = BTreeMap::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(reports),
        Err(error) => return Err(error).with_context(|| format!("list {}", dir.display())),
    };
    for entry in entries {
        let path = entry.with_context(|| format!("list {}", dir.display()))?.path();
        if path.extension().is_none_or(|extension| extension != "json") {
            continue;
        }
        let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        match serde_json::from_str::<Report>(&text) {
            Ok(report) => {
                reports.insert(report.benchmark.clone(), report);
            }
            Err(error) => eprintln!("bench report: {} is not a benchmark report ({error}); left out", path.display()),
        }
    }
    Ok(reports)
}

/// The report's Markdown and its plots (`(file name, SVG)`), from `reports`. `skipped` names
/// benchmarks the last run left out, with why.
pub fn render(
    reports: &BTreeMap<String, Report>,
    skipped: &[(String, String)],
    bench_dir: &Path,
) -> Result<(String, Vec<(String, String)>)> {
    let specs = specs();
    let mut plots = Vec::new();
    let mut md = String::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let _ = writeln!(md, "# zbs-taskd-rs benchmarks\n");
    let _ = writeln!(
        md,
        "Written {} by `cargo xtask bench report` from the JSON reports in `target/bench/` \
         (`cargo xtask bench all` runs every benchmark, then this). Each benchmark measures our figure and its \
         reference side by side in the same run, so read the ratios: the machines these run on are shared, \
         and absolute figures move with the load.\n",
        utc(now)
    );
    let _ = writeln!(md, "| benchmark | measured | machine | goals met |");
    let _ = writeln!(md, "|---|---|---|---|");
    for spec in &specs {
        match reports.get(spec.name) {
            Some(report) => {
                let outcomes: Vec<Outcome> = spec.rows.iter().map(|row| evaluate(row, &report.results)).collect();
                let goals: Vec<bool> =
                    outcomes.iter().filter_map(|outcome| outcome.goal.as_ref().map(|goal| goal.1)).collect();
                let met = goals.iter().filter(|met| **met).count();
                let goals_text =
                    if goals.is_empty() { "no goal".to_string() } else { format!("{met} of {}", goals.len()) };
                let _ = writeln!(
                    md,
                    "| [{}](#{}) | {} | {} | {goals_text} |",
                    spec.name,
                    spec.name,
                    utc(report.measured_at_unix),
                    machine(report)
                );
            }
            None => {
                let why = skipped
                    .iter()
                    .find(|(name, _)| name == spec.name)
                    .map(|(_, why)| why.as_str())
                    .unwrap_or("no report");
                let _ = writeln!(md, "| {} | not measured: {why} | | |", spec.name);
            }
        }
    }
    for spec in &specs {
        let _ = writeln!(md, "\n## {}\n", spec.name);
        let _ = writeln!(md, "`cargo xtask bench {}`: {}.\n", spec.name, spec.what);
        let Some(report) = reports.get(spec.name) else {
            let why = skipped.iter().find(|(name, _)| name == spec.name).map(|(_, why)| why.clone());
            let _ = writeln!(md, "Not measured{}.", why.map(|why| format!(": {why}")).unwrap_or_default());
            continue;
        };
        let _ = writeln!(md, "Measured {} on {}.\n", utc(report.measured_at_unix), machine(report));
        let _ = writeln!(md, "| measure | ours | side by side | ours ÷ it | goal | met |");
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        let mut bars = Vec::new();
        for row in &spec.rows {
            let outcome = evaluate(row, &report.results);
            let Some(ours) = outcome.ours else {
                let _ = writeln!(md, "| {} | not in the report (`{}`) | | | | |", row.label, row.key);
                continue;
            };
            let (reference, ratio) = match outcome.reference {
                Some((label, value)) => {
                    bars.push(MarginBar {
                        label: format!("{} vs {label}", row.label),
                        times_better: times_better(row, ours, value),
                        kind: MarginKind::Reference,
                    });
                    let ratio = if value == 0.0 { "—".to_string() } else { format!("{:.2}×", ours / value) };
                    (format!("{}: {}", label, number(value, row.unit)), ratio)
                }
                None => (String::new(), String::new()),
            };
            let (goal, met) = match &outcome.goal {
                Some((text, met, margin)) => {
                    bars.push(MarginBar {
                        label: format!("{}: goal {text}", row.label),
                        times_better: *margin,
                        kind: MarginKind::Goal,
                    });
                    (text.clone(), if *met { "met".to_string() } else { "**not met**".to_string() })
                }
                None => (String::new(), String::new()),
            };
            let _ =
                writeln!(md, "| {} | {} | {reference} | {ratio} | {goal} | {met} |", row.label, number(ours, row.unit));
        }
        if let Some(svg) =
            plot::margin_chart(&format!("{}: times better than the reference or the goal", spec.name), &bars)?
        {
            let file = format!("{}-margins.svg", spec.name);
            let _ = writeln!(md, "\n![{}: margins]({file})", spec.name);
            plots.push((file, svg));
        }
        let trials_plot = format!("{}.svg", spec.name);
        if bench_dir.join(&trials_plot).is_file() {
            let _ = writeln!(md, "\n![{}: per trial]({trials_plot})", spec.name);
        }
        if !report.notes.is_empty() {
            let _ = writeln!(md, "\nHow it was measured:\n");
            for note in &report.notes {
                let _ = writeln!(md, "- {note}");
            }
        }
        let _ = writeln!(md, "\n<details><summary>every figure of {}.json</summary>\n", spec.name);
        let _ = writeln!(md, "| key | value |\n|---|---|");
        for (key, value) in &report.results {
            let _ =
                writeln!(md, "| `{key}` | {} |", if value.is_finite() { number(*value, "") } else { "—".to_string() });
        }
        let _ = writeln!(md, "\n</details>");
    }
    for (name, report) in reports {
        if specs.iter().all(|spec| spec.name != name) {
            let _ = writeln!(md, "\n## {name}\n\nMeasured {} on {}.\n", utc(report.measured_at_unix), machine(report));
            let _ = writeln!(md, "| key | value |\n|---|---|");
            for (key, value) in &report.results {
                let _ = writeln!(md, "| `{key}` | {} |", number(*value, ""));
            }
        }
    }
    Ok((md, plots))
}

/// Writes `report.md` and its plots into `dir` from the JSON reports there; returns its path.
pub fn write(dir: &Path, skipped: &[(String, String)]) -> Result<PathBuf> {
    let reports = load_reports(dir)?;
    let (md, plots) = render(&reports, skipped, dir)?;
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    for (file, svg) in plots {
        let path = dir.join(file);
        fs::write(&path, svg).with_context(|| format!("write {}", path.display()))?;
    }
    let path = dir.join("report.md");
    fs::write(&path, md).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests;
