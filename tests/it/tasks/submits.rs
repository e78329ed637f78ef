//! Submits end to end: a request id creates one task however often (and however concurrently)
//! it is sent, across a leader change too; copies never share a volume (one destination, or one
//! copy writing what another reads) and never write over data unless asked to; a task that
//! failed once and then succeeded shows no stale `last_error`.

use std::sync::Barrier;

use super::*;

/// `(status, answer)` of a submit to `path` with `body` and, if given, an `Idempotency-Key`.
fn create(cluster: &Cluster, node: usize, path: &str, body: &Value, key: Option<&str>) -> Result<(u16, Value)> {
    let spec = cluster.node(node);
    let url = format!("http://{}:{}{PREFIX}/{path}", spec.address, spec.dispatcher_port);
    let mut request =
        agent().post(&url).set("Content-Type", "application/json").set(taskd::access::TOKEN_HEADER, cluster.token());
    if let Some(key) = key {
        request = request.set(taskd::api::IDEMPOTENCY_KEY_HEADER, key);
    }
    let (status, response) = match request.send_string(&body.to_string()) {
        Ok(response) => (response.status(), response),
        Err(ureq::Error::Status(status, response)) => (status, response),
        Err(error) => bail!("POST {url}: {error}"),
    };
    Ok((status, response.into_json().context("read the answer")?))
}

#[test]
fn a_request_id_creates_one_task_however_often_concurrently_or_across_a_leader_change_it_is_sent() {
    with_cluster(|cluster, _roots| {
        let leader = leader(cluster)?;
        let body = json!({ "duration_ms": 200, "request_id": "retry-1" });
        let (status, first) = create(cluster, leader, "sleep/create", &body, None)?;
        ensure!(status == 201, "the first submit: {status} {first}");
        let (status, again) = create(cluster, leader, "sleep/create", &body, None)?;
        ensure!(status == 200, "the retry: {status} {again}");
        ensure!(again["task_id"] == first["task_id"], "the retry answered another task: {again} vs {first}");
        ensure!(again["request_id"] == json!("retry-1"), "the record does not keep its request id: {again}");
        // The header is an alias of the field.
        let (status, by_header) =
            create(cluster, leader, "sleep/create", &json!({ "duration_ms": 200 }), Some("retry-1"))?;
        ensure!(status == 200 && by_header["task_id"] == first["task_id"], "by header: {status} {by_header}");
        // The same id with another body names the original task.
        let other = json!({ "duration_ms": 300, "request_id": "retry-1" });
        let (status, reused) = create(cluster, leader, "sleep/create", &other, None)?;
        ensure!(status == 409 && reused["task_id"] == first["task_id"], "reused id: {status} {reused}");
        for bad in ["", "a/b", "..", &"x".repeat(129)] {
            let (status, answer) =
                create(cluster, leader, "sleep/create", &json!({ "duration_ms": 1, "request_id": bad }), None)?;
            ensure!(status == 400, "request id {bad:?}: {status} {answer}");
        }
        ensure!(n_tasks(cluster, leader)? == 1, "retries created tasks");

        // Twenty submits with one id at once: one creates, the others answer with its task.
        let barrier = Barrier::new(20);
        let answers: Vec<Result<(u16, Value)>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..20)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        create(
                            cluster,
                            leader,
                            "sleep/create",
                            &json!({ "duration_ms": 200, "request_id": "burst" }),
                            None,
                        )
                    })
                })
                .collect();
            threads.into_iter().map(|thread| thread.join().expect("a submitting thread")).collect()
        });
        let answers: Vec<(u16, Value)> = answers.into_iter().collect::<Result<_>>()?;
        let n_created = answers.iter().filter(|(status, _)| *status == 201).count();
        ensure!(n_created == 1, "{n_created} of 20 concurrent duplicates created a task: {answers:?}");
        ensure!(answers.iter().all(|(status, _)| *status == 201 || *status == 200), "{answers:?}");
        let burst_id = &answers[0].1["task_id"];
        ensure!(answers.iter().all(|(_, answer)| answer["task_id"] == *burst_id), "different tasks: {answers:?}");
        ensure!(n_tasks(cluster, leader)? == 2, "the burst created more than one task");

        // A task that fails its first attempt and then succeeds shows no stale last_error.
        let (status, flaky) =
            create(cluster, leader, "sleep/create", &json!({ "duration_ms": 50, "fail_first": 1 }), None)?;
        ensure!(status == 201, "flaky: {status} {flaky}");
        let flaky_id = flaky["task_id"].as_str().context("no task_id")?;
        let record = wait_state(cluster, leader, flaky_id, "succeeded", WAIT)?;
        ensure!(record["attempts"] == json!(1), "one failed attempt: {record}");
        ensure!(record["last_error"].is_null(), "a succeeded task shows a stale last_error: {record}");
        ensure!(
            record["attempt_errors"] == json!(["the sleep task was asked to fail"]),
            "the earlier attempt's error is not kept: {record}"
        );

        // A submit retried after the leader stopped gets the original task from the next leader.
        let body = json!({ "duration_ms": 100, "request_id": "across-leaders" });
        let (status, before) = create(cluster, leader, "sleep/create", &body, None)?;
        ensure!(status == 201, "before the leader change: {status} {before}");
        cluster.signal(leader, Signal::SIGTERM)?;
        let new_leader = cluster.wait_for_new_leader(leader, WAIT)?;
        let mut after = (0, Value::Null);
        poll_until(WAIT, "the new leader answers the retried submit", || {
            after = create(cluster, new_leader, "sleep/create", &body, None).unwrap_or((0, Value::Null));
            !matches!(after.0, 0 | 421 | 503)
        })?;
        ensure!(after.0 == 200 && after.1["task_id"] == before["task_id"], "after the leader change: {after:?}");
        ensure!(n_tasks(cluster, new_leader)? == 4, "the retry across leaders created a task");
        Ok(())
    });
}

/// A copy paced to 4 MiB/s in 1 MiB extents: a 24 MiB volume keeps running for about 6 s.
fn paced(config: &mut DaemonConfig) {
    config.tasks.copy_extent_mib = Some(1);
    config.tasks.copy_block_kib = Some(256);
    config.tasks.copy_max_mib_per_s = Some(4);
}

#[test]
fn copies_never_share_a_volume_and_write_over_data_only_when_asked() {
    with_tuned_cluster(paced, "info", |cluster, roots| {
        let leader = leader(cluster)?;
        let source = roots.join("busy.src");
        let destination = roots.join("busy.dst");
        dense_file(&source, 24 << 20, 3)?;
        let running =
            submit(cluster, leader, "copy_volume/create", json!({ "source": source, "destination": destination }))?;
        wait_state(cluster, leader, &running, "running", WAIT)?;
        let spare = roots.join("spare.src");
        sparse_file(&spare, 1 << 20, 4)?;
        let refused = [
            ("the same destination", json!({ "source": spare, "destination": destination })),
            // (A path through a symlink is refused by the confinement at submit, with a 400.)
            (
                "the same destination spelled with .",
                json!({ "source": spare, "destination": roots.join("./busy.dst") }),
            ),
            // (And one through `..`, also by the confinement.)
            (
                "the same destination spelled with //",
                json!({ "source": spare, "destination": format!("{}//busy.dst", roots.display()) }),
            ),
            (
                "a destination the running copy reads",
                json!({ "source": spare, "destination": source, "overwrite": true }),
            ),
            (
                "a source the running copy writes",
                json!({ "source": destination, "destination": roots.join("other.dst") }),
            ),
        ];
        for (what, body) in refused {
            let (status, answer) = create(cluster, leader, "copy_volume/create", &body, None)?;
            ensure!(status == 409, "{what}: {status} {answer}");
            ensure!(answer["task_id"] == json!(running), "{what}: the answer does not name the running copy: {answer}");
        }
        // Reading one source twice is fine.
        let reader = submit(
            cluster,
            leader,
            "copy_volume/create",
            json!({ "source": source, "destination": roots.join("second.dst") }),
        )?;

        // A destination that holds data needs `overwrite`.
        let full = roots.join("full.dst");
        std::fs::write(&full, b"precious")?;
        let body = json!({ "source": spare, "destination": full });
        let (status, answer) = create(cluster, leader, "copy_volume/create", &body, None)?;
        ensure!(status == 409, "a destination with data, no overwrite: {status} {answer}");
        ensure!(std::fs::read(&full)? == b"precious", "the refused copy touched the destination");
        let overwriting = submit(
            cluster,
            leader,
            "copy_volume/create",
            json!({ "source": spare, "destination": full, "overwrite": true }),
        )?;
        wait_state(cluster, leader, &overwriting, "succeeded", WAIT)?;
        ensure!(files_equal(&spare, &full)?, "the overwriting copy differs from its source");

        // Once the running copy is done its volumes are free again.
        wait_state(cluster, leader, &running, "succeeded", Duration::from_secs(60))?;
        wait_state(cluster, leader, &reader, "succeeded", Duration::from_secs(60))?;
        let body = json!({ "source": spare, "destination": destination, "overwrite": true });
        let after = submit(cluster, leader, "copy_volume/create", body)?;
        wait_state(cluster, leader, &after, "succeeded", WAIT)?;
        Ok(())
    });
}
