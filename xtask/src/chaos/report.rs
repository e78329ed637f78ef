//! The run's report: `target/bench/chaos.json` (a flat `results` map of numbers, as every
//! benchmark writes), the printed summary, and the run's history, fault log and findings in the
//! run's dir (kept when the run failed).

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::checker::Findings;
use super::gather::Gathered;
use super::nemesis::Nemesis;
use super::target::Target;
use super::workload::History;
use super::ChaosArgs;
use crate::bench::report::Report;

#[allow(clippy::too_many_arguments)]
pub fn write(
    work_dir: &Path,
    args: &ChaosArgs,
    seed: u64,
    target: &Target,
    history: &History,
    nemesis: &Nemesis,
    gathered: &Gathered,
    findings: &Findings,
) -> Result<()> {
    write_lines(&work_dir.join("history.jsonl"), history.exchanges.iter())?;
    write_lines(&work_dir.join("submits.jsonl"), history.submits.iter())?;
    write_lines(&work_dir.join("faults.jsonl"), nemesis.records.iter())?;
    let mut text = findings.details.join("\n");
    text.push('\n');
    for line in gathered
        .crash_lines
        .iter()
        .chain(&gathered.core_files)
        .chain(&gathered.unexpected_exits)
        .chain(&gathered.vip_episodes)
    {
        text.push_str(line);
        text.push('\n');
    }
    fs::write(work_dir.join("findings.txt"), text).context("write findings.txt")?;

    let mut report = Report::new("chaos");
    let faults_injected =
        nemesis.records.iter().filter(|record| !record.errors.iter().any(|error| error.starts_with("inject"))).count();
    let n_exchanges = history.exchanges.len();
    let n_answered = history.exchanges.iter().filter(|exchange| exchange.status.is_some()).count();
    let results: [(&str, f64); 25] = [
        ("minutes", args.minutes),
        ("seed", seed as f64),
        ("faults_injected", faults_injected as f64),
        ("tasks_submitted", history.submits.len() as f64),
        ("tasks_acknowledged", findings.tasks_acknowledged as f64),
        ("tasks_recorded", gathered.facts.tasks.len() as f64),
        ("tasks_lost", findings.tasks_lost as f64),
        ("tasks_duplicated", findings.tasks_duplicated as f64),
        ("tasks_unexplained", findings.tasks_unexplained as f64),
        ("tasks_stuck", findings.tasks_stuck as f64),
        ("runs", gathered.facts.runs.len() as f64),
        ("runs_unended", findings.runs_unended as f64),
        ("double_runs", findings.double_runs as f64),
        ("late_writes", findings.late_writes as f64),
        ("copies_checked", gathered.facts.copies.len() as f64),
        ("copies_corrupt", findings.copies_corrupt as f64),
        ("max_concurrent_leaders", findings.max_concurrent_leaders as f64),
        ("leader_overlap_ms_max", findings.leader_overlap_ms),
        ("vip_two_holder_samples", gathered.vip_two_holder_samples as f64),
        ("vip_dead_holder_samples", gathered.vip_dead_holder_samples as f64),
        ("core_files", gathered.core_files.len() as f64),
        ("panics", gathered.crash_lines.len() as f64),
        ("daemons_down_at_end", gathered.down_at_end.len() as f64),
        ("unexpected_exits", gathered.unexpected_exits.len() as f64),
        ("requests_answered", n_answered as f64),
    ];
    for (key, value) in results {
        report.set(key, value);
    }
    report.set("requests_sent", n_exchanges as f64);
    report.set("leader_samples", gathered.n_leader_samples as f64);
    report.set("vip_samples", gathered.vip_samples as f64);
    report.note(format!(
        "cargo xtask chaos --minutes {} --seed {seed}{}",
        args.minutes,
        if args.netns { " --netns" } else { "" }
    ));
    report.note(if target.is_netns() {
        "netns cluster: 3 daemons, one ZooKeeper in its namespace, VIP sampled every 50 ms; Sleep tasks only"
            .to_string()
    } else {
        "loopback cluster: 3 daemons, a 3-server ZooKeeper ensemble, Sleep and CopyVolume tasks".to_string()
    });
    report.note(
        "late_writes: runs that wrote (or died mid-copy) and were awake, not SIGSTOPped, after another run of their task \
         began; a run acts from its start to its end or, when earlier, the end of its IO by its lease (io_until_mono_ns)"
            .to_string(),
    );
    let mut kinds: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for record in &nemesis.records {
        let kind =
            serde_json::to_value(&record.fault).ok().and_then(|value| value["kind"].as_str().map(str::to_string));
        *kinds.entry(kind.unwrap_or_default()).or_default() += 1;
    }
    report.note(format!("faults by kind: {kinds:?}"));
    report.note(
        "vip_two_holder_samples: the VIP on two nodes with live daemons; vip_dead_holder_samples: on a node whose \
         daemon was SIGKILLed (until its restart + 2 s) beside the new holder: the kernel keeps a killed process's \
         address until the fence's lifetime lapses or the restarted daemon removes it"
            .to_string(),
    );
    report.note(format!("run dir: {}", work_dir.display()));
    report.write()?;
    for detail in findings.details.iter().take(40) {
        println!("finding: {detail}");
    }
    // Episodes of a SIGKILLed holder's leftover are counted in vip_dead_holder_samples; each
    // line names the faults, so a reader tells them from two live holders.
    for episode in &gathered.vip_episodes {
        println!("vip episode: {episode}");
    }
    for line in gathered.crash_lines.iter().take(10) {
        println!("crash line: {line}");
    }
    println!(
        "chaos: seed {seed}: {} violation(s), {} process finding(s)",
        findings.violations(),
        gathered.core_files.len()
            + gathered.crash_lines.len()
            + gathered.down_at_end.len()
            + gathered.unexpected_exits.len()
            + gathered.vip_two_holder_samples
    );
    Ok(())
}

fn write_lines<'a, T: serde::Serialize + 'a>(path: &Path, items: impl Iterator<Item = &'a T>) -> Result<()> {
    let mut file = fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    for item in items {
        let line = serde_json::to_string(item).context("serialise a history line")?;
        writeln!(file, "{line}").with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
