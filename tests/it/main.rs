//! The one integration-test binary: every scenario against real components lives in a module here.

mod daemon;
mod notify;
mod netns;
mod packaging;
mod quorum;
mod task_db;
mod tasks;
mod zk_harness;
