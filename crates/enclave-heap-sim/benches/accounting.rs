//! What the heap's accounting costs: allocation throughput (an alloc + free pair of mixed sizes)
//! of [`SimHeap`] against the same talc arena behind the same mutex with no accounting, from one
//! and from two threads. A third variant keeps the counters with `fetch_add`/`fetch_max` outside
//! the lock, the obvious alternative, to show why `SimHeap` updates them under the lock instead.
//!
//! Run briefly: `cargo bench -p enclave-heap-sim --bench accounting` (about a minute). The budget
//! is accounted throughput within 5% of bare; the closing lines print paired time ratios, which
//! are the numbers to compare against it.

// Setup that cannot proceed should stop the benchmark loudly.
#![allow(clippy::unwrap_used)]

use std::alloc::{self, Layout};
use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use enclave_heap_sim::{BLOCK_ALIGN, PAGE_SIZE, SimHeap};
use talc::DefaultBinning;
use talc::base::Talc;
use talc::source::Manual;

const HEAP_PAGES: usize = 4096;
/// Live blocks per thread: each operation frees the oldest and allocates a new one.
const SLOTS: usize = 256;

/// Mixed sizes: mostly small, some medium, a few large, from a fixed xorshift sequence.
fn sizes(seed: u64) -> Vec<usize> {
    let mut state = seed | 1;
    (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let r = state as usize;
            match r % 20 {
                0 => 4096 + r % 61_440,
                1..=5 => 256 + r % 3840,
                _ => 16 + r % 240,
            }
        })
        .collect()
}

/// A heap under test: allocate returns a block that frees itself on drop.
trait BenchHeap: Sync {
    type Block<'a>: Send
    where
        Self: 'a;
    fn alloc(&self, size: usize) -> Option<Self::Block<'_>>;
}

impl BenchHeap for SimHeap {
    type Block<'a> = enclave_heap_sim::SimBlock<'a>;
    fn alloc(&self, size: usize) -> Option<Self::Block<'_>> {
        self.allocate(size).ok()
    }
}

/// The same arena (obtained the same way) and allocator as `SimHeap`, with optional counters kept
/// outside the lock. Everything but the accounting mirrors `SimHeap`, so that the ratio measures
/// the accounting and not, say, where the arena's pages came from.
struct BareHeap {
    allocator: Mutex<Talc<Manual, DefaultBinning>>,
    counters: Option<(AtomicUsize, AtomicUsize)>,
    max: usize,
    host: NonNull<u8>,
    host_layout: Layout,
}

// SAFETY: the arena is owned like a Box<[u8]> and only reached through the mutex-guarded allocator
// or through the blocks it hands out.
unsafe impl Send for BareHeap {}
// SAFETY: as above.
unsafe impl Sync for BareHeap {}

impl BareHeap {
    fn new(with_atomic_counters: bool) -> Self {
        let max = HEAP_PAGES * PAGE_SIZE;
        let host_layout = Layout::from_size_align(max + PAGE_SIZE, BLOCK_ALIGN).unwrap();
        // SAFETY: non-zero size.
        let host = NonNull::new(unsafe { alloc::alloc_zeroed(host_layout) }).unwrap();
        let offset = (PAGE_SIZE - host.as_ptr().addr() % PAGE_SIZE) % PAGE_SIZE;
        let mut talc = Talc::new(Manual);
        // SAFETY: `offset < PAGE_SIZE` leaves `max` bytes inside the host allocation, which is ours
        // until drop and only talc manages.
        unsafe { talc.claim(host.as_ptr().add(offset), max) }.unwrap();
        Self {
            allocator: Mutex::new(talc),
            counters: with_atomic_counters.then(|| (AtomicUsize::new(0), AtomicUsize::new(0))),
            max,
            host,
            host_layout,
        }
    }
}

impl Drop for BareHeap {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; every block borrowed `self` and is gone.
        unsafe { alloc::dealloc(self.host.as_ptr(), self.host_layout) }
    }
}

struct BareBlock<'a> {
    heap: &'a BareHeap,
    ptr: NonNull<u8>,
    size: usize,
    layout: Layout,
}

// SAFETY: owns its bytes uniquely; freeing goes through the heap's mutex.
unsafe impl Send for BareBlock<'_> {}

impl Drop for BareBlock<'_> {
    fn drop(&mut self) {
        if let Some((current, _)) = &self.heap.counters {
            current.fetch_sub(self.size, Ordering::Relaxed);
        }
        let mut talc = self
            .heap
            .allocator
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // SAFETY: allocated by this talc with this layout, freed once.
        unsafe { talc.deallocate(self.ptr.as_ptr(), self.layout) }
    }
}

impl BenchHeap for BareHeap {
    type Block<'a> = BareBlock<'a>;
    fn alloc(&self, size: usize) -> Option<Self::Block<'_>> {
        if size > self.max {
            return None;
        }
        let layout = Layout::from_size_align(size.max(1), BLOCK_ALIGN).ok()?;
        let ptr = {
            let mut talc = self
                .allocator
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // SAFETY: non-zero size.
            unsafe { talc.allocate(layout) }?
        };
        if let Some((current, peak)) = &self.counters {
            let new = current.fetch_add(size, Ordering::Relaxed) + size;
            peak.fetch_max(new, Ordering::Relaxed);
        }
        Some(BareBlock {
            heap: self,
            ptr,
            size,
            layout,
        })
    }
}

/// `iters` alloc+free pairs on one thread over a ring of live blocks.
fn churn<H: BenchHeap>(heap: &H, sizes: &[usize], iters: u64) {
    let mut ring: Vec<Option<H::Block<'_>>> = (0..SLOTS).map(|_| None).collect();
    for i in 0..iters as usize {
        let slot = i % SLOTS;
        ring[slot] = None;
        ring[slot] = black_box(heap.alloc(sizes[i % sizes.len()]));
    }
}

/// Wall time for `threads` threads each doing `iters` pairs at once.
fn timed<H: BenchHeap>(heap: &H, threads: usize, iters: u64) -> Duration {
    let start = Instant::now();
    if threads == 1 {
        // No spawn on the measured path when there is nothing to run in parallel.
        churn(heap, &sizes(1), iters);
        return start.elapsed();
    }
    thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || churn(heap, &sizes(t as u64 + 1), iters));
        }
    });
    start.elapsed()
}

fn accounting(c: &mut Criterion) {
    for threads in [1, 2] {
        let mut group = c.benchmark_group(format!("alloc_free_{threads}_thread"));
        group.throughput(Throughput::Elements(threads as u64));
        let bare = BareHeap::new(false);
        group.bench_function("bare_talc", |b| {
            b.iter_custom(|iters| timed(&bare, threads, iters))
        });
        let accounted = SimHeap::new(HEAP_PAGES).unwrap();
        group.bench_function("sim_heap", |b| {
            b.iter_custom(|iters| timed(&accounted, threads, iters))
        });
        let outside = BareHeap::new(true);
        group.bench_function("atomics_outside_lock", |b| {
            b.iter_custom(|iters| timed(&outside, threads, iters))
        });
        group.finish();
    }
}

/// Median over rounds of `candidate time / bare time`, the two timed back to back in each round
/// (alternating which goes first), so load from other processes hits both alike. Criterion's
/// separate runs drift apart by more than 5% on a shared machine; this pairing does not.
fn paired_ratio<H: BenchHeap>(bare: &BareHeap, candidate: &H, threads: usize) -> f64 {
    const ROUNDS: usize = 201;
    const OPS: u64 = 10_000;
    let mut ratios: Vec<f64> = (0..ROUNDS)
        .map(|round| {
            let (bare_time, candidate_time) = if round % 2 == 0 {
                let b = timed(bare, threads, OPS);
                (b, timed(candidate, threads, OPS))
            } else {
                let c = timed(candidate, threads, OPS);
                (timed(bare, threads, OPS), c)
            };
            candidate_time.as_secs_f64() / bare_time.as_secs_f64()
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[ROUNDS / 2]
}

fn paired_report() {
    let bare = BareHeap::new(false);
    let accounted = SimHeap::new(HEAP_PAGES).unwrap();
    let outside = BareHeap::new(true);
    for threads in [1, 2] {
        // Warm both arenas' pages and caches first.
        timed(&bare, threads, 200_000);
        timed(&accounted, threads, 200_000);
        println!(
            "paired median time ratio vs bare_talc, {threads} thread(s): sim_heap {:.3}, atomics_outside_lock {:.3}",
            paired_ratio(&bare, &accounted, threads),
            paired_ratio(&bare, &outside, threads),
        );
    }
}

criterion_group! {
    name = benches;
    // Short by default: a shared 2-core machine; pass --measurement-time for more.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = accounting
}

fn main() {
    benches();
    // Only under `cargo bench`: `cargo test --benches` runs this binary without `--bench`.
    if std::env::args().any(|arg| arg == "--bench") {
        paired_report();
    }
    Criterion::default().configure_from_args().final_summary();
}
