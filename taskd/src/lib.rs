//! The Task Center: `TaskServer` (one per process, a quorum member), the leader's dispatcher,
//! the supervisor that owns the main thread, configuration, logging and systemd notification,
//! and the `zbs-taskd` binary. Tasks, runners and the `zbs-task` client come in later issues.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod copy_volume;
pub mod dispatcher;
pub mod logging;
pub mod notify;
pub mod reentry;
pub mod runner;
pub mod supervisor;
pub mod task;
pub mod task_db;
pub mod task_server;
