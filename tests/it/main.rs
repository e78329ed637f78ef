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

use std::sync::{Mutex, MutexGuard};

use anyhow::Result;
use tests::cluster::{Cluster, ClusterBuilder};

/// The daemon and observability tests run one at a time: each starts a JVM and four processes,
/// and two at once on two cores would only make every one slower.
fn serialize() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts a cluster and runs `scenario` on it, one such test at a time; a failure panics while
/// the cluster still exists, so that its drop keeps the nodes' dirs and logs.
fn with_cluster(builder: ClusterBuilder, scenario: impl FnOnce(&Cluster) -> Result<()>) {
    let _serial = serialize();
    let cluster = builder.start().expect("start the cluster");
    if let Err(error) = scenario(&cluster) {
        cluster.keep_dir_on_drop();
        panic!("{error:?}\n(cluster dir: {})", cluster.dir().display());
    }
}
