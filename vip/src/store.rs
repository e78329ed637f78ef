//! The VIP set at run time (`zbs-task vip set`), kept in ZooKeeper so that it survives restarts
//! and every node that becomes leader finds it: the znode [`VIP_ZNODE`] holds
//! `{"version": 1, "address": "10.0.0.100/24", "interface": "eth0"}` and overrides the
//! configuration file's `vip.address` and `vip.interface` (the timing keys stay the file's).
//! No znode means the file's `[vip]`.
//!
//! The znode is checked twice: by the API before it is written (a 4xx, nothing stored), and by
//! every reader, because anyone with ZooKeeper access can write it. A stored VIP that does not
//! parse or validate is reported as an error and ignored by the leader, which keeps the VIP it
//! holds.

use std::sync::Arc;

use quorum::{ZkError, ZkSession, ZkSessionState};
use serde::{Deserialize, Serialize};

use crate::config::VipConfig;
use crate::error::VipResult;

/// Where the run-time VIP lives.
pub const VIP_ZNODE: &str = "/zbs/taskd/vip";
/// Its parent, created when missing.
const VIP_PARENT: &str = "/zbs/taskd";
/// The schema version this build writes and reads.
pub const STORED_VIP_VERSION: u32 = 1;

/// The run-time VIP as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredVip {
    pub version: u32,
    /// The VIP with its prefix length.
    pub address: String,
    /// The interface that carries it on every node.
    pub interface: String,
}

impl StoredVip {
    /// A VIP in the current schema; not yet checked.
    pub fn new(address: impl Into<String>, interface: impl Into<String>) -> StoredVip {
        StoredVip { version: STORED_VIP_VERSION, address: address.into(), interface: interface.into() }
    }

    /// `base` (the file's `[vip]`) with this address and interface; the label goes back to its
    /// default, `<interface>:vip`, since a label names its interface.
    pub fn apply_to(&self, base: &VipConfig) -> VipConfig {
        let mut config = base.clone();
        if config.interface != self.interface {
            config.label = None;
        }
        config.address = self.address.clone();
        config.interface = self.interface.clone();
        config
    }

    /// Checks the version, the address and the interface name on top of `base`
    /// ([`crate::VipError::BadRequest`] naming the key).
    pub fn validate(&self, base: &VipConfig) -> VipResult<()> {
        if self.version != STORED_VIP_VERSION {
            return Err(crate::VipError::BadRequest(format!(
                "{VIP_ZNODE}: schema version {} is not {STORED_VIP_VERSION}",
                self.version
            )));
        }
        self.apply_to(base).validate()
    }

    /// Parses the znode's data.
    pub fn from_bytes(data: &[u8]) -> Result<StoredVip, String> {
        serde_json::from_slice(data).map_err(|error| format!("{VIP_ZNODE} is not a stored VIP: {error}"))
    }

    /// The znode's data.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Why the stored VIP could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum VipStoreError {
    /// No connected ZooKeeper session now (connecting, or lost).
    #[error("no connected ZooKeeper session to read or write {VIP_ZNODE}")]
    NoSession,
    #[error("zookeeper: {0}")]
    Zk(#[from] ZkError),
    /// The znode holds something that is not a valid stored VIP (logged once by the server,
    /// which keeps its current VIP).
    #[error("{0}")]
    Corrupt(String),
    /// The stored VIP is valid but could not be taken on this node.
    #[error("{0}")]
    Vip(#[from] crate::VipError),
}

/// Reads and writes [`VIP_ZNODE`] through whatever session the daemon has now.
#[derive(Clone)]
pub struct VipStore {
    session: Arc<dyn Fn() -> Option<Arc<ZkSession>> + Send + Sync>,
}

impl VipStore {
    /// A store that asks `session` for the current ZooKeeper session at each call (a new one
    /// replaces the old after a session loss).
    pub fn new(session: impl Fn() -> Option<Arc<ZkSession>> + Send + Sync + 'static) -> VipStore {
        VipStore { session: Arc::new(session) }
    }

    /// The session when it is connected: a request on a disconnected session would wait for the
    /// operation timeout.
    fn session(&self) -> Result<Arc<ZkSession>, VipStoreError> {
        (self.session)()
            .filter(|session| session.state() == ZkSessionState::SyncConnected)
            .ok_or(VipStoreError::NoSession)
    }

    /// The stored VIP; `None` when nothing is stored (the file's `[vip]` applies).
    pub fn read(&self) -> Result<Option<StoredVip>, VipStoreError> {
        match self.session()?.get_data(VIP_ZNODE)? {
            None => Ok(None),
            Some((data, _stat)) => StoredVip::from_bytes(&data).map(Some).map_err(VipStoreError::Corrupt),
        }
    }

    /// Stores `vip` (checked by the caller), or removes the stored VIP with `None`.
    pub fn write(&self, vip: Option<&StoredVip>) -> Result<(), VipStoreError> {
        let session = self.session()?;
        let Some(vip) = vip else {
            return match session.delete(VIP_ZNODE, None) {
                Ok(()) => Ok(()),
                Err(error) if error.is_no_node() => Ok(()),
                Err(error) => Err(error.into()),
            };
        };
        let data = vip.to_bytes();
        session.ensure_path(VIP_PARENT)?;
        match session.set_data(VIP_ZNODE, &data, None) {
            Ok(_) => Ok(()),
            Err(error) if error.is_no_node() => match session.create_persistent(VIP_ZNODE, &data) {
                Ok(_) => Ok(()),
                // Another writer created it in between: write over it.
                Err(ZkError::NodeExists { .. }) => {
                    session.set_data(VIP_ZNODE, &data, None).map(drop).map_err(Into::into)
                }
                Err(error) => Err(error.into()),
            },
            Err(error) => Err(error.into()),
        }
    }
}

/// One read of the store: the stored VIP (None: nothing stored), or why the znode is unreadable.
pub(crate) type StoreAnswer = Result<Option<StoredVip>, String>;

/// A thread that reads the stored VIP every interval and keeps the latest answer, so that the
/// leader's VIP loop never waits on ZooKeeper (a read on a failing connection can take the
/// operation timeout). Stopped and joined on drop.
pub(crate) struct StorePoller {
    latest: Arc<parking_lot::Mutex<Option<StoreAnswer>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StorePoller {
    pub(crate) fn start(store: VipStore, interval: std::time::Duration) -> StorePoller {
        use std::sync::atomic::Ordering;
        let latest = Arc::new(parking_lot::Mutex::new(None));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (latest, stop) = (latest.clone(), stop.clone());
            std::thread::Builder::new()
                .name("zbs-vip-store".to_string())
                .spawn(move || {
                    let step = std::time::Duration::from_millis(20);
                    while !stop.load(Ordering::Acquire) {
                        match store.read() {
                            Ok(stored) => *latest.lock() = Some(Ok(stored)),
                            Err(VipStoreError::Corrupt(message)) => *latest.lock() = Some(Err(message)),
                            // Not connected: the last answer stands.
                            Err(_) => {}
                        }
                        let started = std::time::Instant::now();
                        while started.elapsed() < interval && !stop.load(Ordering::Acquire) {
                            std::thread::sleep(step);
                        }
                    }
                })
                .map_err(|error| tracing::error!(%error, "cannot start the stored-vip poller"))
                .ok()
        };
        StorePoller { latest, stop, thread }
    }

    /// The latest answer: None before the first read, `Err` for an unreadable znode.
    pub(crate) fn latest(&self) -> Option<StoreAnswer> {
        self.latest.lock().clone()
    }

    /// Records an answer read elsewhere (the API's write), so the loop does not go back to an
    /// older one.
    pub(crate) fn record(&self, stored: Option<StoredVip>) {
        *self.latest.lock() = Some(Ok(stored));
    }
}

impl Drop for StorePoller {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for VipStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VipStore").field("znode", &VIP_ZNODE).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_vip_overrides_address_and_interface_and_keeps_the_timing() {
        let mut base = VipConfig::new("10.0.0.100/24", "eth0");
        base.label = Some("eth0:vip".to_string());
        base.garp_burst = 7;
        let stored = StoredVip::new("10.0.1.50/24", "eth1");
        let config = stored.apply_to(&base);
        assert_eq!((config.address.as_str(), config.interface.as_str()), ("10.0.1.50/24", "eth1"));
        assert_eq!(config.label, None);
        assert_eq!(config.garp_burst, 7);
        assert!(stored.validate(&base).is_ok());
    }

    #[test]
    fn bad_stored_vips_are_refused_naming_the_key() {
        let base = VipConfig::new("10.0.0.100/24", "eth0");
        let error = StoredVip::new("10.0.0.300/24", "eth0").validate(&base).unwrap_err().to_string();
        assert!(error.contains("vip.address"), "{error}");
        let error = StoredVip::new("10.0.0.100/24", "bad/name").validate(&base).unwrap_err().to_string();
        assert!(error.contains("vip.interface"), "{error}");
        let mut future = StoredVip::new("10.0.0.100/24", "eth0");
        future.version = 2;
        assert!(future.validate(&base).unwrap_err().to_string().contains("schema version"));
    }

    #[test]
    fn the_znode_round_trips_and_garbage_is_an_error() {
        let stored = StoredVip::new("10.0.0.100/24", "eth0");
        assert_eq!(StoredVip::from_bytes(&stored.to_bytes()), Ok(stored));
        assert!(StoredVip::from_bytes(b"{\"address\": 1}").is_err());
        assert!(StoredVip::from_bytes(b"not json").is_err());
    }
}
