//! The HTTP/JSON API: the dispatcher's routes on port 10600 (`/api/v2/task_center/...`, after the
//! original's `copy_volume/create`) and the runner's on 10601 (`/api/v1/runner/...`).
//!
//! Dispatcher requests run as closures on the dispatcher's context (the `TaskDb` lives there)
//! through `SchedulerHandle::call`; the handler's coroutine waits for the answer. A follower
//! answers 421 with the leader's address. Every input is checked here or by the task model and
//! refused with a 4xx JSON error (`{"error": ..., "status": ...}`) before anything changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use runtime::rpc::{Method, Request, Response, ServerConfig, WorkerPool};
use serde::Deserialize;

use crate::copy_volume::AllowedRoots;
use crate::dispatcher::scheduler::{CallError, DispatchError, SchedulerHandle, TaskAction};
use crate::dispatcher::submit::{Submit, SubmitError, Submitted};
use crate::runner::{TaskRequest, TaskRunner};
use crate::runner_client::{paths as runner_paths, RunnerClient};
use crate::task::{CopyVolumeArgs, RequestId, RuntimeWindow, SleepArgs, TaskId, TaskKind, TaskState};
use crate::task_db::{DbError, ListFilter};

mod vip_routes;

pub use vip_routes::VipSet;

/// How long a request waits for the dispatcher's answer.
pub const DISPATCHER_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The most records one list answers.
pub const MAX_LIST: usize = 10_000;

/// The dispatcher routes' prefix.
pub const PREFIX: &str = "/api/v2/task_center";

/// What the dispatcher routes need from the server.
pub trait DispatcherAccess: Send + Sync + 'static {
    /// The scheduler when this node leads and its database is open; otherwise the response
    /// to give (421 with the leader's address, or 503).
    fn scheduler(&self) -> Result<SchedulerHandle, Response>;
    /// Leader, members (with their health read fresh from ZooKeeper, see `FreshMembers`),
    /// health, VIP: for `cluster show`. Blocks: called on the worker pool.
    fn cluster(&self) -> serde_json::Value;
    /// The node's VIPs, one per service, for `vip show|set|clean`; empty without a `[[vip]]`.
    fn vips(&self) -> crate::vip_keeper::Vips;
}

/// The header a client may send its request id in instead of the body's `request_id`.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// `POST /api/v2/task_center/copy_volume/create`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyVolumeCreate {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub io_depth: Option<u32>,
    pub runtime_window: Option<RuntimeWindow>,
    /// The client's idempotency key (or the `Idempotency-Key` header).
    pub request_id: Option<String>,
    /// Copy over a destination that holds data.
    #[serde(default)]
    pub overwrite: bool,
}

/// `POST /api/v2/task_center/sleep/create`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepCreate {
    pub duration_ms: u64,
    #[serde(default)]
    pub fail: bool,
    /// Fail the first `fail_first` attempts, then succeed.
    #[serde(default)]
    pub fail_first: u32,
    /// The client's idempotency key (or the `Idempotency-Key` header).
    pub request_id: Option<String>,
}

/// The submit's request id: the body's `request_id` or the `Idempotency-Key` header (both
/// must agree when both are given); a 400 when it is not a valid id.
fn request_id(request: &Request, in_body: Option<String>) -> Result<Option<RequestId>, Response> {
    let header = request.header(IDEMPOTENCY_KEY_HEADER).map(str::to_string);
    let text = match (in_body, header) {
        (Some(body), Some(header)) if body != header => {
            return Err(Response::error(400, "`request_id` and the Idempotency-Key header differ"))
        }
        (Some(text), _) | (None, Some(text)) => text,
        (None, None) => return Ok(None),
    };
    RequestId::parse(&text).map(Some).map_err(|error| Response::error(400, &error.to_string()))
}

/// The response to a refused submit: the status, and the task it names (`task_id`) if any.
fn submit_error_response(error: SubmitError) -> Response {
    let error = match error {
        SubmitError::Db(error) => return dispatch_error_response(DispatchError::Db(error)),
        error => error,
    };
    let status = match &error {
        SubmitError::Invalid(_) | SubmitError::DestinationUnreadable { .. } => 400,
        SubmitError::RequestIdReused { .. }
        | SubmitError::RequestIdSpent { .. }
        | SubmitError::VolumeBusy { .. }
        | SubmitError::DestinationHoldsData { .. } => 409,
        SubmitError::Unavailable | SubmitError::Db(_) => 503,
    };
    let message = error.to_string();
    match error.task_id() {
        Some(task_id) => {
            Response::json(status, &serde_json::json!({ "error": message, "status": status, "task_id": task_id }))
        }
        None => Response::error(status, &message),
    }
}

/// The HTTP status of a database error: the one place it is decided.
fn db_status(error: &DbError) -> u16 {
    match error {
        DbError::NotFound { .. } => 404,
        DbError::Transition(_)
        | DbError::Rejected { .. }
        | DbError::Conflict { .. }
        | DbError::Exists { .. }
        | DbError::RequestTaken { .. } => 409,
        DbError::Full { .. } => 507,
        DbError::Zk { .. } => 503,
        _ => 500,
    }
}

/// The HTTP status of a refused task operation.
fn dispatch_status(error: &DispatchError) -> u16 {
    match error {
        DispatchError::TaskNotFound { .. } => 404,
        DispatchError::NoRunner { .. } => 500,
        DispatchError::Db(error) => db_status(error),
    }
}

fn dispatch_error_response(error: DispatchError) -> Response {
    Response::error(dispatch_status(&error), &error.to_string())
}

fn task_id_param(request: &Request) -> Result<TaskId, Response> {
    let text = request.param("task_id").unwrap_or_default();
    TaskId::parse(text).map_err(|error| Response::error(400, &error.to_string()))
}

/// Runs `job` on the dispatcher and turns its answer into a response.
fn call<R, F>(access: &dyn DispatcherAccess, job: F) -> Result<R, Response>
where
    R: Send + 'static,
    F: FnOnce(&mut crate::dispatcher::scheduler::Scheduler) -> Result<R, DispatchError> + Send + 'static,
{
    let scheduler = access.scheduler()?;
    match scheduler.call(DISPATCHER_CALL_TIMEOUT, job) {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(dispatch_error_response(error)),
        Err(error @ CallError::QueueFull) => {
            Err(Response::error(503, &error.to_string()).with_header("Retry-After", "1"))
        }
        Err(error) => Err(Response::error(503, &error.to_string())),
    }
}

/// Submits a task through the dispatcher (its ZooKeeper create runs on this coroutine, in flight
/// together with other submits' on the session, instead of one after another on the dispatcher)
/// and turns the answer into a response: 201 with the new record, 200 with the original record
/// for a retry of a known request id, the statuses of `submit_error_response` otherwise.
fn submit(access: &dyn DispatcherAccess, submit: Submit) -> Result<Response, Response> {
    let scheduler = access.scheduler()?;
    match scheduler.submit(DISPATCHER_CALL_TIMEOUT, submit) {
        Ok(Submitted { record, created: true }) => Ok(Response::json(201, &record)),
        Ok(Submitted { record, created: false }) => Ok(Response::json(200, &record)),
        Err(error) => Err(submit_error_response(error)),
    }
}

fn answer(result: Result<Response, Response>) -> Response {
    result.unwrap_or_else(|response| response)
}

/// How often a forwarded request is retried while the runner has not yet started the task (the
/// dispatcher writes `Running` before its execute RPC reaches the runner).
const FORWARD_ATTEMPTS: u32 = 10;

/// Forwards a task operation to the runner that runs it (`RunnerClient::call`: the request
/// blocks a thread of the client's own, this handler only parks).
fn forward(
    client: &RunnerClient,
    runner_addr: String,
    path: &'static str,
    body: serde_json::Value,
) -> Result<Response, Response> {
    for attempt in 1..=FORWARD_ATTEMPTS {
        match client.call(&runner_addr, path, &body) {
            Ok(value) => return Ok(Response::json(202, &value)),
            Err(error) if error.status == 404 && attempt < FORWARD_ATTEMPTS => {
                runtime::sleep(Duration::from_millis(200))
            }
            Err(error) => {
                return Err(Response::error(if error.status == 404 { 409 } else { error.status }, &error.message))
            }
        }
    }
    Err(Response::error(409, "the runner did not start the task; try again"))
}

/// Where copies may read and write, for the dispatcher's courtesy check at submit (the runner's
/// descriptor-based open is the boundary; see `copy_volume::paths`).
#[derive(Debug, Clone, Default)]
pub struct CopyRules {
    pub allowed_roots: Vec<PathBuf>,
    pub allowed_devices: Vec<PathBuf>,
    pub allow_hard_links: bool,
}

impl CopyRules {
    /// The submit check's view of the daemon's configuration.
    pub fn from_daemon(config: &crate::config::Config) -> CopyRules {
        CopyRules {
            allowed_roots: config.allowed_roots.clone(),
            allowed_devices: config.allowed_devices.clone(),
            allow_hard_links: config.allow_hard_links,
        }
    }
}

/// Adds the dispatcher routes to `config`.
pub fn dispatcher_routes(
    config: ServerConfig,
    access: Arc<dyn DispatcherAccess>,
    copy_rules: CopyRules,
    pool: Arc<WorkerPool>,
    runner_client: RunnerClient,
) -> ServerConfig {
    let roots = Arc::new(
        AllowedRoots::with_rules(&copy_rules.allowed_roots, &copy_rules.allowed_devices, copy_rules.allow_hard_links)
            .map_err(|error| error.to_string()),
    );
    let a = access.clone();
    let config = config.cpu_route(Method::Post, &format!("{PREFIX}/copy_volume/create"), move |request| {
        answer((|| {
            let body: CopyVolumeCreate = request.json()?;
            let request_id = request_id(request, body.request_id)?;
            let args = CopyVolumeArgs {
                source: body.source,
                destination: body.destination,
                io_depth: body.io_depth.unwrap_or(CopyVolumeArgs::DEFAULT_IO_DEPTH),
            };
            let kind = TaskKind::CopyVolume(args.clone());
            kind.validate().map_err(|error| Response::error(400, &error.to_string()))?;
            // The runners check again when the copy starts; refusing here changes nothing.
            match roots.as_ref() {
                Ok(roots) => {
                    roots
                        .check(&args.source, &args.destination)
                        .map_err(|error| Response::error(400, &error.to_string()))?;
                }
                Err(reason) => return Err(Response::error(400, &format!("allowed roots unusable: {reason}"))),
            }
            let window = body.runtime_window;
            submit(a.as_ref(), Submit { kind, runtime_window: window, request_id, overwrite: body.overwrite })
        })())
    });
    let a = access.clone();
    // On the worker pool like every route that reaches ZooKeeper: an IO coroutine's stack (may's,
    // small) is no place for the ZooKeeper client's call depth.
    let config = config.cpu_route(Method::Post, &format!("{PREFIX}/sleep/create"), move |request| {
        answer((|| {
            let body: SleepCreate = request.json()?;
            let request_id = request_id(request, body.request_id)?;
            let kind = TaskKind::Sleep(SleepArgs {
                duration_ms: body.duration_ms,
                fail: body.fail,
                fail_first: body.fail_first,
            });
            kind.validate().map_err(|error| Response::error(400, &error.to_string()))?;
            submit(a.as_ref(), Submit { kind, runtime_window: None, request_id, overwrite: false })
        })())
    });
    let a = access.clone();
    let config = config.cpu_route(Method::Get, &format!("{PREFIX}/tasks/{{task_id}}"), move |request| {
        answer((|| {
            let task_id = task_id_param(request)?;
            let record = call(a.as_ref(), move |scheduler| scheduler.get(&task_id))?;
            Ok(Response::json(200, &record))
        })())
    });
    let a = access.clone();
    let config = config.cpu_route(Method::Get, &format!("{PREFIX}/tasks"), move |request| {
        answer((|| {
            let mut filter = ListFilter::all();
            if let Some(date) = request.query_param("date").filter(|date| !date.is_empty()) {
                let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|error| {
                    Response::error(400, &format!("invalid `date` {date:?} (expected YYYY-MM-DD): {error}"))
                })?;
                filter = ListFilter::created_on(date);
            }
            // The original's `list_by_status`.
            if let Some(status) = request.query_param("status").filter(|status| !status.is_empty()) {
                filter = match status {
                    "finished" => filter.with_finished(true),
                    "unfinished" => filter.with_finished(false),
                    other => {
                        return Err(Response::error(
                            400,
                            &format!("invalid `status` {other:?} (expected finished or unfinished)"),
                        ))
                    }
                };
            }
            if let Some(state) = request.query_param("state").filter(|state| !state.is_empty()) {
                let state: TaskState = state
                    .parse()
                    .map_err(|error: crate::task::UnknownState| Response::error(400, &error.to_string()))?;
                filter = filter.with_state(state);
            }
            let limit = match request.query_param("limit") {
                Some(limit) => limit
                    .parse::<usize>()
                    .ok()
                    .filter(|limit| (1..=MAX_LIST).contains(limit))
                    .ok_or_else(|| Response::error(400, &format!("invalid `limit` {limit:?} (1..={MAX_LIST})")))?,
                None => MAX_LIST,
            };
            filter = filter.with_limit(limit);
            let (tasks, corrupt) =
                call(a.as_ref(), move |scheduler| Ok((scheduler.list(&filter)?, scheduler.corrupt())))?;
            let corrupt: Vec<serde_json::Value> = corrupt
                .into_iter()
                .map(|(path, reason)| serde_json::json!({ "path": path, "reason": reason }))
                .collect();
            Ok(Response::json(200, &serde_json::json!({ "tasks": tasks, "corrupt": corrupt })))
        })())
    });
    let mut config = config;
    for (verb, state, runner_path) in
        [("cancel", TaskState::Cancelled, runner_paths::CANCEL), ("pause", TaskState::Paused, runner_paths::PAUSE)]
    {
        let a = access.clone();
        let client = runner_client.clone();
        config = config.cpu_route(Method::Post, &format!("{PREFIX}/tasks/{{task_id}}/{verb}"), move |request| {
            answer((|| {
                let task_id = task_id_param(request)?;
                let id = task_id.clone();
                match call(a.as_ref(), move |scheduler| scheduler.stop_task(&id, state))? {
                    TaskAction::Done(record) => Ok(Response::json(200, &record)),
                    TaskAction::Forward { runner_addr } => {
                        forward(&client, runner_addr, runner_path, serde_json::json!({ "task_id": task_id }))
                    }
                }
            })())
        });
    }
    let a = access.clone();
    let config = config.cpu_route(Method::Post, &format!("{PREFIX}/tasks/{{task_id}}/resume"), move |request| {
        answer((|| {
            let task_id = task_id_param(request)?;
            let record = call(a.as_ref(), move |scheduler| scheduler.resume(&task_id))?;
            Ok(Response::json(200, &record))
        })())
    });
    // Ours, and the original's path with the same body.
    let mut config = config;
    for path in [format!("{PREFIX}/tasks/{{task_id}}/runtime"), format!("{PREFIX}/copy_volume/{{task_id}}/set_runtime")]
    {
        let a = access.clone();
        let client = runner_client.clone();
        config = config.cpu_route(Method::Post, &path, move |request| {
            answer((|| {
                let task_id = task_id_param(request)?;
                let window: RuntimeWindow = request.json()?;
                let id = task_id.clone();
                match call(a.as_ref(), move |scheduler| scheduler.set_runtime(&id, window))? {
                    TaskAction::Done(record) => Ok(Response::json(200, &record)),
                    TaskAction::Forward { runner_addr } => forward(
                        &client,
                        runner_addr,
                        runner_paths::RUNTIME,
                        serde_json::json!({ "task_id": task_id, "runtime_window": window }),
                    ),
                }
            })())
        });
    }
    let a = access.clone();
    let config = config.cpu_route(Method::Get, &format!("{PREFIX}/runners"), move |_request| {
        answer((|| {
            let list = call(a.as_ref(), |scheduler| scheduler.runners())?;
            let runners: Vec<serde_json::Value> =
                list.runners.iter().map(|runner| serde_json::to_value(&runner.info).unwrap_or_default()).collect();
            let corrupt: Vec<serde_json::Value> = list
                .corrupt
                .iter()
                .map(|entry| serde_json::json!({ "path": entry.path, "reason": entry.reason }))
                .collect();
            Ok(Response::json(200, &serde_json::json!({ "runners": runners, "corrupt": corrupt })))
        })())
    });
    let mut config = config;
    for (verb, runner_path) in [("drain", runner_paths::DRAIN), ("undrain", runner_paths::UNDRAIN)] {
        let a = access.clone();
        let client = runner_client.clone();
        config = config.cpu_route(Method::Post, &format!("{PREFIX}/runners/{{node_id}}/{verb}"), move |request| {
            answer((|| {
                let node_id = request.param("node_id").unwrap_or_default().to_string();
                if !crate::task_db::layout::is_valid_node_id(&node_id) {
                    return Err(Response::error(400, &format!("invalid node id {node_id:?}")));
                }
                let list = call(a.as_ref(), |scheduler| scheduler.runners())?;
                let runner = list
                    .runners
                    .into_iter()
                    .find(|runner| runner.info.node_id == node_id)
                    .ok_or_else(|| Response::error(404, &format!("runner {node_id} not found")))?;
                let address = runner.info.address;
                let answer = forward(&client, address.clone(), runner_path, serde_json::json!({}))?;
                let draining = verb == "drain";
                call(a.as_ref(), move |scheduler| {
                    scheduler.note_runner_drain(&address, draining);
                    Ok(())
                })?;
                Ok(answer)
            })())
        });
    }
    let config = vip_routes::vip_routes(config, &access, &pool);
    let a = access;
    // The answer reads the members from ZooKeeper (see `FreshMembers`): on the worker pool.
    config.cpu_route(Method::Get, &format!("{PREFIX}/cluster"), move |_request| Response::json(200, &a.cluster()))
}

/// The most events one `GET /events` answers, and how many by default.
pub const MAX_EVENTS_ANSWERED: usize = crate::leader_events::MAX_EVENTS;
pub const DEFAULT_EVENTS_ANSWERED: usize = 100;

/// `GET /api/v2/task_center/events?limit=N`: the latest leadership events, oldest first, read
/// from ZooKeeper through `session` (any node answers, leader or not, stopped or not).
pub fn leader_events(session: Option<Arc<quorum::ZkSession>>, request: &Request) -> Response {
    let limit = match request.query_param("limit").map(str::parse::<usize>) {
        None => DEFAULT_EVENTS_ANSWERED,
        Some(Ok(limit)) if (1..=MAX_EVENTS_ANSWERED).contains(&limit) => limit,
        Some(_) => return Response::error(400, &format!("limit must be a number from 1 to {MAX_EVENTS_ANSWERED}")),
    };
    let Some(session) = session else { return Response::error(503, "no ZooKeeper session") };
    match crate::leader_events::read(&session, limit) {
        Ok(events) => Response::json(200, &serde_json::json!({ "events": events })),
        Err(error) => Response::error(503, &format!("cannot read the leadership events: {error}")),
    }
}

/// Adds the runner routes to `config`; `runner` gives the node's runner while it runs.
pub fn runner_routes(
    config: ServerConfig,
    runner: Arc<dyn Fn() -> Option<Arc<TaskRunner>> + Send + Sync>,
) -> ServerConfig {
    let with_runner = move |request: &Request, act: &dyn Fn(&TaskRunner, &Request) -> Response| match runner() {
        Some(runner) => act(&runner, request),
        None => Response::error(503, "the runner is not running"),
    };
    let with_runner = Arc::new(with_runner);
    let task_route =
        |config: ServerConfig,
         path: &str,
         op: fn(&TaskRunner, &str) -> Result<serde_json::Value, crate::runner::RunnerRefusal>| {
            let with_runner = with_runner.clone();
            config.cpu_route(Method::Post, path, move |request| {
                with_runner(request, &|runner, request| {
                    let body: TaskRequest = match request.json() {
                        Ok(body) => body,
                        Err(response) => return response,
                    };
                    match op(runner, &body.task_id) {
                        Ok(value) => Response::json(200, &value),
                        Err(refusal) => Response::error(refusal.status, &refusal.message),
                    }
                })
            })
        };
    let config = task_route(config, runner_paths::EXECUTE, TaskRunner::execute);
    let config = task_route(config, runner_paths::CANCEL, TaskRunner::cancel);
    let config = task_route(config, runner_paths::PAUSE, TaskRunner::pause);
    #[derive(Deserialize)]
    struct RuntimeBody {
        task_id: String,
        runtime_window: Option<RuntimeWindow>,
    }
    let w = with_runner.clone();
    let config = config.cpu_route(Method::Post, runner_paths::RUNTIME, move |request| {
        w(request, &|runner, request| {
            let body: RuntimeBody = match request.json() {
                Ok(body) => body,
                Err(response) => return response,
            };
            match runner.set_runtime_window(&body.task_id, body.runtime_window) {
                Ok(value) => Response::json(200, &value),
                Err(refusal) => Response::error(refusal.status, &refusal.message),
            }
        })
    });
    let w = with_runner.clone();
    let config = config.cpu_route(Method::Post, runner_paths::DRAIN, move |request| {
        w(request, &|runner, _| Response::json(200, &runner.set_draining(true)))
    });
    let w = with_runner.clone();
    let config = config.cpu_route(Method::Post, runner_paths::UNDRAIN, move |request| {
        w(request, &|runner, _| Response::json(200, &runner.set_draining(false)))
    });
    let w = with_runner;
    config.cpu_route(Method::Get, runner_paths::STATUS, move |request| {
        w(request, &|runner, _| Response::json(200, &runner.status()))
    })
}

#[cfg(test)]
mod tests;
