//! `zbs-task`: the Task Center's command-line client, after the original's commands. Human tables
//! by default, `--json` for scripts; exit codes 0 ok, 1 request failed, 2 usage, 3 not found.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use taskd::cli::tables::{self, describe, percent};
use taskd::cli::*;
use taskd::client::{Client, ClientError};
use taskd::task::{RuntimeWindow, TaskRecord, TaskState};

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_FOUND: u8 = 3;

fn main() -> ExitCode {
    // Like every Unix filter: `zbs-task task list | head` ends quietly when the reader goes,
    // instead of panicking on the broken pipe (Rust ignores SIGPIPE by default).
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let server = match cli.server_address() {
        Ok(server) => server,
        Err(message) => {
            eprintln!("zbs-task: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let token = match cli.token() {
        Ok(token) => token,
        Err(message) => {
            eprintln!("zbs-task: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let client = Client::new(server, Duration::from_secs(cli.timeout_sec.max(1))).with_token(token);
    match run(&cli, &client) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("zbs-task: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Client(error)) => {
            eprintln!("zbs-task: {error}");
            if error.is_unauthorized() {
                eprintln!(
                    "zbs-task: give the cluster's API token: --token-file PATH, {}, or run as a member of the \
                     group that may read the daemon's [api] token_file",
                    taskd::cli::TOKEN_ENV
                );
            }
            ExitCode::from(if error.is_not_found() { EXIT_NOT_FOUND } else { EXIT_FAILED })
        }
    }
}

enum Failure {
    Usage(String),
    Client(ClientError),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        Failure::Client(error)
    }
}

fn run(cli: &Cli, client: &Client) -> Result<(), Failure> {
    match &cli.command {
        Command::Task(command) => match command {
            TaskCommand::CopyVolume { source, destination, io_depth, overwrite } => {
                print_task(cli, &client.create_copy_volume(source, destination, *io_depth, *overwrite)?)
            }
            TaskCommand::Sleep { ms, fail } => print_task(cli, &client.create_sleep(*ms, *fail)?),
            TaskCommand::Show { task_id } => print_task(cli, &client.show(task_id)?),
            TaskCommand::List { state, date } => print_tasks(cli, &client.list(*state, date.as_deref())?),
            TaskCommand::ListByStatus { status } => {
                print_tasks(cli, &client.list_by_status(*status == FinishedStatus::Finished)?)
            }
            TaskCommand::Cancel { task_id } => print_value(cli, &client.task_op(task_id, "cancel")?),
            TaskCommand::Pause { task_id } => print_value(cli, &client.task_op(task_id, "pause")?),
            TaskCommand::Resume { task_id } => print_value(cli, &client.task_op(task_id, "resume")?),
            TaskCommand::SetRuntime { task_id, start_hour, start_min, end_hour, end_min } => {
                let window = RuntimeWindow::new(*start_hour, *start_min, *end_hour, *end_min)
                    .map_err(|error| Failure::Usage(error.to_string()))?;
                print_value(cli, &client.set_runtime(task_id, window)?)
            }
            TaskCommand::Watch { task_id } => watch(cli, client, task_id)?,
        },
        Command::Runner(command) => match command {
            RunnerCommand::List => {
                let value = client.runners()?;
                if cli.json {
                    print_json(&value);
                } else {
                    println!("{}", tables::runners(&value, cli.output));
                }
            }
            RunnerCommand::Drain { node_id } => print_value(cli, &client.runner_op(node_id, "drain")?),
            RunnerCommand::Undrain { node_id } => print_value(cli, &client.runner_op(node_id, "undrain")?),
        },
        Command::Cluster(ClusterCommand::Events { limit }) => {
            let value = client.leader_events(*limit)?;
            if cli.json {
                print_json(&value);
            } else {
                println!("{}", tables::events(&value, cli.output));
            }
        }
        Command::Cluster(ClusterCommand::Show) => {
            let value = client.cluster()?;
            if cli.json {
                print_json(&value);
            } else {
                println!(
                    "node:   {} ({})",
                    value["node_id"].as_str().unwrap_or("?"),
                    value["role"].as_str().unwrap_or("?")
                );
                let vips: Vec<String> = value["vips"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|vip| {
                        format!(
                            "{} ({})",
                            vip["address"].as_str().unwrap_or("-"),
                            vip["service"].as_str().unwrap_or("?")
                        )
                    })
                    .collect();
                match vips.len() {
                    0 | 1 => println!("vip:    {}", value["vip"].as_str().unwrap_or("-")),
                    _ => println!("vips:   {}", vips.join(", ")),
                }
                println!("health: {}", value["health"]["state"].as_str().unwrap_or("?"));
                println!("{}", tables::members(&value, cli.output));
                if let Some(stopped) = value["stopped"].as_object() {
                    println!(
                        "this node's service is STOPPED: {} (waiting for {}); the leader is {}",
                        stopped.get("reason").and_then(|reason| reason.as_str()).unwrap_or("?"),
                        stopped.get("waiting_for").and_then(|waiting| waiting.as_str()).unwrap_or("?"),
                        value["leader_id"].as_str().unwrap_or("unknown")
                    );
                }
            }
        }
        Command::Vip(command) => {
            let checked = |service: &str| {
                vip::check_service_name(service).map_err(|message| Failure::Usage(format!("--service: {message}")))
            };
            let value = match command {
                VipCommand::Show { service: None } => {
                    let value = client.vips()?;
                    if cli.json {
                        print_json(&value);
                    } else if value["vips"].as_array().is_none_or(Vec::is_empty) {
                        println!("no VIP is configured on this node ([[vip]] in its configuration file)");
                    } else {
                        println!("{}", tables::vips(&value, cli.output));
                    }
                    return Ok(());
                }
                VipCommand::Show { service: Some(service) } => {
                    checked(service)?;
                    client.service_vip(service)?
                }
                VipCommand::Set { service, clear: true, .. } | VipCommand::Clean { service } => {
                    checked(service)?;
                    client.set_vip(service, None)?
                }
                VipCommand::Set { service, address, interface, .. } => {
                    checked(service)?;
                    let (Some(address), Some(interface)) = (address, interface) else {
                        return Err(Failure::Usage("vip set needs an address and an interface, or --clear".into()));
                    };
                    client.set_vip(service, Some((address, interface)))?
                }
            };
            print_vip(cli, &value);
        }
    }
    Ok(())
}

fn print_vip(cli: &Cli, value: &Value) {
    if cli.json {
        return print_json(value);
    }
    let text = |value: &Value| value.as_str().unwrap_or("-").to_string();
    println!("service:    {}", text(&value["service"]));
    println!("vip:        {} on {} ({})", text(&value["address"]), text(&value["interface"]), text(&value["source"]));
    println!("held here:  {}", value["held"].as_bool().unwrap_or(false));
    println!("configured: {} on {}", text(&value["configured"]["address"]), text(&value["configured"]["interface"]));
    match value["stored"].as_object() {
        Some(stored) => println!(
            "stored:     {} on {}",
            stored.get("address").and_then(Value::as_str).unwrap_or("?"),
            stored.get("interface").and_then(Value::as_str).unwrap_or("?")
        ),
        None => println!("stored:     -"),
    }
    if let Some(error) = value["store_error"].as_str() {
        println!("store:      unreadable ({error})");
    }
    if let Some(error) = value["error"].as_str() {
        println!("error:      {error}");
    }
    if let Some(within) = value["applies_within_ms"].as_u64() {
        println!("the leader moves to it within {within} ms");
    }
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

fn print_value(cli: &Cli, value: &Value) {
    if cli.json {
        print_json(value);
    } else if let Ok(record) = serde_json::from_value::<TaskRecord>(value.clone()) {
        print_record(&record);
    } else {
        println!("{}", value);
    }
}

fn print_task(cli: &Cli, record: &TaskRecord) {
    if cli.json {
        print_json(&serde_json::to_value(record).unwrap_or_default());
    } else {
        print_record(record);
    }
}

fn print_record(record: &TaskRecord) {
    println!("task_id:       {}", record.task_id);
    println!("type:          {}", record.kind.type_name());
    println!("args:          {}", describe(&record.kind));
    println!("state:         {}", record.state);
    println!("runner:        {}", record.runner_addr.as_deref().unwrap_or("-"));
    println!("attempts:      {}", record.attempts);
    println!(
        "progress:      {} (extent {}/{}, {} of {} bytes, {} B/s)",
        percent(record),
        record.progress.cur_extent,
        record.progress.n_extents,
        record.progress.bytes_done,
        record.progress.bytes_total,
        record.progress.speed_bytes_per_s
    );
    if let Some(window) = &record.runtime_window {
        println!(
            "runtime:       {:02}:{:02}-{:02}:{:02}",
            window.start_hour(),
            window.start_min(),
            window.end_hour(),
            window.end_min()
        );
    }
    if let Some(error) = &record.last_error {
        println!("last_error:    {error} ({})", record.last_error_class());
    }
}

/// A listing: JSON with `--json`, else a table.
fn print_tasks(cli: &Cli, tasks: &[TaskRecord]) {
    if cli.json {
        print_json(&serde_json::to_value(tasks).unwrap_or_default());
    } else {
        println!("{}", tables::tasks(tasks, cli.output));
    }
}

fn watch(cli: &Cli, client: &Client, task_id: &str) -> Result<(), Failure> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        let record = client.show(task_id)?;
        bar.set_length(record.progress.bytes_total.max(1));
        bar.set_position(record.progress.bytes_done);
        bar.set_message(record.state.as_str().to_string());
        if record.state.is_finished() || record.state == TaskState::Paused {
            bar.finish();
            if cli.json {
                print_task(cli, &record);
            }
            if record.state == TaskState::Succeeded {
                return Ok(());
            }
            return Err(Failure::Client(ClientError::Status {
                status: 0,
                message: format!("task {task_id} ended {}", record.state),
            }));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
