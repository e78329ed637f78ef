//! The election driver's ZooKeeper session (see the driver's "No zombie leader"): building it and
//! a new one after `Expired`, following its state, pinging every third of the step-down delay
//! while leading, and stepping down once disconnected longer than that since the last confirmed
//! contact.

use super::*;

impl Election {
    pub(super) fn on_session_state(&mut self, state: ZkSessionState) {
        match state {
            ZkSessionState::Disconnected | ZkSessionState::ConnectedReadOnly => {
                if self.connected {
                    self.connected = false;
                    self.disconnected_at = Some(step_down_clock_start(self.last_contact, Instant::now()));
                    tracing::warn!(
                        ?state,
                        leader = self.leader,
                        step_down_after_ms = self.step_down_after.as_millis() as u64,
                        "ZooKeeper connection lost; a leader steps down unless it reconnects in time"
                    );
                }
            }
            ZkSessionState::SyncConnected => {
                if !self.connected {
                    let disconnected_for = self.disconnected_at.map(|at| at.elapsed()).unwrap_or_default();
                    tracing::info!(
                        disconnected_ms = disconnected_for.as_millis() as u64,
                        "ZooKeeper connection back within the session; re-checking the election node"
                    );
                }
                self.connected = true;
                self.disconnected_at = None;
                self.last_contact = Some(Instant::now());
                self.needs_owner_check = true;
                self.needs_evaluation = true;
                self.retry_at = None;
            }
            ZkSessionState::Expired | ZkSessionState::Closed | ZkSessionState::AuthFailed => {
                self.on_session_lost(state)
            }
        }
    }

    pub(super) fn on_session_lost(&mut self, state: ZkSessionState) {
        tracing::warn!(?state, "ZooKeeper session lost; building a new one and rejoining as a follower");
        self.step_down("the session ended");
        self.watch_cancel = None;
        self.session_watcher_cancel = None;
        self.session = None;
        *self.shared.session.lock() = None;
        self.own_node = None;
        self.shared.set_sequence(None);
        self.connected = false;
        self.disconnected_at = None;
        self.needs_evaluation = true;
        self.retry_at = None;
        self.emit(Event::SessionLost);
    }

    // ----- session ------------------------------------------------------------------------------

    pub(super) fn establish_session(&mut self) {
        let started = Instant::now();
        let session = match ZkSession::connect(&self.config.zk) {
            Ok(session) => Arc::new(session),
            Err(error) => {
                tracing::warn!(%error, "could not establish a ZooKeeper session; retrying");
                self.retry_at = Some(Instant::now() + self.config.retry_backoff);
                return;
            }
        };
        self.session_epoch += 1;
        self.step_down_after = self.config.step_down_after_disconnect.min(session.session_timeout() / 3);
        self.spawn_state_watcher(&session);
        self.connected = session.state() == ZkSessionState::SyncConnected;
        self.disconnected_at = (!self.connected).then(Instant::now);
        self.last_contact = self.connected.then(Instant::now);
        self.needs_evaluation = true;
        self.needs_owner_check = false;
        self.own_node = None;
        self.retry_at = None;
        *self.shared.session.lock() = Some(session.clone());
        self.session = Some(session);
        tracing::info!(
            epoch = self.session_epoch,
            step_down_after_ms = self.step_down_after.as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "stage done: session established"
        );
    }

    /// A helper coroutine that posts the session's state changes to the mailbox.
    pub(super) fn spawn_state_watcher(&mut self, session: &ZkSession) {
        let mut watcher = session.state_watcher();
        let (cancel_sender, mut cancel_receiver) = oneshot::channel::<()>();
        self.session_watcher_cancel = Some(cancel_sender);
        let sender = self.shared.sender.clone();
        let epoch = self.session_epoch;
        let scheduled = self.context.sched(move || loop {
            let changed = runtime::block_on(select(Box::pin(watcher.changed()), &mut cancel_receiver));
            match changed {
                Either::Left((state, _)) => {
                    if sender.unbounded_send(Input::SessionState { epoch, state }).is_err() || state.is_final() {
                        return;
                    }
                }
                Either::Right(_) => return,
            }
        });
        if scheduled.is_err() {
            tracing::debug!("the loop is stopping; no session state watcher");
        }
    }

    /// A helper coroutine that posts the firing of `watch` to the mailbox, unless replaced first.
    pub(super) fn arm_watch(&mut self, watch: NodeWatch) {
        self.watch_generation += 1;
        let generation = self.watch_generation;
        let (cancel_sender, cancel_receiver) = oneshot::channel::<()>();
        // Replacing the sender drops the previous one, which ends the previous watch coroutine.
        self.watch_cancel = Some(cancel_sender);
        let sender = self.shared.sender.clone();
        let scheduled = self.context.sched(move || {
            if let Either::Left((event, _)) = runtime::block_on(select(Box::pin(watch.changed()), cancel_receiver)) {
                let _ = sender.unbounded_send(Input::WatchFired { generation, event });
            }
        });
        if scheduled.is_err() {
            tracing::debug!("the loop is stopping; no election watch");
        }
    }

    // ----- election -----------------------------------------------------------------------------

    /// Connected by the last message and by the client's own latest state: a request sent while
    /// disconnected would wait for the reconnection, and the driver must stay free to step down.
    pub(super) fn is_connected_now(&self) -> bool {
        self.connected && self.session.as_ref().is_some_and(|session| session.state() == ZkSessionState::SyncConnected)
    }

    pub(super) fn step_down_deadline(&self) -> Option<Instant> {
        match (self.leader, self.disconnected_at) {
            (true, Some(disconnected_at)) => Some(disconnected_at + self.step_down_after),
            _ => None,
        }
    }

    /// When a connected leader next confirms its contact with ZooKeeper.
    pub(super) fn ping_due(&self) -> Option<Instant> {
        if !self.leader || !self.is_connected_now() {
            return None;
        }
        Some(self.ping_at.unwrap_or_else(Instant::now))
    }

    /// A cheap request whose answer confirms the contact (`last_contact`); only while connected,
    /// so it never waits for a reconnection.
    pub(super) fn ping(&mut self) {
        let Some(session) = self.session.clone() else { return };
        let sent = Instant::now();
        self.ping_at = Some(sent + self.step_down_after / 3);
        match session.exists(&self.config.service_path) {
            Ok(_) => self.last_contact = Some(sent),
            // The session's state reports a real loss; the next ping is at its interval.
            Err(error) => tracing::debug!(%error, "leader ping failed"),
        }
    }

    pub(super) fn step_down_if_disconnected_too_long(&mut self) {
        if self.step_down_deadline().is_some_and(|deadline| deadline <= Instant::now()) {
            self.step_down("disconnected from ZooKeeper too long: no zombie leader");
        }
    }
}
