//! A simulated Open Enclave: a real bounded heap with exact accounting, workload profiles that
//! allocate on it for real, and our mallinfo ECALL answered through the trusted crate's own code,
//! so everything upstream of the ECALL runs without SGX or the OE SDK.
//!
//! This crate owns:
//! - [`SimHeap`]: the enclave heap. One arena of exactly `heap_pages * 4096` bytes (like
//!   `NumHeapPages`), page-aligned, taken from the host once and managed by the `talc` allocator,
//!   whose metadata lives inside it as dlmalloc's does. A request that does not fit fails with
//!   [`OutOfMemory`]; nothing falls back to the host. [`SimBlock`] is one live allocation.
//! - [`Profile`] and the workload thread that runs it (see the variants for what each does).
//! - [`SimulatedEnclave`]: heap + workload + [`ecall_mallinfo`](SimulatedEnclave::ecall_mallinfo),
//!   with fault injection (`fail`, `delay`) from [`SimConfig`], and optional periodic pushes
//!   (`push`) through the trusted crate's `publish_with`, as an enclave's own thread would send
//!   them by OCALL.
//!
//! It is a test double and says so: the host labels it `source="simulated"`.
//!
//! # Accounting rules
//! - `max_total_heap_size` = `heap_pages * 4096`, exactly the arena's size. The allocator's
//!   metadata and per-block overhead come out of it, so fewer bytes than that can be allocated.
//! - `current_allocated_heap_size` = the exact sum of the sizes requested by live blocks. Allocator
//!   overhead is not counted; OE's dlmalloc counts chunk headers, so a real enclave reads a little
//!   higher for the same allocations.
//! - `peak_allocated_heap_size` = the exact maximum `current` has ever taken. (OE's dlmalloc
//!   reports its peak *footprint* here, which can sit well above the peak of `current`.)
//! - The counters are updated while the allocator's lock is held, in the allocator's order of
//!   events, so `peak` is exact even with many threads allocating at once. Because only lock
//!   holders write them, each update is a plain atomic load and store, not a locked
//!   read-modify-write. Reads never take the lock; a read racing an allocation reports
//!   `peak = max(peak, current)`, so no answer ever shows `peak < current`.
//!
//! # The ECALL path
//! [`SimulatedEnclave::ecall_mallinfo`] applies `delay`, then `fail`, then allocates the call's
//! 24-byte marshalling buffer on the heap (as OE's ECALL dispatcher does, so a poll counts itself
//! in `current`), runs `enclave_heap_trusted::ecall_read_mallinfo` with the heap as its
//! `EnclaveAllocator`, and copies the answer out of the buffer. With profile `idle`, a read
//! therefore reports `current_allocated_heap_size` = 24.
#![deny(missing_docs)]

mod config;
mod enclave;
mod error;
mod heap;
mod profile;
mod workload;

pub use config::{DEFAULT_HEAP_PAGES, DEFAULT_PERIOD, DEFAULT_SEED, MIN_PUSH_INTERVAL, SimConfig};
pub use enclave::{PushTarget, SimulatedEnclave};
pub use error::SimError;
pub use heap::{BLOCK_ALIGN, OutOfMemory, SimBlock, SimHeap};
pub use profile::Profile;

/// SGX page size; the heap is sized in these, like `NumHeapPages`.
pub const PAGE_SIZE: usize = 4096;

/// Smallest heap allowed, in pages (64 KiB): room for the allocator's metadata and a workload.
pub const MIN_HEAP_PAGES: usize = 16;

/// Largest heap allowed, in pages (4 GiB): the arena is reserved up front from the host.
pub const MAX_HEAP_PAGES: usize = 1 << 20;
