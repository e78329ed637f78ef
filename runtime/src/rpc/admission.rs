//! Admission of new connections: a server's limit on its open connections (all listeners
//! together) and on those of each client IP address, with a `Slot` whose drop gives the place
//! back, however the connection ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// The connection counts of one server cycle against its limits.
pub(crate) struct Admission {
    max_connections: usize,
    max_connections_per_client: usize,
    counts: Mutex<Counts>,
    n_refused: AtomicU64,
}

#[derive(Default)]
struct Counts {
    n_open: usize,
    /// Only clients with an open connection: an entry goes when its count reaches zero, so the
    /// map is never larger than the number of open connections.
    per_client: HashMap<IpAddr, usize>,
}

/// Which limit a refused connection was past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Server,
    Client,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Server => "the server's connection limit",
            Refusal::Client => "the client's connection limit",
        }
    }
}

/// One admitted connection's place under the limits; dropping it gives the place back.
pub(crate) struct Slot {
    admission: Arc<Admission>,
    client: IpAddr,
}

impl Admission {
    pub(crate) fn new(max_connections: usize, max_connections_per_client: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max_connections,
            max_connections_per_client,
            counts: Mutex::new(Counts::default()),
            n_refused: AtomicU64::new(0),
        })
    }

    /// A place for a new connection from `client`, or the limit it is past. An IPv4 client that
    /// reaches a dual-stack listener (`::ffff:a.b.c.d`) counts as its IPv4 address.
    pub(crate) fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Slot, Refusal> {
        let client = client.to_canonical();
        let mut counts = self.counts.lock();
        let refusal = if counts.n_open >= self.max_connections {
            Some(Refusal::Server)
        } else if counts.per_client.get(&client).copied().unwrap_or(0) >= self.max_connections_per_client {
            Some(Refusal::Client)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            drop(counts);
            self.n_refused.fetch_add(1, Ordering::Relaxed);
            return Err(refusal);
        }
        counts.n_open += 1;
        *counts.per_client.entry(client).or_insert(0) += 1;
        Ok(Slot { admission: self.clone(), client })
    }

    /// Connections admitted and not yet ended.
    #[cfg(test)]
    pub(crate) fn n_open(&self) -> usize {
        self.counts.lock().n_open
    }

    /// Of those, the ones from `client`.
    #[cfg(test)]
    pub(crate) fn n_open_from(&self, client: IpAddr) -> usize {
        self.counts.lock().per_client.get(&client.to_canonical()).copied().unwrap_or(0)
    }

    /// Connections refused since the cycle began.
    pub(crate) fn n_refused(&self) -> u64 {
        self.n_refused.load(Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.admission.counts.lock();
        counts.n_open = counts.n_open.saturating_sub(1);
        if let Some(n) = counts.per_client.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_client.remove(&self.client);
            }
        }
    }
}
