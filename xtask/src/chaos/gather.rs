//! After the faults: the settle (paused tasks resumed, every task given time to end), then the
//! gathering of what the system recorded — task records through the API, every node's run log,
//! the copies' bytes, leader samples, cores and crash lines — into the checker's [`Facts`].

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use taskd::task::{TaskKind, TaskRecord};

use super::checker::{
    split_vip_two_holder_samples, CopyFact, DeadWindow, Facts, LeaderSample, RunFact, StoppedFact, SubmitFact,
    TaskFact, TERMINAL_STATES,
};
use super::nemesis::{Fault, Nemesis};
use super::target::Target;
use super::workload::History;

const PREFIX: &str = taskd::api::PREFIX;

/// Two leaders seen together for no longer than this are a hand-over between two samples.
pub const LEADER_OVERLAP_BOUND: Duration = Duration::from_millis(250);

/// What the checker's facts leave out: the process-level checks.
pub struct Gathered {
    pub facts: Facts,
    pub core_files: Vec<String>,
    pub crash_lines: Vec<String>,
    /// Nodes with no process at the end (every node was restarted after its faults).
    pub down_at_end: Vec<usize>,
    pub unexpected_exits: Vec<String>,
    /// Samples of the VIP on two nodes with live processes.
    pub vip_two_holder_samples: usize,
    /// Samples of the VIP on a SIGKILLed node beside the new holder (see
    /// `checker::split_vip_two_holder_samples`), counted apart.
    pub vip_dead_holder_samples: usize,
    pub vip_samples: usize,
    /// Each time the VIP was on two nodes, with the faults active then.
    pub vip_episodes: Vec<String>,
    pub n_leader_samples: usize,
}

impl Gathered {
    /// No core, no panic, every daemon alive and none died unasked, the VIP never on two nodes.
    pub fn clean(&self) -> bool {
        self.core_files.is_empty()
            && self.crash_lines.is_empty()
            && self.down_at_end.is_empty()
            && self.unexpected_exits.is_empty()
            && self.vip_two_holder_samples == 0
    }
}

/// Every task record, from whichever node leads (followed from any node's 421).
pub fn list_tasks(target: &Target) -> Result<Vec<TaskRecord>> {
    let mut last_error = String::from("no node answered");
    let mut nodes: Vec<usize> = target.leader().into_iter().collect();
    nodes.extend(0..target.n_nodes());
    for node in nodes {
        let mut url = target.api_url(node, &format!("{PREFIX}/tasks"));
        for _ in 0..2 {
            match target.http("GET", &url, None) {
                Ok((200, answer)) => {
                    let tasks = answer["tasks"].as_array().cloned().unwrap_or_default();
                    return tasks
                        .into_iter()
                        .map(|task| serde_json::from_value(task).context("parse a task record"))
                        .collect();
                }
                Ok((421, answer)) => match answer["leader"].as_str() {
                    Some(leader) => url = format!("http://{leader}{PREFIX}/tasks"),
                    None => break,
                },
                Ok((status, answer)) => {
                    last_error = format!("{url}: {status} {answer}");
                    break;
                }
                Err(error) => {
                    last_error = format!("{error:#}");
                    break;
                }
            }
        }
    }
    bail!("cannot list the tasks: {last_error}")
}

/// Resumes paused tasks and waits until every task has ended, or `bound` passed; true when all ended.
pub fn settle(target: &Target, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    let mut last_report = Instant::now();
    loop {
        match list_tasks(target) {
            Ok(tasks) => {
                let open: Vec<&TaskRecord> =
                    tasks.iter().filter(|task| !TERMINAL_STATES.contains(&task.state.to_string().as_str())).collect();
                if open.is_empty() {
                    return true;
                }
                for task in open.iter().filter(|task| task.state.to_string() == "paused") {
                    let url = target
                        .leader()
                        .map(|node| target.api_url(node, &format!("{PREFIX}/tasks/{}/resume", task.task_id)));
                    if let Some(url) = url {
                        let _ = target.http("POST", &url, Some(&serde_json::json!({})));
                    }
                }
                if last_report.elapsed() > Duration::from_secs(10) {
                    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
                    for task in &open {
                        *by_state.entry(task.state.to_string()).or_default() += 1;
                    }
                    println!("chaos: settling: {by_state:?}");
                    last_report = Instant::now();
                }
            }
            Err(error) => eprintln!("chaos: settle: {error:#}"),
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What names a task's submit: the sleep's duration, the copy's destination.
pub fn task_key(kind: &TaskKind) -> String {
    match kind {
        TaskKind::Sleep(args) => format!("sleep:{}", args.duration_ms),
        TaskKind::CopyVolume(args) => format!("copy:{}", args.destination.display()),
    }
}

pub fn gather(
    target: &Target,
    history: &History,
    nemesis: &Nemesis,
    netns_samples: Vec<LeaderSample>,
) -> Result<Gathered> {
    let records = list_tasks(target).context("list the tasks after the settle")?;
    let copies_of: BTreeMap<String, bool> = records
        .iter()
        .map(|record| (record.task_id.to_string(), matches!(record.kind, TaskKind::CopyVolume(_))))
        .collect();
    let tasks = records
        .iter()
        .map(|record| TaskFact {
            task_id: record.task_id.to_string(),
            key: task_key(&record.kind),
            state: record.state.to_string(),
        })
        .collect();
    let submits = history
        .submits
        .iter()
        .map(|submit| SubmitFact { op: submit.op, key: submit.key.clone(), acknowledged: submit.acknowledged.clone() })
        .collect();
    let mut copies = Vec::new();
    for record in &records {
        if let (TaskKind::CopyVolume(args), "succeeded") = (&record.kind, record.state.to_string().as_str()) {
            copies.push(compare_copy(&record.task_id.to_string(), &args.source, &args.destination));
        }
    }
    let mut runs = Vec::new();
    for node in 0..target.n_nodes() {
        runs.extend(runs_of(&target.state_dir(node), &copies_of));
    }
    let leader_samples = target.fixture_leader_samples().unwrap_or(netns_samples);
    let n_leader_samples = leader_samples.len();
    let facts = Facts {
        submits,
        tasks,
        runs,
        deaths: nemesis.deaths.clone(),
        stopped: nemesis
            .records
            .iter()
            .filter_map(|record| match record.fault {
                Fault::PauseLeader { node } | Fault::PauseRunner { node, .. } => Some(StoppedFact {
                    node_id: format!("node-{}", node + 1),
                    from_ns: record.start_mono_ns,
                    to_ns: record.end_mono_ns.unwrap_or(u64::MAX),
                }),
                _ => None,
            })
            .collect(),
        copies,
        leader_samples,
        leader_overlap_bound_ns: LEADER_OVERLAP_BOUND.as_nanos() as u64,
        gathered_ns: taskd::run_log::monotonic_ns(),
    };
    let (two_holder, vip_samples, episodes) = target.vip_two_holder_samples();
    let killed: Vec<DeadWindow> = nemesis
        .records
        .iter()
        .filter_map(|record| match &record.fault {
            Fault::KillDaemon { node, signal, .. } if signal == "SIGKILL" => Some(DeadWindow {
                node: *node,
                from_ns: record.start_mono_ns,
                restarted_ns: record.end_mono_ns.unwrap_or(u64::MAX),
            }),
            _ => None,
        })
        .collect();
    let (vip_two_holder_samples, vip_dead_holder_samples) = split_vip_two_holder_samples(&two_holder, &killed);
    let vip_episodes = episodes
        .iter()
        .map(|(first, last, holders)| {
            let active: Vec<String> = nemesis
                .records
                .iter()
                .filter(|record| {
                    record.start_mono_ns <= *last && record.end_mono_ns.is_none_or(|end| end + 2_000_000_000 >= *first)
                })
                .map(|record| format!("fault {} {:?}", record.id, record.fault))
                .collect();
            format!(
                "VIP on nodes {:?} from {:.3} s to {:.3} s (monotonic, {:.0} ms); faults active then or ended within 2 s before: {}",
                holders.iter().map(|node| node + 1).collect::<Vec<_>>(),
                *first as f64 / 1e9,
                *last as f64 / 1e9,
                (last - first) as f64 / 1e6,
                if active.is_empty() { "none".to_string() } else { active.join("; ") }
            )
        })
        .collect();
    Ok(Gathered {
        facts,
        core_files: target.core_files().iter().map(|path| path.display().to_string()).collect(),
        crash_lines: target.crash_lines(),
        down_at_end: (0..target.n_nodes()).filter(|&node| target.pid(node).is_none()).collect(),
        unexpected_exits: nemesis.unexpected_exits.clone(),
        vip_two_holder_samples,
        vip_dead_holder_samples,
        vip_samples,
        vip_episodes,
        n_leader_samples,
    })
}

/// One node's runs: `start` lines joined with their `end` lines.
fn runs_of(state_dir: &Path, copies_of: &BTreeMap<String, bool>) -> Vec<RunFact> {
    let mut runs: BTreeMap<(String, u32, i64, u64), RunFact> = BTreeMap::new();
    for event in taskd::run_log::read(state_dir) {
        let key = (event.task_id.clone(), event.pid, event.session_id, event.start_mono_ns);
        let run = runs.entry(key).or_insert_with(|| RunFact {
            task_id: event.task_id.clone(),
            node_id: event.node_id.clone(),
            pid: event.pid,
            session_id: event.session_id,
            start_ns: event.start_mono_ns,
            end_ns: None,
            outcome: None,
            bytes_written: 0,
            writes_data: copies_of.get(&event.task_id).copied().unwrap_or(true),
            io_until_ns: None,
        });
        if event.event == "end" {
            run.end_ns = event.end_mono_ns;
            run.outcome = event.outcome;
            run.bytes_written = event.bytes_written;
            run.io_until_ns = event.io_until_mono_ns;
        }
    }
    runs.into_values().collect()
}

/// A succeeded copy: equal to its source by SHA-256, and no more allocated than the source
/// (plus an extent of slack): its holes kept.
fn compare_copy(task_id: &str, source: &Path, destination: &Path) -> CopyFact {
    let equal = match (sha256(source), sha256(destination)) {
        (Ok(source), Ok(destination)) => source == destination,
        _ => false,
    };
    let allocated = |path: &Path| fs::metadata(path).map(|metadata| metadata.blocks() * 512).unwrap_or(u64::MAX);
    let holes_kept = allocated(destination) <= allocated(source).saturating_add(1 << 20);
    CopyFact { task_id: task_id.to_string(), equal, holes_kept }
}

fn sha256(path: &Path) -> Result<[u8; 32]> {
    let mut file = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n_read = file.read(&mut buffer).with_context(|| format!("read {}", path.display()))?;
        if n_read == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buffer[..n_read]);
    }
}
