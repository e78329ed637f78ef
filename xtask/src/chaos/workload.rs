//! The workload: a few client threads that submit Sleep and CopyVolume tasks (with retries),
//! cancel, pause and resume them, through whichever node answers (a follower's 421 names the
//! leader, which is followed). Every HTTP exchange is kept, with its times, in the history.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::target::{Answer, Target};
use super::unix_ms;

/// How long one logical submit may keep retrying.
const SUBMIT_DEADLINE: Duration = Duration::from_secs(30);

/// The pause between two operations of one client (ms).
const THINK_MS: (u64, u64) = (150, 900);

const PREFIX: &str = taskd::api::PREFIX;

/// One HTTP exchange.
#[derive(Clone, Debug, Serialize)]
pub struct Exchange {
    pub op: u64,
    pub client: usize,
    pub method: String,
    pub url: String,
    pub body: Option<serde_json::Value>,
    pub start_unix_ms: u64,
    pub start_mono_ns: u64,
    pub end_mono_ns: u64,
    pub status: Option<u16>,
    /// The answer (cut), or the transport error.
    pub answer: String,
}

/// A logical submit and how it ended.
#[derive(Clone, Debug, Serialize)]
pub struct Submit {
    pub op: u64,
    pub key: String,
    pub request_id: Option<String>,
    pub n_attempts: u32,
    pub acknowledged: Option<String>,
}

#[derive(Default)]
pub struct History {
    pub exchanges: Vec<Exchange>,
    pub submits: Vec<Submit>,
}

pub struct Workload<'a> {
    pub target: &'a Target,
    pub history: Mutex<History>,
    stop: AtomicBool,
    next_op: AtomicU64,
    next_sleep: AtomicU64,
    /// Task ids acknowledged so far: what cancel, pause and resume pick from.
    acknowledged: Mutex<Vec<String>>,
    request_ids: bool,
    sources: Vec<PathBuf>,
    destinations: Option<PathBuf>,
}

impl<'a> Workload<'a> {
    /// `sources` and `destinations`: the copies' sparse sources and the dir of their
    /// destinations (None: Sleep tasks only).
    pub fn new(target: &'a Target, request_ids: bool, sources: Vec<PathBuf>, destinations: Option<PathBuf>) -> Self {
        Workload {
            target,
            history: Mutex::new(History::default()),
            stop: AtomicBool::new(false),
            next_op: AtomicU64::new(1),
            next_sleep: AtomicU64::new(0),
            acknowledged: Mutex::new(Vec::new()),
            request_ids,
            sources,
            destinations,
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One client's loop until `stop`.
    pub fn client(&self, client: usize, seed: u64) {
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed.wrapping_add(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(client as u64 + 1)));
        while !self.stop.load(Ordering::Acquire) {
            let op = self.next_op.fetch_add(1, Ordering::AcqRel);
            let choice = rng.gen_range(0..100);
            match choice {
                0..=34 => self.submit_sleep(client, op),
                35..=69 if self.destinations.is_some() => self.submit_copy(client, op, &mut rng),
                35..=69 => self.submit_sleep(client, op),
                70..=79 => self.act(client, op, "cancel", &mut rng),
                80..=89 => self.act(client, op, "pause", &mut rng),
                _ => self.act(client, op, "resume", &mut rng),
            }
            std::thread::sleep(Duration::from_millis(rng.gen_range(THINK_MS.0..THINK_MS.1)));
        }
    }

    fn submit_sleep(&self, client: usize, op: u64) {
        // Each sleep's duration is its own, so its record names its submit.
        let duration_ms = 1500 + 3 * self.next_sleep.fetch_add(1, Ordering::AcqRel);
        let body = serde_json::json!({ "duration_ms": duration_ms });
        self.submit(client, op, "sleep/create", format!("sleep:{duration_ms}"), body);
    }

    fn submit_copy(&self, client: usize, op: u64, rng: &mut ChaCha8Rng) {
        let Some(destinations) = &self.destinations else { return };
        let source = &self.sources[rng.gen_range(0..self.sources.len())];
        let destination = destinations.join(format!("copy-{op}.img"));
        let body = serde_json::json!({ "source": source, "destination": destination });
        self.submit(client, op, "copy_volume/create", format!("copy:{}", destination.display()), body);
    }

    /// Submits until acknowledged (201), refused (4xx), or out of time; every attempt with the
    /// same `request_id` when the server takes one.
    fn submit(&self, client: usize, op: u64, route: &str, key: String, mut body: serde_json::Value) {
        let request_id = self.request_ids.then(|| format!("chaos-{op}"));
        if let (Some(id), Some(object)) = (&request_id, body.as_object_mut()) {
            object.insert("request_id".to_string(), serde_json::Value::String(id.clone()));
        }
        let started = Instant::now();
        let mut submit = Submit { op, key, request_id, n_attempts: 0, acknowledged: None };
        let path = format!("{PREFIX}/{route}");
        while started.elapsed() < SUBMIT_DEADLINE {
            submit.n_attempts += 1;
            match self.call(client, op, "POST", &path, Some(&body)) {
                Some((201, answer)) => {
                    submit.acknowledged = answer["task_id"].as_str().map(str::to_string);
                    if let Some(task_id) = &submit.acknowledged {
                        self.acknowledged.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(task_id.clone());
                    }
                    break;
                }
                Some((status, _)) if (400..500).contains(&status) && ![408, 421, 429].contains(&status) => break,
                _ => std::thread::sleep(Duration::from_millis(250 * u64::from(submit.n_attempts.min(8)))),
            }
        }
        self.history().submits.push(submit);
    }

    fn act(&self, client: usize, op: u64, verb: &str, rng: &mut ChaCha8Rng) {
        let task_id = {
            let acknowledged = self.acknowledged.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if acknowledged.is_empty() {
                return;
            }
            // Mostly recent tasks: those still running.
            let recent = acknowledged.len().saturating_sub(20);
            acknowledged[rng.gen_range(recent..acknowledged.len())].clone()
        };
        self.call(client, op, "POST", &format!("{PREFIX}/tasks/{task_id}/{verb}"), Some(&serde_json::json!({})));
    }

    /// One request through whichever node answers: a random node first, the leader a 421
    /// names next, every node in turn on transport errors. None when no node answered.
    pub fn call(
        &self,
        client: usize,
        op: u64,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Option<Answer> {
        let n_nodes = self.target.n_nodes();
        let first = (op as usize + client) % n_nodes;
        let mut urls: Vec<String> =
            (0..n_nodes).map(|index| self.target.api_url((first + index) % n_nodes, path)).collect();
        urls.reverse();
        let mut n_followed = 0;
        while let Some(url) = urls.pop() {
            let start_unix_ms = unix_ms();
            let start_mono_ns = taskd::run_log::monotonic_ns();
            let result = self.target.http(method, &url, body);
            let mut exchange = Exchange {
                op,
                client,
                method: method.to_string(),
                url: url.clone(),
                body: body.cloned(),
                start_unix_ms,
                start_mono_ns,
                end_mono_ns: taskd::run_log::monotonic_ns(),
                status: None,
                answer: String::new(),
            };
            match result {
                Ok((status, answer)) => {
                    exchange.status = Some(status);
                    exchange.answer = answer.to_string().chars().take(400).collect();
                    self.history().exchanges.push(exchange);
                    if status == 421 && n_followed < 3 {
                        if let Some(leader) = answer["leader"].as_str() {
                            n_followed += 1;
                            urls.push(format!("http://{leader}{path}"));
                            continue;
                        }
                    }
                    if status == 421 || status == 503 {
                        continue;
                    }
                    return Some((status, answer));
                }
                Err(error) => {
                    exchange.answer = format!("{error:#}");
                    self.history().exchanges.push(exchange);
                }
            }
        }
        None
    }
}

/// `(runner_addr, task_id)` of every CopyVolume task running now, as the leader lists it.
pub fn running_copies(target: &Target) -> Vec<(String, String)> {
    let Some(node) = target.leader() else { return Vec::new() };
    let url = target.api_url(node, &format!("{PREFIX}/tasks?state=running"));
    let Ok((200, answer)) = target.http("GET", &url, None) else { return Vec::new() };
    answer["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|task| task["kind"]["type"] == "copy_volume")
        .filter_map(|task| Some((task["runner_addr"].as_str()?.to_string(), task["task_id"].as_str()?.to_string())))
        .collect()
}

/// Whether the daemon takes a `request_id` field on submit. The probe's `source` has the wrong
/// type, so it is refused either way and creates nothing: as an unknown field when `request_id`
/// is not known (`deny_unknown_fields`; serde_json's maps keep keys sorted, so `request_id` is
/// read before `source`), as a bad `source` when it is.
pub fn server_takes_request_ids(workload: &Workload) -> bool {
    let body = serde_json::json!({ "request_id": "chaos-probe", "source": 0 });
    match workload.call(0, 0, "POST", &format!("{PREFIX}/copy_volume/create"), Some(&body)) {
        Some((_, answer)) => !answer.to_string().contains("unknown field"),
        None => false,
    }
}
