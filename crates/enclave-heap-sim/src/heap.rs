//! [`SimHeap`]: a fixed arena managed by a real allocator, with exact current/peak accounting, and
//! [`SimBlock`], one live allocation in it.
//!
//! The arena plays the enclave's heap region: one page-aligned block of exactly
//! `heap_pages * 4096` bytes, taken from the host once and handed to [`talc`], which keeps its own
//! metadata inside it (as OE's dlmalloc does), so fewer than `max_total_heap_size` bytes are ever
//! usable. Allocations never fall back to the host: when talc finds no room, the request fails
//! with [`OutOfMemory`], as `malloc` inside an enclave returns NULL.
//!
//! Accounting is two atomics next to the allocator lock. They are written only while that lock is
//! held, which makes them single-writer: plain loads and stores suffice (no lock-prefixed
//! read-modify-write, no extra cache line bouncing between cores), and the figures follow the
//! allocator's own order of events exactly, so `peak` is the true maximum even with many threads.
//! Readers never take the lock.

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use enclave_heap_trusted::EnclaveAllocator;
use openenclave_sys::{OE_OK, OE_OUT_OF_MEMORY, oe_mallinfo_t, oe_result_t};
use talc::DefaultBinning;
use talc::base::Talc;
use talc::source::Manual;

use crate::PAGE_SIZE;
use crate::config::validate_heap_pages;
use crate::error::SimError;

/// Alignment of every block: OE's dlmalloc aligns to `2 * sizeof(size_t)`, 16 bytes on x86_64.
pub const BLOCK_ALIGN: usize = 16;

/// talc over a fixed arena: `Manual` means it never asks for more memory, so a full arena is an
/// allocation failure rather than a trip to the host's allocator.
type ArenaAllocator = Talc<Manual, DefaultBinning>;

/// The simulated enclave heap.
///
/// `Send + Sync`: allocate and free from any thread. See the crate docs for the accounting rules.
pub struct SimHeap {
    allocator: Mutex<ArenaAllocator>,
    accounting: Accounting,
    heap_pages: usize,
    // Declared last so it is freed after the allocator that points into it.
    arena: Arena,
}

impl SimHeap {
    /// Creates a heap of `heap_pages` 4 KiB pages: reserves the arena (exactly
    /// `heap_pages * 4096` bytes, page-aligned, zero-filled lazily by the host) and hands it to
    /// the allocator.
    ///
    /// `heap_pages` must lie between [`MIN_HEAP_PAGES`](crate::MIN_HEAP_PAGES) and
    /// [`MAX_HEAP_PAGES`](crate::MAX_HEAP_PAGES).
    pub fn new(heap_pages: usize) -> Result<Self, SimError> {
        validate_heap_pages(heap_pages)?;
        let bytes = heap_pages * PAGE_SIZE;
        let arena = Arena::new(bytes)?;
        let mut allocator = ArenaAllocator::new(Manual);
        // SAFETY: the arena is a live allocation of `bytes` bytes owned by this heap, which outlives
        // the allocator (field order), and nothing but the allocator and the blocks it hands out
        // ever touches it. `Manual` permits claiming memory by hand.
        unsafe { allocator.claim(arena.base.as_ptr(), bytes) }
            .ok_or(SimError::ArenaRejected { bytes })?;
        Ok(Self {
            allocator: Mutex::new(allocator),
            accounting: Accounting::default(),
            heap_pages,
            arena,
        })
    }

    /// Allocates `size` bytes (aligned to [`BLOCK_ALIGN`]) inside the arena, or fails with
    /// [`OutOfMemory`] when the allocator finds no free range that fits. The block is freed when
    /// it is dropped.
    ///
    /// `size` 0 is allowed, as for `malloc(0)`: it counts 0 bytes but still takes a minimal chunk
    /// so the block has an address of its own.
    pub fn allocate(&self, size: usize) -> Result<SimBlock<'_>, OutOfMemory> {
        let out_of_memory = || OutOfMemory {
            requested: size,
            current_allocated: self.current_allocated(),
            max_total_heap_size: self.max_total_heap_size(),
        };
        // Larger than the whole arena can never fit; say so without taking the lock.
        if size > self.max_total_heap_size() {
            return Err(out_of_memory());
        }
        let layout =
            Layout::from_size_align(size.max(1), BLOCK_ALIGN).map_err(|_| out_of_memory())?;
        let ptr = {
            let mut allocator = self.lock_allocator();
            // SAFETY: `layout` has a non-zero size (`size.max(1)`), which is all talc requires.
            let ptr = unsafe { allocator.allocate(layout) };
            if ptr.is_some() {
                self.accounting.record_allocation(size);
            }
            ptr
        };
        let ptr = ptr.ok_or_else(out_of_memory)?;
        Ok(SimBlock {
            heap: self,
            ptr,
            len: size,
            layout,
        })
    }

    /// The heap size in pages, as given to [`SimHeap::new`].
    pub fn heap_pages(&self) -> usize {
        self.heap_pages
    }

    /// `max_total_heap_size`: the arena size, exactly `heap_pages * 4096` bytes.
    pub fn max_total_heap_size(&self) -> usize {
        self.arena.size
    }

    /// Bytes currently allocated: the exact sum of the sizes requested by live blocks.
    pub fn current_allocated(&self) -> usize {
        self.accounting.snapshot().0
    }

    /// The highest value [`current_allocated`](Self::current_allocated) has ever taken.
    pub fn peak_allocated(&self) -> usize {
        self.accounting.snapshot().1
    }

    /// All three figures, as `oe_allocator_mallinfo` would fill them. Lock-free: unlike
    /// dlmalloc's, it never waits for an allocation in progress.
    pub fn mallinfo(&self) -> oe_mallinfo_t {
        let (current, peak) = self.accounting.snapshot();
        oe_mallinfo_t {
            max_total_heap_size: self.max_total_heap_size(),
            current_allocated_heap_size: current,
            peak_allocated_heap_size: peak,
        }
    }

    /// The arena's address range, e.g. to check that blocks fall inside it.
    pub fn arena(&self) -> Range<*const u8> {
        let start = self.arena.base.as_ptr().cast_const();
        start..start.wrapping_add(self.arena.size)
    }

    /// Frees a block's memory; only [`SimBlock`]'s `Drop` calls this.
    fn release(&self, ptr: NonNull<u8>, layout: Layout, len: usize) {
        let mut allocator = self.lock_allocator();
        self.accounting.record_free(len);
        // SAFETY: `ptr` came from this allocator's `allocate` with this `layout` (SimBlock keeps
        // both unchanged), and SimBlock owns it uniquely and calls this once, from its Drop.
        unsafe { allocator.deallocate(ptr.as_ptr(), layout) }
    }

    fn lock_allocator(&self) -> MutexGuard<'_, ArenaAllocator> {
        // A panic while the lock was held can only have come from a talc debug assertion; the
        // accounting is updated after talc succeeds, so carrying on is no worse than stopping.
        self.allocator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl EnclaveAllocator for SimHeap {
    /// Fills `info` as OE's `oe_allocator_mallinfo` does; never fails.
    fn mallinfo(&self, info: &mut oe_mallinfo_t) -> oe_result_t {
        *info = SimHeap::mallinfo(self);
        OE_OK
    }
}

impl fmt::Debug for SimHeap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.mallinfo();
        f.debug_struct("SimHeap")
            .field("heap_pages", &self.heap_pages)
            .field("max_total_heap_size", &info.max_total_heap_size)
            .field(
                "current_allocated_heap_size",
                &info.current_allocated_heap_size,
            )
            .field("peak_allocated_heap_size", &info.peak_allocated_heap_size)
            .finish()
    }
}

/// Current and peak byte counts.
///
/// Written only by a thread holding the allocator lock (see [`SimHeap::allocate`] and
/// [`SimHeap::release`]), so each update is a plain load and store; read from anywhere.
#[derive(Debug, Default)]
struct Accounting {
    current: AtomicUsize,
    peak: AtomicUsize,
}

impl Accounting {
    /// Caller holds the allocator lock.
    fn record_allocation(&self, size: usize) {
        // Cannot overflow: the sizes of live blocks fit inside the arena together.
        let current = self.current.load(Ordering::Relaxed) + size;
        self.current.store(current, Ordering::Relaxed);
        if current > self.peak.load(Ordering::Relaxed) {
            self.peak.store(current, Ordering::Relaxed);
        }
    }

    /// Caller holds the allocator lock.
    fn record_free(&self, size: usize) {
        let current = self.current.load(Ordering::Relaxed) - size;
        self.current.store(current, Ordering::Relaxed);
    }

    /// `(current, peak)`. The two loads are not one atomic step, so a read racing an allocation
    /// may see the new `current` with the old `peak`; reporting `max(peak, current)` keeps
    /// `peak >= current` in every answer, and that value is one `peak` is about to take anyway.
    fn snapshot(&self) -> (usize, usize) {
        let current = self.current.load(Ordering::Relaxed);
        let peak = self.peak.load(Ordering::Relaxed).max(current);
        (current, peak)
    }
}

/// The arena: `size` bytes at a page-aligned `base`, inside one zeroed host allocation that is
/// freed on drop.
struct Arena {
    base: NonNull<u8>,
    size: usize,
    /// The host allocation: one page more than `size`, so a page-aligned start fits inside it.
    host: NonNull<u8>,
    host_layout: Layout,
}

impl Arena {
    fn new(size: usize) -> Result<Self, SimError> {
        let unavailable = SimError::ArenaUnavailable { bytes: size };
        // Zeroed, so every byte a block exposes is initialised (see `SimBlock::as_slice`). Asked
        // for with a small alignment on purpose: the host then serves it with `calloc`, which for
        // a large size maps fresh zero pages and skips the memset, so the arena costs no memory
        // until the workload touches it. A page-aligned layout would instead be zeroed by hand,
        // committing the whole arena up front (4 GiB at the cap).
        let host_layout = size
            .checked_add(PAGE_SIZE)
            .and_then(|host_size| Layout::from_size_align(host_size, BLOCK_ALIGN).ok())
            .ok_or(unavailable)?;
        // SAFETY: the layout's size is non-zero (at least one page).
        let host = unsafe { alloc::alloc_zeroed(host_layout) };
        let host = NonNull::new(host).ok_or(SimError::ArenaUnavailable { bytes: size })?;
        // Below PAGE_SIZE, which leaves `size` bytes after it inside the host allocation.
        let offset = (PAGE_SIZE - host.as_ptr().addr() % PAGE_SIZE) % PAGE_SIZE;
        // SAFETY: `offset < PAGE_SIZE`, so `host + offset` stays inside the allocation.
        let base = unsafe { host.add(offset) };
        Ok(Self {
            base,
            size,
            host,
            host_layout,
        })
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: `host` came from `alloc_zeroed(self.host_layout)` in `Arena::new` and is freed
        // only here.
        unsafe { alloc::dealloc(self.host.as_ptr(), self.host_layout) }
    }
}

// SAFETY: the arena is an owned allocation like `Box<[u8]>`; its bytes are only reached through
// the allocator (behind its mutex) or through the `SimBlock`s that own disjoint parts of it.
unsafe impl Send for Arena {}
// SAFETY: as for `Send`: `&Arena` gives no access to the bytes at all.
unsafe impl Sync for Arena {}

/// One live allocation on a [`SimHeap`]; freed (and uncounted) when dropped.
///
/// It owns its bytes as a `Box<[u8]>` would, so it may be moved to and dropped on another thread.
pub struct SimBlock<'h> {
    heap: &'h SimHeap,
    ptr: NonNull<u8>,
    /// The size requested, which is what the accounting counts.
    len: usize,
    /// What the allocator was asked for (`len` rounded up to 1, aligned to `BLOCK_ALIGN`).
    layout: Layout,
}

impl SimBlock<'_> {
    /// The size requested for this block, in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the block was requested with size 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The block's first byte (inside the heap's [`arena`](SimHeap::arena)).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The block's first byte, for writing; valid for [`len`](Self::len) bytes and aligned to
    /// [`BLOCK_ALIGN`].
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The block's bytes. A fresh block holds whatever the arena held there before (zero, or
    /// data and allocator metadata left by earlier blocks), as `malloc`'s memory does.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the allocator gave us `layout.size() >= len` bytes at `ptr`, owned by this block
        // alone until it is dropped. Every byte is initialised: the arena started zeroed and has
        // since only been written with bytes by blocks and with integers and pointers by talc.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The block's bytes, for writing (writing is what makes the host really commit the pages).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only reference to the bytes.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SimBlock<'_> {
    fn drop(&mut self) {
        self.heap.release(self.ptr, self.layout, self.len);
    }
}

impl fmt::Debug for SimBlock<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimBlock")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

// SAFETY: a block uniquely owns its bytes (like `Box<[u8]>`), and the `&SimHeap` it keeps is
// `Send` because `SimHeap` is `Sync`; freeing from another thread goes through the heap's mutex.
unsafe impl Send for SimBlock<'_> {}
// SAFETY: `&SimBlock` only allows reading its bytes and its length.
unsafe impl Sync for SimBlock<'_> {}

/// The heap has no free range large enough for a request: what `malloc` returning NULL looks like
/// here. The ECALL path turns it into `OE_OUT_OF_MEMORY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the simulated enclave heap has no room for {requested} more bytes \
     ({current_allocated} of {max_total_heap_size} bytes allocated)"
)]
pub struct OutOfMemory {
    /// The size that did not fit.
    pub requested: usize,
    /// Bytes allocated when the request failed.
    pub current_allocated: usize,
    /// The heap's size.
    pub max_total_heap_size: usize,
}

impl OutOfMemory {
    /// The OE result an enclave reports for this failure: `OE_OUT_OF_MEMORY`.
    pub const fn oe_result(&self) -> oe_result_t {
        OE_OUT_OF_MEMORY
    }
}
