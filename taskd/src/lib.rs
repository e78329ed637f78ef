//! The Task Center: `TaskServer` (one per process, a quorum member), the leader's dispatcher,
//! the supervisor that owns the main thread, configuration, logging and systemd notification,
//! and the `zbs-taskd` binary; tasks (the task model, `TaskDb`, runners, CopyVolume), the HTTP API
//! and the `zbs-task` client.

pub mod access;
pub mod api;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod copy_volume;
pub mod crash_watch;
pub mod dispatcher;
pub mod fresh_members;
pub mod leader_events;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod probes;
pub mod reach;
pub mod reentry;
pub mod run_log;
pub mod runner;
pub mod runner_client;
pub mod state_lock;
pub mod stopped_service;
pub mod supervisor;
pub mod task;
pub mod task_db;
pub mod task_server;
pub mod vip_keeper;
pub mod watch_thread;
