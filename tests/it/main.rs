//! The one integration-test binary: every scenario against real components lives in a module here.

mod api_abuse;
mod daemon;
mod netns;
mod notify;
mod observability;
mod packaging;
mod quorum;
mod task_db;
mod tasks;
mod vip_store;
mod zk_harness;
