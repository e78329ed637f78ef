//! Secondary (data) network health: whether this node may stay leader.
//!
//! Three sources can decide, chosen by `[health] source` (see [`HealthConfig`]):
//!
//! - `probe` (default): every node answers a tiny UDP echo on its data address
//!   ([`EchoResponder`]) and probes every peer's every 200 ms; a round is good when at least one
//!   peer answers, bad when none does. A cluster of one node is always valid. The data
//!   interface's link state is followed through netlink: link down is invalid at once.
//! - `file`: a file whose first word is `ok` or `fail` (keepalived's `track_file`).
//! - `chunk`: the co-located chunk service's health URL and its `sec_valid` field.
//!
//! Every source produces one [`HealthSample`] per round; [`HealthMonitor`] applies the
//! hysteresis (invalid after `fall` bad rounds in a row, default 3; valid after `rise` good
//! rounds in a row, default 5; decisive facts such as link down skip the count) and publishes
//! the state through [`HealthFlag`], a cheap cloneable reader with change subscriptions.
//!
//! # The state at start: unknown
//!
//! A monitor starts in [`HealthState::Unknown`], a third state beside valid and invalid:
//!
//! - [`HealthFlag::is_valid`] is false until `rise` good rounds have proved the network, so a
//!   freshly started node does not publish itself as a healthy candidate, and the supervisor
//!   does not re-enter the election, before it has proved anything;
//! - [`HealthFlag::is_invalid`] is false until `fall` bad rounds (or a decisive fact) have
//!   proved a failure, so a leader does not step down for start-up noise: peers not known yet,
//!   a first probe lost while the neighbours' responders start.
//!
//! A leader steps down on `is_invalid()`; a node counts as healthy on `is_valid()`. Neither is
//! `!` the other.
//!
//! # Use
//!
//! ```
//! use vip::health::{HealthMonitor, HealthSample};
//!
//! // The daemon calls `HealthMonitor::start(&config.health, data_ip)` and `set_peers` on every
//! // membership change; a monitor without a source shows the reader side.
//! let monitor = HealthMonitor::without_source(3, 5)?;
//! let flag = monitor.flag(); // cheap to clone, one atomic load per check
//! let (wake_tx, wake_rx) = std::sync::mpsc::channel();
//! let _subscription = flag.on_invalid(move |reason| {
//!     let _ = wake_tx.send(reason.to_string()); // post to the event loop, nothing more
//! });
//! assert!(!flag.is_valid() && !flag.is_invalid()); // unknown at start
//! for _ in 0..3 {
//!     monitor.record(HealthSample::Bad("no peer answered".into()));
//! }
//! assert!(flag.is_invalid());
//! assert_eq!(wake_rx.try_recv().map(|reason| reason.contains("no peer answered")), Ok(true));
//! # Ok::<(), vip::health::HealthError>(())
//! ```
//!
//! # Threads
//!
//! Blocking network and file work never runs on a coroutine context: each source has its own
//! OS thread, owned and joined by the monitor. Subscribers of [`HealthFlag::subscribe`] are
//! called on those threads, so they must only post a message or set a flag.

mod chunk;
mod config;
mod echo;
mod error;
mod file;
mod flag;
mod link;
mod monitor;
mod peer_reach;
mod probe;
mod realtime;
mod rounds;
mod state;
mod stop;

pub use config::{ChunkConfig, FileConfig, HealthConfig, MissingFile, ProbeConfig, SourceKind};
pub use echo::EchoResponder;
pub use error::{HealthError, Result};
pub use flag::{HealthFlag, HealthStatus, Subscription};
pub use monitor::HealthMonitor;
pub use peer_reach::PeerReach;
pub use realtime::MAX_REALTIME_PRIORITY;
pub use state::{HealthChange, HealthSample, HealthState, Hysteresis};

#[cfg(test)]
mod tests;
