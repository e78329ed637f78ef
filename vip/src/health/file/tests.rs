//! Tests of the health file: its grammar, the missing/unreadable/garbage states, and the source
//! driving a monitor.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::{parse_health_file, read_health_file, sample_of, FileReading};
use crate::health::{HealthConfig, HealthMonitor, HealthSample, HealthState, MissingFile, SourceKind};

const PATIENCE: Duration = Duration::from_secs(20);

#[test]
fn grammar() {
    assert_eq!(parse_health_file(b"ok"), FileReading::Ok);
    assert_eq!(parse_health_file(b"  OK\n"), FileReading::Ok);
    assert_eq!(parse_health_file(b"0\n"), FileReading::Ok);
    assert_eq!(parse_health_file(b"ok but ignored words\nfail on line two"), FileReading::Ok);
    assert_eq!(parse_health_file(b"fail"), FileReading::Fail(String::new()));
    assert_eq!(parse_health_file(b"FAIL switch port 7 down\n"), FileReading::Fail("switch port 7 down".into()));
    assert_eq!(parse_health_file(b"1"), FileReading::Fail(String::new()));
    assert_eq!(parse_health_file(b"-3 weight"), FileReading::Fail("weight".into()));
    assert_eq!(parse_health_file(b""), FileReading::Garbage(String::new()));
    assert_eq!(parse_health_file(b"\n\n"), FileReading::Garbage(String::new()));
    assert_eq!(parse_health_file(b"okay"), FileReading::Garbage("okay".into()));
    assert_eq!(parse_health_file(b"healthy"), FileReading::Garbage("healthy".into()));
    assert_eq!(parse_health_file(&[0xff, 0xfe, b'o', b'k']), FileReading::Garbage("\u{fffd}\u{fffd}ok".into()));
    let long = "x".repeat(500);
    match parse_health_file(long.as_bytes()) {
        FileReading::Garbage(line) => assert_eq!(line.len(), 80, "shortened for the log"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn readings_and_their_samples() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("health");
    assert_eq!(read_health_file(&path), FileReading::Missing);
    let missing_fail = sample_of(&FileReading::Missing, &path, MissingFile::Fail);
    assert!(matches!(&missing_fail, HealthSample::Bad(reason) if reason.ends_with("is missing")), "{missing_fail:?}");
    assert_eq!(sample_of(&FileReading::Missing, &path, MissingFile::Ok), HealthSample::Good);

    // A directory cannot be read as a file, even by root.
    let unreadable = read_health_file(dir.path());
    assert!(matches!(unreadable, FileReading::Unreadable(_)), "{unreadable:?}");
    assert!(matches!(sample_of(&unreadable, dir.path(), MissingFile::Fail), HealthSample::Bad(_)));
    assert_eq!(sample_of(&unreadable, dir.path(), MissingFile::Ok), HealthSample::Good);

    std::fs::write(&path, "fail maintenance\n").expect("write");
    let reading = read_health_file(&path);
    assert_eq!(reading, FileReading::Fail("maintenance".into()));
    let sample = sample_of(&reading, &path, MissingFile::Ok);
    assert_eq!(sample, HealthSample::Down(format!("health file {} says fail: maintenance", path.display())));

    std::fs::write(&path, "garbage").expect("write");
    let sample = sample_of(&read_health_file(&path), &path, MissingFile::Ok);
    assert!(matches!(sample, HealthSample::Bad(_)), "garbage is a bad round even with on_missing = ok");

    std::fs::write(&path, "ok").expect("write");
    assert_eq!(sample_of(&read_health_file(&path), &path, MissingFile::Fail), HealthSample::Good);
}

fn file_monitor(path: &Path, on_missing: MissingFile) -> HealthMonitor {
    let mut config = HealthConfig { source: SourceKind::File, fall: 3, rise: 2, ..HealthConfig::default() };
    config.file.path = path.to_path_buf();
    config.file.interval_ms = 50;
    config.file.on_missing = on_missing;
    // The data address is not used by the file source.
    HealthMonitor::start(&config, "127.0.0.1".parse().expect("ip")).expect("start")
}

#[test]
fn the_file_source_drives_the_state() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("health");
    std::fs::write(&path, "ok\n").expect("write");
    let monitor = file_monitor(&path, MissingFile::Fail);
    let flag = monitor.flag();
    let (change_tx, changes) = mpsc::channel();
    let _subscription = flag.subscribe(move |change| {
        let _ = change_tx.send(change.clone());
    });
    assert!(flag.wait_for_state(HealthState::Valid, PATIENCE));
    let change = changes.recv_timeout(PATIENCE).expect("the first change");
    assert_eq!((change.from, change.to), (HealthState::Unknown, HealthState::Valid));

    // `fail` is decisive: invalid at the first read, not after `fall` reads.
    std::fs::write(&path, "fail drill\n").expect("write");
    let change = changes.recv_timeout(PATIENCE).expect("a change");
    assert_eq!(change.to, HealthState::Invalid);
    assert!(change.reason.ends_with("says fail: drill"), "{}", change.reason);

    std::fs::write(&path, "ok\n").expect("write");
    let change = changes.recv_timeout(PATIENCE).expect("a change");
    assert_eq!((change.to, change.reason.as_str()), (HealthState::Valid, "2 good rounds in a row"));

    // Missing counts as a bad round (on_missing = fail): invalid after `fall` of them.
    std::fs::remove_file(&path).expect("remove");
    let change = changes.recv_timeout(PATIENCE).expect("a change");
    assert_eq!(change.to, HealthState::Invalid);
    assert!(change.reason.starts_with("3 bad rounds in a row"), "{}", change.reason);
    assert!(change.reason.ends_with("is missing"), "{}", change.reason);
}

#[test]
fn a_missing_file_can_count_as_ok() {
    let dir = tempfile::tempdir().expect("temp dir");
    let monitor = file_monitor(&dir.path().join("never-written"), MissingFile::Ok);
    assert!(monitor.flag().wait_for_state(HealthState::Valid, PATIENCE));
}
