//! The API's trust boundary against real daemons: every route that changes state, on the
//! dispatcher port and on the runner port, refuses a request without the cluster's token (401)
//! and with a wrong one (403) and changes nothing; reads stay open unless `protect_reads`; a
//! runner's `execute` with the token still starts only what the dispatcher assigned to it; the
//! CLI sends the token from `--token-file` or `ZBS_TASK_TOKEN` and says where one comes from
//! when it has none.

use super::*;

/// What a caller without the right token might try: (port, method, path, body). `{task}` and
/// `{node}` are filled in with a running task and a runner's node id.
const MUTATIONS: &[(Port, &str, &str)] = &[
    (
        Port::Dispatcher,
        "/api/v2/task_center/copy_volume/create",
        r#"{"source": "/etc/shadow", "destination": "/tmp/x"}"#,
    ),
    (Port::Dispatcher, "/api/v2/task_center/sleep/create", r#"{"duration_ms": 1}"#),
    (Port::Dispatcher, "/api/v2/task_center/tasks/{task}/cancel", "{}"),
    (Port::Dispatcher, "/api/v2/task_center/tasks/{task}/pause", "{}"),
    (Port::Dispatcher, "/api/v2/task_center/tasks/{task}/resume", "{}"),
    (
        Port::Dispatcher,
        "/api/v2/task_center/tasks/{task}/runtime",
        r#"{"start_hour": 1, "start_min": 0, "end_hour": 2, "end_min": 0}"#,
    ),
    (Port::Dispatcher, "/api/v2/task_center/runners/{node}/drain", "{}"),
    (Port::Dispatcher, "/api/v2/task_center/runners/{node}/undrain", "{}"),
    (Port::Dispatcher, "/api/v2/task_center/vip/set", r#"{"clear": true}"#),
    (Port::Runner, "/api/v1/runner/execute", r#"{"task_id": "{task}"}"#),
    (Port::Runner, "/api/v1/runner/cancel", r#"{"task_id": "{task}"}"#),
    (Port::Runner, "/api/v1/runner/pause", r#"{"task_id": "{task}"}"#),
    (Port::Runner, "/api/v1/runner/runtime", r#"{"task_id": "{task}", "runtime_window": null}"#),
    (Port::Runner, "/api/v1/runner/drain", "{}"),
    (Port::Runner, "/api/v1/runner/undrain", "{}"),
];

#[derive(Clone, Copy, Debug)]
enum Port {
    Dispatcher,
    Runner,
}

/// `(status, body)` of a POST to `node`'s port with `token` in the header (none when `None`).
fn post_as(
    cluster: &Cluster,
    node: usize,
    port: Port,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Result<(u16, Value)> {
    let spec = cluster.node(node);
    let port = match port {
        Port::Dispatcher => spec.dispatcher_port,
        Port::Runner => spec.runner_port,
    };
    let url = format!("http://{}:{port}{path}", spec.address);
    let mut request = agent().post(&url).set("Content-Type", "application/json");
    if let Some(token) = token {
        request = request.set(taskd::access::TOKEN_HEADER, token);
    }
    let (status, response) = match request.send_string(body) {
        Ok(response) => (response.status(), response),
        Err(ureq::Error::Status(status, response)) => (status, response),
        Err(error) => bail!("POST {url}: {error}"),
    };
    let text = response.into_string().context("read the answer")?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Everything a refused request could have changed, as the leader and the runners report it.
fn observable_state(cluster: &Cluster, leader: usize) -> Result<Value> {
    let (_, tasks) = request(cluster, leader, "GET", &format!("{PREFIX}/tasks"), None)?;
    let (_, runners) = request(cluster, leader, "GET", &format!("{PREFIX}/runners"), None)?;
    let mut tasks: Vec<Value> = tasks["tasks"]
        .as_array()
        .context("task list")?
        .iter()
        .map(|task| json!({ "id": task["task_id"], "state": task["state"], "window": task["runtime_window"] }))
        .collect();
    tasks.sort_by_key(|task| task["id"].to_string());
    let mut runners: Vec<Value> = runners["runners"]
        .as_array()
        .context("runner list")?
        .iter()
        .map(|runner| json!({ "node": runner["node_id"], "draining": runner["draining"] }))
        .collect();
    runners.sort_by_key(|runner| runner["node"].to_string());
    Ok(json!({ "tasks": tasks, "runners": runners }))
}

#[test]
fn changes_without_the_cluster_token_are_refused_and_change_nothing() {
    with_cluster(|cluster, _roots| {
        let leader = leader(cluster)?;
        // A long sleep task keeps running through the whole test: the target of every task route.
        let task_id = submit(cluster, leader, "sleep/create", json!({ "duration_ms": 120_000 }))?;
        let running = wait_state(cluster, leader, &task_id, "running", WAIT)?;
        let runner_node = running["runner_addr"]
            .as_str()
            .and_then(|addr| {
                (0..cluster.n_nodes()).find(|&node| addr.ends_with(&format!(":{}", cluster.node(node).runner_port)))
            })
            .context("the task's runner is one of the nodes")?;
        wait_claimed(cluster, runner_node, &task_id)?;
        let before = observable_state(cluster, leader)?;

        let wrong = "f".repeat(64);
        let mut refusals = Vec::new();
        for (port, path, body) in MUTATIONS {
            let path = path.replace("{task}", &task_id).replace("{node}", &cluster.node(runner_node).node_id);
            let body = body.replace("{task}", &task_id);
            // The runner routes on the node that runs the task; the dispatcher's on the leader.
            let node = match port {
                Port::Dispatcher => leader,
                Port::Runner => runner_node,
            };
            for (token, expected) in [(None, 401), (Some(wrong.as_str()), 403), (Some(&cluster.token()[..63]), 403)] {
                let (status, answer) = post_as(cluster, node, *port, &path, &body, token)?;
                refusals.push(format!("{port:?} {path} token={}: {status}", token.map_or("none", |_| "wrong")));
                ensure!(
                    status == expected,
                    "{port:?} POST {path} with token {token:?}: {status} {answer}, not {expected}"
                );
                ensure!(answer["error"].as_str().is_some_and(|error| error.contains("X-SmartX-Token")), "{answer}");
            }
        }
        let after = observable_state(cluster, leader)?;
        ensure!(before == after, "refused requests changed the cluster:\nbefore {before}\nafter {after}");
        ensure!(n_tasks(cluster, leader)? == 1, "a refused create made a task");
        let log = cluster.log(leader);
        ensure!(log.contains("request without a token refused"), "refusals are logged");
        ensure!(!log.contains(&wrong) && !log.contains(cluster.token()), "a token reached the log");

        // Reads stay open without a token.
        let spec = cluster.node(leader);
        let list = agent().get(&format!("http://{}:{}{PREFIX}/tasks", spec.address, spec.dispatcher_port)).call();
        ensure!(list.is_ok_and(|response| response.status() == 200), "reads are open without protect_reads");

        // With the token, execute on a runner still starts only what the dispatcher assigned
        // there: a task assigned elsewhere is refused by its ZooKeeper record.
        let other = (0..cluster.n_nodes()).find(|&node| node != runner_node).context("another node")?;
        let (status, answer) = post_as(
            cluster,
            other,
            Port::Runner,
            "/api/v1/runner/execute",
            &json!({ "task_id": task_id }).to_string(),
            Some(cluster.token()),
        )?;
        ensure!(status == 409, "execute of a task assigned to another runner: {status} {answer}");
        ensure!(observable_state(cluster, leader)? == before, "the refused execute changed something");

        // And with the token, the same routes work: cancel ends the task.
        let (status, answer) = post_as(
            cluster,
            leader,
            Port::Dispatcher,
            &format!("{PREFIX}/tasks/{task_id}/cancel"),
            "{}",
            Some(cluster.token()),
        )?;
        ensure!(status < 300, "cancel with the token: {status} {answer}");
        wait_state(cluster, leader, &task_id, "cancelled", WAIT)?;
        eprintln!("{} refusals checked: {refusals:?}", refusals.len());
        Ok(())
    });
}

#[test]
fn the_cli_sends_its_token_and_says_where_one_comes_from() {
    with_cluster(|cluster, _roots| {
        let leader = leader(cluster)?;
        let spec = cluster.node(leader);
        let server = format!("{}:{}", spec.address, spec.dispatcher_port);
        let run = |envs: &[(&str, &str)], args: &[&str]| -> Result<(i32, String, String)> {
            let mut command = Command::new(cli_binary()?);
            command.env_remove(taskd::cli::TOKEN_ENV).arg("--config").arg("/nonexistent/taskd.toml");
            for (key, value) in envs {
                command.env(key, value);
            }
            let output = command.arg("--server").arg(&server).args(args).output().context("run zbs-task")?;
            Ok((
                output.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            ))
        };
        let (code, _, stderr) = run(&[], &["task", "sleep", "10"])?;
        ensure!(code == 1, "a change without a token fails: {code} {stderr}");
        ensure!(stderr.contains("HTTP 401") && stderr.contains("--token-file"), "{stderr}");
        let (code, _, stderr) = run(&[(taskd::cli::TOKEN_ENV, &"0".repeat(64))], &["task", "sleep", "10"])?;
        ensure!(code == 1 && stderr.contains("HTTP 403"), "a wrong token: {code} {stderr}");
        let (code, stdout, stderr) =
            run(&[(taskd::cli::TOKEN_ENV, cluster.token())], &["--json", "task", "sleep", "10"])?;
        ensure!(code == 0, "ZBS_TASK_TOKEN: {code} {stdout} {stderr}");
        let (code, _, stderr) = run(&[], &["task", "list"])?;
        ensure!(code == 0, "reads need no token: {code} {stderr}");
        ensure!(n_tasks(cluster, leader)? == 1, "exactly the one authenticated submit made a task");
        Ok(())
    });
}

#[test]
fn protected_reads_need_the_token_but_liveness_does_not() {
    let _serial = serialize();
    let cluster = ClusterBuilder::new().nodes(1).protect_reads(true).start().expect("start a protected node");
    let spec = cluster.node(0);
    let base = format!("http://{}:{}", spec.address, spec.dispatcher_port);
    let get = |path: &str, token: Option<&str>| -> u16 {
        let mut request = agent().get(&format!("{base}{path}"));
        if let Some(token) = token {
            request = request.set(taskd::access::TOKEN_HEADER, token);
        }
        match request.call() {
            Ok(response) => response.status(),
            Err(ureq::Error::Status(status, _)) => status,
            Err(error) => panic!("GET {path}: {error}"),
        }
    };
    assert_eq!(get("/healthz", None), 200, "liveness answers a load balancer without a token");
    assert_eq!(get(&format!("{PREFIX}/tasks"), None), 401);
    assert_eq!(get("/api/v1/status", Some(&"e".repeat(64))), 403);
    assert_eq!(get("/api/v1/status", Some(cluster.token())), 200);
}
