//! `TaskDb` against a real ZooKeeper: records created, listed from the cache and rebuilt at
//! reopen (including records written by another session), fenced writes, damaged and
//! future-schema znodes reported and skipped, task owners that vanish with their session, runner
//! registration, purge of finished tasks, and the cap.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use quorum::zk::NodeEvent;
use quorum::{ZkConfig, ZkSession};
use taskd::task::{SleepArgs, TaskId, TaskKind, TaskRecord, TaskState};
use taskd::task_db::layout::{owner_path, task_path, DB_ROOT, RUNNERS_ROOT};
use taskd::task_db::{self, DbError, ListFilter, OwnerInfo, RunnerInfo, StoredRecord, TaskDb, TaskDbConfig};
use tests::zk::ZooKeeper;

const SESSION_TIMEOUT: Duration = Duration::from_secs(4);

/// Generous bound for what should happen soon on a busy 2-core machine.
const WAIT: Duration = Duration::from_secs(20);

const HOUR_MS: u64 = 3_600_000;

fn connect(zookeeper: &ZooKeeper) -> Result<Arc<ZkSession>> {
    Ok(Arc::new(ZkSession::connect(&ZkConfig::new(zookeeper.connect_string(), SESSION_TIMEOUT))?))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as u64).unwrap_or(0)
}

fn sleep_task(created_ms: u64) -> TaskRecord {
    TaskRecord::new(
        TaskId::generate(),
        TaskKind::Sleep(SleepArgs { duration_ms: 5, fail: false, fail_first: 0 }),
        created_ms,
    )
}

fn open(session: &Arc<ZkSession>, dir: &tempfile::TempDir, name: &str) -> Result<TaskDb> {
    Ok(TaskDb::open(session.clone(), TaskDbConfig::new(dir.path().join(name)))?)
}

/// Every task record in ZooKeeper, read directly (the truth the cache must equal).
fn records_in_zookeeper(session: &ZkSession) -> Result<Vec<StoredRecord>> {
    let mut found = Vec::new();
    for name in session.children(DB_ROOT)? {
        let task_id = TaskId::parse(&name)?;
        if let Ok(Some(stored)) = task_db::read_record(session, &task_id) {
            found.push(stored);
        }
    }
    found.sort_by(|a, b| (a.record.created_ms, &a.record.task_id).cmp(&(b.record.created_ms, &b.record.task_id)));
    Ok(found)
}

fn wait_event(watch: quorum::zk::NodeWatch) -> Option<NodeEvent> {
    runtime::block_on_timeout(watch.changed(), WAIT)
}

#[test]
fn records_are_listed_from_the_cache_and_rebuilt_from_zookeeper_at_reopen() -> Result<()> {
    let zookeeper = ZooKeeper::start()?;
    let dispatcher = connect(&zookeeper)?;
    let other = connect(&zookeeper)?;
    let dir = tempfile::tempdir()?;
    let mut db = open(&dispatcher, &dir, "cache")?;
    assert!(db.is_empty() && db.corrupt().is_empty());

    let base = now_ms() - 10 * HOUR_MS;
    let mut created = Vec::new();
    for (index, state) in [TaskState::Pending, TaskState::Pending, TaskState::Paused].into_iter().enumerate() {
        let mut record = sleep_task(base + index as u64 * HOUR_MS);
        record.state = state;
        created.push(db.create(&record)?);
    }
    assert_eq!(db.len(), 3);
    let first = &created[0];
    assert_eq!(db.get(&first.record.task_id)?.as_ref(), Some(first));
    assert!(matches!(db.create(&first.record), Err(DbError::Exists { .. })));
    let ids = |records: &[StoredRecord]| records.iter().map(|stored| stored.record.task_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&db.list(&ListFilter::all())?), ids(&created), "creation order");
    assert_eq!(ids(&db.list(&ListFilter::in_state(TaskState::Paused))?), ids(&created[2..]));
    let window = ListFilter { created_from_ms: Some(base + HOUR_MS), ..ListFilter::default() };
    assert_eq!(ids(&db.list(&window)?), ids(&created[1..]));

    // Another session writes: a new record and a change of an existing one. The cache does not
    // see them until it is refreshed or rebuilt.
    let foreign = sleep_task(base - HOUR_MS);
    other.create_persistent(&task_path(&foreign.task_id), &foreign.encode()?)?;
    let mut progressed = created[1].record.clone();
    progressed.progress.cur_extent = 7;
    task_db::write_record(&other, &progressed, created[1].version)?;
    assert_eq!(db.get(&foreign.task_id)?, None);
    assert_eq!(db.len(), 3, "not seen yet");
    assert_eq!(db.refresh(&created[1].record.task_id)?.map(|stored| stored.record.progress.cur_extent), Some(7));

    // A rebuild of the open database forgets what ZooKeeper lost and learns what it gained.
    other.delete(&task_path(&created[2].record.task_id), None)?;
    let report = db.rebuild()?;
    assert_eq!((report.n_loaded, db.len()), (3, 3), "two left of ours, and the foreign one");
    // The counts the cache keeps follow the rebuild: two pending of ours and the foreign one.
    assert_eq!(db.counts().get("sleep", TaskState::Pending), 3);
    assert_eq!(db.counts().get("sleep", TaskState::Paused), 0);
    assert_eq!(db.get(&created[2].record.task_id)?, None);
    assert!(db.list(&ListFilter::in_state(TaskState::Paused))?.is_empty());
    assert_eq!(db.get(&foreign.task_id)?.map(|stored| stored.record), Some(foreign.clone()));
    let mut paused_again = created[2].record.clone();
    paused_again.created_ms = base + 2 * HOUR_MS;
    created[2] = db.create(&paused_again)?;
    db.close()?;

    // A stray file in the old cache dir proves that open starts from an empty directory.
    std::fs::write(dir.path().join("cache").join("stray"), b"x")?;
    let mut reopened = open(&dispatcher, &dir, "cache")?;
    ensure!(!dir.path().join("cache").join("stray").exists(), "the old cache was not deleted");
    assert_eq!(reopened.len(), 4);
    assert_eq!(reopened.last_rebuild().n_loaded, 4);
    let cached = reopened.list(&ListFilter::all())?;
    assert_eq!(cached, records_in_zookeeper(&dispatcher)?, "the rebuilt cache equals ZooKeeper");
    assert_eq!(cached[0].record, foreign, "the other session's record, oldest first");
    // A reopened database counts from zero: exactly what it cached.
    let mut recount = task_db::TaskCounts::default();
    for stored in &cached {
        recount.add((stored.record.kind.type_name(), stored.record.state));
    }
    assert_eq!(reopened.counts(), recount);
    assert_eq!(reopened.counts().total(), 4);
    let newest = reopened.list(&ListFilter::all().newest_first().with_limit(2))?;
    assert_eq!(ids(&newest), [cached[3].record.task_id.clone(), cached[2].record.task_id.clone()]);
    reopened.close()?;
    Ok(())
}

#[test]
fn fenced_writes_let_exactly_one_of_two_writers_win() -> Result<()> {
    let zookeeper = ZooKeeper::start()?;
    let setup = connect(&zookeeper)?;
    let dir = tempfile::tempdir()?;
    let mut db = open(&setup, &dir, "setup")?;
    let stored = db.create(&sleep_task(now_ms()))?;
    let task_id = stored.record.task_id.clone();

    // Two dispatchers (an old leader and a new one), each with its own session and cache, both
    // write from the same version at the same moment.
    let barrier = Arc::new(Barrier::new(2));
    let writers: Vec<_> = (0..2u64)
        .map(|writer| {
            let (barrier, stored, connect_string) = (barrier.clone(), stored.clone(), zookeeper.connect_string());
            let cache_dir = dir.path().join(format!("writer-{writer}"));
            thread::spawn(move || -> Result<Result<StoredRecord, DbError>> {
                let session = Arc::new(ZkSession::connect(&ZkConfig::new(connect_string, SESSION_TIMEOUT))?);
                let mut db = TaskDb::open(session, TaskDbConfig::new(cache_dir))?;
                let mut record = stored.record.clone();
                record.progress.cur_extent = 100 + writer;
                barrier.wait();
                let outcome = db.update(&record, stored.version);
                db.close()?;
                Ok(outcome)
            })
        })
        .collect();
    let outcomes: Vec<Result<StoredRecord, DbError>> =
        writers.into_iter().map(|writer| writer.join().expect("writer thread")).collect::<Result<_>>()?;
    let winners: Vec<&StoredRecord> = outcomes.iter().filter_map(|outcome| outcome.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one writer wins: {outcomes:?}");
    assert_eq!(outcomes.iter().filter(|outcome| matches!(outcome, Err(error) if error.is_fenced())).count(), 1);
    let truth = task_db::read_record(&setup, &task_id)?.context("the record exists")?;
    assert_eq!(&truth, winners[0], "ZooKeeper holds the winner's write");

    // A zombie runner writing from the version it read long ago is fenced too.
    let mut zombie = stored.record.clone();
    zombie.state = TaskState::Succeeded;
    assert!(task_db::write_record(&setup, &zombie, stored.version).is_err_and(|error| error.is_fenced()));
    // The stale cache is refreshed by the fenced update, then read_modify_write succeeds.
    assert!(db.update(&zombie, stored.version).is_err_and(|error| error.is_fenced()));
    assert_eq!(db.get(&task_id)?.as_ref(), Some(&truth), "a fenced update refreshed the cache");
    let changed = db.read_modify_write(&task_id, |record| {
        record.transition_to(TaskState::Running)?;
        Ok(())
    })?;
    assert_eq!(changed.version, truth.version + 1);
    assert_eq!(changed.record.progress, truth.record.progress, "based on the latest record");
    // A refused transition aborts without writing.
    let refused = db.read_modify_write(&task_id, |record| {
        record.state = TaskState::Cancelled;
        Err(DbError::Rejected { task_id: record.task_id.clone(), reason: "test refusal".to_string() })
    });
    assert!(matches!(refused, Err(DbError::Rejected { .. })));
    assert_eq!(task_db::read_record(&setup, &task_id)?.map(|stored| stored.version), Some(changed.version));
    db.close()?;
    Ok(())
}

#[test]
fn corrupt_and_future_schema_records_are_reported_and_the_others_load() -> Result<()> {
    let zookeeper = ZooKeeper::start()?;
    let session = connect(&zookeeper)?;
    session.ensure_path(DB_ROOT)?;
    let good: Vec<TaskRecord> = (0..5).map(|index| sleep_task(now_ms() + index)).collect();
    for record in &good {
        session.create_persistent(&task_path(&record.task_id), &record.encode()?)?;
    }
    let future = br#"{"schema_version":99,"task_id":"future","whatever":"a newer daemon wrote this"}"#;
    session.create_persistent(&format!("{DB_ROOT}/future"), future)?;
    session.create_persistent(&format!("{DB_ROOT}/garbage"), b"{not json")?;
    session.create_persistent(&format!("{DB_ROOT}/empty"), b"")?;
    session.create_persistent(&format!("{DB_ROOT}/impostor"), &good[0].encode()?)?;
    session.create_persistent(&format!("{DB_ROOT}/not.a.task"), &good[1].encode()?)?;

    let dir = tempfile::tempdir()?;
    let mut db = open(&session, &dir, "cache")?;
    let mut reported: Vec<&str> = db.corrupt().iter().map(|corrupt| corrupt.path.as_str()).collect();
    reported.sort();
    assert_eq!(
        reported,
        [
            "/zbs/taskd/db/empty",
            "/zbs/taskd/db/future",
            "/zbs/taskd/db/garbage",
            "/zbs/taskd/db/impostor",
            "/zbs/taskd/db/not.a.task"
        ]
    );
    let future_reason =
        &db.corrupt().iter().find(|corrupt| corrupt.path.ends_with("/future")).context("future")?.reason;
    assert!(future_reason.contains("newer"), "{future_reason}");
    assert_eq!(db.list(&ListFilter::all())?.len(), good.len(), "every good record loaded");
    assert_eq!(db.len(), good.len() + 5, "damaged znodes still count towards the cap");

    // A record damaged while the db is open is reported by refresh, not loaded.
    session.set_data(&task_path(&good[2].task_id), b"\xff\xfe", None)?;
    assert_eq!(db.refresh(&good[2].task_id)?, None);
    assert_eq!(db.get(&good[2].task_id)?, None);
    assert!(db.corrupt().iter().any(|corrupt| corrupt.path == task_path(&good[2].task_id)));
    assert_eq!(db.len(), good.len() + 5, "a damaged record is still counted once");
    // Repaired, it loads again and is no longer reported.
    session.set_data(&task_path(&good[2].task_id), &good[2].encode()?, None)?;
    assert_eq!(db.refresh(&good[2].task_id)?.map(|stored| stored.record), Some(good[2].clone()));
    assert!(!db.corrupt().iter().any(|corrupt| corrupt.path == task_path(&good[2].task_id)));
    assert_eq!(db.len(), good.len() + 5);
    db.close()?;
    Ok(())
}

#[test]
fn task_owners_vanish_with_their_session_and_runners_register() -> Result<()> {
    let zookeeper = ZooKeeper::start()?;
    let dispatcher = connect(&zookeeper)?;
    let runner_a = connect(&zookeeper)?;
    let runner_b = connect(&zookeeper)?;
    let dir = tempfile::tempdir()?;
    let mut db = open(&dispatcher, &dir, "cache")?;
    let stored = db.create(&sleep_task(now_ms()))?;
    let task_id = stored.record.task_id.clone();
    let info_a = OwnerInfo {
        runner_id: "node-a".to_string(),
        address: "127.0.0.1:10601".to_string(),
        session_id: None,
        epoch: None,
    };
    let info_b = OwnerInfo {
        runner_id: "node-b".to_string(),
        address: "127.0.0.2:10601".to_string(),
        session_id: None,
        epoch: None,
    };

    // The dispatcher assigns (a fenced write), then the runner claims on that version.
    let assigned = db.read_modify_write(&task_id, |record| {
        record.runner_addr = Some(info_a.address.clone());
        Ok(())
    })?;
    assert!(task_db::claim(&runner_a, &task_id, &info_a, Some(stored.version)).is_err_and(|error| error.is_fenced()));
    task_db::claim(&runner_a, &task_id, &info_a, Some(assigned.version))?;
    task_db::claim(&runner_a, &task_id, &info_a, None)?; // idempotent for the owner
    assert!(matches!(task_db::claim(&runner_b, &task_id, &info_b, None), Err(DbError::AlreadyOwned { .. })));
    let missing = TaskId::generate();
    assert!(matches!(task_db::claim(&runner_b, &missing, &info_b, None), Err(DbError::NotFound { .. })));
    assert!(!task_db::release(&runner_b, &task_id)?, "a stranger cannot release");

    let (owner, watch) = task_db::watch_owner(&dispatcher, &task_id)?;
    let owner = owner.context("runner a owns the task")?;
    assert_eq!((owner.info, owner.session_id), (Some(info_a.clone()), runner_a.session_id()));
    assert!(dispatcher
        .exists(&owner_path(&task_id))?
        .is_some_and(|stat| stat.ephemeral_owner == runner_a.session_id()));

    // Runners register; the dispatcher lists and watches them.
    let runner_info = |node_id: &str, free_slots| RunnerInfo {
        node_id: node_id.to_string(),
        address: format!("{node_id}:10601"),
        slots: 4,
        free_slots,
        draining: false,
        healthy: true,
    };
    let version_a = task_db::register_runner(&runner_a, &runner_info("node-a", 4))?;
    task_db::register_runner(&runner_b, &runner_info("node-b", 4))?;
    dispatcher.create_persistent(&format!("{RUNNERS_ROOT}/broken"), b"[]")?;
    let version_a = task_db::update_runner(&runner_a, &runner_info("node-a", 3), version_a)?;
    assert!(task_db::update_runner(&runner_a, &runner_info("node-a", 2), version_a - 1)
        .is_err_and(|error| error.is_fenced()));
    let listed = task_db::list_runners(&dispatcher)?;
    let names: Vec<&str> = listed.runners.iter().map(|runner| runner.info.node_id.as_str()).collect();
    assert_eq!(names, ["node-a", "node-b"]);
    assert_eq!(listed.runners[0].info.free_slots, 3);
    assert_eq!(listed.runners[0].session_id, runner_a.session_id());
    assert_eq!(listed.corrupt.len(), 1, "the broken registration is reported, not fatal");
    let (children, runners_watch) = task_db::watch_runners(&dispatcher)?;
    assert_eq!(children.len(), 3);

    // Runner a's session closes: its owner node and registration vanish, both watches fire.
    let started = Instant::now();
    runner_a.close(WAIT)?;
    let event = wait_event(watch).context("the owner watch fired")?;
    assert_eq!(event, NodeEvent::Deleted { path: owner_path(&task_id) });
    let event = wait_event(runners_watch).context("the runners watch fired")?;
    assert_eq!(event, NodeEvent::ChildrenChanged { path: RUNNERS_ROOT.to_string() });
    eprintln!("owner and registration gone {:?} after the runner's session closed", started.elapsed());
    assert_eq!(task_db::owner_of(&dispatcher, &task_id)?, None);
    let names: Vec<String> =
        task_db::list_runners(&dispatcher)?.runners.into_iter().map(|runner| runner.info.node_id).collect();
    assert_eq!(names, ["node-b"]);

    // Runner b can take over now, and releases cleanly.
    task_db::claim(&runner_b, &task_id, &info_b, None)?;
    assert!(task_db::release(&runner_b, &task_id)?);
    assert_eq!(task_db::owner_of(&dispatcher, &task_id)?, None);
    db.close()?;
    Ok(())
}

#[test]
fn finished_tasks_are_purged_after_the_retention_and_the_cap_refuses_submits() -> Result<()> {
    let zookeeper = ZooKeeper::start()?;
    let session = connect(&zookeeper)?;
    let runner = connect(&zookeeper)?;
    let dir = tempfile::tempdir()?;
    let config = TaskDbConfig { max_records: 6, ..TaskDbConfig::new(dir.path().join("cache")) };
    let mut db = TaskDb::open(session.clone(), config)?;
    let old = now_ms() - 48 * HOUR_MS;
    let with_state = |created_ms, state| {
        let mut record = sleep_task(created_ms);
        record.state = state;
        record
    };
    let old_succeeded = db.create(&with_state(old, TaskState::Succeeded))?;
    let old_cancelled = db.create(&with_state(old + 1, TaskState::Cancelled))?;
    let old_pending = db.create(&with_state(old + 2, TaskState::Pending))?;
    let recent_failed = db.create(&with_state(now_ms(), TaskState::Failed))?;
    // Created long ago, but its last run started recently: kept.
    let mut late_run = with_state(old + 3, TaskState::Succeeded);
    late_run.schedule_time_ms = Some(now_ms());
    let late_run = db.create(&late_run)?;
    // Finished, but its runner has not released it yet: purged with its owner node.
    let old_failed_owned = db.create(&with_state(old + 4, TaskState::Failed))?;
    let owner = OwnerInfo {
        runner_id: "node-a".to_string(),
        address: "127.0.0.1:10601".to_string(),
        session_id: None,
        epoch: None,
    };
    task_db::claim(&runner, &old_failed_owned.record.task_id, &owner, None)?;

    // The cap: six records, the seventh is refused.
    assert_eq!(db.len(), 6);
    let refused = db.create(&sleep_task(now_ms()));
    assert!(matches!(refused, Err(DbError::Full { n_records: 6, max_records: 6, .. })), "{refused:?}");

    let report = db.purge_finished(Duration::from_secs(24 * 3600))?;
    assert_eq!((report.n_purged, report.n_skipped), (3, 0));
    for gone in [&old_succeeded, &old_cancelled, &old_failed_owned] {
        assert!(session.exists(&task_path(&gone.record.task_id))?.is_none(), "{} purged", gone.record.task_id);
        assert_eq!(db.get(&gone.record.task_id)?, None);
    }
    for kept in [&old_pending, &recent_failed, &late_run] {
        assert!(session.exists(&task_path(&kept.record.task_id))?.is_some(), "{} kept", kept.record.task_id);
        assert!(db.get(&kept.record.task_id)?.is_some());
    }
    assert_eq!(db.len(), 3);
    db.create(&sleep_task(now_ms()))?;
    assert_eq!(db.len(), 4, "the purge made room");
    db.close()?;
    Ok(())
}

/// Rebuilds a cache of `ZBS_TASK_DB_N` records (default 2,000) and checks it equals ZooKeeper;
/// prints the rebuild time (a measurement, not an assertion).
#[test]
fn a_rebuild_of_thousands_of_records_loads_them_all() -> Result<()> {
    let n_records: usize = std::env::var("ZBS_TASK_DB_N").ok().and_then(|n| n.parse().ok()).unwrap_or(2000);
    let zookeeper = ZooKeeper::start()?;
    let session = connect(&zookeeper)?;
    session.ensure_path(DB_ROOT)?;
    // Created through a multi-op per 200 records: setup speed, not what is measured.
    let records: Vec<TaskRecord> = (0..n_records).map(|index| sleep_task(now_ms() - index as u64)).collect();
    for chunk in records.chunks(200) {
        let operations = chunk
            .iter()
            .map(|record| -> Result<_> {
                Ok(quorum::zk::ZkOp::Create {
                    path: task_path(&record.task_id),
                    data: record.encode()?,
                    kind: quorum::zk::NodeKind::Persistent,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        session.multi(&operations)?;
    }
    let dir = tempfile::tempdir()?;
    let config = TaskDbConfig { max_records: n_records.max(10_000), ..TaskDbConfig::new(dir.path().join("cache")) };
    let started = Instant::now();
    let mut db = TaskDb::open(session.clone(), config)?;
    let elapsed = started.elapsed();
    eprintln!("rebuilt {n_records} records in {elapsed:?} ({:?} inside rebuild)", db.last_rebuild().elapsed);
    assert_eq!(db.last_rebuild().n_loaded, n_records);
    let listed = db.list(&ListFilter::all())?;
    assert_eq!(listed.len(), n_records);
    assert!(listed.windows(2).all(|pair| pair[0].record.created_ms <= pair[1].record.created_ms), "date order");
    let started = Instant::now();
    let pending = db.list(&ListFilter::in_state(TaskState::Pending).with_limit(100))?;
    eprintln!("listed 100 pending of {n_records} in {:?}", started.elapsed());
    assert_eq!(pending.len(), 100.min(n_records));
    db.close()?;
    Ok(())
}
