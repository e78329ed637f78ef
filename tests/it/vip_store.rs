//! The run-time VIPs in a real ZooKeeper (`vip::VipStore`): one znode per service under
//! `/zbs/taskd/vip`, the single VIP of older versions (the data of `/zbs/taskd/vip` itself)
//! migrated to the service `default` and never lost or brought back after a clean, and service
//! names that would leave the path refused.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use quorum::{ZkConfig, ZkSession};
use tests::zk::ZooKeeper;
use vip::{vip_znode, StoredVip, VipStore, VIP_ZNODE};

fn connect(zookeeper: &ZooKeeper) -> Result<Arc<ZkSession>> {
    Ok(Arc::new(ZkSession::connect(&ZkConfig::new(zookeeper.connect_string(), Duration::from_secs(4)))?))
}

fn store_of(session: &Arc<ZkSession>) -> VipStore {
    let session = session.clone();
    VipStore::new(move || Some(session.clone()))
}

/// Writes a VIP where an older version kept it: the data of `/zbs/taskd/vip`.
fn write_legacy(session: &ZkSession, stored: &StoredVip) -> Result<()> {
    session.ensure_path(VIP_ZNODE)?;
    session.set_data(VIP_ZNODE, &stored.to_bytes(), None)?;
    Ok(())
}

#[test]
fn a_vip_stored_by_an_older_version_is_migrated_to_the_default_service() -> Result<()> {
    let zookeeper = ZooKeeper::start()?;
    let session = connect(&zookeeper)?;
    let legacy = StoredVip::new("10.0.0.101/24", "eth0");
    write_legacy(&session, &legacy)?;
    let store = store_of(&session);

    ensure!(store.read()? == Some(legacy.clone()), "the legacy VIP was not read as the default service's");
    let (child, _) = session.get_data(&vip_znode("default"))?.context("no /zbs/taskd/vip/default after the read")?;
    ensure!(StoredVip::from_bytes(&child).ok() == Some(legacy.clone()), "the migrated znode holds {child:?}");
    let (parent, _) = session.get_data(VIP_ZNODE)?.context("the parent went")?;
    ensure!(parent.is_empty(), "the legacy data stayed in the parent: {parent:?}");
    ensure!(store.read()? == Some(legacy.clone()), "a second read lost the migrated VIP");
    let iscsi = store.for_service("iscsi").map_err(anyhow::Error::msg)?;
    ensure!(iscsi.read()?.is_none(), "another service inherited the legacy VIP");

    // Another service's VIP lives beside it; cleaning `default` does not bring the legacy back.
    let other = StoredVip::new("10.0.1.101/24", "eth1");
    iscsi.write(Some(&other))?;
    ensure!(iscsi.read()? == Some(other.clone()), "the iscsi VIP was not stored");
    store.write(None)?;
    ensure!(store.read()?.is_none(), "the default VIP came back after a clean");
    ensure!(iscsi.read()? == Some(other), "cleaning default touched iscsi");
    Ok(())
}

#[test]
fn a_clean_or_set_of_default_wins_over_a_legacy_vip_never_migrated() -> Result<()> {
    let zookeeper = ZooKeeper::start()?;
    let session = connect(&zookeeper)?;
    let store = store_of(&session);
    write_legacy(&session, &StoredVip::new("10.0.0.101/24", "eth0"))?;
    store.write(None)?;
    ensure!(store.read()?.is_none(), "a clean left the legacy VIP to be migrated");
    write_legacy(&session, &StoredVip::new("10.0.0.101/24", "eth0"))?;
    let set = StoredVip::new("10.0.0.102/24", "eth0");
    store.write(Some(&set))?;
    ensure!(store.read()? == Some(set), "a set lost to the legacy VIP");
    Ok(())
}

#[test]
fn nodes_migrating_at_once_agree_and_a_corrupt_legacy_vip_is_an_error() -> Result<()> {
    let zookeeper = ZooKeeper::start()?;
    let legacy = StoredVip::new("10.0.0.101/24", "eth0");
    write_legacy(&*connect(&zookeeper)?, &legacy)?;
    let n_readers = 4;
    let barrier = Arc::new(Barrier::new(n_readers));
    let readers: Vec<_> = (0..n_readers)
        .map(|_| {
            let (session, barrier) = (connect(&zookeeper), barrier.clone());
            thread::spawn(move || -> Result<Option<StoredVip>> {
                let store = store_of(&session?);
                barrier.wait();
                Ok(store.read()?)
            })
        })
        .collect();
    for reader in readers {
        let read = reader.join().map_err(|_| anyhow::anyhow!("a reader panicked"))??;
        ensure!(read == Some(legacy.clone()), "a concurrent migration read {read:?}");
    }

    let session = connect(&zookeeper)?;
    session.delete(&vip_znode("default"), None)?;
    session.set_data(VIP_ZNODE, b"not json", None)?;
    let error = store_of(&session).read().expect_err("a corrupt legacy VIP is an error").to_string();
    ensure!(error.contains(VIP_ZNODE), "the error does not name the znode: {error}");
    Ok(())
}

#[test]
fn service_names_that_would_leave_the_path_are_refused() -> Result<()> {
    let zookeeper = ZooKeeper::start()?;
    let store = store_of(&connect(&zookeeper)?);
    for name in ["../quorum", "a/b", "..", "", "Default", &"x".repeat(33)] {
        ensure!(store.for_service(name).is_err(), "{name:?} was accepted");
    }
    Ok(())
}
