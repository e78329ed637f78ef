//! A stop signal that wakes a thread blocked in `poll`: an eventfd plus a flag.
//!
//! The health threads wait on sockets; a stop must wake them at once rather than at the next
//! read timeout, so that stopping a monitor (and joining its threads) takes microseconds.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What ended a [`StopSignal::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The file descriptor is readable.
    Readable,
    /// The stop signal was raised.
    Stopped,
    /// The deadline passed.
    TimedOut,
}

/// Shared between an owner (who raises it) and its threads (who wait on it).
#[derive(Clone)]
pub(crate) struct StopSignal {
    inner: Arc<Inner>,
}

struct Inner {
    event: OwnedFd,
    stopped: AtomicBool,
}

impl StopSignal {
    pub(crate) fn new() -> io::Result<StopSignal> {
        // SAFETY: eventfd has no memory arguments; a non-negative result is a fresh descriptor
        // that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let event = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(StopSignal { inner: Arc::new(Inner { event, stopped: AtomicBool::new(false) }) })
    }

    /// Raises the signal; every waiter wakes, now and later.
    pub(crate) fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own. A full counter (EAGAIN)
        // still leaves it readable, which is all the waiters need.
        unsafe {
            libc::write(self.inner.event.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::Acquire)
    }

    /// Sleeps until `deadline` or the stop; returns false when stopped.
    pub(crate) fn sleep_until(&self, deadline: Instant) -> bool {
        loop {
            match self.wait(None, deadline) {
                Ok(Wake::Stopped) => return false,
                Ok(Wake::TimedOut) => return true,
                // `poll` failing on our own eventfd is not expected; a short pause keeps a
                // broken descriptor from spinning the thread.
                Ok(Wake::Readable) | Err(_) => {
                    if Instant::now() >= deadline {
                        return !self.is_stopped();
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Waits until `fd` (if any) is readable, the signal is raised, or `deadline` passes.
    /// Interrupted waits are resumed.
    pub(crate) fn wait(&self, fd: Option<RawFd>, deadline: Instant) -> io::Result<Wake> {
        loop {
            if self.is_stopped() {
                return Ok(Wake::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Wake::TimedOut);
            }
            let remaining = deadline - now;
            // Rounded up so a sub-millisecond remainder does not become a busy 0 ms poll.
            let timeout_ms = remaining.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            let mut fds = [
                libc::pollfd { fd: self.inner.event.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: fd.unwrap_or(-1), events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: `fds` is a live array of two pollfd; a negative fd is ignored by poll.
            let n_ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
            if n_ready < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            if fds[0].revents != 0 || self.is_stopped() {
                return Ok(Wake::Stopped);
            }
            if fds[1].revents != 0 {
                return Ok(Wake::Readable);
            }
        }
    }
}
