//! Realtime scheduling for the threads whose timing the data network's verdict depends on: the
//! prober (it times the peers' answers) and the echo responder (the peers time its answers). On a
//! loaded machine an ordinary thread can wait tens of milliseconds for a CPU, which a probe
//! budget of 10 ms × 5 reads as a silent cut; `SCHED_FIFO` runs it before every ordinary thread.
//!
//! Opt-in (`[health] realtime_priority`, 1 to 99; 0 is off). Only the calling thread is raised,
//! never the process. When the kernel refuses (no `CAP_SYS_NICE`, `RLIMIT_RTPRIO` too low, or
//! systemd's `RestrictRealtime=`), the thread keeps its ordinary priority and the first refusal
//! in the process is logged once; later ones are logged at debug.

use std::sync::atomic::{AtomicBool, Ordering};

/// The highest `SCHED_FIFO` priority Linux accepts.
pub const MAX_REALTIME_PRIORITY: u8 = 99;

/// Whether a refusal was already logged in this process.
static REFUSAL_LOGGED: AtomicBool = AtomicBool::new(false);

/// Puts the calling thread (`what`, for the log) under `SCHED_FIFO` at `priority`; 0 does
/// nothing. Returns whether the thread runs at realtime priority now.
pub(crate) fn raise_this_thread(priority: u8, what: &str) -> bool {
    if priority == 0 {
        return false;
    }
    let param = libc::sched_param { sched_priority: i32::from(priority.min(MAX_REALTIME_PRIORITY)) };
    // SAFETY: `pthread_self` names the calling thread, which lives for the whole call, and
    // `param` is a valid `sched_param` the call only reads.
    let error = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if error == 0 {
        tracing::info!(thread = what, priority, "health thread runs at realtime priority (SCHED_FIFO)");
        return true;
    }
    let reason = std::io::Error::from_raw_os_error(error);
    if REFUSAL_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::debug!(thread = what, %reason, "realtime priority refused; ordinary priority");
    } else {
        tracing::warn!(
            thread = what,
            priority,
            %reason,
            "realtime priority refused (the unit needs CAP_SYS_NICE or LimitRTPRIO, and no RestrictRealtime): \
             health threads keep their ordinary priority"
        );
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_leaves_the_thread_alone() {
        let raised = std::thread::spawn(|| {
            let raised = raise_this_thread(0, "test");
            // SAFETY: querying the calling thread's own policy into a local.
            let policy = unsafe { libc::sched_getscheduler(0) };
            (raised, policy)
        })
        .join()
        .expect("thread");
        assert_eq!(raised, (false, libc::SCHED_OTHER));
    }

    #[test]
    fn a_raised_thread_is_fifo_and_only_that_thread() {
        let (raised, policy) = std::thread::spawn(|| {
            let raised = raise_this_thread(5, "test");
            // SAFETY: querying the calling thread's own policy.
            (raised, unsafe { libc::sched_getscheduler(0) })
        })
        .join()
        .expect("thread");
        // Refused without the privilege: then it stays ordinary, and says so.
        assert_eq!(policy, if raised { libc::SCHED_FIFO } else { libc::SCHED_OTHER });
        // SAFETY: querying this (the test's) thread's policy.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER, "the caller's thread is untouched");
    }
}
