//! `ServerHandle`: what a handler may keep of its server — ask it to stop, read its status and
//! address — without keeping it alive or seeing its insides. The server implements
//! `ServerControl`; requests carry the handle, so the HTTP side never depends on the server.

use std::net::SocketAddr;
use std::sync::Weak;

use super::status::ServerStatus;

/// What a handle can ask of its server.
pub(crate) trait ServerControl: Send + Sync {
    /// Asks the server to stop; returns at once.
    fn request_stop(&self);
    fn status(&self) -> ServerStatus;
    fn local_addr(&self) -> Option<SocketAddr>;
}

/// A cheap, cloneable handle to a server, safe to keep in handlers (it does not keep the
/// server alive): stop it, read its status and address.
#[derive(Clone)]
pub struct ServerHandle {
    inner: Weak<dyn ServerControl>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").field("status", &self.status()).finish()
    }
}

impl ServerHandle {
    pub(crate) fn new(inner: Weak<dyn ServerControl>) -> ServerHandle {
        ServerHandle { inner }
    }

    /// Asks the server to stop; returns at once (see `Server::stop`).
    pub fn stop(&self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.request_stop();
        }
    }

    /// The server's status; `NotRunning` once the server is gone.
    pub fn status(&self) -> ServerStatus {
        self.inner.upgrade().map_or(ServerStatus::NotRunning, |inner| inner.status())
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.upgrade().and_then(|inner| inner.local_addr())
    }
}
