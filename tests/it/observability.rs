//! Observability against real daemons: every node's `/metrics`, `/healthz`, `/readyz` and
//! `/leader` scraped before, during and after a hand-over for a failed data network (the
//! `file` health source), and the stopped service's stand-in answering status, probes, metrics
//! and task routes (503 naming the new leader) until the node rejoins. The leader's task gauges
//! match its task list after a mix of transitions, and again on the next leader, which rebuilt
//! them from ZooKeeper.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::Value;
use tests::cluster::Cluster;
use tests::prelude::*;

use crate::with_cluster;

const WAIT: Duration = Duration::from_secs(30);

const PREFIX: &str = "/api/v2/task_center";

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(15)).build()
}

/// `GET path` on the node's dispatcher port, with the token: (status, body text).
fn get(cluster: &Cluster, node: usize, path: &str) -> Result<(u16, String)> {
    let spec = cluster.node(node);
    let url = format!("http://{}:{}{path}", spec.address, spec.dispatcher_port);
    get_url(cluster, &url)
}

fn get_url(cluster: &Cluster, url: &str) -> Result<(u16, String)> {
    let response = match agent().get(url).set("X-SmartX-Token", cluster.token()).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => return Err(anyhow!("GET {url}: {error}")),
    };
    let status = response.status();
    Ok((status, response.into_string().with_context(|| format!("read the answer to GET {url}"))?))
}

fn get_json(cluster: &Cluster, node: usize, path: &str) -> Result<(u16, Value)> {
    let (status, text) = get(cluster, node, path)?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// The node's metrics, parsed: series (name with labels, as written) → value.
fn scrape(cluster: &Cluster, node: usize) -> Result<Vec<(String, f64)>> {
    let (status, text) = get(cluster, node, "/metrics")?;
    ensure!(status == 200, "GET /metrics on node {node}: {status}: {text}");
    ensure!(text.ends_with("# EOF\n"), "node {node}'s metrics do not end with # EOF");
    Ok(text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect())
}

/// The value of `series` (exactly as encoded, labels in order), if exported.
fn value(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(name, _)| name == series).map(|(_, value)| *value)
}

/// The sum of every sample of `family` whose labels contain each of `labels` (`key="value"`).
fn sum_of(samples: &[(String, f64)], family: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| series.starts_with(&format!("{family}{{")))
        .filter(|(series, _)| labels.iter().all(|label| series.contains(label)))
        .map(|(_, value)| *value)
        .sum()
}

/// Submits a Sleep task on `node` with `body`; its id.
fn submit_sleep(cluster: &Cluster, node: usize, body: Value) -> Result<String> {
    let spec = cluster.node(node);
    let url = format!("http://{}:{}{PREFIX}/sleep/create", spec.address, spec.dispatcher_port);
    let (status, created) =
        tests::http::json_answer(agent().post(&url).set("X-SmartX-Token", cluster.token()), Some(&body))?;
    ensure!(status == 201, "submit a sleep {body}: {status} {created}");
    created["task_id"].as_str().map(str::to_string).with_context(|| format!("no task_id in {created}"))
}

/// `POST /tasks/<id>/<verb>` on `node` (cancel, pause): done (200) or forwarded to the runner (202).
fn task_verb(cluster: &Cluster, node: usize, task_id: &str, verb: &str) -> Result<()> {
    let spec = cluster.node(node);
    let url = format!("http://{}:{}{PREFIX}/tasks/{task_id}/{verb}", spec.address, spec.dispatcher_port);
    let (status, answer) = tests::http::json_answer(agent().post(&url).set("X-SmartX-Token", cluster.token()), None)?;
    ensure!(status == 200 || status == 202, "{verb} {task_id}: {status} {answer}");
    Ok(())
}

/// The task list of `node` (the leader) by (type, state).
fn listed_by_type_and_state(cluster: &Cluster, node: usize) -> Result<BTreeMap<(String, String), f64>> {
    let (status, body) = get_json(cluster, node, &format!("{PREFIX}/tasks"))?;
    ensure!(status == 200, "list the tasks on node {node}: {status} {body}");
    let tasks = body.as_array().or_else(|| body["tasks"].as_array()).cloned().unwrap_or_default();
    let mut counts = BTreeMap::new();
    for task in &tasks {
        let task_type = task["kind"]["type"].as_str().unwrap_or("?").to_string();
        let key = (task_type, task["state"].as_str().unwrap_or("?").to_string());
        *counts.entry(key).or_default() += 1.0;
    }
    Ok(counts)
}

/// Every `zbs_taskd_tasks` gauge of `node` equals its task list's count (zeros included), and
/// the list holds `n_tasks`: Ok(None) when they agree, else what differs.
fn gauges_against_list(cluster: &Cluster, node: usize, n_tasks: usize) -> Result<Option<String>> {
    let listed = listed_by_type_and_state(cluster, node)?;
    let samples = scrape(cluster, node)?;
    let n_listed: f64 = listed.values().sum();
    if n_listed != n_tasks as f64 {
        return Ok(Some(format!("{n_listed} tasks listed, {n_tasks} expected")));
    }
    let mut n_gauges = 0;
    for task_type in ["copy_volume", "sleep"] {
        for state in ["pending", "running", "paused", "succeeded", "failed", "cancelled", "interrupted"] {
            let series = format!("zbs_taskd_tasks{{type=\"{task_type}\",state=\"{state}\"}}");
            let gauge = value(&samples, &series);
            let expected = listed.get(&(task_type.to_string(), state.to_string())).copied().unwrap_or(0.0);
            if gauge != Some(expected) {
                return Ok(Some(format!("{series} is {gauge:?}, the list has {expected}: {listed:?}")));
            }
            n_gauges += 1;
        }
    }
    ensure!(n_gauges == 14, "every type and state checked");
    Ok(None)
}

fn leaders_by_metric(cluster: &Cluster) -> Result<Vec<usize>> {
    let mut leaders = Vec::new();
    for node in 0..cluster.n_nodes() {
        let samples = scrape(cluster, node)?;
        match value(&samples, "zbs_taskd_is_leader") {
            Some(1.0) => leaders.push(node),
            Some(0.0) => {}
            other => return Err(anyhow!("node {node}: zbs_taskd_is_leader is {other:?}")),
        }
    }
    Ok(leaders)
}

fn transitions(samples: &[(String, f64)], reason: &str) -> f64 {
    value(samples, &format!("zbs_taskd_leader_transitions_total{{reason=\"{reason}\"}}")).unwrap_or(-1.0)
}

/// Metrics only a node with a `[vip]` exports (the loopback cluster has none).
const NEEDS_A_VIP: &[&str] = &["zbs_taskd_vip_held"];

/// The sample names (`zbs_taskd_...`, histograms as their `_bucket`/`_count`/`_sum` series) the
/// shipped alert rules and Grafana dashboard use.
fn metrics_used_by_monitoring() -> Result<std::collections::BTreeSet<String>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/monitoring");
    let rules = std::fs::read_to_string(dir.join("zbs-taskd.rules.yml")).context("read the alert rules")?;
    let dashboard_text = std::fs::read_to_string(dir.join("zbs-taskd-dashboard.json")).context("read the dashboard")?;
    let dashboard: Value = serde_json::from_str(&dashboard_text).context("the dashboard is not JSON")?;
    let mut expressions = vec![rules];
    for panel in dashboard["panels"].as_array().context("the dashboard has no panels")? {
        for target in panel["targets"].as_array().into_iter().flatten() {
            expressions.push(target["expr"].as_str().context("a target without expr")?.to_string());
        }
    }
    let mut used = std::collections::BTreeSet::new();
    for text in &expressions {
        let mut rest = text.as_str();
        while let Some(at) = rest.find("zbs_taskd_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|character| character.is_ascii_alphanumeric() || *character == '_')
                .collect();
            rest = &rest[at + name.len()..];
            used.insert(name);
        }
    }
    Ok(used)
}

#[test]
fn metrics_and_probes_follow_a_hand_over_and_a_stopped_service_answers() {
    // One attempt: a failing task fails at once.
    let builder = Cluster::builder().health_fall_rise(1, 2).configure(|config| config.tasks.max_attempts = Some(1));
    with_cluster(builder, |cluster| {
        let old = cluster.wait_for_leader(WAIT)?;
        let n_nodes = cluster.n_nodes();

        // At rest: one node says is_leader 1, and it is the leader; the probes agree.
        cluster.wait_until(WAIT, "is_leader 1 on the leader only", || {
            leaders_by_metric(cluster).is_ok_and(|leaders| leaders == [old])
        })?;
        for node in 0..n_nodes {
            ensure!(get(cluster, node, "/healthz")?.0 == 200, "node {node}'s /healthz");
            let (ready, body) = get(cluster, node, "/readyz")?;
            ensure!(ready == 200, "node {node}'s /readyz at rest: {ready} {body}");
            let expected = if node == old { 200 } else { 503 };
            ensure!(get(cluster, node, "/leader")?.0 == expected, "node {node}'s /leader is not {expected}");
        }
        // The leader exports its runners (as its dispatch pass read them), a follower none.
        cluster.wait_until(WAIT, "the leader's runners gauge to count every runner", || {
            scrape(cluster, old).is_ok_and(|samples| {
                value(&samples, "zbs_taskd_runners{state=\"up\"}") == Some(n_nodes as f64)
                    && value(&samples, "zbs_taskd_runners{state=\"draining\"}") == Some(0.0)
            })
        })?;
        for follower in (0..n_nodes).filter(|node| *node != old) {
            let samples = scrape(cluster, follower)?;
            ensure!(value(&samples, "zbs_taskd_runners{state=\"up\"}") == Some(0.0), "follower {follower}'s runners");
            ensure!(!samples.iter().any(|(series, _)| series.starts_with("zbs_taskd_tasks{")), "a follower's tasks");
        }
        let samples = scrape(cluster, old)?;
        ensure!(transitions(&samples, "elected") >= 1.0, "the leader counted no election");
        ensure!(
            value(&samples, "zbs_taskd_takeover_seconds_count").is_some_and(|count| count >= 1.0),
            "the leader's take-over histogram has no sample"
        );
        ensure!(
            samples.iter().any(|(series, value)| series.starts_with(
                "zbs_taskd_rpc_requests_total{server=\"dispatcher\",method=\"GET\",route=\"/readyz\",status=\"200\"}"
            ) && *value >= 1.0),
            "the /readyz requests were not counted"
        );

        // Tasks: the leader's gauges match its task list.
        let url =
            format!("http://{}:{}{PREFIX}/sleep/create", cluster.node(old).address, cluster.node(old).dispatcher_port);
        let (status, created) = tests::http::json_answer(
            agent().post(&url).set("X-SmartX-Token", cluster.token()),
            Some(&serde_json::json!({ "duration_ms": 10 })),
        )?;
        ensure!(status == 201, "submit a sleep: {status} {created}");
        cluster.wait_until(WAIT, "the sleep task succeeded and counted", || {
            let listed = get_json(cluster, old, &format!("{PREFIX}/tasks")).ok();
            let n_listed = listed
                .as_ref()
                .and_then(|(_, body)| body.as_array().or_else(|| body["tasks"].as_array()).cloned())
                .map(|tasks| tasks.iter().filter(|task| task["state"] == "succeeded").count() as f64);
            let counted = scrape(cluster, old)
                .ok()
                .and_then(|samples| value(&samples, "zbs_taskd_tasks{type=\"sleep\",state=\"succeeded\"}"));
            n_listed == Some(1.0) && counted == Some(1.0)
        })?;

        // A mix of transitions: succeeded, failed, cancelled while running, paused while running.
        for _ in 0..2 {
            submit_sleep(cluster, old, serde_json::json!({ "duration_ms": 10 }))?;
        }
        submit_sleep(cluster, old, serde_json::json!({ "duration_ms": 10, "fail": true }))?;
        let to_cancel = submit_sleep(cluster, old, serde_json::json!({ "duration_ms": 600_000 }))?;
        let to_pause = submit_sleep(cluster, old, serde_json::json!({ "duration_ms": 600_000 }))?;
        cluster.wait_until(WAIT, "the long sleeps running", || {
            listed_by_type_and_state(cluster, old)
                .is_ok_and(|listed| listed.get(&("sleep".to_string(), "running".to_string())) == Some(&2.0))
        })?;
        task_verb(cluster, old, &to_cancel, "cancel")?;
        task_verb(cluster, old, &to_pause, "pause")?;
        let n_tasks = 6;
        cluster.wait_until(WAIT, "the mix settled, the gauges matching the task list", || {
            let settled = listed_by_type_and_state(cluster, old).is_ok_and(|listed| {
                let count = |state: &str| listed.get(&("sleep".to_string(), state.to_string())).copied();
                count("succeeded") == Some(3.0)
                    && count("failed") == Some(1.0)
                    && count("cancelled") == Some(1.0)
                    && count("paused") == Some(1.0)
            });
            settled && gauges_against_list(cluster, old, n_tasks).is_ok_and(|differs| differs.is_none())
        })?;
        let samples = scrape(cluster, old)?;
        let transitions_to =
            |to: &str| sum_of(&samples, "zbs_taskd_task_transitions_total", &[&format!("to=\"{to}\"")]);
        ensure!(
            sum_of(&samples, "zbs_taskd_task_transitions_total", &["from=\"new\"", "to=\"pending\""]) == 6.0,
            "six submits, but: {:?}",
            samples.iter().filter(|(series, _)| series.contains("transitions")).collect::<Vec<_>>()
        );
        ensure!(transitions_to("running") >= 6.0, "every task ran: {}", transitions_to("running"));
        ensure!(transitions_to("succeeded") == 3.0, "succeeded: {}", transitions_to("succeeded"));
        ensure!(transitions_to("failed") == 1.0, "failed: {}", transitions_to("failed"));
        ensure!(transitions_to("cancelled") == 1.0, "cancelled: {}", transitions_to("cancelled"));
        ensure!(transitions_to("paused") == 1.0, "paused: {}", transitions_to("paused"));
        // Every run ended on some node's runner, and was counted there.
        let (mut n_runs_finished, mut n_queue_waits) = (0.0, 0.0);
        for node in 0..n_nodes {
            let samples = scrape(cluster, node)?;
            n_runs_finished += sum_of(&samples, "zbs_taskd_task_runs_finished_total", &["type=\"sleep\""]);
            n_queue_waits += value(&samples, "zbs_taskd_task_queue_wait_seconds_count").unwrap_or(0.0);
        }
        ensure!(n_runs_finished >= 6.0, "{n_runs_finished} runs counted by the runners, 6 ended");
        // Each task's first run observed its queue wait, on whichever runner took it.
        ensure!(n_queue_waits == 6.0, "{n_queue_waits} queue waits observed, 6 tasks ran");
        // The sessions time their requests: the election node's and the submits' creates.
        let zk_count = |samples: &[(String, f64)], operation: &str| {
            value(samples, &format!("zbs_taskd_zookeeper_operation_seconds_count{{operation=\"{operation}\"}}"))
                .unwrap_or(0.0)
        };
        ensure!(zk_count(&samples, "create") >= 7.0, "the submits' creates were not timed");
        ensure!(zk_count(&samples, "list_children") >= 1.0, "the rebuild's listing was not timed");
        for node in 0..n_nodes {
            let samples = scrape(cluster, node)?;
            ensure!(zk_count(&samples, "create") >= 1.0, "node {node}'s election node create was not timed");
            ensure!(zk_count(&samples, "exists") >= 1.0, "node {node}'s lease probes were not timed");
        }

        // The leader's data network fails: it hands over and its service stops.
        cluster.set_health(old, false)?;
        let new = cluster.wait_for_new_leader(old, WAIT)?;
        let mut stopped = None;
        cluster.wait_until(WAIT, "the old leader's stopped service to answer its status", || {
            stopped = cluster.try_status(old).filter(|status| status.is_stopped());
            stopped.is_some()
        })?;
        let stopped = stopped.context("a stopped status")?;
        ensure!(stopped.pid == cluster.pid(old).unwrap_or_default(), "the stopped status names another pid");
        let reason = stopped.stopped["reason"].as_str().unwrap_or_default();
        ensure!(reason.contains("data network"), "the stop's reason: {reason:?}");
        ensure!(!stopped.leader, "a stopped service says leader");
        ensure!(get(cluster, old, "/healthz")?.0 == 200, "the stopped node's /healthz");
        let (ready, body) = get(cluster, old, "/readyz")?;
        ensure!(ready == 503 && body.contains("stopped"), "the stopped node's /readyz: {ready} {body}");
        ensure!(get(cluster, old, "/leader")?.0 == 503, "the stopped node's /leader");
        let new_id = cluster.node(new).node_id.clone();
        cluster.wait_until(WAIT, "the stopped node's task routes to name the new leader", || {
            get_json(cluster, old, &format!("{PREFIX}/tasks"))
                .is_ok_and(|(status, body)| status == 503 && body["leader_id"] == new_id.as_str())
        })?;
        let (status, body) = get(cluster, old, &format!("{PREFIX}/tasks"))?;
        ensure!(status == 503 && body.contains(&new_id), "the stopped node's task list: {status} {body}");
        // The runner port answers too: a stopped service is not a dead process.
        let runner_status =
            format!("http://{}:{}/api/v1/status", cluster.node(old).address, cluster.node(old).runner_port);
        ensure!(get_url(cluster, &runner_status)?.0 == 200, "the stopped node's runner port does not answer status");

        let samples = scrape(cluster, old)?;
        ensure!(transitions(&samples, "data_network_failed") == 1.0, "the step-down was not counted by its reason");
        ensure!(
            value(&samples, "zbs_taskd_supervisor_backoff_seconds").is_some_and(|wait| wait > 0.0),
            "the re-entry back-off is not exported"
        );
        // The stopped node exports none of the leader's gauges it had.
        ensure!(!samples.iter().any(|(series, _)| series.starts_with("zbs_taskd_tasks{")), "the stopped node's tasks");
        ensure!(value(&samples, "zbs_taskd_runners{state=\"up\"}") == Some(0.0), "the stopped node's runners");
        ensure!(value(&samples, "zbs_taskd_service_state{state=\"stopped\"}") == Some(1.0), "service_state");
        ensure!(value(&samples, "zbs_taskd_data_network_valid") == Some(0.0), "data_network_valid");
        ensure!(
            value(&samples, "zbs_taskd_data_network_probe_failures_total").is_some_and(|n| n >= 1.0),
            "no probe failure counted"
        );
        ensure!(
            value(&samples, "zbs_taskd_stepdown_seconds_count") == Some(1.0),
            "the step-down histogram has no sample"
        );
        // The elected counter survived the server's rebuild: one registry per process.
        ensure!(transitions(&samples, "elected") >= 1.0, "the stopped node's counters were reset");
        cluster.wait_until(WAIT, "is_leader 1 on the new leader only", || {
            leaders_by_metric(cluster).is_ok_and(|leaders| leaders == [new])
        })?;
        let samples = scrape(cluster, new)?;
        ensure!(transitions(&samples, "elected") >= 1.0, "the new leader counted no election");
        // The new leader rebuilt its counts from ZooKeeper: they match its list (the paused and
        // finished tasks kept their states; none was counted as a transition there).
        cluster.wait_until(WAIT, "the new leader's gauges matching its task list", || {
            gauges_against_list(cluster, new, n_tasks).is_ok_and(|differs| differs.is_none())
        })?;
        let samples = scrape(cluster, new)?;
        ensure!(
            sum_of(&samples, "zbs_taskd_task_transitions_total", &["from=\"new\""]) == 0.0,
            "the new leader counted a rebuilt task as submitted"
        );
        // The leader lists the stopped node.
        cluster.wait_until(WAIT, "the leader's cluster answer to list the stopped node", || {
            get_json(cluster, new, &format!("{PREFIX}/cluster")).is_ok_and(|(_, body)| {
                body["stopped_nodes"]
                    .as_array()
                    .is_some_and(|nodes| nodes.iter().any(|node| node["node_id"] == cluster.node(old).node_id.as_str()))
            })
        })?;

        // The leadership history holds the hand-over in order, read from any node (the stopped
        // one too).
        let old_id = cluster.node(old).node_id.clone();
        for reader in [new, old] {
            cluster.wait_until(WAIT, "the history to hold the hand-over", || {
                get_json(cluster, reader, &format!("{PREFIX}/events?limit=1000")).is_ok_and(|(status, body)| {
                    let events = body["events"].as_array().cloned().unwrap_or_default();
                    let is = |event: &Value, node: &str, what: &str, reason: &str| {
                        event["node_id"] == node && event["event"] == what && event["reason"] == reason
                    };
                    let stepped_down =
                        events.iter().position(|event| is(event, &old_id, "stepped_down", "data_network_failed"));
                    let elected_before = events.iter().position(|event| is(event, &old_id, "elected", "elected"));
                    let elected_after = events.iter().rposition(|event| is(event, &new_id, "elected", "elected"));
                    status == 200
                        && matches!((elected_before, stepped_down), (Some(a), Some(b)) if a < b)
                        && matches!((stepped_down, elected_after), (Some(b), Some(c)) if b < c)
                })
            })?;
        }
        let (status, _) = get_json(cluster, new, &format!("{PREFIX}/events?limit=0"))?;
        ensure!(status == 400, "a limit of 0 was not refused: {status}");

        // Its network comes back: it rejoins as a follower, and the probes say so.
        cluster.set_health(old, true)?;
        cluster.wait_until(WAIT, "the old leader rejoining as a follower", || {
            cluster
                .try_status(old)
                .is_some_and(|status| status.is_serving() && !status.leader && status.members.len() == n_nodes)
        })?;
        cluster.wait_until(WAIT, "the rejoined node to be ready", || {
            get(cluster, old, "/readyz").is_ok_and(|(status, _)| status == 200)
        })?;
        ensure!(get(cluster, old, "/leader")?.0 == 503, "the rejoined follower's /leader");
        let samples = scrape(cluster, old)?;
        ensure!(value(&samples, "zbs_taskd_supervisor_reentries_total") == Some(1.0), "the re-entry was not counted");
        ensure!(value(&samples, "zbs_taskd_service_state{state=\"running\"}") == Some(1.0), "service_state");
        ensure!(leaders_by_metric(cluster)? == [new], "is_leader after the rejoin");
        cluster.wait_until(WAIT, "the stopped node to leave the leader's cluster answer", || {
            get_json(cluster, new, &format!("{PREFIX}/cluster"))
                .is_ok_and(|(_, body)| body["stopped_nodes"].as_array().is_some_and(|nodes| nodes.is_empty()))
        })?;

        // Every metric the shipped alert rules and dashboard use is exported by these daemons.
        let mut exported = std::collections::BTreeSet::new();
        for node in 0..n_nodes {
            for (series, _) in scrape(cluster, node)? {
                exported.insert(series.split('{').next().unwrap_or_default().to_string());
            }
        }
        let used = metrics_used_by_monitoring()?;
        ensure!(used.len() >= 20, "too few metrics found in the rules and dashboard: {used:?}");
        let missing: Vec<&String> =
            used.iter().filter(|name| !exported.contains(*name) && !NEEDS_A_VIP.contains(&name.as_str())).collect();
        ensure!(missing.is_empty(), "used by dist's rules or dashboard, exported by no daemon: {missing:?}");
        Ok(())
    });
}
