//! Log set-up: `tracing` to stderr and optionally a file, in the glog line format the original
//! daemons write (`I1123 20:17:43.026106  4351 file.rs:698] message`), plain text or JSON.

use std::fmt;
use std::fs::OpenOptions;
use std::sync::Arc;

use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid log filter {filter:?}: {message}")]
    Filter { filter: String, message: String },
    #[error("cannot open log file {path}: {source}")]
    File { path: std::path::PathBuf, source: std::io::Error },
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

/// Installs the process's logger as configured.
pub fn init(config: &LogConfig) -> Result<(), LoggingError> {
    let filter = EnvFilter::try_new(&config.level)
        .map_err(|error| LoggingError::Filter { filter: config.level.clone(), message: error.to_string() })?;
    let writer = match &config.file {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| LoggingError::File { path: path.clone(), source })?;
            BoxMakeWriter::new(std::io::stderr.and(Arc::new(file)))
        }
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(false);
    let installed = match config.format {
        LogFormat::Glog => builder.event_format(GlogFormat).try_init(),
        LogFormat::Plain => builder.with_thread_names(true).try_init(),
        LogFormat::Json => builder.json().with_thread_names(true).try_init(),
    };
    installed.map_err(|_| LoggingError::AlreadyInstalled)
}

/// Formats events as glog lines: severity letter, `MMDD HH:MM:SS.micros`, thread id, source
/// file and line, then the message and its fields.
pub struct GlogFormat;

impl<S, N> FormatEvent<S, N> for GlogFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, context: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        // Records bridged from the `log` crate (may's) carry their file and line here.
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        write_glog_prefix(
            &mut writer,
            *metadata.level(),
            chrono::Local::now(),
            current_thread_id(),
            metadata.file().unwrap_or("?"),
            metadata.line().unwrap_or(0),
        )?;
        context.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// glog knows four severities; debug and trace lines are informational for it.
fn severity_letter(level: Level) -> char {
    match level {
        Level::ERROR => 'E',
        Level::WARN => 'W',
        _ => 'I',
    }
}

fn write_glog_prefix(
    writer: &mut impl fmt::Write,
    level: Level,
    time: chrono::DateTime<chrono::Local>,
    thread_id: i64,
    file: &str,
    line: u32,
) -> fmt::Result {
    let file_name = file.rsplit('/').next().unwrap_or(file);
    write!(
        writer,
        "{}{} {:>5} {}:{}] ",
        severity_letter(level),
        time.format("%m%d %H:%M:%S%.6f"),
        thread_id,
        file_name,
        line
    )
}

fn current_thread_id() -> i64 {
    // SAFETY: gettid has no preconditions and cannot fail.
    i64::from(unsafe { libc::gettid() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_prefix_matches_glog() {
        let time = chrono::Local.with_ymd_and_hms(2026, 1, 18, 20, 17, 43).single().expect("a valid local time")
            + chrono::Duration::microseconds(26_106);
        let mut line = String::new();
        write_glog_prefix(&mut line, Level::INFO, time, 4351, "taskd/src/task_server.rs", 698).expect("format");
        assert_eq!(line, "I0118 20:17:43.026106  4351 task_server.rs:698] ");
        let mut line = String::new();
        write_glog_prefix(&mut line, Level::ERROR, time, 123456, "x.rs", 1).expect("format");
        assert_eq!(line, "E0118 20:17:43.026106 123456 x.rs:1] ");
        assert_eq!(severity_letter(Level::WARN), 'W');
        assert_eq!(severity_letter(Level::DEBUG), 'I');
    }
}
