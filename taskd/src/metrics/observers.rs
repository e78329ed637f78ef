//! The observers other crates call back into, which count into the process's `Metrics`: one per
//! RPC server (`runtime::rpc::RequestObserver`) and one per ZooKeeper session
//! (`quorum::OperationObserver`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use prometheus_client::metrics::histogram::Histogram;
use runtime::rpc::{Method, RequestObserver};

use super::{Metrics, OperationLabels, RequestLabels, ServerLabels};

/// Counts one RPC server's requests (see `runtime::rpc::RequestObserver`).
pub(super) struct RpcMetrics {
    pub(super) metrics: Arc<Metrics>,
    pub(super) server: String,
}

impl RequestObserver for RpcMetrics {
    fn started(&self) {
        self.metrics.rpc_in_flight.get_or_create(&ServerLabels { server: self.server.clone() }).inc();
    }

    fn finished(&self, method: Method, route: &str, status: u16, elapsed: Duration) {
        let server = ServerLabels { server: self.server.clone() };
        self.metrics.rpc_in_flight.get_or_create(&server).dec();
        self.metrics.rpc_request_seconds.get_or_create(&server).observe(elapsed.as_secs_f64());
        self.metrics
            .rpc_requests
            .get_or_create(&RequestLabels {
                server: self.server.clone(),
                method: method.as_str().to_string(),
                route: route.to_string(),
                status: status.to_string(),
            })
            .inc();
    }
}

/// Times a ZooKeeper session's requests. The histogram of each operation is looked up once and
/// kept by its static name, so a request costs no allocation.
pub(super) struct ZkMetrics {
    metrics: Arc<Metrics>,
    by_operation: RwLock<HashMap<&'static str, Histogram>>,
}

impl ZkMetrics {
    pub(super) fn new(metrics: Arc<Metrics>) -> ZkMetrics {
        ZkMetrics { metrics, by_operation: RwLock::new(HashMap::new()) }
    }
}

impl quorum::OperationObserver for ZkMetrics {
    fn finished(&self, operation: &'static str, elapsed: Duration) {
        let known = self.by_operation.read().get(operation).cloned();
        let histogram = known.unwrap_or_else(|| {
            let labels = OperationLabels { operation: operation.to_string() };
            let histogram = self.metrics.zookeeper_operation_seconds.get_or_create(&labels).clone();
            self.by_operation.write().insert(operation, histogram.clone());
            histogram
        });
        histogram.observe(elapsed.as_secs_f64());
    }
}
