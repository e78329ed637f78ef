//! The runner's registration and its drain (see the runner's `# Drain` and `# Restart`): the
//! drain flag against its persistent marker (`DrainFlag`, `DrainMarker`), the registration kept
//! under the current session, and the stale owner nodes of an earlier incarnation removed before
//! a new session registers.

use super::*;

/// The drain flag and the count of requests that set it (see `# Drain`): the rule that the
/// latest request wins over the start-up read of the marker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct DrainFlag {
    pub(super) draining: bool,
    /// Drain and undrain requests so far.
    pub(super) requests: u64,
}

impl DrainFlag {
    /// A drain (`true`) or undrain request; returns its number.
    pub(super) fn request(&mut self, draining: bool) -> u64 {
        self.requests += 1;
        self.draining = draining;
        self.requests
    }

    /// The marker read at start-up, sent when `requests_then` requests had been made. It applies
    /// only if none came since; false when a request overrode it (the marker must then be
    /// written with the flag).
    pub(super) fn apply_marker(&mut self, requests_then: u64, drained: bool) -> bool {
        if self.requests != requests_then {
            return false;
        }
        self.draining = drained;
        true
    }

    /// Whether request `request` (which asked for `draining`) is persisted once the marker
    /// holds `written`: the marker holds that value, written for it or a later request.
    pub(super) fn persists(written: DrainFlag, request: u64, draining: bool) -> bool {
        written.requests >= request && written.draining == draining
    }
}

/// The drain flag against its persistent marker (see `# Drain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DrainMarker {
    /// Not read yet: the runner neither registers nor accepts tasks.
    Unknown,
    /// The marker says what `draining` says.
    Synced,
    /// `draining` changed and the marker is not written yet.
    Dirty,
}

impl Inner {
    /// Brings the drain flag and its persistent marker together: reads the marker the first
    /// time (a restarted runner takes the drain it had), writes it after a change. False while
    /// ZooKeeper cannot be reached; the caller holds the marker's lock.
    pub(super) fn sync_drain_marker(&self, marker: &mut DrainMarker) -> bool {
        let Some(session) = self.session() else { return *marker == DrainMarker::Synced };
        let node_id = &self.config.node_id;
        // A read overridden by a request, or a write overtaken by one, is followed by a write
        // of the latest flag.
        loop {
            let result = match *marker {
                DrainMarker::Synced => return true,
                DrainMarker::Unknown => {
                    let requests_then = self.drain_flag.lock().requests;
                    task_db::is_drained(&session, node_id).map(|drained| {
                        let mut flag = self.drain_flag.lock();
                        if flag.apply_marker(requests_then, drained) {
                            self.draining.store(drained, Ordering::Release);
                            *self.marker_written.lock() = *flag;
                            if drained {
                                tracing::info!(%node_id, "this runner was drained before the restart; it stays drained");
                            }
                            DrainMarker::Synced
                        } else {
                            tracing::info!(%node_id, drained, "a drain request came during the marker's read; it wins");
                            DrainMarker::Dirty
                        }
                    })
                }
                DrainMarker::Dirty => {
                    let flag = *self.drain_flag.lock();
                    task_db::set_drained(&session, node_id, flag.draining, now_ms()).map(|()| {
                        let mut written = self.marker_written.lock();
                        if flag.requests >= written.requests {
                            *written = flag;
                        }
                        // A request after the snapshot leaves the marker to write again.
                        if self.drain_flag.lock().requests == flag.requests {
                            DrainMarker::Synced
                        } else {
                            DrainMarker::Dirty
                        }
                    })
                }
            };
            match result {
                Ok(DrainMarker::Synced) => {
                    *marker = DrainMarker::Synced;
                    return true;
                }
                Ok(next) => *marker = next,
                Err(error) => {
                    tracing::warn!(%error, "cannot read or write this runner's drain marker; retrying");
                    return false;
                }
            }
        }
    }

    /// Registers with the current session, or rewrites the registration when it changed. One
    /// coroutine at a time: every task's end asks for it, and concurrent rewrites fenced each
    /// other (each retry more ZooKeeper requests); an ask while a rewrite runs makes that
    /// coroutine look once more when it is done, which publishes the latest free slots.
    pub(super) fn keep_registered(&self) {
        /// Clears `registering` however the rewrite ends (a coroutine cancelled at stop too).
        struct Registering<'a>(&'a AtomicBool);
        impl Drop for Registering<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        self.register_again.store(true, Ordering::Release);
        while !self.registering.swap(true, Ordering::AcqRel) {
            {
                let _registering = Registering(&self.registering);
                while self.register_again.swap(false, Ordering::AcqRel) {
                    self.register_once();
                }
            }
            if !self.register_again.load(Ordering::Acquire) {
                break;
            }
        }
    }

    /// See `# Restart`. A failure leaves the old owner nodes to their session's expiry (the
    /// slow path), and registration goes on.
    pub(super) fn remove_stale_owners(&self, session: &ZkSession) {
        if self.config.sole_incarnation.is_none() {
            return;
        }
        let started = Instant::now();
        match task_db::remove_stale_owners(session, &self.config.node_id) {
            Ok(0) => {}
            Ok(n_removed) => tracing::warn!(
                n_removed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "removed the owner nodes of this node's previous incarnation: its tasks are rescheduled now"
            ),
            Err(error) => {
                tracing::warn!(%error, "cannot remove the previous incarnation's owner nodes; they go with its session")
            }
        }
    }

    pub(super) fn register_once(&self) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let Some(session) = self.session() else { return };
        {
            let mut marker = self.drain_marker.lock();
            // Never register before the drain is known: the dispatcher would hand out tasks.
            if !self.sync_drain_marker(&mut marker) && *marker == DrainMarker::Unknown {
                return;
            }
        }
        let info = self.info();
        let current = self.registration.lock().clone();
        let result = match current {
            Some((session_id, _, published)) if session_id == session.session_id() && published == info => return,
            Some((session_id, version, _)) if session_id == session.session_id() => {
                match task_db::update_runner(&session, &info, version) {
                    Ok(version) => Ok(version),
                    Err(DbError::NotFound { .. } | DbError::Fenced { .. }) => task_db::register_runner(&session, &info),
                    Err(error) => Err(error),
                }
            }
            _ => {
                self.remove_stale_owners(&session);
                task_db::register_runner(&session, &info)
            }
        };
        match result {
            Ok(version) => {
                if current.as_ref().is_none_or(|(session_id, _, _)| *session_id != session.session_id()) {
                    tracing::info!(node_id = %info.node_id, address = %info.address, "runner registered");
                }
                *self.registration.lock() = Some((session.session_id(), version, info));
            }
            Err(error) => tracing::warn!(%error, "cannot register the runner"),
        }
    }
}
