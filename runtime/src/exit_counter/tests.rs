//! Tests of the exit counter: counting and the window, sharing between processes (children are
//! re-executions of this test binary), and recovery from missing, truncated or garbled files.

use std::fmt::Debug;
use std::fs;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::span;
use tracing::{Event, Level, Metadata, Subscriber};

use super::*;
use crate::test_child::{assert_succeeded_with, ChildTests};

/// The tests that run as re-executed children sharing one counter file.
const CHILDREN: ChildTests = ChildTests::new("RUNTIME_EXIT_COUNTER_TEST_CHILD", module_path!());
/// The counter file a child opens.
const CHILD_PATH_ENV: &str = "RUNTIME_EXIT_COUNTER_TEST_PATH";
/// A file whose appearance tells children to start, so that they really run concurrently.
const CHILD_START_ENV: &str = "RUNTIME_EXIT_COUNTER_TEST_START";

const HOUR: Duration = Duration::from_secs(3600);

fn child_path(test_name: &str) -> Option<PathBuf> {
    if !CHILDREN.is_child(test_name) {
        return None;
    }
    Some(PathBuf::from(std::env::var_os(CHILD_PATH_ENV).expect("child without a counter path")))
}

/// Starts the test `test_name` of this module in a fresh copy of the test binary, acting as a
/// child on the counter file `path`.
fn spawn_child(test_name: &str, path: &Path, start_file: Option<&Path>) -> Child {
    let mut command = CHILDREN.command(test_name);
    command.env(CHILD_PATH_ENV, path);
    if let Some(start_file) = start_file {
        command.env(CHILD_START_ENV, start_file);
    }
    command.spawn().expect("start the test binary as a child")
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("inspect the counter file").len()
}

/// Collects the messages of WARN events emitted while it is the default subscriber.
#[derive(Clone, Default)]
struct WarningCapture {
    warnings: Arc<Mutex<Vec<String>>>,
}

impl WarningCapture {
    /// Runs `body` with this capture as the thread's subscriber; returns what it returned.
    fn during<R>(&self, body: impl FnOnce() -> R) -> R {
        tracing::subscriber::with_default(self.clone(), body)
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.lock().expect("warnings lock").clone()
    }
}

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for WarningCapture {
    fn enabled(&self, _metadata: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _span: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _span: &span::Id, _values: &span::Record<'_>) {}
    fn record_follows_from(&self, _span: &span::Id, _follows: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        if *event.metadata().level() == Level::WARN {
            let mut visitor = MessageVisitor(String::new());
            event.record(&mut visitor);
            self.warnings.lock().expect("warnings lock").push(visitor.0);
        }
    }
    fn enter(&self, _span: &span::Id) {}
    fn exit(&self, _span: &span::Id) {}
}

/// Opens `path` under a warning capture; returns the counter and the warnings.
fn open_capturing(path: &Path, window: Duration, limit: u32) -> (ExitCounter, Vec<String>) {
    let capture = WarningCapture::default();
    let counter = capture.during(|| ExitCounter::open(path, window, limit)).expect("open counter");
    (counter, capture.warnings())
}

fn assert_one_warning_naming(warnings: &[String], path: &Path, problem: &str) {
    assert_eq!(warnings.len(), 1, "expected one warning, got {warnings:?}");
    assert!(warnings[0].contains(&path.display().to_string()), "no path in {warnings:?}");
    assert!(warnings[0].contains(problem), "no {problem:?} in {warnings:?}");
}

#[test]
fn a_new_file_counts_from_zero_and_is_created_with_its_full_size() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("exits");
    let (counter, warnings) = open_capturing(&path, HOUR, 3);
    assert!(warnings.is_empty(), "a missing file is not a problem: {warnings:?}");
    assert_eq!(file_len(&path), FILE_LEN as u64);
    assert_eq!(counter.path(), path);
    assert_eq!(counter.recent_exits().unwrap(), 0);
    assert_eq!(counter.total_exits().unwrap(), 0);
    assert!(counter.may_exit().unwrap());
}

#[test]
fn record_exit_counts_up_to_the_limit() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let counter = ExitCounter::open(dir.path().join("exits"), HOUR, 3).unwrap();
    assert_eq!(counter.record_exit().unwrap(), 1);
    assert_eq!(counter.record_exit().unwrap(), 2);
    assert!(counter.may_exit().unwrap(), "a third exit stays within a limit of 3");
    assert_eq!(counter.record_exit().unwrap(), 3);
    assert!(!counter.may_exit().unwrap(), "a fourth exit would exceed a limit of 3");
    assert_eq!(counter.recent_exits().unwrap(), 3);
    assert_eq!(counter.total_exits().unwrap(), 3);
}

#[test]
fn try_record_exit_refuses_beyond_the_limit_without_recording() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let counter = ExitCounter::open(dir.path().join("exits"), HOUR, 2).unwrap();
    assert_eq!(counter.try_record_exit().unwrap(), Some(1));
    assert_eq!(counter.try_record_exit().unwrap(), Some(2));
    assert_eq!(counter.try_record_exit().unwrap(), None);
    assert_eq!(counter.total_exits().unwrap(), 2);
}

#[test]
fn a_limit_of_zero_never_allows_an_exit() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let counter = ExitCounter::open(dir.path().join("exits"), HOUR, 0).unwrap();
    assert!(!counter.may_exit().unwrap());
    assert_eq!(counter.try_record_exit().unwrap(), None);
}

#[test]
fn the_ring_keeps_the_latest_exits() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let counter = ExitCounter::open(dir.path().join("exits"), HOUR, 5).unwrap();
    let base_ms = now_ms() - 1000;
    for index in 0..(SLOT_COUNT as u64 + 10) {
        counter.record_exit_at(base_ms + index).unwrap();
    }
    assert_eq!(counter.total_exits().unwrap(), SLOT_COUNT as u64 + 10);
    // 42 exits within the window, of which the ring keeps the latest 32.
    let now_ms = base_ms + SLOT_COUNT as u64 + 10;
    assert_eq!(counter.recent_exits_at(now_ms).unwrap(), SLOT_COUNT as u32);
    assert!(!counter.may_exit().unwrap());
}

#[test]
fn exits_leave_the_window_exactly_when_they_are_window_old() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let window = Duration::from_millis(1000);
    let counter = ExitCounter::open(dir.path().join("exits"), window, 5).unwrap();
    let base_ms = 1_700_000_000_000;
    counter.record_exit_at(base_ms).unwrap();
    assert_eq!(counter.record_exit_at(base_ms + 500).unwrap(), 2);
    assert_eq!(counter.recent_exits_at(base_ms + 999).unwrap(), 2);
    assert_eq!(counter.recent_exits_at(base_ms + 1000).unwrap(), 1);
    assert_eq!(counter.recent_exits_at(base_ms + 1500).unwrap(), 0);
}

#[test]
fn exits_expire_after_a_real_window() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let window = Duration::from_millis(300);
    let counter = ExitCounter::open(dir.path().join("exits"), window, 2).unwrap();
    counter.record_exit().unwrap();
    assert_eq!(counter.record_exit().unwrap(), 2);
    assert!(!counter.may_exit().unwrap());
    thread::sleep(Duration::from_millis(900));
    assert_eq!(counter.recent_exits().unwrap(), 0);
    assert!(counter.may_exit().unwrap());
    assert_eq!(counter.record_exit().unwrap(), 1);
    assert_eq!(counter.total_exits().unwrap(), 3);
}

#[test]
fn exits_in_the_future_count_for_one_window_from_now() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let window = Duration::from_millis(1000);
    let counter = ExitCounter::open(dir.path().join("exits"), window, 5).unwrap();
    let before_clock_step_ms = 1_700_000_000_000;
    counter.record_exit_at(before_clock_step_ms).unwrap();
    // The clock is set back an hour: the exit still counts, and expires one window later.
    let after_clock_step_ms = before_clock_step_ms - HOUR.as_millis() as u64;
    assert_eq!(counter.recent_exits_at(after_clock_step_ms).unwrap(), 1);
    assert_eq!(counter.recent_exits_at(after_clock_step_ms + 999).unwrap(), 1);
    assert_eq!(counter.recent_exits_at(after_clock_step_ms + 1000).unwrap(), 0);
}

#[test]
fn two_counters_on_one_file_share_the_count() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("exits");
    let first = ExitCounter::open(&path, HOUR, 5).unwrap();
    let second = ExitCounter::open(&path, HOUR, 5).unwrap();
    first.record_exit().unwrap();
    assert_eq!(second.record_exit().unwrap(), 2);
    assert_eq!(first.recent_exits().unwrap(), 2);
}

#[test]
fn threads_recording_at_once_lose_no_update() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("exits");
    const EXITS_PER_THREAD: u64 = 1000;
    let shared = Arc::new(ExitCounter::open(&path, HOUR, 5).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|index| {
            // Two threads share one counter, two open their own: both kinds of exclusion.
            let counter =
                if index % 2 == 0 { Arc::clone(&shared) } else { Arc::new(ExitCounter::open(&path, HOUR, 5).unwrap()) };
            thread::Builder::new()
                .name(format!("exit-recorder-{index}"))
                .spawn(move || {
                    for _ in 0..EXITS_PER_THREAD {
                        counter.record_exit().unwrap();
                    }
                })
                .expect("spawn a recorder thread")
        })
        .collect();
    for thread in threads {
        thread.join().expect("join a recorder thread");
    }
    assert_eq!(shared.total_exits().unwrap(), 4 * EXITS_PER_THREAD);
}

#[test]
fn another_process_sees_recorded_exits() {
    const NAME: &str = "another_process_sees_recorded_exits";
    const MARKER: &str = "exit-counter-child: recorded 2 exits";
    if let Some(path) = child_path(NAME) {
        let counter = ExitCounter::open(&path, HOUR, 5).expect("open the counter in the child");
        counter.record_exit().expect("record an exit in the child");
        assert_eq!(counter.record_exit().expect("record an exit in the child"), 2);
        println!("{MARKER}");
        return;
    }
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("exits");
    let counter = ExitCounter::open(&path, HOUR, 5).unwrap();
    let output = spawn_child(NAME, &path, None).wait_with_output().expect("wait for the child");
    assert_succeeded_with(&output, MARKER);
    // Both the counter opened before the child ran and a fresh one see the child's exits.
    assert_eq!(counter.recent_exits().unwrap(), 2);
    let reopened = ExitCounter::open(&path, HOUR, 5).unwrap();
    assert_eq!(reopened.record_exit().unwrap(), 3);
}

#[test]
fn processes_recording_at_once_lose_no_update() {
    const NAME: &str = "processes_recording_at_once_lose_no_update";
    const MARKER: &str = "exit-counter-child: recorded its exits";
    const EXITS_PER_CHILD: u64 = 2000;
    if let Some(path) = child_path(NAME) {
        let start_file = PathBuf::from(std::env::var_os(CHILD_START_ENV).expect("start file"));
        let counter = ExitCounter::open(&path, HOUR, 5).expect("open the counter in the child");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !start_file.exists() {
            assert!(Instant::now() < deadline, "the parent never created the start file");
            // Spin rather than sleep, so that both children start within microseconds.
            std::hint::spin_loop();
        }
        for _ in 0..EXITS_PER_CHILD {
            counter.record_exit().expect("record an exit in the child");
        }
        println!("{MARKER}");
        return;
    }
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("exits");
    let start_file = dir.path().join("start");
    let children: Vec<_> = (0..2).map(|_| spawn_child(NAME, &path, Some(&start_file))).collect();
    fs::write(&start_file, b"go").expect("create the start file");
    for child in children {
        let output = child.wait_with_output().expect("wait for a child");
        assert_succeeded_with(&output, MARKER);
    }
    let counter = ExitCounter::open(&path, HOUR, 5).unwrap();
    assert_eq!(counter.total_exits().unwrap(), 2 * EXITS_PER_CHILD);
    assert_eq!(counter.recent_exits().unwrap(), SLOT_COUNT as u32, "the ring holds the latest");
}

#[test]
fn a_truncated_file_is_recreated_on_open() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("exits");
    let counter = ExitCounter::open(&path, HOUR, 5).unwrap();
    counter.record_exit().unwrap();
    counter.record_exit().unwrap();
    drop(counter);
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(17).unwrap();

    let (counter, warnings) = open_capturing(&path, HOUR, 5);
    assert_one_warning_naming(&warnings, &path, "17 bytes long");
    assert_eq!(file_len(&path), FILE_LEN as u64);
    assert_eq!(counter.recent_exits().unwrap(), 0);
    assert_eq!(counter.total_exits().unwrap(), 0);
    assert_eq!(counter.record_exit().unwrap(), 1);
}

#[test]
fn a_file_truncated_while_open_is_recreated_without_a_fault() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("exits");
    let counter = ExitCounter::open(&path, HOUR, 5).unwrap();
    counter.record_exit().unwrap();
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
    // Reading the old mapping past the new end of the file would raise SIGBUS.
    assert_eq!(counter.recent_exits().unwrap(), 0);
    assert_eq!(counter.record_exit().unwrap(), 1);
    assert_eq!(file_len(&path), FILE_LEN as u64);
}

#[test]
fn an_oversized_file_is_recreated() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("exits");
    fs::write(&path, vec![0_u8; FILE_LEN + 100]).unwrap();
    let (counter, warnings) = open_capturing(&path, HOUR, 5);
    assert_one_warning_naming(&warnings, &path, &format!("{} bytes long", FILE_LEN + 100));
    assert_eq!(file_len(&path), FILE_LEN as u64);
    assert_eq!(counter.recent_exits().unwrap(), 0);
}

#[test]
fn garbage_of_the_right_size_is_recreated() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("exits");
    let garbage: Vec<u8> = (0..FILE_LEN).map(|index| (index * 37 + 11) as u8).collect();
    fs::write(&path, garbage).unwrap();
    let (counter, warnings) = open_capturing(&path, HOUR, 5);
    assert_one_warning_naming(&warnings, &path, "magic");
    assert_eq!(counter.recent_exits().unwrap(), 0);
    assert_eq!(counter.total_exits().unwrap(), 0);
    assert_eq!(counter.record_exit().unwrap(), 1);
    let reopened = ExitCounter::open(&path, HOUR, 5).unwrap();
    assert_eq!(reopened.recent_exits().unwrap(), 1, "the recreated file is valid");
}

#[test]
fn a_flipped_bit_in_a_slot_is_caught_by_the_checksum() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("exits");
    let counter = ExitCounter::open(&path, HOUR, 5).unwrap();
    counter.record_exit().unwrap();
    counter.record_exit().unwrap();
    drop(counter);
    let mut bytes = fs::read(&path).unwrap();
    bytes[SLOTS_OFFSET + 1] ^= 0x10;
    fs::write(&path, bytes).unwrap();

    let (counter, warnings) = open_capturing(&path, HOUR, 5);
    assert_one_warning_naming(&warnings, &path, "checksum");
    assert_eq!(counter.recent_exits().unwrap(), 0);
}

#[test]
fn a_removed_file_is_recreated_by_the_next_operation() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("exits");
    let counter = ExitCounter::open(&path, HOUR, 5).unwrap();
    counter.record_exit().unwrap();
    fs::remove_file(&path).unwrap();
    let capture = WarningCapture::default();
    let recent = capture.during(|| counter.record_exit()).unwrap();
    assert_eq!(recent, 1);
    assert_one_warning_naming(&capture.warnings(), &path, "removed or replaced");
    let reopened = ExitCounter::open(&path, HOUR, 5).unwrap();
    assert_eq!(reopened.recent_exits().unwrap(), 1, "the exit went to the new file");
}

#[test]
fn an_empty_file_is_initialised_without_a_warning() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("exits");
    fs::write(&path, b"").unwrap();
    let (counter, warnings) = open_capturing(&path, HOUR, 5);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(counter.recent_exits().unwrap(), 0);
    assert_eq!(file_len(&path), FILE_LEN as u64);
}

#[test]
fn a_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let missing_directory = dir.path().join("no-such-dir");
    let path = missing_directory.join("exits");
    let error = ExitCounter::open(&path, HOUR, 5).unwrap_err();
    match &error {
        ExitCounterError::MissingDirectory { path: error_path, directory } => {
            assert_eq!(error_path, &path);
            assert_eq!(directory, &missing_directory);
        }
        other => panic!("expected MissingDirectory, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(&missing_directory.display().to_string()), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    assert!(!missing_directory.exists(), "the directory must not be created");
}

#[test]
fn a_directory_at_the_path_is_an_error() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let error = ExitCounter::open(dir.path(), HOUR, 5).unwrap_err();
    assert!(error.to_string().contains(&dir.path().display().to_string()), "{error}");
    let error = ExitCounter::open("", HOUR, 5).unwrap_err();
    assert!(matches!(error, ExitCounterError::NotAFileName { .. }), "{error:?}");
}

#[test]
fn settings_that_describe_no_policy_are_rejected() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("exits");
    let error = ExitCounter::open(&path, Duration::ZERO, 5).unwrap_err();
    assert!(matches!(error, ExitCounterError::InvalidSettings { .. }), "{error:?}");
    let error = ExitCounter::open(&path, HOUR, SLOT_COUNT as u32 + 1).unwrap_err();
    assert!(error.to_string().contains("limit"), "{error}");
    assert!(!path.exists(), "rejected settings must not create the file");
    ExitCounter::open(&path, HOUR, SLOT_COUNT as u32).expect("the largest limit is accepted");
}

#[test]
fn ring_encoding_round_trips_and_each_header_problem_is_named() {
    let mut ring = Ring::empty();
    ring.push(1_700_000_000_000);
    ring.push(1_700_000_000_500);
    let mut bytes = vec![0_u8; FILE_LEN];
    ring.encode(&mut bytes);
    assert_eq!(Ring::decode(&bytes), Ok(ring.clone()));

    let corrupt = |offset: usize, value: u32| {
        let mut bytes = bytes.clone();
        write_u32(&mut bytes, offset, value);
        let sum = checksum(&bytes);
        write_u64(&mut bytes, CHECKSUM_OFFSET, sum);
        Ring::decode(&bytes).unwrap_err()
    };
    assert_eq!(corrupt(VERSION_OFFSET, 2), Corruption::UnsupportedVersion { version: 2 });
    assert_eq!(corrupt(SLOT_COUNT_OFFSET, 8), Corruption::WrongSlotCount { slot_count: 8 });
    assert_eq!(
        corrupt(NEXT_SLOT_OFFSET, SLOT_COUNT as u32),
        Corruption::NextSlotOutOfRange { next_slot: SLOT_COUNT as u32 }
    );
    assert_eq!(corrupt(RESERVED_OFFSET, 1), Corruption::NonZeroReserved);
    assert_eq!(corrupt(0, 0), Corruption::BadMagic);
    assert_eq!(Ring::decode(&bytes[..FILE_LEN - 1]), Err(Corruption::WrongSize { len: FILE_LEN as u64 - 1 }));
}
