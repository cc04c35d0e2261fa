//! The trusted (inside-the-enclave) side of enclave-heap-exporter.
//!
//! This crate owns:
//! - `edl/enclave_heap.edl`, the enclave interface: the ECALL `enclave_heap_ecall_mallinfo` that
//!   fills an `oe_mallinfo_t`, and the OCALL `enclave_heap_ocall_push_mallinfo` that pushes one to
//!   the host;
//! - [`ecall_read_mallinfo`], the body of that ECALL, written once against the
//!   [`EnclaveAllocator`] interface so that the real enclave (allocator: the SDK's
//!   `oe_allocator_mallinfo`) and the simulated enclave (allocator: its own arena) run the same
//!   code;
//! - [`publish_with`], which reads the allocator and hands the snapshot to an OCALL;
//! - with the `enclave-api` feature, the SDK-backed pieces: `OeAllocator`, the exported C
//!   symbols `enclave_heap_ecall_mallinfo` (called by the oeedger8r-generated `_t.c`) and
//!   `enclave_heap_publish`, and `publish`;
//! - with the `enclave` feature (which includes `enclave-api`), the panic strategy for a
//!   `no_std` enclave: a `#[panic_handler]` that calls `oe_abort()`, and the
//!   `rust_eh_personality` an unoptimised enclave link asks for.
//!
//! # Concurrency
//!
//! Calls into the allocator are serialised process-wide (in a real enclave: enclave-wide) by a
//! spin lock. snmalloc's `oe_allocator_mallinfo` writes its answer through a file-level static
//! buffer, so two enclave threads asking at once can read each other's half-written figures.
//! OE's default dlmalloc takes its own global lock anyway, so there the extra lock adds next to
//! nothing. See the private `spin_lock` module for why it is not a pthread mutex.
//!
//! # Panics
//!
//! The `#[panic_handler]` (and the personality stub) exist only under
//! `cfg(all(feature = "enclave", panic = "abort", not(test)))`. An enclave is built with
//! `panic = "abort"` (unwinding would need `_Unwind_*`, which OE's libraries do not provide, and
//! the unresolved symbols make the enclave link fail), so there the handler is present. Any
//! std build (`cargo test`, `cargo clippy --workspace --all-features`, a host binary that happens
//! to enable the feature) uses `panic = "unwind"` and std's own handler, so ours is left out
//! instead of clashing with it (a std binary built with `panic = "abort"` and this feature would
//! clash; nothing needs one). A Rust enclave that wants its own handler enables `enclave-api`
//! instead of `enclave`.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

#[cfg(feature = "enclave-api")]
mod enclave;
mod spin_lock;

#[cfg(feature = "enclave-api")]
pub use enclave::{OeAllocator, enclave_heap_ecall_mallinfo, enclave_heap_publish, publish};

use openenclave_sys::{OE_INVALID_PARAMETER, OE_OK, oe_mallinfo_t, oe_result_t};

use crate::spin_lock::SpinLock;

/// Something that can answer `oe_allocator_mallinfo` (the real SDK allocator, or the simulated
/// enclave's heap).
pub trait EnclaveAllocator {
    /// Fills `info` with the heap's figures and returns `OE_OK`, or returns a failure (the SDK
    /// documents `OE_UNSUPPORTED` and `OE_FAILURE`), in which case `info` means nothing.
    fn mallinfo(&self, info: &mut oe_mallinfo_t) -> oe_result_t;
}

/// Serialises every allocator read in this process. In a real enclave that means per enclave:
/// each enclave image has its own copy of this static. In the simulated enclave it is shared by
/// all simulated enclaves of the process, which only costs them a short wait.
static MALLINFO_LOCK: SpinLock = SpinLock::new();

/// The body of our ECALL: rejects NULL with `OE_INVALID_PARAMETER`, serialises concurrent calls
/// process-wide (snmalloc's mallinfo writes through a file-level static buffer, so two concurrent
/// calls race), calls the allocator into a local, and writes `*out` only on `OE_OK`.
///
/// Neither of the SDK's allocators checks its argument for NULL, hence the check here; and the
/// allocator never writes to `out` directly, so a failure leaves the caller's struct untouched.
///
/// # Safety
///
/// `out` must be NULL or valid for writes of one `oe_mallinfo_t` (it need not be aligned). The
/// oeedger8r-generated stub passes a pointer into its own marshalling buffer, or NULL when the
/// host passed NULL.
pub unsafe fn ecall_read_mallinfo<A: EnclaveAllocator + ?Sized>(
    allocator: &A,
    out: *mut oe_mallinfo_t,
) -> oe_result_t {
    if out.is_null() {
        return OE_INVALID_PARAMETER;
    }
    let mut info = oe_mallinfo_t::default();
    let result = {
        let _serialised = MALLINFO_LOCK.lock();
        allocator.mallinfo(&mut info)
    };
    if result == OE_OK {
        // SAFETY: `out` is not NULL (checked above) and the caller guarantees it is valid for a
        // write of one `oe_mallinfo_t`; `write_unaligned` drops the alignment requirement.
        unsafe { out.write_unaligned(info) };
    }
    result
}

/// Read the allocator and hand the snapshot to `push` (the OCALL); returns the first failing
/// result.
///
/// The lock is held only while the allocator is read, never across `push`: an OCALL leaves the
/// enclave and may take as long as the host likes, and other enclave threads must not spin
/// meanwhile.
pub fn publish_with<A: EnclaveAllocator + ?Sized>(
    allocator: &A,
    push: impl FnOnce(&oe_mallinfo_t) -> oe_result_t,
) -> oe_result_t {
    let mut info = oe_mallinfo_t::default();
    // SAFETY: `&mut info` is a valid, aligned, exclusive pointer to a local `oe_mallinfo_t`.
    let result = unsafe { ecall_read_mallinfo(allocator, &mut info) };
    if result != OE_OK {
        return result;
    }
    push(&info)
}

#[cfg(all(feature = "enclave", panic = "abort", not(test)))]
#[panic_handler]
fn abort_the_enclave(_info: &core::panic::PanicInfo<'_>) -> ! {
    // Formatting the message would pull in core::fmt and need somewhere to write it; the enclave
    // is unusable either way, and the host sees OE_ENCLAVE_ABORTING on its next call.
    // SAFETY: `oe_abort` takes no arguments and has no preconditions; it never returns.
    unsafe { openenclave_sys::oe_abort() }
}

/// The unwinding personality routine, defined only so that the enclave links.
///
/// The precompiled `core` is built with `panic = "unwind"`, so some of its functions carry
/// landing pads whose unwind tables name `rust_eh_personality`. OE links enclaves with
/// `--export-dynamic`, which keeps every global function of any `core` object the enclave pulls in
/// (an unoptimised build pulls one in for its panic and debug-assertion paths), and with
/// `--no-undefined`, so the reference must resolve. Nothing can ever call it: the panic handler
/// above aborts instead of unwinding, and no unwinder (`_Unwind_RaiseException`) is linked into
/// the enclave at all. Should that ever change, aborting is the only safe answer.
#[cfg(all(feature = "enclave", panic = "abort", not(test)))]
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() -> ! {
    // SAFETY: `oe_abort` takes no arguments and has no preconditions; it never returns.
    unsafe { openenclave_sys::oe_abort() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openenclave_sys::OE_FAILURE;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;
    use std::time::Duration;

    /// Test double for the SDK allocator: answers with fixed figures and a fixed result, and
    /// counts how often it was asked.
    struct FakeAllocator {
        result: oe_result_t,
        figures: oe_mallinfo_t,
        calls: AtomicUsize,
    }

    impl FakeAllocator {
        fn answering(result: oe_result_t, figures: oe_mallinfo_t) -> Self {
            Self {
                result,
                figures,
                calls: AtomicUsize::new(0),
            }
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl EnclaveAllocator for FakeAllocator {
        fn mallinfo(&self, info: &mut oe_mallinfo_t) -> oe_result_t {
            self.calls.fetch_add(1, Ordering::SeqCst);
            // Even a failing allocator may scribble on its argument (snmalloc's buffer), which
            // must never reach the caller.
            *info = self.figures;
            self.result
        }
    }

    const FIGURES: oe_mallinfo_t = oe_mallinfo_t {
        max_total_heap_size: 4096 * 1024,
        current_allocated_heap_size: 123_456,
        peak_allocated_heap_size: 654_321,
    };

    const UNTOUCHED: oe_mallinfo_t = oe_mallinfo_t {
        max_total_heap_size: 0xdead,
        current_allocated_heap_size: 0xbeef,
        peak_allocated_heap_size: 0xf00d,
    };

    #[test]
    fn null_is_rejected_without_asking_the_allocator() {
        let allocator = FakeAllocator::answering(OE_OK, FIGURES);
        // SAFETY: NULL is explicitly allowed.
        let result = unsafe { ecall_read_mallinfo(&allocator, core::ptr::null_mut()) };
        assert_eq!(result, OE_INVALID_PARAMETER);
        assert_eq!(allocator.calls(), 0);
    }

    #[test]
    fn ok_copies_all_three_fields() {
        let allocator = FakeAllocator::answering(OE_OK, FIGURES);
        let mut out = UNTOUCHED;
        // SAFETY: `&mut out` is valid for writes.
        let result = unsafe { ecall_read_mallinfo(&allocator, &mut out) };
        assert_eq!(result, OE_OK);
        assert_eq!(out.max_total_heap_size, FIGURES.max_total_heap_size);
        assert_eq!(
            out.current_allocated_heap_size,
            FIGURES.current_allocated_heap_size
        );
        assert_eq!(
            out.peak_allocated_heap_size,
            FIGURES.peak_allocated_heap_size
        );
        assert_eq!(allocator.calls(), 1);
    }

    #[test]
    fn a_failure_leaves_out_untouched_and_is_returned() {
        for failure in [OE_FAILURE, openenclave_sys::OE_UNSUPPORTED, 0xffff_ffff] {
            let allocator = FakeAllocator::answering(failure, FIGURES);
            let mut out = UNTOUCHED;
            // SAFETY: `&mut out` is valid for writes.
            let result = unsafe { ecall_read_mallinfo(&allocator, &mut out) };
            assert_eq!(result, failure);
            assert_eq!(out, UNTOUCHED);
            assert_eq!(allocator.calls(), 1);
        }
    }

    #[test]
    fn an_unaligned_out_pointer_is_written_correctly() {
        let allocator = FakeAllocator::answering(OE_OK, FIGURES);
        let mut bytes = [0u8; size_of::<oe_mallinfo_t>() + 1];
        let out = bytes[1..].as_mut_ptr().cast::<oe_mallinfo_t>();
        // SAFETY: `out` is valid for writes of one `oe_mallinfo_t` (the slice has exactly that
        // many bytes); alignment is not required.
        let result = unsafe { ecall_read_mallinfo(&allocator, out) };
        assert_eq!(result, OE_OK);
        // SAFETY: the same pointer, just written as a whole `oe_mallinfo_t`.
        assert_eq!(unsafe { out.read_unaligned() }, FIGURES);
    }

    /// Test double that detects overlapping calls: it counts the calls in progress, stays inside
    /// for a while so that overlaps have a chance to happen, and records the most it ever saw.
    struct OverlapDetectingAllocator {
        active: AtomicUsize,
        max_active: AtomicUsize,
        calls: AtomicUsize,
    }

    impl EnclaveAllocator for OverlapDetectingAllocator {
        fn mallinfo(&self, info: &mut oe_mallinfo_t) -> oe_result_t {
            let now_active = self.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_active.fetch_max(now_active, Ordering::SeqCst);
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            // Stay inside long enough for other threads to arrive. Mostly by busy-waiting: a
            // holder that sleeps hands its core to spinning waiters, and with 8 threads on a
            // small machine every sleep then costs scheduler time slices. Sleeping now and then
            // still covers a holder that is descheduled mid-call.
            if call % 64 == 0 {
                thread::sleep(Duration::from_micros(50));
            } else {
                for _ in 0..200 {
                    std::hint::spin_loop();
                }
            }
            *info = FIGURES;
            self.active.fetch_sub(1, Ordering::SeqCst);
            OE_OK
        }
    }

    #[test]
    fn concurrent_calls_never_overlap_inside_the_allocator() {
        const THREADS: usize = 8;
        const CALLS_PER_THREAD: usize = 200;
        let allocator = OverlapDetectingAllocator {
            active: AtomicUsize::new(0),
            max_active: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
        };
        thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    for _ in 0..CALLS_PER_THREAD {
                        let mut out = oe_mallinfo_t::default();
                        // SAFETY: `&mut out` is valid for writes.
                        let result = unsafe { ecall_read_mallinfo(&allocator, &mut out) };
                        assert_eq!(result, OE_OK);
                        assert_eq!(out, FIGURES);
                    }
                });
            }
        });
        assert_eq!(
            allocator.calls.load(Ordering::SeqCst),
            THREADS * CALLS_PER_THREAD
        );
        assert_eq!(allocator.max_active.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn publish_with_pushes_the_snapshot() {
        let allocator = FakeAllocator::answering(OE_OK, FIGURES);
        let mut pushed = None;
        let result = publish_with(&allocator, |info| {
            pushed = Some(*info);
            OE_OK
        });
        assert_eq!(result, OE_OK);
        assert_eq!(pushed, Some(FIGURES));
    }

    #[test]
    fn publish_with_returns_the_allocator_failure_without_pushing() {
        let allocator = FakeAllocator::answering(OE_FAILURE, FIGURES);
        let mut pushes = 0;
        let result = publish_with(&allocator, |_| {
            pushes += 1;
            OE_OK
        });
        assert_eq!(result, OE_FAILURE);
        assert_eq!(pushes, 0);
    }

    #[test]
    fn publish_with_returns_the_push_failure() {
        let allocator = FakeAllocator::answering(OE_OK, FIGURES);
        let result = publish_with(&allocator, |_| openenclave_sys::OE_ENCLAVE_ABORTING);
        assert_eq!(result, openenclave_sys::OE_ENCLAVE_ABORTING);
        assert_eq!(allocator.calls(), 1);
    }

    #[test]
    fn publish_with_does_not_hold_the_lock_while_pushing() {
        // If the OCALL ran under the lock, a read from inside it would spin forever.
        let allocator = FakeAllocator::answering(OE_OK, FIGURES);
        let result = publish_with(&allocator, |_| {
            let mut nested = oe_mallinfo_t::default();
            // SAFETY: `&mut nested` is valid for writes.
            unsafe { ecall_read_mallinfo(&allocator, &mut nested) }
        });
        assert_eq!(result, OE_OK);
        assert_eq!(allocator.calls(), 2);
    }

    #[test]
    fn works_through_a_trait_object() {
        let allocator = FakeAllocator::answering(OE_OK, FIGURES);
        let dynamic: &dyn EnclaveAllocator = &allocator;
        let mut out = oe_mallinfo_t::default();
        // SAFETY: `&mut out` is valid for writes.
        assert_eq!(unsafe { ecall_read_mallinfo(dynamic, &mut out) }, OE_OK);
        assert_eq!(out, FIGURES);
    }
}
