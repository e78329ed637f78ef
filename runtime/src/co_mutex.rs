//! `CoMutex<T>`: a FIFO-fair mutex that parks the waiting coroutine, not its thread. The lock
//! is handed directly to the longest waiter, and its guard cannot leave the caller's thread.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::park::{self, Unparker};

/// A mutual-exclusion lock for coroutines (and threads), fair in arrival order.
///
/// # Examples
///
/// Coroutines on one context hold the lock across a `sleep` (which parks only the coroutine,
/// so the others run and queue for the lock); no increment is lost.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use runtime::{sleep, CoMutex, SyncPoint, ThreadContext};
///
/// let context = ThreadContext::new("locks")?;
/// let counter = Arc::new(CoMutex::new(0u32));
/// let finished = SyncPoint::<()>::new();
/// for _ in 0..4 {
///     let (counter, finished) = (counter.clone(), finished.clone());
///     context.sched(move || {
///         let mut value = counter.lock();
///         let read = *value;
///         sleep(Duration::from_millis(5));
///         *value = read + 1;
///         if *value == 4 {
///             finished.done();
///         }
///     })?;
/// }
/// finished.wait();
/// assert_eq!(*counter.lock(), 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CoMutex<T: ?Sized> {
    state: Mutex<LockState>,
    value: UnsafeCell<T>,
}

struct LockState {
    locked: bool,
    waiters: VecDeque<Arc<Waiter>>,
}

struct Waiter {
    granted: AtomicBool,
    unparker: Unparker,
}

// SAFETY: access to `value` is serialised by the lock, as for `std::sync::Mutex`.
unsafe impl<T: ?Sized + Send> Send for CoMutex<T> {}
// SAFETY: as for `Send`: only the lock's holder reaches `value`.
unsafe impl<T: ?Sized + Send> Sync for CoMutex<T> {}

/// Holds the lock until dropped; not `Send`, so it is released where it was taken.
pub struct CoLockGuard<'a, T: ?Sized> {
    mutex: &'a CoMutex<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T> CoMutex<T> {
    /// An unlocked mutex holding `value`.
    pub fn new(value: T) -> CoMutex<T> {
        CoMutex {
            state: Mutex::new(LockState { locked: false, waiters: VecDeque::new() }),
            value: UnsafeCell::new(value),
        }
    }

    /// The value, once nobody can lock it any more.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<T: ?Sized> CoMutex<T> {
    /// Takes the lock, parking the caller behind earlier waiters.
    pub fn lock(&self) -> CoLockGuard<'_, T> {
        let waiter = {
            let mut state = self.state.lock();
            if !state.locked && state.waiters.is_empty() {
                state.locked = true;
                return self.guard();
            }
            let waiter = Arc::new(Waiter { granted: AtomicBool::new(false), unparker: Unparker::current() });
            state.waiters.push_back(waiter.clone());
            waiter
        };
        // If the caller is unwound while waiting (its context stopped), give the lock on or
        // leave the queue, so no later waiter waits for a dead one.
        let queued = QueuedWaiter { mutex: self, waiter };
        while !queued.waiter.granted.load(Ordering::Acquire) {
            park::park();
        }
        std::mem::forget(queued);
        self.guard()
    }

    /// Takes the lock if it is free and nobody waits for it.
    pub fn try_lock(&self) -> Option<CoLockGuard<'_, T>> {
        let mut state = self.state.lock();
        if !state.locked && state.waiters.is_empty() {
            state.locked = true;
            Some(self.guard())
        } else {
            None
        }
    }

    /// Mutable access without locking, through an exclusive borrow.
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    fn guard(&self) -> CoLockGuard<'_, T> {
        CoLockGuard { mutex: self, _not_send: PhantomData }
    }

    fn unlock(&self) {
        let next = {
            let mut state = self.state.lock();
            match state.waiters.pop_front() {
                Some(waiter) => {
                    waiter.granted.store(true, Ordering::Release);
                    Some(waiter)
                }
                None => {
                    state.locked = false;
                    None
                }
            }
        };
        if let Some(waiter) = next {
            waiter.unparker.unpark();
        }
    }
}

impl<T: Default> Default for CoMutex<T> {
    fn default() -> Self {
        CoMutex::new(T::default())
    }
}

struct QueuedWaiter<'a, T: ?Sized> {
    mutex: &'a CoMutex<T>,
    waiter: Arc<Waiter>,
}

impl<T: ?Sized> Drop for QueuedWaiter<'_, T> {
    fn drop(&mut self) {
        let granted = {
            let mut state = self.mutex.state.lock();
            state.waiters.retain(|waiter| !Arc::ptr_eq(waiter, &self.waiter));
            self.waiter.granted.load(Ordering::Acquire)
        };
        if granted {
            self.mutex.unlock();
        }
    }
}

impl<T: ?Sized> Deref for CoLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no other reference to `value` exists.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T: ?Sized> DerefMut for CoLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock and is borrowed mutably: this reference is the only one.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T: ?Sized> Drop for CoLockGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.unlock();
    }
}
