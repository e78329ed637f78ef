//! The JSON report every benchmark writes: one object with a flat `results` map of numbers,
//! plus where and when it was measured. `summary` turns the JSON files into
//! `target/bench/report.md`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub mod summary;

/// A benchmark's results, written to `target/bench/<name>.json`.
#[derive(Serialize, Deserialize)]
pub struct Report {
    pub benchmark: String,
    pub measured_at_unix: u64,
    pub machine: Machine,
    /// NaN (written as `null` by serde_json) reads back as NaN.
    #[serde(deserialize_with = "results_with_nulls")]
    pub results: BTreeMap<String, f64>,
    #[serde(default)]
    pub notes: Vec<String>,
}

fn results_with_nulls<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let results = BTreeMap::<String, Option<f64>>::deserialize(deserializer)?;
    Ok(results.into_iter().map(|(key, value)| (key, value.unwrap_or(f64::NAN))).collect())
}

#[derive(Serialize, Deserialize)]
pub struct Machine {
    pub n_cpus: usize,
    pub kernel: String,
    /// `/proc/cpuinfo`'s model name (absent in reports written before it was recorded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpu_model: String,
}

impl Report {
    pub fn new(benchmark: &str) -> Report {
        Report {
            benchmark: benchmark.to_string(),
            measured_at_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or(0),
            machine: Machine {
                n_cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
                kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .map(|release| release.trim().to_string())
                    .unwrap_or_default(),
                cpu_model: cpu_model(),
            },
            results: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    pub fn set(&mut self, key: &str, value: f64) {
        self.results.insert(key.to_string(), value);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Writes the report and prints its results as a table; returns the file's path.
    pub fn write(&self) -> Result<PathBuf> {
        let directory = bench_dir();
        std::fs::create_dir_all(&directory).with_context(|| format!("create {}", directory.display()))?;
        let path = directory.join(format!("{}.json", self.benchmark));
        let json = serde_json::to_string_pretty(self).context("serialise the report")?;
        std::fs::write(&path, json).with_context(|| format!("write {}", path.display()))?;
        println!("{:<36} {:>14}", format!("{} benchmark", self.benchmark), "value");
        for (key, value) in &self.results {
            println!("{key:<36} {value:>14.3}");
        }
        for note in &self.notes {
            println!("note: {note}");
        }
        println!("report: {}", path.display());
        Ok(path)
    }
}

/// The first `model name` of `/proc/cpuinfo`, or empty.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(':')))
        .map(|(_, model)| model.trim().to_string())
        .unwrap_or_default()
}

/// `target/bench/` of the workspace, wherever cargo runs xtask from.
pub fn bench_dir() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    workspace.join("target").join("bench")
}

/// The value at `fraction` (0..=1) of `samples`, which it sorts.
pub fn percentile(samples: &mut [f64], fraction: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let index = ((samples.len() - 1) as f64 * fraction).round() as usize;
    samples[index.min(samples.len() - 1)]
}
