//! `[tasks] retention_sec` end to end: finished tasks are purged that long after they finished —
//! not after they were created — and unfinished ones never are.

use super::*;

#[test]
fn finished_tasks_are_purged_the_retention_after_they_finished() {
    with_tuned_cluster(
        |config| config.tasks.retention_sec = Some(10),
        "info",
        |cluster, roots| {
            let leader = leader(cluster)?;
            let quick = submit(cluster, leader, "sleep/create", json!({ "duration_ms": 100 }))?;
            // Finishes 12 s after its creation: older than the retention by then, yet kept for it.
            let slow = submit(cluster, leader, "sleep/create", json!({ "duration_ms": 12_000 }))?;
            let pending_forever = {
                // A task whose window never opens stays pending, unfinished: never purged.
                let closed_hour = (chrono::Local::now().hour() + 2) % 24;
                let window =
                    json!({ "start_hour": closed_hour, "start_min": 0, "end_hour": closed_hour, "end_min": 1 });
                let source = roots.join("windowed.src");
                sparse_file(&source, 1 << 20, 11)?;
                let body =
                    json!({ "source": source, "destination": roots.join("windowed.dst"), "runtime_window": window });
                submit(cluster, leader, "copy_volume/create", body)?
            };
            let record = wait_state(cluster, leader, &quick, "succeeded", WAIT)?;
            ensure!(record["finished_ms"].is_u64(), "a finished task without finished_ms: {record}");
            let gone = |task_id: &str| {
                request(cluster, leader, "GET", &format!("{PREFIX}/tasks/{task_id}"), None)
                    .is_ok_and(|(status, _)| status == 404)
            };
            poll_until(Duration::from_secs(30), "the quick task is purged", || gone(&quick))?;
            let finished = wait_state(cluster, leader, &slow, "succeeded", Duration::from_secs(30))?;
            let finished_at = std::time::Instant::now();
            let age_ms = finished["finished_ms"].as_u64().unwrap_or(0) - finished["created_ms"].as_u64().unwrap_or(0);
            ensure!(age_ms >= 10_000, "the slow task finished only {age_ms} ms after its creation");
            std::thread::sleep(Duration::from_secs(5));
            ensure!(!gone(&slow), "the slow task was purged 5 s after it finished, within its 10 s retention");
            poll_until(Duration::from_secs(30), "the slow task is purged", || gone(&slow))?;
            let kept_for = finished_at.elapsed();
            ensure!(kept_for >= Duration::from_secs(8), "the slow task was kept only {kept_for:?} after it finished");
            let record = show(cluster, leader, &pending_forever)?;
            ensure!(record["state"] == json!("pending"), "the windowed task: {record}");
            ensure!(n_tasks(cluster, leader)? == 1, "only the unfinished task is left");
            Ok(())
        },
    );
}
