//! Tests of the task model: ids, state transitions, runtime windows, and the stored record's
//! round trip, size bound and error reporting on newer or damaged input.

use chrono::NaiveTime;

use super::*;

fn copy_kind() -> TaskKind {
    TaskKind::CopyVolume(CopyVolumeArgs {
        source: PathBuf::from("/var/lib/zbs/volumes/a"),
        destination: PathBuf::from("/var/lib/zbs/volumes/b"),
        io_depth: 8,
    })
}

fn time(hour: u32, minute: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(hour, minute, 30).expect("a valid time")
}

#[test]
fn generated_ids_are_valid_unique_znode_names() {
    let a = TaskId::generate();
    let b = TaskId::generate();
    assert_ne!(a, b);
    assert_eq!(a.as_str().len(), 36);
    assert_eq!(TaskId::parse(a.as_str()), Ok(a.clone()));
    assert!(!a.as_str().contains('/'));
}

#[test]
fn ids_that_are_not_safe_znode_names_are_refused() {
    assert_eq!(TaskId::parse(""), Err(TaskIdError::Empty));
    for bad in [".", "..", "a/b", "-leading-dash", "_x", "with space", "zürich", "a\0b", "/abs"] {
        assert!(matches!(TaskId::parse(bad), Err(TaskIdError::BadCharacter(_))), "{bad:?} was accepted");
    }
    assert!(matches!(TaskId::parse(&"a".repeat(65)), Err(TaskIdError::TooLong { len: 65 })));
    assert!(TaskId::parse(&"a".repeat(64)).is_ok());
    assert!(TaskId::parse("20261123-000042").is_ok());
    assert!(serde_json::from_str::<TaskId>("\"../etc\"").is_err());
}

#[test]
fn finished_states_are_final() {
    for state in TaskState::ALL {
        if state.is_finished() {
            assert!(TaskState::ALL.iter().all(|&to| !state.can_transition_to(to)), "{state} has a way out");
        }
    }
    let finished: Vec<_> = TaskState::ALL.into_iter().filter(|s| s.is_finished()).collect();
    assert_eq!(finished, [TaskState::Succeeded, TaskState::Failed, TaskState::Cancelled]);
}

#[test]
fn the_transition_table_matches_the_life_cycle() {
    use TaskState::*;
    let allowed = [
        (Pending, Running),
        (Pending, Paused),
        (Pending, Cancelled),
        (Pending, Failed),
        (Running, Pending),
        (Running, Succeeded),
        (Running, Failed),
        (Running, Cancelled),
        (Running, Paused),
        (Running, Interrupted),
        (Paused, Pending),
        (Paused, Cancelled),
        (Interrupted, Pending),
        (Interrupted, Running),
        (Interrupted, Paused),
        (Interrupted, Cancelled),
    ];
    for from in TaskState::ALL {
        for to in TaskState::ALL {
            assert_eq!(from.can_transition_to(to), allowed.contains(&(from, to)), "{from} -> {to}");
        }
    }
}

#[test]
fn a_refused_transition_changes_nothing() {
    let mut record = TaskRecord::new(TaskId::generate(), copy_kind(), 1);
    assert_eq!(
        record.transition_to(TaskState::Succeeded),
        Err(TransitionError { from: TaskState::Pending, to: TaskState::Succeeded })
    );
    assert_eq!(record.state, TaskState::Pending);
    record.transition_to(TaskState::Running).expect("dispatch");
    record.transition_to(TaskState::Succeeded).expect("finish");
    assert!(record.transition_to(TaskState::Pending).is_err());
    assert_eq!(record.state, TaskState::Succeeded);
}

#[test]
fn state_names_round_trip() {
    for state in TaskState::ALL {
        assert_eq!(state.as_str().parse::<TaskState>(), Ok(state));
        assert_eq!(serde_json::to_string(&state).expect("encode"), format!("\"{state}\""));
    }
    assert_eq!("RUNNING".parse::<TaskState>(), Ok(TaskState::Running));
    assert!("done".parse::<TaskState>().is_err());
}

#[test]
fn a_window_contains_its_start_but_not_its_end() {
    let window = RuntimeWindow::new(9, 30, 17, 0).expect("valid");
    assert!(!window.contains(time(9, 29)));
    assert!(window.contains(time(9, 30)));
    assert!(window.contains(time(16, 59)));
    assert!(!window.contains(time(17, 0)));
    assert!(!window.contains(time(23, 0)));
}

#[test]
fn a_window_may_wrap_midnight() {
    let window = RuntimeWindow::new(22, 0, 6, 15).expect("valid");
    assert!(window.contains(time(22, 0)));
    assert!(window.contains(time(23, 59)));
    assert!(window.contains(time(0, 0)));
    assert!(window.contains(time(6, 14)));
    assert!(!window.contains(time(6, 15)));
    assert!(!window.contains(time(12, 0)));
    assert!(!window.contains(time(21, 59)));
}

#[test]
fn an_empty_looking_window_is_the_whole_day() {
    let window = RuntimeWindow::new(0, 0, 0, 0).expect("valid");
    assert!(window.is_all_day());
    for hour in 0..24 {
        assert!(window.contains(time(hour, 0)));
    }
}

#[test]
fn window_fields_are_validated_everywhere() {
    assert_eq!(RuntimeWindow::new(24, 0, 1, 0), Err(WindowError::Hour { field: "start_hour", value: 24 }));
    assert_eq!(RuntimeWindow::new(1, 60, 2, 0), Err(WindowError::Minute { field: "start_min", value: 60 }));
    assert_eq!(RuntimeWindow::new(1, 0, 99, 0), Err(WindowError::Hour { field: "end_hour", value: 99 }));
    assert_eq!(RuntimeWindow::new(1, 0, 2, 61), Err(WindowError::Minute { field: "end_min", value: 61 }));
    let json = r#"{"start_hour":25,"start_min":0,"end_hour":1,"end_min":0}"#;
    assert!(serde_json::from_str::<RuntimeWindow>(json).is_err());
    assert_eq!("22:00-06:30".parse::<RuntimeWindow>(), RuntimeWindow::new(22, 0, 6, 30));
    assert_eq!(RuntimeWindow::new(2, 5, 3, 0).expect("valid").to_string(), "02:05-03:00");
    for bad in ["", "22-06", "22:00", "22:00-6", "2a:00-06:00", "22:000-06:00", "25:00-06:00"] {
        assert!(bad.parse::<RuntimeWindow>().is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn arguments_are_validated() {
    let copy = |source: &str, io_depth| {
        TaskKind::CopyVolume(CopyVolumeArgs { source: source.into(), destination: "/d/b".into(), io_depth })
    };
    assert!(copy("/d/a", 1).validate().is_ok());
    assert_eq!(copy("/d/a", 0).validate().map_err(|e| e.field), Err("io_depth"));
    assert_eq!(copy("/d/a", MAX_IO_DEPTH + 1).validate().map_err(|e| e.field), Err("io_depth"));
    assert_eq!(copy("relative/a", 4).validate().map_err(|e| e.field), Err("source"));
    assert_eq!(copy(&format!("/{}", "x".repeat(MAX_PATH_BYTES)), 4).validate().map_err(|e| e.field), Err("source"));
    let sleep = |duration_ms| TaskKind::Sleep(SleepArgs { duration_ms, fail: false, fail_first: 0 });
    assert!(sleep(10).validate().is_ok());
    assert_eq!(sleep(MAX_SLEEP_MS + 1).validate().map_err(|e| e.field), Err("duration_ms"));
}

fn full_record() -> TaskRecord {
    let mut record = TaskRecord::new(TaskId::generate(), copy_kind(), 1_763_900_000_000);
    record.state = TaskState::Running;
    record.runner_addr = Some("10.0.0.7:10601".to_string());
    record.schedule_time_ms = Some(1_763_900_000_500);
    record.last_failed_ms = Some(1_763_900_000_100);
    record.attempts = 2;
    record.set_last_error("read source at offset 268435456: Input/output error", FailureClass::Transient);
    record.progress = Progress {
        cur_extent: 3,
        n_extents: 400,
        extent_size: 256 << 20,
        bytes_done: 3 << 28,
        bytes_total: 100 << 30,
        speed_bytes_per_s: 512 << 20,
    };
    record.runtime_window = Some(RuntimeWindow::new(22, 0, 6, 0).expect("valid"));
    record
}

#[test]
fn a_record_round_trips_with_its_schema_version() {
    let record = full_record();
    let bytes = record.encode().expect("encode");
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(json["schema_version"], SCHEMA_VERSION);
    assert_eq!(json["kind"]["type"], "copy_volume");
    assert_eq!(json["state"], "running");
    assert_eq!(TaskRecord::decode(&bytes).expect("decode"), record);

    let sleep = TaskRecord::new(
        TaskId::generate(),
        TaskKind::Sleep(SleepArgs { duration_ms: 5, fail: true, fail_first: 0 }),
        7,
    );
    assert_eq!(TaskRecord::decode(&sleep.encode().expect("encode")).expect("decode"), sleep);
}

#[test]
fn the_largest_record_stays_well_under_4_kib() {
    let mut record = full_record();
    let long_path = |name: &str| PathBuf::from(format!("/{name}/{}", "p".repeat(MAX_PATH_BYTES - name.len() - 2)));
    record.kind = TaskKind::CopyVolume(CopyVolumeArgs {
        source: long_path("s"),
        destination: long_path("d"),
        io_depth: MAX_IO_DEPTH,
    });
    record.task_id = TaskId::parse(&"i".repeat(TaskId::MAX_LEN)).expect("valid");
    record.runner_addr = Some("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535".to_string());
    for _ in 0..=MAX_ATTEMPT_ERRORS {
        record.set_last_error(&"é".repeat(MAX_ERROR_BYTES), FailureClass::Transient);
    }
    record.request_id = Some(RequestId::parse(&"r".repeat(RequestId::MAX_LEN)).expect("valid"));
    record.progress = Progress {
        cur_extent: u64::MAX,
        n_extents: u64::MAX,
        extent_size: u64::MAX,
        bytes_done: u64::MAX,
        bytes_total: u64::MAX,
        speed_bytes_per_s: u64::MAX,
    };
    assert!(record.last_error.as_ref().is_some_and(|e| e.len() <= MAX_ERROR_BYTES));
    let bytes = record.encode().expect("encode");
    assert!(bytes.len() < 2560, "the largest record is {} bytes", bytes.len());
    assert_eq!(TaskRecord::decode(&bytes).expect("decode"), record);
    record.runner_addr = Some("a".repeat(MAX_ADDR_BYTES + 1));
    assert!(matches!(record.encode(), Err(RecordError::Invalid(InvalidArgs { field: "runner_addr", .. }))));
    record.runner_addr = None;
    record.last_error = Some("e".repeat(MAX_ERROR_BYTES + 1));
    assert!(matches!(record.encode(), Err(RecordError::Invalid(InvalidArgs { field: "last_error", .. }))));
    // The usual record is a few hundred bytes.
    assert!(full_record().encode().expect("encode").len() < 700);
}

#[test]
fn a_newer_schema_is_reported_not_misread() {
    let mut json: serde_json::Value = serde_json::from_slice(&full_record().encode().expect("encode")).expect("JSON");
    json["schema_version"] = serde_json::json!(SCHEMA_VERSION + 1);
    json["something_new"] = serde_json::json!({"x": 1});
    let bytes = serde_json::to_vec(&json).expect("encode");
    match TaskRecord::decode(&bytes) {
        Err(RecordError::UnsupportedVersion { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn corrupt_records_are_errors_never_panics() {
    let good = full_record().encode().expect("encode");
    let mut inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\xff\xfe".to_vec(),
        b"{}".to_vec(),
        br#"{"schema_version":"one"}"#.to_vec(),
        br#"{"schema_version":0}"#.to_vec(),
        br#"{"schema_version":1}"#.to_vec(),
        br#"{"schema_version":-1}"#.to_vec(),
    ];
    let text = String::from_utf8(good.clone()).expect("UTF-8");
    for (from, to) in [
        ("\"running\"", "\"exploded\""),
        ("\"copy_volume\"", "\"format_disk\""),
        ("\"io_depth\":8", "\"io_depth\":0"),
        ("\"start_hour\":22", "\"start_hour\":30"),
        ("\"attempts\":2", "\"attempts\":-2"),
    ] {
        assert!(text.contains(from), "{from} not in {text}");
        inputs.push(text.replace(from, to).into_bytes());
    }
    inputs.push(
        text.replace(TaskRecord::decode(&good).expect("decode").task_id.as_str(), "../../zookeeper").into_bytes(),
    );
    for cut in (0..good.len()).step_by(7) {
        inputs.push(good[..cut].to_vec());
    }
    for input in &inputs {
        match TaskRecord::decode(input) {
            Err(RecordError::Corrupt { .. } | RecordError::Invalid(_)) => {}
            other => panic!("{:?} decoded to {other:?}", String::from_utf8_lossy(input)),
        }
    }
    let oversized = vec![b' '; MAX_RECORD_BYTES + 1];
    assert!(matches!(TaskRecord::decode(&oversized), Err(RecordError::TooLarge { .. })));
}

#[test]
fn request_ids_are_1_to_128_safe_characters() {
    for good in ["a", "0", "retry-1", "client:7.request_2", "...", &"x".repeat(RequestId::MAX_LEN)] {
        assert_eq!(RequestId::parse(good).map(|id| id.as_str().to_string()), Ok(good.to_string()), "{good:?}");
    }
    assert_eq!(RequestId::parse(""), Err(RequestIdError::Empty));
    assert_eq!(
        RequestId::parse(&"x".repeat(RequestId::MAX_LEN + 1)),
        Err(RequestIdError::TooLong { len: RequestId::MAX_LEN + 1 })
    );
    for bad in [".", "..", "a/b", "a b", "é", "a\0b", "a\nb", "50%", "id?x=1", "a,b"] {
        assert!(matches!(RequestId::parse(bad), Err(RequestIdError::BadCharacter(_))), "{bad:?} was accepted");
    }
    let generated = RequestId::generate();
    assert_eq!(RequestId::parse(generated.as_str()), Ok(generated.clone()));
    assert_ne!(generated, RequestId::generate());
    // Through serde too: a stored record never holds an invalid one.
    assert!(serde_json::from_str::<RequestId>("\"a/b\"").is_err());
}

#[test]
fn a_success_after_a_failed_attempt_clears_last_error_and_keeps_the_attempts_errors() {
    let mut record = TaskRecord::new(TaskId::generate(), copy_kind(), 7);
    record.state = TaskState::Running;
    record.attempts = 1;
    record.set_last_error("first attempt: Input/output error", FailureClass::Transient);
    record.transition_to(TaskState::Pending).expect("retry");
    assert_eq!(record.last_error.as_deref(), Some("first attempt: Input/output error"));
    record.transition_to(TaskState::Running).expect("dispatched again");
    record.transition_to(TaskState::Succeeded).expect("succeeded");
    assert_eq!(record.last_error, None, "a succeeded task shows no stale error");
    assert_eq!(record.attempt_errors, vec!["first attempt: Input/output error".to_string()]);
}

#[test]
fn attempt_errors_keep_the_latest_few_cut_short() {
    let mut record = TaskRecord::new(TaskId::generate(), copy_kind(), 7);
    for n in 0..MAX_ATTEMPT_ERRORS + 2 {
        record.set_last_error(&format!("error {n} {}", "x".repeat(MAX_ERROR_BYTES)), FailureClass::Transient);
    }
    assert_eq!(record.attempt_errors.len(), MAX_ATTEMPT_ERRORS);
    assert!(record.attempt_errors[0].starts_with(&format!("error {} ", 1)), "{:?}", record.attempt_errors);
    assert!(record
        .last_error
        .as_ref()
        .is_some_and(|error| error.starts_with(&format!("error {} ", MAX_ATTEMPT_ERRORS + 1))));
    assert!(record.attempt_errors.iter().all(|error| error.len() <= MAX_ATTEMPT_ERROR_BYTES));
    record.attempt_errors.push("one too many".to_string());
    assert!(matches!(record.encode(), Err(RecordError::Invalid(InvalidArgs { field: "attempt_errors", .. }))));
}

#[test]
fn a_record_written_before_attempt_errors_and_request_ids_still_decodes() {
    let old = r#"{"schema_version":1,"task_id":"t-1","kind":{"type":"sleep","args":{"duration_ms":5}},
        "state":"succeeded","runner_addr":null,"schedule_time_ms":null,"created_ms":7,
        "last_failed_ms":null,"attempts":1,"last_error":"boom",
        "progress":{"cur_extent":0,"n_extents":0,"bytes_done":0,"bytes_total":0,"speed_bytes_per_s":0},
        "runtime_window":null}"#;
    let record = TaskRecord::decode(old.as_bytes()).expect("an old record decodes");
    assert_eq!(record.attempt_errors, Vec::<String>::new());
    assert_eq!(record.request_id, None);
    assert_eq!(record.kind, TaskKind::Sleep(SleepArgs { duration_ms: 5, fail: false, fail_first: 0 }));
    // And a record without the new fields is written without them (older daemons read it).
    let text = String::from_utf8(record.encode().expect("encode")).expect("UTF-8");
    assert!(!text.contains("attempt_errors") && !text.contains("request_id") && !text.contains("fail_first"), "{text}");
}

#[test]
fn a_sleep_task_fails_its_first_attempts_when_asked() {
    let args = SleepArgs { duration_ms: 1, fail: false, fail_first: 1 };
    assert!(args.fails_after(0));
    assert!(!args.fails_after(1));
    assert!(SleepArgs { duration_ms: 1, fail: true, fail_first: 0 }.fails_after(5));
}

/// The failure class a runner wrote decodes back; an old record without it, or one with a
/// class this build does not know, still decodes and counts as transient (so it is retried as
/// before), never as a corrupt record.
#[test]
fn the_error_class_decodes_defensively() {
    let mut record = full_record();
    record.set_last_error("source /v/a cannot be opened: No such file or directory", FailureClass::Permanent);
    let bytes = record.encode().expect("encode");
    let decoded = TaskRecord::decode(&bytes).expect("decode");
    assert_eq!(decoded.error_class, Some(FailureClass::Permanent));
    assert_eq!(decoded.last_error_class(), FailureClass::Permanent);

    let mut json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    json.as_object_mut().expect("an object").remove("error_class");
    let old = TaskRecord::decode(&serde_json::to_vec(&json).expect("JSON")).expect("an old record decodes");
    assert_eq!(old.error_class, None);
    assert_eq!(old.last_error_class(), FailureClass::Transient);

    for odd in
        [serde_json::json!("fatal"), serde_json::json!(7), serde_json::json!({ "x": 1 }), serde_json::Value::Null]
    {
        json["error_class"] = odd.clone();
        let decoded = TaskRecord::decode(&serde_json::to_vec(&json).expect("JSON"))
            .unwrap_or_else(|error| panic!("error_class {odd} made the record unreadable: {error}"));
        assert_eq!(decoded.last_error_class(), FailureClass::Transient, "error_class {odd}");
    }
}

proptest::proptest! {
    #[test]
    fn a_permanent_failure_is_never_retried(attempts in 1u32..100, max_attempts in 1u32..100) {
        proptest::prop_assert_eq!(after_failure(FailureClass::Permanent, attempts, max_attempts), TaskState::Failed);
        let transient = after_failure(FailureClass::Transient, attempts, max_attempts);
        proptest::prop_assert_eq!(transient == TaskState::Pending, attempts < max_attempts);
    }
}
