//! Test fixtures shared by the integration tests and `cargo xtask`: a real ZooKeeper server, and later real daemons and network namespaces.

pub mod zk;
pub mod cluster;
pub mod netns;
