//! `VipServer`: binds the cluster's virtual IP on the leader's interface through netlink, keeps
//! it there, announces it with gratuitous ARP, and releases it.
//!
//! An IPv6 VIP works the same way, announced with unsolicited neighbour advertisements (RFC 4861
//! 7.2.6, Override flag) on the same schedule, added without duplicate address detection (the
//! takeover is deliberate; a tentative address would be unusable for a second) and without a
//! label (the kernel keeps labels for IPv4 only).
//!
//! # Life of the VIP
//!
//! - On takeover the leader calls [`VipServer::config_vip`]: the address is added (already there
//!   is fine) and a burst of gratuitous ARPs goes out.
//! - Every `sync_interval_ms` the leader's dispatcher calls [`VipServer::sync_vip`]: a VIP that
//!   someone removed is added back (with a warning and a fresh burst), and the second burst and
//!   the periodic refresh go out when due.
//! - A leader with several VIPs calls [`VipServer::keep_vip`] instead: `sync_vip`, or, while the
//!   term's takeover has not succeeded (the interface missing at takeover), the takeover again,
//!   so one VIP that could not be taken is retried while the leader keeps the others.
//! - On the way out (stop, step-down, ZooKeeper unreachable) the leader calls
//!   [`VipServer::clean_vip`] *before* it leaves the quorum, so the next leader never fights for
//!   the address. After it, `sync_vip` does nothing until the next `config_vip`: a late tick of
//!   the sync timer can never bring the VIP back.
//! - A node that starts, or that is not leader, calls [`VipServer::remove_leftover`]: after a
//!   `kill -9` the address stays on the interface, and two nodes would answer for it.
//!
//! # The fence
//!
//! A holder that is frozen (SIGSTOP, a stall) or dead calls nothing, so `clean_vip` cannot be
//! what removes its VIP before a successor takes it. The leader therefore sets a fence
//! ([`VipServer::set_fence`]) for its term: the VIP is added, and renewed by every `config_vip`
//! and `sync_vip`, with a kernel lifetime that ends by the fence's deadline (last confirmed contact
//! with ZooKeeper plus a window, `fence.rs`), and is neither added nor renewed once the deadline
//! is under a second away ([`VipError::Fenced`]). The kernel deletes a VIP nobody renews. A
//! renewal is one `RTM_NEWADDR` with `NLM_F_REPLACE` on the VIP just found on the interface; it
//! sends no announcement. A VIP that lapsed on a live leader (its renewals delayed) is missing at
//! the next `sync_vip`, which adds it back and announces it like any missing VIP.
//!
//! # The VIP is a secondary address
//!
//! `config_vip` requires the interface to have another address whose subnet contains the
//! VIP (the node's own management address), and reports [`VipError::NotFound`] otherwise. So the
//! VIP is always added as a *secondary* address: the node's own address stays primary and stays
//! the source of the node's outgoing traffic (connections do not break when the VIP moves), the
//! subnet's route does not depend on the VIP, and deleting the VIP never deletes other addresses
//! (deleting a *primary* address deletes its secondaries unless `promote_secondaries` is set).
//! If the node's own address vanishes while leader, the kernel takes the VIP with it (or, with
//! `promote_secondaries`, makes it primary); either way `sync_vip` reports
//! [`VipError::Interface`] and adds nothing, and the step-down policy decides.
//!
//! The VIP is identified by its address *and* prefix length on the configured interface; the
//! same address with another prefix is a conflict ([`VipError::BadRequest`]) and never deleted.
//!
//! # Use
//!
//! ```no_run
//! use vip::{VipConfig, VipRetry, VipServer, VipVerdict};
//!
//! let config = VipConfig::new("10.0.0.100/24", "eth0");
//! let server = VipServer::new(&config)?; // BadRequest here stops the service
//! server.remove_leftover()?; // at start, as a follower
//!
//! // On becoming leader, then every `sync_interval_ms` on the dispatcher's loop:
//! let mut retry = config.retry_policy();
//! let result = server.config_vip().map(|_| ());
//! match retry.record(&result) {
//!     VipVerdict::Healthy => {}                        // next: server.sync_vip() after the interval
//!     VipVerdict::RetryAfter(_delay) => {}             // call again after the delay
//!     VipVerdict::StepDown => { server.clean_vip()?; } // then leave the quorum
//!     VipVerdict::StopService => { server.clean_vip()?; } // log once, stop, never lead again
//! }
//! # Ok::<(), vip::VipError>(())
//! ```
//!
//! # Threads and namespaces
//!
//! The netlink and packet sockets are opened by [`VipServer::new`], so they belong to the network
//! namespace of the thread that builds the server, whichever thread or coroutine calls it later.
//! Every method is a few short blocking system calls (no sleep), safe on a coroutine context;
//! they serialise on an internal mutex that is never held across a park.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::config::{VipAddress, VipConfig};
use crate::error::{VipError, VipResult};
use crate::fence::lifetime_until;
use crate::garp::{AnnounceSchedule, PacketSocket};
use crate::netlink::RouteSocket;
use crate::store::{StorePoller, StoredVip, VipStore, VipStoreError};

/// Whether `config_vip` found the VIP already on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipPresence {
    /// The VIP was added by this call.
    Added,
    /// The VIP was already there (a repeated call, or a leftover this node now owns again).
    AlreadyPresent,
}

/// What one `sync_vip` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncReport {
    /// This node is holding the VIP (`config_vip` ran and `clean_vip` has not).
    pub active: bool,
    /// The VIP was missing and had to be added back.
    pub re_added: bool,
    /// Gratuitous ARP frames sent by this call.
    pub arp_frames_sent: u32,
}

/// Until when this node may hold the VIP, asked right before every add and renewal of a fenced
/// VIP: the last confirmed contact of the leading session plus the fence's window
/// ([`crate::fence_window`]); `None` when there is no such contact.
pub type HoldUntil = Arc<dyn Fn() -> Option<Instant> + Send + Sync>;

/// What a node reports as the VIP ([`VipServer::shown`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownVip {
    /// The VIP held (by a leader) or served by the leader (as a follower knows it).
    pub config: VipConfig,
    /// The stored VIP as read (None: nothing stored, or unreadable).
    pub stored: Option<StoredVip>,
    /// Why the store could not be read, when it could not.
    pub store_error: Option<String>,
}

impl ShownVip {
    /// The VIP's address with its prefix, as the kernel writes it (`10.0.0.100/24`).
    pub fn address(&self) -> String {
        self.config.vip().map(|vip| vip.to_string()).unwrap_or_else(|_| self.config.address.clone())
    }
}

/// The VIP service of one node. See the module documentation.
pub struct VipServer {
    /// The configuration file's `[vip]`.
    base: VipConfig,
    /// The VIP served now: the file's, or the stored one ([`VipServer::refresh_stored`]). Locked
    /// after `inner` when both are.
    target: parking_lot::RwLock<Arc<Target>>,
    inner: Mutex<Inner>,
    store: Option<VipStore>,
    poller: Option<StorePoller>,
    /// The last stored VIP that could not be used, so it is logged once.
    refused_stored: Mutex<Option<StoredVip>>,
    /// The leader's latest failure with this VIP, for `vip show` ([`VipServer::note_error`]).
    last_error: Mutex<Option<String>>,
}

/// One VIP: its configuration, parsed address and label.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    config: VipConfig,
    vip: VipAddress,
    label: String,
}

impl Target {
    fn new(config: &VipConfig) -> VipResult<Target> {
        config.validate()?;
        Ok(Target { vip: config.vip()?, label: config.effective_label()?, config: config.clone() })
    }
}

/// What [`VipServer::retarget`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retarget {
    /// The VIP was already this one.
    Unchanged,
    /// The VIP changed while not holding it: the next takeover binds the new one.
    Changed,
    /// The VIP changed while leader: the old address was released, the new one added and
    /// announced.
    Moved,
}

struct Inner {
    /// Announcement frames sent so far.
    n_frames_sent: u64,
    netlink: RouteSocket,
    packet: PacketSocket,
    schedule: AnnounceSchedule,
    /// Between `config_vip` and `clean_vip`/`remove_leftover`.
    active: bool,
    /// The interface does not speak ARP, and that was logged once.
    no_arp_logged: bool,
    /// The fence of the current term (`set_fence`); `None`: the VIP is added without a lifetime.
    hold_until: Option<HoldUntil>,
    /// `config_vip` found the fence closed: the term's first add is `sync_vip`'s.
    awaiting_fence: bool,
    /// A term has begun (`config_vip` was called) and has not ended (`clean_vip`,
    /// `remove_leftover`): `keep_vip` retries a takeover that failed.
    term_open: bool,
}

impl Inner {
    /// The lifetime the VIP gets if added or renewed now: `None` when unfenced (permanent), the
    /// whole seconds left before the fence's deadline otherwise, or [`VipError::Fenced`] when
    /// under a second is left. Asked immediately before the request, so that only a stall between
    /// this and the kernel's handling of it can stretch the deadline (`FENCE_MARGIN`).
    fn lifetime(&self, vip: VipAddress) -> VipResult<Option<u32>> {
        let Some(hold_until) = &self.hold_until else { return Ok(None) };
        let now = Instant::now();
        match hold_until() {
            Some(until) => match lifetime_until(until, now) {
                Some(seconds) => Ok(Some(seconds)),
                None => Err(VipError::Fenced(format!(
                    "{vip} not added or renewed: the last confirmed contact with ZooKeeper is too old \
                     ({} ms past the fence's deadline)",
                    now.saturating_duration_since(until).as_millis()
                ))),
            },
            None => Err(VipError::Fenced(format!(
                "{vip} not added or renewed: no confirmed contact with ZooKeeper in this term"
            ))),
        }
    }
}

impl VipServer {
    /// Announcement frames this server has sent (gratuitous ARPs or neighbour advertisements),
    /// for metrics.
    pub fn n_frames_sent(&self) -> u64 {
        self.inner.lock().n_frames_sent
    }

    /// Validates `config` ([`VipError::BadRequest`] naming the key) and opens the sockets in the
    /// calling thread's network namespace ([`VipError::Socket`]; permanent without
    /// `CAP_NET_ADMIN`/`CAP_NET_RAW`). Touches no interface.
    pub fn new(config: &VipConfig) -> VipResult<VipServer> {
        let target = Target::new(config)?;
        let netlink = RouteSocket::open().map_err(VipError::socket("open the rtnetlink socket"))?;
        let packet = PacketSocket::open().map_err(VipError::socket("open the AF_PACKET socket for ARP"))?;
        let schedule = AnnounceSchedule::new(config.garp_burst, config.second_burst_after(), config.refresh_interval());
        Ok(VipServer {
            base: config.clone(),
            target: parking_lot::RwLock::new(Arc::new(target)),
            inner: Mutex::new(Inner {
                n_frames_sent: 0,
                netlink,
                packet,
                schedule,
                active: false,
                no_arp_logged: false,
                hold_until: None,
                awaiting_fence: false,
                term_open: false,
            }),
            store: None,
            poller: None,
            refused_stored: Mutex::new(None),
            last_error: Mutex::new(None),
        })
    }

    /// Lets the VIP stored in ZooKeeper for this server's service ([`crate::vip_znode`]) override
    /// the file's address and interface; see [`VipServer::refresh_stored`].
    /// A thread reads the store every `sync_interval_ms`. `store` may be any service's: this
    /// server uses the same session's store of its own service.
    pub fn with_store(mut self, store: VipStore) -> VipServer {
        let store = match store.for_service(&self.base.service) {
            Ok(store) => store,
            // The configuration was validated by `new`: the service name is one.
            Err(_) => store,
        };
        self.poller = Some(StorePoller::start(store.clone(), self.base.sync_interval()));
        self.store = Some(store);
        self
    }

    /// Fences the VIP from now on (see `fence.rs`): every add and renewal gives it a kernel
    /// lifetime that ends by what `hold_until` answers, and none happens when it answers `None` or
    /// less than a second ahead ([`VipError::Fenced`], transient). The leader sets it at the start
    /// of each term, before `config_vip`; `None` goes back to a permanent VIP.
    pub fn set_fence(&self, hold_until: Option<HoldUntil>) {
        self.inner.lock().hold_until = hold_until;
    }

    /// Whether the VIP is fenced (`set_fence`).
    pub fn is_fenced(&self) -> bool {
        self.inner.lock().hold_until.is_some()
    }

    /// The service this VIP is for (`[[vip]] service`).
    pub fn service(&self) -> &str {
        &self.base.service
    }

    /// Records the latest result of the leader's work on this VIP: the error, or `None` once an
    /// operation succeeded; a new term starts with `None`.
    pub fn note_error(&self, error: Option<String>) {
        *self.last_error.lock() = error;
    }

    /// The leader's latest failure with this VIP, if its latest operation failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// The store of the run-time VIP, when there is one.
    pub fn store(&self) -> Option<&VipStore> {
        self.store.as_ref()
    }

    /// The configuration file's `[vip]`.
    pub fn base_config(&self) -> &VipConfig {
        &self.base
    }

    /// The configuration of the VIP served now (the file's, or the stored one over it).
    pub fn config(&self) -> VipConfig {
        self.target().config.clone()
    }

    /// The VIP.
    pub fn vip(&self) -> VipAddress {
        self.target().vip
    }

    /// The interface that carries it.
    pub fn interface(&self) -> String {
        self.target().config.interface.clone()
    }

    /// The label the VIP carries on the interface.
    pub fn label(&self) -> String {
        self.target().label.clone()
    }

    fn target(&self) -> Arc<Target> {
        self.target.read().clone()
    }

    /// Serves the stored VIP (or the file's when none is stored) through
    /// [`VipServer::retarget`], as last read by the store's poller thread, so that it does not
    /// wait on ZooKeeper (before the poller's first answer it reads the store itself). A stored
    /// VIP that is not
    /// valid is logged once and ignored: the current VIP stays ([`VipStoreError::Corrupt`]); one
    /// that cannot be taken here is [`VipStoreError::Vip`]. Without a store, does nothing.
    pub fn refresh_stored(&self) -> Result<Retarget, VipStoreError> {
        let Some(poller) = &self.poller else { return Ok(Retarget::Unchanged) };
        match poller.latest() {
            Some(latest) => self.serve_stored(latest),
            // A node that leads before the poller's first answer reads the store itself, so that
            // it never binds the file's VIP over a stored one (no session: a quick error).
            None => self.refresh_stored_now(),
        }
    }

    /// Reads the store now (blocking on ZooKeeper) and serves what it holds, as
    /// [`VipServer::refresh_stored`]: for the API, right after it wrote the store.
    pub fn refresh_stored_now(&self) -> Result<Retarget, VipStoreError> {
        let Some(store) = &self.store else { return Ok(Retarget::Unchanged) };
        let latest = match store.read() {
            Ok(stored) => {
                if let Some(poller) = &self.poller {
                    poller.record(stored.clone());
                }
                Ok(stored)
            }
            Err(VipStoreError::Corrupt(message)) => Err(message),
            Err(error) => return Err(error),
        };
        self.serve_stored(latest)
    }

    fn serve_stored(&self, latest: Result<Option<StoredVip>, String>) -> Result<Retarget, VipStoreError> {
        let stored = match latest {
            Ok(stored) => stored,
            Err(message) => {
                let mut refused = self.refused_stored.lock();
                if refused.is_none() {
                    tracing::error!(service = %self.base.service, %message, "the stored vip is unreadable; keeping the current one");
                    *refused = Some(StoredVip::new("", ""));
                }
                return Err(VipStoreError::Corrupt(message));
            }
        };
        let desired = match &stored {
            Some(stored) => match stored.validate(&self.base) {
                Ok(()) => stored.apply_to(&self.base),
                Err(error) => {
                    let mut refused = self.refused_stored.lock();
                    if refused.as_ref() != Some(stored) {
                        tracing::error!(service = %self.base.service, %error, ?stored, "the stored vip is not valid; keeping the current one");
                        *refused = Some(stored.clone());
                    }
                    return Err(VipStoreError::Corrupt(error.to_string()));
                }
            },
            None => self.base.clone(),
        };
        *self.refused_stored.lock() = None;
        self.retarget(&desired).map_err(VipStoreError::Vip)
    }

    /// What this node reports as the VIP (`vip show`, `cluster show`), read fresh: while it holds
    /// the VIP, the one it holds; otherwise the one a leader serves, which is the stored VIP as
    /// ZooKeeper holds it now (the poller's latest answer when ZooKeeper cannot be read now), or
    /// the file's. A follower's own target changes only when it takes over, so reporting that one
    /// would name the VIP of before the last `vip set`. A stored VIP that is not valid is ignored,
    /// as the leader ignores it. Blocks on ZooKeeper: not for the leader's VIP loop.
    pub fn shown(&self) -> ShownVip {
        let read = self.store.as_ref().map(|store| match store.read() {
            Ok(stored) => {
                if let Some(poller) = &self.poller {
                    poller.record(stored.clone());
                }
                Ok(stored)
            }
            Err(VipStoreError::Corrupt(message)) => Err(message),
            Err(error) => match self.poller.as_ref().and_then(StorePoller::latest) {
                Some(Ok(stored)) => Ok(stored),
                _ => Err(error.to_string()),
            },
        });
        let (stored, store_error) = match read {
            Some(Ok(stored)) => (stored, None),
            Some(Err(error)) => (None, Some(error)),
            None => (None, None),
        };
        let config = if self.is_active() || store_error.is_some() {
            self.config()
        } else {
            match &stored {
                Some(stored) if stored.validate(&self.base).is_ok() => stored.apply_to(&self.base),
                Some(_) => self.config(),
                None => self.base.clone(),
            }
        };
        ShownVip { config, stored, store_error }
    }

    /// Whether `config`'s VIP could be taken on this node now, changing nothing: valid, its
    /// interface exists with an address in the VIP's subnet, and its address is not there with
    /// another prefix. The errors `config_vip` would report ([`VipError::BadRequest`],
    /// [`VipError::NotFound`], [`VipError::NetLink`]).
    pub fn check(&self, config: &VipConfig) -> VipResult<()> {
        let target = Target::new(config)?;
        let mut inner = self.inner.lock();
        let Some(link) = target.read_link(&mut inner)? else {
            return Err(VipError::NotFound(format!(
                "vip.interface: interface {:?} does not exist on this node",
                target.config.interface
            )));
        };
        let addresses = target.read_addresses(&mut inner, &link)?;
        target.find_vip(&addresses)?;
        if !target.has_subnet_address(&addresses) {
            return Err(VipError::NotFound(target.no_subnet_message()));
        }
        Ok(())
    }

    /// Records a stored VIP just written (by the API) as the store's latest answer, so the
    /// leader's next `refresh_stored` serves it without waiting for the poller's next read.
    pub fn note_stored(&self, stored: Option<StoredVip>) {
        if let Some(poller) = &self.poller {
            poller.record(stored);
        }
    }

    /// Serves `config`'s VIP from now on. While leader the old address is deleted first, then
    /// the new one is added and announced with a takeover burst (as `config_vip`); otherwise only
    /// the next takeover binds it. [`VipError::BadRequest`] for an invalid configuration (nothing
    /// changes); the errors of `clean_vip` and `config_vip` while leader.
    pub fn retarget(&self, config: &VipConfig) -> VipResult<Retarget> {
        let new_target = Target::new(config)?;
        let mut inner = self.inner.lock();
        let old = self.target();
        if *old == new_target {
            return Ok(Retarget::Unchanged);
        }
        let new_target = Arc::new(new_target);
        if !inner.active {
            *self.target.write() = new_target.clone();
            tracing::info!(
                service = %self.base.service,
                old = %old.vip,
                new = %new_target.vip,
                interface = %new_target.config.interface,
                "the vip changed"
            );
            return Ok(Retarget::Changed);
        }
        inner.active = false;
        inner.awaiting_fence = false;
        inner.schedule.stop();
        let removed = old.delete(&mut inner)?;
        *self.target.write() = new_target.clone();
        tracing::info!(
            service = %self.base.service,
            old = %old.vip,
            new = %new_target.vip,
            interface = %new_target.config.interface,
            removed,
            "the vip moves to a new address while leader"
        );
        if let Err(error) = new_target.config_vip(&mut inner, Instant::now()) {
            // Still leader: the next `sync_vip` keeps trying, and its errors go through the
            // retry policy like any other.
            inner.active = true;
            inner.schedule.start();
            return Err(error);
        }
        Ok(Retarget::Moved)
    }

    /// Whether this server holds the VIP as leader (between `config_vip` and `clean_vip`).
    pub fn is_active(&self) -> bool {
        self.inner.lock().active
    }

    /// When the next gratuitous ARP falls due, so the caller may time its next `sync_vip`;
    /// `None` when not active or nothing is scheduled.
    pub fn next_announcement_due(&self) -> Option<Instant> {
        let inner = self.inner.lock();
        if inner.active {
            inner.schedule.next_due()
        } else {
            None
        }
    }

    /// Takes the VIP: adds it to the interface with its label (already present is fine) and,
    /// on the first call of a term, sends the takeover burst and schedules the second burst and
    /// the refreshes. Repeated calls only make sure the address is there.
    ///
    /// Errors: [`VipError::NotFound`] (no such interface, no address in the VIP's subnet),
    /// [`VipError::BadRequest`] (the VIP's address is on the interface with another prefix),
    /// [`VipError::Interface`] (down or no carrier; nothing is added), [`VipError::NetLink`],
    /// [`VipError::ArpBroadcastFailed`] (the address is in place; the burst stays owed and the
    /// next `config_vip` or `sync_vip` sends it).
    pub fn config_vip(&self) -> VipResult<VipPresence> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.term_open = true;
        self.target().config_vip(&mut inner, now)
    }

    /// The leader's periodic call when it holds several VIPs: [`VipServer::sync_vip`] once the
    /// term's takeover succeeded; until then (the interface missing at takeover, say) the
    /// takeover again, with its errors, so that one VIP that could not be taken is retried, and
    /// reported, while the leader keeps the others. After `clean_vip` it does nothing, like
    /// `sync_vip`: a late tick never brings a released VIP back.
    pub fn keep_vip(&self) -> VipResult<SyncReport> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        if inner.term_open && !inner.active {
            let target = self.target();
            target.config_vip(&mut inner, now)?;
            tracing::info!(
                service = %target.config.service,
                vip = %target.vip,
                "VIP taken at a retry of the takeover"
            );
            return Ok(SyncReport { active: true, re_added: false, arp_frames_sent: 0 });
        }
        self.target().sync_vip_at(&mut inner, now)
    }

    /// The leader's periodic check (every `sync_interval_ms`): re-adds the VIP if someone
    /// removed it (logged as a warning, followed by a fresh burst), then sends the second burst
    /// or the refresh when due. Does nothing when not active, so a late tick after `clean_vip`
    /// never brings the VIP back.
    ///
    /// Errors: [`VipError::Interface`] when the interface vanished, went down or lost its address
    /// in the VIP's subnet (all transient while leader: the step-down policy decides),
    /// [`VipError::NetLink`], [`VipError::ArpBroadcastFailed`].
    pub fn sync_vip(&self) -> VipResult<SyncReport> {
        self.sync_vip_at(Instant::now())
    }

    pub(crate) fn sync_vip_at(&self, now: Instant) -> VipResult<SyncReport> {
        let mut inner = self.inner.lock();
        self.target().sync_vip_at(&mut inner, now)
    }

    /// Releases the VIP: deletes it from the interface and stops announcing. Idempotent: an
    /// absent VIP or interface is fine. Returns whether an address was deleted.
    pub fn clean_vip(&self) -> VipResult<bool> {
        let mut inner = self.inner.lock();
        inner.term_open = false;
        inner.active = false;
        inner.awaiting_fence = false;
        inner.schedule.stop();
        let target = self.target();
        let removed = target.delete(&mut inner)?;
        if removed {
            tracing::info!(service = %target.config.service, vip = %target.vip, interface = %target.config.interface, "VIP released");
        }
        Ok(removed)
    }

    /// What a node that starts, or that is not leader, calls: deletes a VIP left on the
    /// interface (by a previous run killed with `SIGKILL`, or a term that ended without cleanup)
    /// and logs that it had to. Idempotent; an absent interface counts as nothing to remove.
    /// Returns whether a leftover was deleted.
    pub fn remove_leftover(&self) -> VipResult<bool> {
        let mut inner = self.inner.lock();
        inner.term_open = false;
        inner.active = false;
        inner.awaiting_fence = false;
        inner.schedule.stop();
        let target = self.target();
        let mut removed = target.delete(&mut inner)?;
        if removed {
            tracing::warn!(service = %target.config.service, vip = %target.vip,
                interface = %target.config.interface,
                "removed a leftover VIP from this node, which is not leader"
            );
        }
        // A VIP set at run time (`vip set`) that this node held when it was killed carries the
        // same label: it goes too, whichever address it was.
        if let Some(link) = target.read_link(&mut inner)? {
            for address in target.read_addresses(&mut inner, &link)? {
                if address.label.as_deref() != Some(target.label.as_str()) || address.ip == target.vip.ip {
                    continue;
                }
                let leftover = VipAddress { ip: address.ip, prefix_len: address.prefix_len };
                let context = format!("delete the leftover {leftover} from {}", target.config.interface);
                if inner.netlink.delete_address(link.index, leftover).map_err(VipError::netlink(context))? {
                    tracing::warn!(
                        service = %target.config.service,
                        vip = %leftover,
                        label = %target.label,
                        "removed a leftover VIP (set at run time) from this node, which is not leader"
                    );
                    removed = true;
                }
            }
        }
        Ok(removed)
    }

    /// Whether the VIP (its address with its prefix) is on the interface now.
    pub fn has_vip(&self) -> VipResult<bool> {
        let mut inner = self.inner.lock();
        let target = self.target();
        let Some(link) = target.read_link(&mut inner)? else {
            return Ok(false);
        };
        let addresses = target.read_addresses(&mut inner, &link)?;
        Ok(addresses.iter().any(|address| address.ip == target.vip.ip && address.prefix_len == target.vip.prefix_len))
    }
}

impl Drop for VipServer {
    /// A safety net, not the stop path: a server dropped while it still holds the VIP releases
    /// it (and says so), so that no code path leaves the address bound on a node that is no
    /// longer leader. The stop order calls `clean_vip` explicitly, before leaving the quorum.
    fn drop(&mut self) {
        if !self.inner.get_mut().active {
            return;
        }
        tracing::warn!(service = %self.base.service, vip = %self.vip(), "VipServer dropped while holding the VIP; releasing it");
        if let Err(error) = self.clean_vip() {
            tracing::error!(service = %self.base.service, vip = %self.vip(), %error, "cannot release the VIP");
        }
    }
}

impl std::fmt::Debug for VipServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = self.target();
        f.debug_struct("VipServer")
            .field("service", &target.config.service)
            .field("vip", &target.vip)
            .field("interface", &target.config.interface)
            .field("label", &target.label)
            .finish_non_exhaustive()
    }
}

mod target;

#[cfg(test)]
mod tests;
