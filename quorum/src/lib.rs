//! Leader election for the project's daemons over ZooKeeper: a ZooKeeper session usable from
//! coroutines (`zk`), the members' published data (`member`), one member's election and events
//! on its own loop (`cluster`, `election`, `event`), and `QuorumServer`, the base of a daemon.
//!
//! Invariants: the lowest election node leads (priority aside); a leader that loses ZooKeeper
//! steps down before its session can expire (no zombie leader); leaving closes the session so the
//! hand-over goes through ZooKeeper's own watch, not a timeout.
#![forbid(unsafe_code)]

mod cluster;
mod config;
mod election;
mod error;
mod event;
pub mod member;
pub mod observer;
mod server;
mod shared;
pub mod takeover;
pub mod zk;

pub use cluster::{QuorumCluster, QuorumHandle};
pub use config::QuorumConfig;
pub use election::QuorumHandler;
pub use error::{QuorumError, Result, ZkError};
pub use event::Event;
pub use member::{Member, MemberInfo};
pub use observer::{OperationObserver, ZkObserver};
pub use server::QuorumServer;
pub use zk::{ZkConfig, ZkSession, ZkSessionState};

#[cfg(test)]
mod tests;
