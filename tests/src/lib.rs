//! Test fixtures shared by the integration tests and `cargo xtask`: a real ZooKeeper server, and later real daemons and network namespaces.

pub mod cluster;
pub mod daemon;
pub mod http;
pub mod netns;
pub mod zk;
