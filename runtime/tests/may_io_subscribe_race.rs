//! Regression test for a use-after-return in `may`'s IO wait (fixed in `third_party/may`).
//!
//! A coroutine whose read would block hands itself to `may`'s selector from the worker thread
//! (`EventSource::subscribe`): it stores the coroutine in the socket's event data, then goes on
//! reading the `SocketRead` (on the coroutine's stack) and the socket's `IoData` (here on the
//! coroutine's stack too) to register the IO for cancellation. Between the store and those
//! reads another worker may take the coroutine from an epoll event and run it on: it returns
//! from the read, drops the socket and ends, and its stack goes back to the pool for the next
//! coroutine. The subscribing worker then cloned an `Arc` out of garbage: SIGSEGV in the socket
//! read, or a refcount increment somewhere in the heap (`free(): invalid pointer` much later).
//!
//! This test makes that window as likely as it can: many more `may` workers than CPUs (a worker
//! preempted right after the store is the race), peers that write just after the reader parks,
//! readers that end at once, and a stack scribble after each read so that stale reads of the
//! coroutine's stack hit a non-pointer. Against upstream `may` it died in 5 of 11 runs on a
//! 2-core machine (SIGSEGV in `socket_read::subscribe`, or `malloc(): unaligned tcache chunk`);
//! a race can only be made likely, not certain. Patched, it asserts every byte written was
//! read. It is its own test binary because it sets `may`'s worker count, which only takes
//! effect before the scheduler starts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the readers and writers churn.
const CHURN: Duration = Duration::from_secs(6);
/// Client threads connecting, pausing, writing one byte and closing, in a loop.
const N_WRITERS: usize = 24;

/// Overwrites a large part of the calling coroutine's stack with a byte that is no valid pointer.
#[inline(never)]
fn scribble_stack() {
    let mut junk = [0x41u8; 16 * 1024];
    std::hint::black_box(&mut junk);
}

/// Reads the one byte its peer sends; the stream lives in this frame, which the caller's
/// `scribble_stack` overwrites right after.
#[inline(never)]
fn read_one(stream: may::net::TcpStream, received: &AtomicUsize) {
    let mut stream = stream;
    let mut byte = [0u8; 1];
    if let Ok(1) = stream.read(&mut byte) {
        received.fetch_add(1, Ordering::Relaxed);
    }
}

/// Gives every accepted connection a coroutine that reads one byte and ends.
fn accept_loop(listener: may::net::TcpListener, received: Arc<AtomicUsize>) {
    for accepted in listener.incoming() {
        let Ok(stream) = accepted else { continue };
        let received = received.clone();
        // SAFETY: (may's spawn contract) the reader keeps no thread-local across a park, and
        // may's default stack is ample for a one-byte read.
        let _ = unsafe {
            may::coroutine::Builder::new().spawn(move || {
                read_one(stream, &received);
                scribble_stack();
            })
        };
    }
}

fn writer(address: SocketAddr, stop: &AtomicBool, sent: &AtomicUsize) {
    let mut round = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(address) else { continue };
        // Let the reader reach its blocking read (and subscribe) before the byte lands.
        std::thread::sleep(Duration::from_micros(200 + u64::from(round % 300)));
        if stream.write_all(b"x").is_ok() {
            sent.fetch_add(1, Ordering::Relaxed);
        }
        let mut rest = [0u8; 1];
        let _ = stream.read(&mut rest);
        round = round.wrapping_add(1);
    }
}

#[test]
fn a_coroutine_that_ends_right_after_its_read_wakes_leaves_the_selector_intact() {
    may::config().set_workers(12).set_worker_pin(false);
    let listener = may::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    let address = listener.local_addr().expect("listener address");

    let received = Arc::new(AtomicUsize::new(0));
    let accept_received = received.clone();
    // SAFETY: (may's spawn contract) the accept loop keeps no thread-local across a park, and
    // may's default stack is ample for it.
    let _acceptor = unsafe { may::coroutine::spawn(move || accept_loop(listener, accept_received)) };

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..N_WRITERS)
        .map(|_| {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || writer(address, &stop, &sent))
        })
        .collect();
    std::thread::sleep(CHURN);
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("a writer thread ended without panicking");
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    while received.load(Ordering::Relaxed) < sent.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (sent, received) = (sent.load(Ordering::Relaxed), received.load(Ordering::Relaxed));
    eprintln!("sent {sent}, received {received}");
    assert!(sent > 1000, "the writers connected and wrote only {sent} times");
    assert_eq!(received, sent, "every byte written was read by its coroutine");
}
