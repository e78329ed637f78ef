//! Tests of the run log: its lines, its rotation, and reading back past a cut line.

use super::*;

fn log_in(dir: &Path, max_bytes: u64) -> RunLog {
    RunLog { path: dir.join(FILE_NAME), max_bytes, lock: Mutex::new(()), warned: AtomicBool::new(false) }
}

fn sample_run() -> Run {
    Run {
        task_id: "t-1".to_string(),
        node_id: "node-1".to_string(),
        session_id: 42,
        start_unix_ms: 1_000,
        start_mono_ns: monotonic_ns(),
    }
}

#[test]
fn start_and_end_lines_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(dir.path(), MAX_BYTES);
    let run = sample_run();
    log.append(&run.event("start", None, CopyStats::default(), 0)).unwrap();
    let stats = CopyStats { bytes_read: 3 * 65536, bytes_written: 65536 };
    log.append(&run.event("end", Some("succeeded"), stats, 65536)).unwrap();
    let events = read(dir.path());
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event, "start");
    assert_eq!(events[0].end_mono_ns, None);
    let end = &events[1];
    assert_eq!(end.outcome.as_deref(), Some("succeeded"));
    assert_eq!((end.bytes_written, end.blocks_read, end.session_id), (65536, 3, 42));
    assert!(end.end_mono_ns.unwrap() >= end.start_mono_ns);
}

#[test]
fn rotation_keeps_one_previous_file_and_reads_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(dir.path(), 200);
    let run = sample_run();
    for _ in 0..10 {
        log.append(&run.event("start", None, CopyStats::default(), 0)).unwrap();
    }
    let current = fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
    let previous = fs::metadata(dir.path().join("runs.jsonl.1")).unwrap().len();
    assert!(current <= 200 + 400 && previous <= 200 + 400, "bounded: {current} and {previous}");
    let events = read(dir.path());
    assert!(!events.is_empty() && events.len() < 10, "older lines were dropped: {}", events.len());
}

#[test]
fn a_line_cut_by_a_crash_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_in(dir.path(), MAX_BYTES);
    log.append(&sample_run().event("start", None, CopyStats::default(), 0)).unwrap();
    OpenOptions::new().append(true).open(dir.path().join(FILE_NAME)).unwrap().write_all(b"{\"event\":\"st").unwrap();
    assert_eq!(read(dir.path()).len(), 1);
}
