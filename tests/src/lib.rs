//! Test fixtures shared by the integration tests and `cargo xtask`: a real ZooKeeper server, real
//! daemons on loopback or in network namespaces, and what the two cluster fixtures share (their
//! builders' settings and daemon configuration, their nodes' controls).

pub mod cluster;
pub mod cluster_options;
pub mod daemon;
pub mod http;
pub mod netns;
pub mod node_control;
pub mod zk;

/// The traits the cluster fixtures' methods come from, for `use tests::prelude::*;`.
pub mod prelude {
    pub use crate::cluster_options::ClusterSettings;
    pub use crate::node_control::NodeControl;
}
