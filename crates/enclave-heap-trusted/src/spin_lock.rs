//! The lock that serialises `oe_allocator_mallinfo` calls: a spin lock on one `AtomicBool`.
//!
//! Why not a pthread mutex: inside an OE enclave, `pthread_mutex_*` comes from oelibc, which a
//! `no_std` Rust enclave need not link, and a contended OE mutex parks the thread with an OCALL
//! out of the enclave. Why a spin lock is enough: the critical section is one mallinfo call, and
//! these calls are rare (one per scrape or per `publish`), so a waiter almost never spins, and
//! when it does it spins for the length of one call. The same code then runs unchanged in the
//! simulated enclave on the host, and adds no symbol an enclave link would have to resolve.
//!
//! The holder must not sleep, yield or make an OCALL: waiters keep their cores busy meanwhile,
//! which is why `publish_with` calls the OCALL only after releasing the lock.

use core::hint::spin_loop;
use core::sync::atomic::{AtomicBool, Ordering};

/// A mutual-exclusion lock that busy-waits; usable in a `static`.
#[derive(Debug)]
pub(crate) struct SpinLock {
    locked: AtomicBool,
}

impl SpinLock {
    /// An unlocked lock.
    pub(crate) const fn new() -> Self {
        Self {
            locked: AtomicBool::new(false),
        }
    }

    /// Waits until the lock is free, takes it, and returns a guard that frees it on drop
    /// (including during unwinding, in std builds).
    pub(crate) fn lock(&self) -> SpinLockGuard<'_> {
        loop {
            // Acquire pairs with the Release in `SpinLockGuard::drop`: whatever the previous
            // holder did (the allocator's writes to its statistics buffer) is visible to us.
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return SpinLockGuard { lock: self };
            }
            // Wait with plain loads, not compare-exchanges, so that waiters do not keep pulling
            // the cache line away from the holder.
            while self.locked.load(Ordering::Relaxed) {
                spin_loop();
            }
        }
    }
}

/// Proof that the [`SpinLock`] is held; dropping it releases the lock.
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub(crate) struct SpinLockGuard<'a> {
    lock: &'a SpinLock,
}

impl Drop for SpinLockGuard<'_> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::thread;

    #[test]
    fn the_lock_is_free_again_after_the_guard_drops() {
        let lock = SpinLock::new();
        drop(lock.lock());
        let _again = lock.lock();
        assert!(lock.locked.load(Ordering::Relaxed));
    }

    #[test]
    fn a_panic_while_holding_the_lock_releases_it() {
        let lock = Arc::new(SpinLock::new());
        let holder = Arc::clone(&lock);
        let panicked = thread::spawn(move || {
            let _guard = holder.lock();
            panic!("test panic while holding the spin lock");
        })
        .join();
        assert!(panicked.is_err());
        assert!(!lock.locked.load(Ordering::Relaxed));
    }

    #[test]
    fn increments_under_the_lock_are_not_lost() {
        // A non-atomic read-modify-write (load, then store) loses updates unless the lock really
        // excludes other threads.
        let lock = Arc::new(SpinLock::new());
        let counter = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = Arc::clone(&lock);
                let counter = Arc::clone(&counter);
                thread::spawn(move || {
                    for _ in 0..10_000 {
                        let _guard = lock.lock();
                        let seen = counter.load(Ordering::Relaxed);
                        counter.store(seen + 1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 40_000);
    }
}
