//! systemd notification (`Type=notify`): `READY=1`, `STATUS=`, `STOPPING=1` and watchdog pings,
//! all no-ops when the daemon was not started with `NOTIFY_SOCKET`.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends state changes to systemd, if systemd is listening.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// A notifier that talks to `NOTIFY_SOCKET` when it is set.
    pub fn from_env() -> Notifier {
        Notifier { enabled: std::env::var_os("NOTIFY_SOCKET").is_some() }
    }

    /// The daemon serves.
    pub fn ready(&self) {
        self.send(&[NotifyState::Ready]);
    }

    /// A one-line status for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// The daemon has begun an orderly stop.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// A watchdog keep-alive; send it from the event loop so that a hung loop stops the pings.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// How often to ping: half of `WATCHDOG_USEC`, or `None` when no watchdog is configured
    /// for this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        let mut usec = 0u64;
        if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
            Some(Duration::from_micros(usec / 2))
        } else {
            None
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(error) = sd_notify::notify(false, states) {
            tracing::warn!(%error, "cannot notify systemd");
        }
    }
}
