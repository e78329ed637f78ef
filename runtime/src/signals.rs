//! Signal handling that only sets an atomic flag, for the supervisor to read.
//!
//! The original daemon did work inside its signal handlers; here a handler stores `true` into
//! an [`AtomicBool`] and nothing else — no logging, no allocation, no freeing. The main thread
//! polls the flag (see [`StopFlag::wait_timeout`]) and stops the server from outside.
//!
//! # A second signal
//!
//! When SIGTERM or SIGINT arrives while the flag is already set — the stop is under way and
//! someone asks again, usually because it looks stuck — the handler ends the process at once
//! with `_exit` (no destructors, no atexit handlers), exit status
//! [`FORCED_EXIT_STATUS_SIGTERM`] (143) or [`FORCED_EXIT_STATUS_SIGINT`] (130): `128 + signal
//! number`, the status a shell reports for a process killed by that signal. systemd's
//! `Restart=on-failure` treats it as a failure, which is right for a stop that did not finish.
//! The same holds when the code itself has already requested a stop with [`StopFlag::set`].

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::{flag, low_level};

#[cfg(test)]
mod tests;

/// Exit status of the process when a second SIGTERM arrives while the stop flag is set.
pub const FORCED_EXIT_STATUS_SIGTERM: i32 = 128 + SIGTERM;

/// Exit status of the process when a second SIGINT arrives while the stop flag is set.
pub const FORCED_EXIT_STATUS_SIGINT: i32 = 128 + SIGINT;

/// How often [`StopFlag::wait_timeout`] looks at the flag. Short enough that a stop request is
/// noticed well within a human's patience, long enough that an idle supervisor costs nothing.
const WAIT_POLL_STEP: Duration = Duration::from_millis(10);

/// The flag shared by every [`install_stop_flag`] call of the process, set once the handlers are
/// registered. A mutex rather than a `OnceLock` because installation can fail and must then be
/// retryable.
static INSTALLED_FLAG: Mutex<Option<Arc<AtomicBool>>> = Mutex::new(None);

/// A request to stop, set by SIGTERM/SIGINT (when installed with [`install_stop_flag`]) or by
/// [`StopFlag::set`]. Clones share the same flag. Once set it stays set.
#[derive(Clone, Debug)]
pub struct StopFlag {
    flag: Arc<AtomicBool>,
}

impl StopFlag {
    /// A flag no signal handler sets, for tests and for embedding the daemon in a process that
    /// handles signals itself. It does not share state with the installed flag.
    pub fn new_unregistered() -> StopFlag {
        StopFlag { flag: Arc::new(AtomicBool::new(false)) }
    }

    /// Whether a stop has been requested.
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Requests a stop exactly as a first SIGTERM would. For an installed flag this also arms
    /// the forced exit: a SIGTERM or SIGINT arriving afterwards ends the process at once (see
    /// the [module documentation](self)).
    pub fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Waits until the flag is set or `timeout` has passed; returns whether the flag is set.
    ///
    /// It sleeps the calling thread in short steps, so it is meant for a plain supervisor
    /// thread; a coroutine calling it would stall every other coroutine of its thread.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        // A timeout too large to add to `now` means waiting for the flag alone.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if self.is_set() {
                return true;
            }
            let step = match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    WAIT_POLL_STEP.min(deadline - now)
                }
                None => WAIT_POLL_STEP,
            };
            thread::sleep(step);
        }
    }
}

/// Registers SIGTERM and SIGINT handlers that set the returned flag and nothing else.
///
/// A second SIGTERM or SIGINT while the flag is set exits the process at once with
/// [`FORCED_EXIT_STATUS_SIGTERM`] or [`FORCED_EXIT_STATUS_SIGINT`] (see the
/// [module documentation](self)). Calling this again returns a flag sharing the same atomic and
/// registers nothing more. If registration fails, the handlers registered so far are removed
/// and the error is returned; a later call tries again.
///
/// # Errors
///
/// The OS error of a handler's registration (`sigaction`), after removing the ones registered
/// by this call.
pub fn install_stop_flag() -> io::Result<StopFlag> {
    let mut installed = INSTALLED_FLAG.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(flag) = installed.as_ref() {
        return Ok(StopFlag { flag: Arc::clone(flag) });
    }

    let stop_requested = Arc::new(AtomicBool::new(false));
    let mut registered = Vec::with_capacity(4);
    for (signal, forced_exit_status) in [(SIGTERM, FORCED_EXIT_STATUS_SIGTERM), (SIGINT, FORCED_EXIT_STATUS_SIGINT)] {
        // signal-hook runs a signal's actions in registration order, so the conditional exit
        // must come first: on the first delivery it still sees `false`, then the flag is set.
        let registration = flag::register_conditional_shutdown(signal, forced_exit_status, Arc::clone(&stop_requested))
            .and_then(|shutdown_id| {
                registered.push(shutdown_id);
                flag::register(signal, Arc::clone(&stop_requested))
            });
        match registration {
            Ok(flag_id) => registered.push(flag_id),
            Err(error) => {
                for id in registered {
                    low_level::unregister(id);
                }
                return Err(error);
            }
        }
    }

    *installed = Some(Arc::clone(&stop_requested));
    Ok(StopFlag { flag: stop_requested })
}
