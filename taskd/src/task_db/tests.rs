//! Unit tests of the task database's pure parts: cache key encoding and order, list filters,
//! the cache itself on a temp dir, size arithmetic and validation.

use chrono::{Local, NaiveDate, TimeZone};

use super::cache::{Origin, RecordCache};
use super::filter::ListFilter;
use super::keys;
use super::layout;
use super::{last_activity_ms, RunnerInfo, StoredRecord, TaskDbConfig};
use crate::task::{SleepArgs, TaskId, TaskKind, TaskRecord, TaskState, MAX_RECORD_BYTES};

fn id(text: &str) -> TaskId {
    TaskId::parse(text).expect("valid test id")
}

fn record(task_id: &str, created_ms: u64, state: TaskState) -> TaskRecord {
    let mut record = TaskRecord::new(
        id(task_id),
        TaskKind::Sleep(SleepArgs { duration_ms: 10, fail: false, fail_first: 0 }),
        created_ms,
    );
    record.state = state;
    record
}

fn stored(task_id: &str, created_ms: u64, state: TaskState, version: i32) -> StoredRecord {
    StoredRecord { record: record(task_id, created_ms, state), version }
}

fn ids(records: &[StoredRecord]) -> Vec<String> {
    records.iter().map(|stored| stored.record.task_id.to_string()).collect()
}

#[test]
fn date_keys_sort_by_creation_time_then_id() {
    let early = keys::date_key(9, &id("zzz"));
    let later = keys::date_key(10, &id("aaa"));
    let much_later = keys::date_key(256, &id("aaa"));
    assert!(early < later && later < much_later, "big-endian times sort numerically");
    assert!(keys::date_key(10, &id("aaa")) < keys::date_key(10, &id("aab")));
    assert!(keys::date_key_from(10) <= later && keys::date_key_from(11) > later);
}

#[test]
fn keys_parse_back() {
    let task_id = id("0f3c-task_1");
    let parsed = keys::parse_date_key(&keys::date_key(1_700_000_000_123, &task_id)).expect("a date key");
    assert_eq!(parsed, keys::ListedKey { created_ms: 1_700_000_000_123, task_id: task_id.clone() });
    let state_key = keys::state_key(TaskState::Paused, 42, &task_id);
    assert_eq!(keys::parse_state_key(&state_key, TaskState::Paused).map(|key| key.created_ms), Some(42));
    assert_eq!(keys::parse_state_key(&state_key, TaskState::Running), None, "another state's key");
    assert_eq!(keys::parse_date_key(&state_key), None, "a state key is no date key");
    assert_eq!(keys::parse_id_key(&keys::id_key(&task_id)), Some(task_id.clone()));
    assert_eq!(keys::parse_id_key(&keys::date_key(1, &task_id)), None);
    assert_eq!(keys::parse_id_value(&keys::id_value(77, TaskState::Failed)), Some((77, TaskState::Failed)));
    assert_eq!(keys::parse_record_value(&keys::record_value(-1, b"{}")), Some((-1, &b"{}"[..])));
}

#[test]
fn damaged_keys_and_values_are_none_not_panics() {
    assert_eq!(keys::parse_id_value(&[1, 2, 3]), None);
    assert_eq!(keys::parse_id_value(&[0, 0, 0, 0, 0, 0, 0, 1, 200]), None, "no such state");
    assert_eq!(keys::parse_record_value(&[1, 2]), None);
    assert_eq!(keys::parse_date_key(b"d\x00\x01"), None, "too short");
    assert_eq!(keys::parse_date_key(b"d\x00\x00\x00\x00\x00\x00\x00\x01../x"), None, "not a task id");
}

#[test]
fn every_state_has_its_own_index_byte() {
    for (position, state) in TaskState::ALL.into_iter().enumerate() {
        assert_eq!(usize::from(keys::state_index(state)), position);
        assert_eq!(keys::state_from_index(keys::state_index(state)), Some(state));
    }
}

#[test]
fn filters_match_state_and_half_open_date_range() {
    let pending = record("a", 100, TaskState::Pending);
    let filter = ListFilter { created_from_ms: Some(100), created_before_ms: Some(200), ..ListFilter::default() };
    assert!(filter.matches(&pending));
    assert!(!filter.matches(&record("b", 200, TaskState::Pending)), "the end is excluded");
    assert!(!filter.matches(&record("c", 99, TaskState::Pending)));
    assert!(!filter.clone().with_state(TaskState::Running).matches(&pending));
    let (low, high) = keys::date_range(Some(100), Some(200));
    assert!(low <= keys::date_key(100, &id("a")) && keys::date_key(199, &id("z")) < high);
    assert!(keys::date_key(200, &id("a")) >= high);
    let (low, high) = keys::state_range(TaskState::Interrupted, None, None);
    assert!(low <= keys::state_key(TaskState::Interrupted, 0, &id("a")));
    assert!(keys::state_key(TaskState::Interrupted, u64::MAX, &id("z")) < high && high < keys::SENTINEL_KEY.to_vec());
}

#[test]
fn created_on_covers_one_local_day() {
    let date = NaiveDate::from_ymd_opt(2026, 3, 14).expect("a date");
    let filter = ListFilter::created_on(date);
    let noon = Local.from_local_datetime(&date.and_hms_opt(12, 0, 0).expect("noon")).earliest().expect("noon exists");
    let noon_ms = noon.timestamp_millis() as u64;
    assert!(filter.matches(&record("a", noon_ms, TaskState::Pending)));
    assert!(!filter.matches(&record("b", noon_ms + 24 * 3_600_000, TaskState::Pending)));
    assert!(!filter.matches(&record("c", noon_ms - 24 * 3_600_000, TaskState::Pending)));
}

#[test]
fn cache_lists_in_creation_order_by_state_and_range() -> Result<(), super::DbError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cache = RecordCache::create_empty(&dir.path().join("cache"), Default::default())?;
    cache.put_all(
        &[
            stored("c", 300, TaskState::Running, 1),
            stored("a", 100, TaskState::Pending, 0),
            stored("b", 200, TaskState::Pending, 3),
            stored("d", 200, TaskState::Succeeded, 7),
        ],
        Origin::Read,
    )?;
    assert_eq!(ids(&cache.list(&ListFilter::all())?), ["a", "b", "d", "c"]);
    assert_eq!(ids(&cache.list(&ListFilter::in_state(TaskState::Pending))?), ["a", "b"]);
    let range = ListFilter { created_from_ms: Some(150), created_before_ms: Some(300), ..ListFilter::default() };
    assert_eq!(ids(&cache.list(&range)?), ["b", "d"]);
    assert_eq!(ids(&cache.list(&ListFilter::all().with_limit(2))?), ["a", "b"]);
    assert_eq!(ids(&cache.list(&ListFilter::all().newest_first())?), ["c", "d", "b", "a"]);
    assert_eq!(ids(&cache.list(&ListFilter::all().newest_first().with_limit(2))?), ["c", "d"]);
    assert_eq!(ids(&cache.list(&range.clone().newest_first())?), ["d", "b"]);
    let pending_newest = ListFilter::in_state(TaskState::Pending).newest_first();
    assert_eq!(ids(&cache.list(&pending_newest)?), ["b", "a"]);
    assert!(cache.list(&ListFilter::in_state(TaskState::Interrupted).newest_first())?.is_empty());
    // The original's `list_by_status`.
    assert_eq!(ids(&cache.list(&ListFilter::all().with_finished(true))?), ["d"]);
    assert_eq!(ids(&cache.list(&ListFilter::all().with_finished(false))?), ["a", "b", "c"]);
    assert!(cache.list(&ListFilter { created_before_ms: Some(100), ..ListFilter::all() }.newest_first())?.is_empty());
    assert_eq!(cache.get(&id("b"))?.map(|stored| stored.version), Some(3));
    let cached_ids: Vec<String> = cache.ids()?.iter().map(ToString::to_string).collect();
    assert_eq!(cached_ids, ["a", "b", "c", "d"]);

    // Replacing a record moves it between state indexes; removing forgets every key.
    cache.put(&stored("a", 100, TaskState::Running, 1), Origin::Read)?;
    assert_eq!(ids(&cache.list(&ListFilter::in_state(TaskState::Pending))?), ["b"]);
    assert_eq!(ids(&cache.list(&ListFilter::in_state(TaskState::Running))?), ["a", "c"]);
    cache.remove(&id("c"))?;
    cache.remove(&id("never-there"))?;
    assert_eq!(cache.get(&id("c"))?, None);
    assert_eq!(ids(&cache.list(&ListFilter::all())?), ["a", "b", "d"]);
    assert_eq!(ids(&cache.list(&ListFilter::in_state(TaskState::Running))?), ["a"]);
    cache.close()
}

#[test]
fn a_new_cache_starts_empty_even_over_an_old_one() -> Result<(), super::DbError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache");
    let mut cache = RecordCache::create_empty(&path, Default::default())?;
    cache.put(&stored("old", 1, TaskState::Pending, 0), Origin::Read)?;
    cache.close()?;
    std::fs::write(path.join("garbage"), b"not leveldb").expect("write a stray file");
    let mut cache = RecordCache::create_empty(&path, Default::default())?;
    assert!(cache.list(&ListFilter::all())?.is_empty());
    assert!(!path.join("garbage").exists());
    cache.close()
}

#[test]
fn the_default_cap_keeps_a_children_reply_under_half_a_megabyte() {
    let uuid_reply = layout::DEFAULT_MAX_RECORDS * layout::child_reply_bytes(TaskId::generate().as_str());
    assert!(uuid_reply <= layout::MAX_CHILDREN_REPLY_BYTES, "{uuid_reply} bytes");
    const { assert!(layout::MAX_CHILDREN_REPLY_BYTES <= 1024 * 1024 / 2) };
    // A record is far below the znode limit.
    const { assert!(MAX_RECORD_BYTES * 256 <= 1024 * 1024) };
    // The longest ids stop at the byte budget before the reply reaches half the limit.
    let longest_reply = layout::MAX_CHILDREN_REPLY_BYTES / (TaskId::MAX_LEN + layout::CHILD_NAME_OVERHEAD);
    assert_eq!(longest_reply, 7710, "the arithmetic in layout's doc");
}

#[test]
fn node_ids_are_safe_znode_names() {
    for good in ["node-1", "10.0.0.1", "a", "host_b.example"] {
        assert!(layout::is_valid_node_id(good), "{good}");
    }
    for bad in ["", ".", "..", "a/b", "-x", &"n".repeat(65), "nö"] {
        assert!(!layout::is_valid_node_id(bad), "{bad:?}");
    }
}

#[test]
fn runner_info_is_checked_both_ways() {
    let info = RunnerInfo {
        node_id: "node-1".to_string(),
        address: "10.0.0.1:10601".to_string(),
        slots: 4,
        free_slots: 2,
        draining: false,
        healthy: true,
    };
    let data = serde_json::to_vec(&info).expect("encode");
    assert_eq!(RunnerInfo::decode("node-1", &data).ok(), Some(info.clone()));
    assert!(RunnerInfo::decode("node-2", &data).is_err(), "the data names another node");
    assert!(RunnerInfo::decode("node-1", b"{not json").is_err());
    assert!(RunnerInfo { free_slots: 5, ..info.clone() }.validate().is_err());
    assert!(RunnerInfo { node_id: "../x".to_string(), ..info }.validate().is_err());
}

#[test]
fn last_activity_is_the_latest_known_time() {
    let mut task = record("a", 100, TaskState::Succeeded);
    assert_eq!(last_activity_ms(&task), 100);
    task.schedule_time_ms = Some(500);
    task.last_failed_ms = Some(300);
    assert_eq!(last_activity_ms(&task), 500);
}

#[test]
fn configs_that_cannot_work_are_refused() {
    let good = TaskDbConfig::new("/var/lib/zbs/taskd/cache");
    assert!(good.validate().is_ok());
    assert!(TaskDbConfig { max_records: 0, ..good.clone() }.validate().is_err());
    assert!(TaskDbConfig { read_batch: 0, ..good.clone() }.validate().is_err());
    assert!(TaskDbConfig::new("/").validate().is_err(), "open deletes the cache dir: never the root");
}

mod owners {
    //! Owner nodes: old and corrupt data decode, and how an owner stands against the assignment.

    use proptest::prelude::*;

    use super::super::owner::{decode_owner_of, is_previous_incarnations, owner_match, Owner, OwnerInfo, OwnerMatch};
    use super::id;

    fn owner(address: &str, epoch: Option<u64>) -> Owner {
        Owner {
            info: Some(OwnerInfo {
                runner_id: "node-a".to_string(),
                address: address.to_string(),
                session_id: Some(7),
                epoch,
            }),
            session_id: 7,
        }
    }

    #[test]
    fn old_owner_data_decodes_without_session_and_epoch() {
        let old = decode_owner_of(&id("1"), br#"{"runner_id":"node-a","address":"127.0.0.1:10601"}"#, 9);
        let info = old.info.expect("old data decodes");
        assert_eq!((info.session_id, info.epoch), (None, None));
        let new = decode_owner_of(
            &id("1"),
            br#"{"runner_id":"node-a","address":"127.0.0.1:10601","session_id":9,"epoch":1234,"later":true}"#,
            9,
        );
        assert_eq!(new.info.map(|info| (info.session_id, info.epoch)), Some((Some(9), Some(1234))));
    }

    #[test]
    fn a_current_owner_matches_its_assignment() {
        let current = owner("10.0.0.1:10601", Some(1000));
        assert_eq!(owner_match(Some(&current), Some("10.0.0.1:10601"), Some(1000)), OwnerMatch::Current);
        assert_eq!(owner_match(None, Some("10.0.0.1:10601"), Some(1000)), OwnerMatch::Absent);
    }

    #[test]
    fn an_owner_of_an_earlier_assignment_or_another_runner_is_stale() {
        let earlier = owner("10.0.0.1:10601", Some(1000));
        assert_eq!(owner_match(Some(&earlier), Some("10.0.0.1:10601"), Some(2000)), OwnerMatch::Stale);
        assert_eq!(owner_match(Some(&earlier), Some("10.0.0.2:10601"), Some(1000)), OwnerMatch::Stale);
        // Old data without an epoch: stale only when it names another runner.
        let old = owner("10.0.0.1:10601", None);
        assert_eq!(owner_match(Some(&old), Some("10.0.0.1:10601"), Some(2000)), OwnerMatch::Current);
        assert_eq!(owner_match(Some(&old), Some("10.0.0.2:10601"), Some(2000)), OwnerMatch::Stale);
        // Undecodable data says nothing: the owner stands, as before.
        let corrupt = Owner { info: None, session_id: 3 };
        assert_eq!(owner_match(Some(&corrupt), Some("10.0.0.2:10601"), Some(2000)), OwnerMatch::Current);
    }

    proptest! {
        /// Any bytes decode to an owner (with or without data), never a panic.
        #[test]
        fn any_owner_data_decodes_without_panic(data in proptest::collection::vec(any::<u8>(), 0..256), session in any::<i64>()) {
            let decoded = decode_owner_of(&id("1"), &data, session);
            prop_assert_eq!(decoded.session_id, session);
        }

        /// A restart removes only its own node id's owners of other sessions: never one of its own
        /// session, never another runner's, never one whose data names nobody.
        #[test]
        fn only_this_nodes_owners_of_other_sessions_are_a_previous_incarnations(
            own_session in any::<i64>(),
            owner_session in any::<i64>(),
            same_runner in any::<bool>(),
            decodable in any::<bool>(),
        ) {
            let runner_id = if same_runner { "node-a" } else { "node-b" };
            let info = OwnerInfo { runner_id: runner_id.to_string(), address: "a:1".to_string(), session_id: None, epoch: None };
            let candidate = Owner { info: decodable.then_some(info), session_id: owner_session };
            let expected = same_runner && decodable && owner_session != own_session;
            prop_assert_eq!(is_previous_incarnations(&candidate, "node-a", own_session), expected);
        }

        /// An owner that claimed exactly this assignment is never judged stale.
        #[test]
        fn the_claimer_of_the_assignment_is_never_stale(port in 1u16.., epoch in any::<u64>()) {
            let address = format!("127.0.0.1:{port}");
            let claimer = owner(&address, Some(epoch));
            prop_assert_eq!(owner_match(Some(&claimer), Some(&address), Some(epoch)), OwnerMatch::Current);
        }
    }
}
