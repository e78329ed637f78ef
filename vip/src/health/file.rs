//! The `file` source (keepalived's `track_file`): a file whose first word says whether the data
//! network is healthy, written by the operator or by an external checker.
//!
//! # Grammar
//!
//! Only the first line counts (at most 4 KiB are read); its first word, ignoring case, is
//!
//! - `ok` or `0`: healthy, a good round;
//! - `fail` or any other integer (keepalived's convention: non-zero is a fault): unhealthy,
//!   and invalid **at once** ([`HealthSample::Down`]), because the file is an explicit,
//!   authoritative statement. The rest of the line, if any, is kept as the reason.
//!
//! Anything else, including an empty file, is garbage: a bad round, counted through `fall`, so
//! that a file caught half-written does not fail the node by itself (write it to a temporary
//! name and rename it over the old one to avoid this altogether).
//!
//! A missing or unreadable file counts as `health.file.on_missing` (`fail` by default, a bad
//! round; or `ok`, a good round). Every change of what the file says is logged once, not every
//! round.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use runtime::Thread;

use super::config::{FileConfig, MissingFile};
use super::error::Result;
use super::flag::Shared;
use super::rounds::spawn_rounds;
use super::state::HealthSample;
use super::stop::StopSignal;

/// The most of the file that is read; a health file is one short line.
const MAX_READ: u64 = 4096;

/// What one read of the health file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileReading {
    /// It says `ok` or `0`.
    Ok,
    /// It says `fail` or a non-zero number; the rest of the line, if any.
    Fail(String),
    /// It does not exist.
    Missing,
    /// It could not be read; the error.
    Unreadable(String),
    /// It says something else; the first line, shortened.
    Garbage(String),
}

/// Reads and parses the file once.
pub(crate) fn read_health_file(path: &Path) -> FileReading {
    let mut content = Vec::new();
    let read = File::open(path).and_then(|file| file.take(MAX_READ).read_to_end(&mut content));
    match read {
        Ok(_) => parse_health_file(&content),
        Err(error) if error.kind() == io::ErrorKind::NotFound => FileReading::Missing,
        Err(error) => FileReading::Unreadable(error.to_string()),
    }
}

/// Parses the content of a health file (see the [module documentation](self)).
pub(crate) fn parse_health_file(content: &[u8]) -> FileReading {
    let text = String::from_utf8_lossy(content);
    let first_line = text.lines().next().unwrap_or("").trim();
    let mut words = first_line.splitn(2, char::is_whitespace);
    let first_word = words.next().unwrap_or("");
    let rest = words.next().unwrap_or("").trim().to_string();
    if first_word.eq_ignore_ascii_case("ok") || first_word == "0" {
        return FileReading::Ok;
    }
    if first_word.eq_ignore_ascii_case("fail") || first_word.parse::<i64>().is_ok() {
        return FileReading::Fail(rest);
    }
    FileReading::Garbage(first_line.chars().take(80).collect())
}

/// The sample one reading stands for.
pub(crate) fn sample_of(reading: &FileReading, path: &Path, on_missing: MissingFile) -> HealthSample {
    let path = path.display();
    let missing = |what: String| match on_missing {
        MissingFile::Ok => HealthSample::Good,
        MissingFile::Fail => HealthSample::Bad(what),
    };
    match reading {
        FileReading::Ok => HealthSample::Good,
        FileReading::Fail(detail) if detail.is_empty() => HealthSample::Down(format!("health file {path} says fail")),
        FileReading::Fail(detail) => HealthSample::Down(format!("health file {path} says fail: {detail}")),
        FileReading::Missing => missing(format!("health file {path} is missing")),
        FileReading::Unreadable(error) => missing(format!("health file {path} cannot be read: {error}")),
        FileReading::Garbage(line) => {
            HealthSample::Bad(format!("health file {path} says neither ok nor fail: {line:?}"))
        }
    }
}

/// Starts the thread that reads the file every interval.
pub(crate) fn start_file_source(shared: Arc<Shared>, config: &FileConfig, stop: StopSignal) -> Result<Thread<()>> {
    let path: PathBuf = config.path.clone();
    let on_missing = config.on_missing;
    let mut last_reading: Option<FileReading> = None;
    spawn_rounds("zbs-health-file", shared, config.interval(), stop, move |_| {
        let reading = read_health_file(&path);
        if last_reading.as_ref() != Some(&reading) {
            log_reading(&path, &reading, on_missing);
            last_reading = Some(reading.clone());
        }
        Some(sample_of(&reading, &path, on_missing))
    })
}

fn log_reading(path: &Path, reading: &FileReading, on_missing: MissingFile) {
    let path = path.display();
    match reading {
        FileReading::Ok => tracing::info!(%path, "health file says ok"),
        FileReading::Fail(detail) => tracing::warn!(%path, %detail, "health file says fail"),
        FileReading::Missing => {
            tracing::warn!(%path, counts_as = ?on_missing, "health file is missing")
        }
        FileReading::Unreadable(error) => {
            tracing::warn!(%path, %error, counts_as = ?on_missing, "health file cannot be read")
        }
        FileReading::Garbage(line) => tracing::warn!(%path, %line, "health file says neither ok nor fail"),
    }
}

#[cfg(test)]
mod tests;
