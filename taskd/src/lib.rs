//! The Task Center: `TaskServer`, dispatcher, runners, the task database and the `zbs-taskd`
//! and `zbs-task` binaries. Built so far: configuration, logging and systemd notification.

pub mod config;
pub mod logging;
pub mod notify;
pub mod reentry;
