//! The VIPs set at run time (`zbs-task vip set --service NAME`), kept in ZooKeeper so that they
//! survive restarts and every node that becomes leader finds them: the znode
//! `/zbs/taskd/vip/<service>` ([`vip_znode`]) holds
//! `{"version": 1, "address": "10.0.0.100/24", "interface": "eth0"}` and overrides that service's
//! `address` and `interface` in the configuration file (the timing keys stay the file's). No znode
//! means the file's `[[vip]]` for that service.
//!
//! # The single VIP of older versions
//!
//! Before VIPs were per service, the one run-time VIP was the data of [`VIP_ZNODE`] itself, the
//! parent of today's znodes (a ZooKeeper node may hold data and children). Such a VIP belongs to
//! the service `default` and is migrated, not lost: the first read of `default` that finds no
//! `/zbs/taskd/vip/default` but data in the parent creates the child with that data and empties
//! the parent in one transaction (guarded by the parent's version, so two nodes migrating at once
//! cannot both win, and a `vip set` in between wins over the old value). Writing or cleaning
//! `default` empties the parent too, so a cleaned VIP never comes back from it.
//!
//! A znode is checked twice: by the API before it is written (a 4xx, nothing stored), and by
//! every reader, because anyone with ZooKeeper access can write it. A stored VIP that does not
//! parse or validate is reported as an error and ignored by the leader, which keeps the VIP it
//! holds.

use std::sync::Arc;

use quorum::zk::{NodeKind, ZkOp};
use quorum::{ZkError, ZkSession, ZkSessionState};
use serde::{Deserialize, Serialize};

use crate::config::VipConfig;
use crate::error::VipResult;
use crate::service::DEFAULT_SERVICE;

/// The parent of the per-service znodes, and where older versions kept their single VIP.
pub const VIP_ZNODE: &str = "/zbs/taskd/vip";
/// The schema version this build writes and reads.
pub const STORED_VIP_VERSION: u32 = 1;

/// Where the run-time VIP of `service` lives: `/zbs/taskd/vip/<service>`. The caller has checked
/// the name (`check_service_name`), so it is one path segment.
pub fn vip_znode(service: &str) -> String {
    format!("{VIP_ZNODE}/{service}")
}

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

    /// `base` (the file's `[[vip]]` of the service) with this address and interface; the label
    /// goes back to its default, `<interface>:vip`, since a label names its interface.
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
                "{}: schema version {} is not {STORED_VIP_VERSION}",
                vip_znode(&base.service),
                self.version
            )));
        }
        self.apply_to(base).validate()
    }

    /// Parses a znode's data.
    pub fn from_bytes(data: &[u8]) -> Result<StoredVip, String> {
        serde_json::from_slice(data).map_err(|error| format!("not a stored VIP: {error}"))
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

/// Reads and writes one service's znode through whatever session the daemon has now.
#[derive(Clone)]
pub struct VipStore {
    session: Arc<dyn Fn() -> Option<Arc<ZkSession>> + Send + Sync>,
    service: String,
    znode: String,
}

impl VipStore {
    /// The store of the service `default` that asks `session` for the current ZooKeeper session
    /// at each call (a new one replaces the old after a session loss); see
    /// [`VipStore::for_service`].
    pub fn new(session: impl Fn() -> Option<Arc<ZkSession>> + Send + Sync + 'static) -> VipStore {
        VipStore { session: Arc::new(session), service: DEFAULT_SERVICE.to_string(), znode: vip_znode(DEFAULT_SERVICE) }
    }

    /// The same session's store for `service`; a name that is not a service name
    /// (`check_service_name`) is refused, so no name can make it reach outside [`VIP_ZNODE`].
    pub fn for_service(&self, service: &str) -> Result<VipStore, String> {
        crate::service::check_service_name(service)?;
        Ok(VipStore { session: self.session.clone(), service: service.to_string(), znode: vip_znode(service) })
    }

    /// The service whose VIP this store keeps.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The session when it is connected: a request on a disconnected session would wait for the
    /// operation timeout.
    fn session(&self) -> Result<Arc<ZkSession>, VipStoreError> {
        (self.session)()
            .filter(|session| session.state() == ZkSessionState::SyncConnected)
            .ok_or(VipStoreError::NoSession)
    }

    /// The stored VIP; `None` when nothing is stored (the file's `[[vip]]` applies). For the
    /// service `default`, a VIP stored by an older version is migrated first (module docs).
    pub fn read(&self) -> Result<Option<StoredVip>, VipStoreError> {
        let session = self.session()?;
        match self.read_znode(&session)? {
            Some(stored) => Ok(Some(stored)),
            None if self.service == DEFAULT_SERVICE => self.migrate_legacy(&session),
            None => Ok(None),
        }
    }

    fn read_znode(&self, session: &ZkSession) -> Result<Option<StoredVip>, VipStoreError> {
        match session.get_data(&self.znode)? {
            None => Ok(None),
            Some((data, _stat)) => StoredVip::from_bytes(&data)
                .map(Some)
                .map_err(|message| VipStoreError::Corrupt(format!("{}: {message}", self.znode))),
        }
    }

    /// Moves a VIP stored in [`VIP_ZNODE`]'s own data (older versions) to the `default` znode.
    fn migrate_legacy(&self, session: &ZkSession) -> Result<Option<StoredVip>, VipStoreError> {
        let Some((data, stat)) = session.get_data(VIP_ZNODE)? else { return Ok(None) };
        if data.is_empty() {
            // Nothing to migrate, or another node migrated it between our two reads: its
            // multi-op created the service's znode before it emptied this one, so read that again.
            return self.read_znode(session);
        }
        let legacy = StoredVip::from_bytes(&data)
            .map_err(|message| VipStoreError::Corrupt(format!("{VIP_ZNODE} (a VIP of an older version): {message}")))?;
        let operations = [
            ZkOp::Create { path: self.znode.clone(), data: data.clone(), kind: NodeKind::Persistent },
            ZkOp::SetData { path: VIP_ZNODE.to_string(), data: Vec::new(), expected_version: Some(stat.version) },
        ];
        match session.multi(&operations) {
            Ok(_) => {
                tracing::info!(
                    from = VIP_ZNODE,
                    to = %self.znode,
                    address = %legacy.address,
                    interface = %legacy.interface,
                    "migrated the run-time VIP of an older version to the service default"
                );
                Ok(Some(legacy))
            }
            // Someone stored `default` or migrated in between: what is there now wins, and the
            // old value goes (unless it changed meanwhile: the next read looks again).
            Err(ZkError::NodeExists { .. } | ZkError::BadVersion { .. }) => {
                let _ = session.set_data(VIP_ZNODE, &[], Some(stat.version));
                self.read_znode(session)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Stores `vip` (checked by the caller), or removes the stored VIP with `None`.
    pub fn write(&self, vip: Option<&StoredVip>) -> Result<(), VipStoreError> {
        let session = self.session()?;
        match vip {
            None => match session.delete(&self.znode, None) {
                Ok(()) => {}
                Err(error) if error.is_no_node() => {}
                Err(error) => return Err(error.into()),
            },
            Some(vip) => {
                let data = vip.to_bytes();
                session.ensure_path(VIP_ZNODE)?;
                match session.set_data(&self.znode, &data, None) {
                    Ok(_) => {}
                    Err(error) if error.is_no_node() => match session.create_persistent(&self.znode, &data) {
                        Ok(_) => {}
                        // Another writer created it in between: write over it.
                        Err(ZkError::NodeExists { .. }) => {
                            session.set_data(&self.znode, &data, None)?;
                        }
                        Err(error) => return Err(error.into()),
                    },
                    Err(error) => return Err(error.into()),
                }
            }
        }
        if self.service == DEFAULT_SERVICE {
            // A VIP of an older version must not come back through the migration.
            match session.get_data(VIP_ZNODE)? {
                Some((data, stat)) if !data.is_empty() => {
                    session.set_data(VIP_ZNODE, &[], Some(stat.version))?;
                }
                _ => {}
            }
        }
        Ok(())
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
                .name(format!("zbs-vip-{}", store.service()).chars().take(15).collect())
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
        f.debug_struct("VipStore").field("znode", &self.znode).finish()
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
