//! A named background thread with a stop flag, as the watchers of peers run: the crash detector,
//! the reach watcher and the runner watch each run on one. The thread's body gets the flag and
//! ends once it sees it set; [`WatchThread::stop`] (and drop) sets it and joins, and
//! [`WatchThread::stop_without_waiting`] sets it and leaves the join to a short-lived thread, for
//! a caller that must not wait (a step-down).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// One watcher's thread; stopped and joined by [`WatchThread::stop`] or on drop.
pub struct WatchThread {
    /// Names the thread in logs ("the crash detector").
    what: &'static str,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WatchThread {
    /// Runs `body` on a thread named `name` (at most 15 bytes), handing it the stop flag it must
    /// look at; `what` names it in logs.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn spawn(
        name: &str,
        what: &'static str,
        body: impl FnOnce(Arc<AtomicBool>) + Send + 'static,
    ) -> std::io::Result<WatchThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name(name.to_string()).spawn(move || body(flag))?;
        Ok(WatchThread { what, stop, thread: Some(thread) })
    }

    /// Asks the thread to stop, without waiting (from the server's loop too).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// True once the body has returned (on its own or after a stop).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Asks the thread to stop and joins it (as long as the body takes to see the flag).
    pub fn stop(&mut self) {
        self.request_stop();
        if let Some(thread) = self.thread.take() {
            join(thread, self.what);
        }
    }

    /// Asks the thread to stop and leaves it to end on its own, joined by a short-lived thread
    /// named `reaper_name`, so that the caller does not wait for it.
    pub fn stop_without_waiting(mut self, reaper_name: &str) {
        self.request_stop();
        let Some(thread) = self.thread.take() else { return };
        let what = self.what;
        let reaper = std::thread::Builder::new().name(reaper_name.to_string()).spawn(move || join(thread, what));
        if let Err(error) = reaper {
            // Not joined: the thread still ends on its own once it sees the flag.
            tracing::warn!(%error, "cannot start the thread that joins {what}");
        }
    }
}

impl Drop for WatchThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn join(thread: JoinHandle<()>, what: &str) {
    if thread.join().is_err() {
        tracing::error!("{what}'s thread panicked");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::WatchThread;

    /// A body that counts its rounds until the flag is set, then says it ended.
    fn counting(rounds: Arc<AtomicUsize>, ended: Arc<AtomicBool>) -> impl FnOnce(Arc<AtomicBool>) + Send {
        move |stop| {
            while !stop.load(Ordering::Acquire) {
                rounds.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
            ended.store(true, Ordering::Release);
        }
    }

    #[test]
    fn stop_sets_the_flag_and_joins_the_body() {
        let (rounds, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let mut thread =
            WatchThread::spawn("zbs-test-watch", "the test watch", counting(rounds.clone(), ended.clone()))
                .expect("spawn");
        while rounds.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        assert!(!thread.is_finished(), "the body ended before its flag was set");
        thread.stop();
        assert!(ended.load(Ordering::Acquire), "stop returned before the body ended");
        assert!(thread.is_finished());
        thread.stop();
    }

    #[test]
    fn drop_joins_and_stop_without_waiting_returns_before_a_slow_body_ends() {
        let ended = Arc::new(AtomicBool::new(false));
        drop(
            WatchThread::spawn("zbs-test-watch", "the test watch", counting(Arc::default(), ended.clone()))
                .expect("spawn"),
        );
        assert!(ended.load(Ordering::Acquire), "drop returned before the body ended");

        let ended = Arc::new(AtomicBool::new(false));
        let slow_end = ended.clone();
        let thread = WatchThread::spawn("zbs-test-watch", "the test watch", move |stop| {
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(300));
            slow_end.store(true, Ordering::Release);
        })
        .expect("spawn");
        let asked = Instant::now();
        thread.stop_without_waiting("zbs-test-reap");
        assert!(!ended.load(Ordering::Acquire), "stop_without_waiting waited for the body");
        while !ended.load(Ordering::Acquire) {
            assert!(asked.elapsed() < Duration::from_secs(10), "the body never ended after its flag was set");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
