//! Operations the dispatcher forwards to a runner (pause, cancel, runtime, drain) wait for that
//! runner without holding a thread of the API's shared worker pool: with the runner frozen
//! (SIGSTOP), a burst of forwarded requests leaves every other route answering at once.

use std::time::Instant;

use super::*;

#[test]
fn a_frozen_runner_does_not_stall_the_other_routes() {
    with_cluster(|cluster, _roots| {
        let leader = leader(cluster)?;
        // Tasks until one runs on a runner other than the leader's node.
        let (task_id, runner) = (0..12)
            .find_map(|_| {
                let task_id = submit(cluster, leader, "sleep/create", json!({ "duration_ms": 120_000 })).ok()?;
                let record = wait_state(cluster, leader, &task_id, "running", WAIT).ok()?;
                let addr = record["runner_addr"].as_str()?.to_string();
                let node = (0..cluster.n_nodes())
                    .find(|&node| addr.ends_with(&format!(":{}", cluster.node(node).runner_port)))?;
                (node != leader).then_some((task_id, node))
            })
            .context("no task landed on a follower's runner")?;
        wait_claimed(cluster, runner, &task_id)?;
        cluster.signal(runner, Signal::SIGSTOP)?;
        let result = (|| -> Result<()> {
            // More forwarded requests than the worker pool has threads, each waiting on the frozen runner.
            let forwarders: Vec<_> = (0..6)
                .map(|_| {
                    let spec = cluster.node(leader).clone();
                    let (token, task_id) = (cluster.token().to_string(), task_id.clone());
                    std::thread::spawn(move || {
                        let url =
                            format!("http://{}:{}{PREFIX}/tasks/{task_id}/pause", spec.address, spec.dispatcher_port);
                        let _ = ureq::post(&url).set(taskd::access::TOKEN_HEADER, &token).send_string("{}");
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(500));
            let mut slowest = Duration::ZERO;
            for _ in 0..10 {
                let started = Instant::now();
                let (status, answer) = request(cluster, leader, "GET", &format!("{PREFIX}/tasks/{task_id}"), None)?;
                ensure!(status == 200, "show during the forwards: {status} {answer}");
                slowest = slowest.max(started.elapsed());
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!(
                "with 6 forwards waiting on a frozen runner, the slowest show took {:.1} ms",
                slowest.as_secs_f64() * 1e3
            );
            ensure!(slowest < Duration::from_secs(1), "a show waited {slowest:?} behind forwards to a frozen runner");
            for forwarder in forwarders {
                let _ = forwarder.join();
            }
            Ok(())
        })();
        cluster.signal(runner, Signal::SIGCONT)?;
        result
    });
}

/// Resume applies to a paused task only: asked of a running one it is refused (409) and the task
/// keeps its one run, never handed out a second time while its runner runs it (found by the
/// chaos run, seed 1311: a resume put a running task back to pending and it ran twice at once).
#[test]
fn resuming_a_running_task_is_refused_and_starts_no_second_run() {
    with_cluster(|cluster, _roots| {
        let leader = leader(cluster)?;
        let task_id = submit(cluster, leader, "sleep/create", json!({ "duration_ms": 4_000 }))?;
        let running = wait_state(cluster, leader, &task_id, "running", WAIT)?;
        let (status, answer) =
            request(cluster, leader, "POST", &format!("{PREFIX}/tasks/{task_id}/resume"), Some("{}"))?;
        ensure!(status == 409, "resume of a running task: {status} {answer}");
        let after = show(cluster, leader, &task_id)?;
        ensure!(
            after["state"] == "running" && after["runner_addr"] == running["runner_addr"],
            "the refused resume changed the task: {after}"
        );
        wait_state(cluster, leader, &task_id, "succeeded", WAIT)?;
        let started = (0..cluster.n_nodes())
            .map(|node| cluster.log(node).matches(&format!("task started task_id={task_id}")).count())
            .sum::<usize>();
        ensure!(started == 1, "the task started {started} times");
        Ok(())
    });
}
