//! The workload thread: runs one [`Profile`] against a [`SimHeap`] with real allocations, and
//! [`WorkloadThread`], the handle that stops it promptly.
//!
//! Every tick (10 to 50 ms, a hundredth of the period within those bounds) the thread works out
//! where the profile wants the heap to be from the wall clock, not from a tick count, so a busy
//! machine that delays ticks bends the curve but does not stretch it. Block sizes come from the
//! seeded RNG and scale with the heap (a "unit" of 1/512 of it, blocks between half a unit and two
//! units), so the same profile works from 16 pages to 4 GiB. Each new block gets one write per
//! 4 KiB page so the host commits the memory the heap claims to use.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::PAGE_SIZE;
use crate::config::SimConfig;
use crate::error::SimError;
use crate::heap::{OutOfMemory, SimBlock, SimHeap};
use crate::profile::Profile;

/// Shortest and longest tick.
const MIN_TICK: Duration = Duration::from_millis(10);
const MAX_TICK: Duration = Duration::from_millis(50);

/// Steady: the band it hovers in.
const STEADY_BAND: (f64, f64) = (0.32, 0.38);
/// Sawtooth: where each ramp ends.
const SAWTOOTH_TOP: f64 = 0.75;
/// Spike: the baseline band, the burst's height, when in the period it starts and how long it lasts.
const SPIKE_BASELINE: (f64, f64) = (0.18, 0.22);
const SPIKE_TOP: f64 = 0.85;
const SPIKE_START: f64 = 0.5;
const SPIKE_LENGTH: f64 = 0.15;
/// Share of live blocks freed (and replaced) per tick by the churning profiles.
const CHURN: f64 = 0.05;

/// A running workload thread. Dropping it without [`stop`](Self::stop) detaches the thread, so
/// the owner must call `stop`.
#[derive(Debug)]
pub(crate) struct WorkloadThread {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl WorkloadThread {
    /// Starts `config.profile` on its own thread, or returns `None` for [`Profile::Idle`].
    pub(crate) fn start(heap: Arc<SimHeap>, config: &SimConfig) -> Result<Option<Self>, SimError> {
        if config.profile == Profile::Idle {
            return Ok(None);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let (profile, period, seed) = (config.profile, config.period, config.seed);
        let handle = thread::Builder::new()
            .name(format!("enclave-heap-sim-{profile}"))
            .spawn(move || run(&heap, profile, period, seed, &thread_stop))
            .map_err(|cause| SimError::SpawnWorkload { profile, cause })?;
        Ok(Some(Self { stop, handle }))
    }

    /// Asks the thread to stop, wakes it from its tick wait and joins it. The thread checks the
    /// flag between ticks and never waits longer than one tick, so this returns within about one
    /// tick plus whatever the current tick is doing.
    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.handle.thread().unpark();
        // A panic on the workload thread has already been printed by the panic hook; the heap is
        // still consistent (blocks free themselves while unwinding), so there is nothing to add.
        let _ = self.handle.join();
    }
}

/// The tick for a period: a hundredth of it, kept between 10 and 50 ms.
fn tick_for(period: Duration) -> Duration {
    (period / 100).clamp(MIN_TICK, MAX_TICK)
}

/// Which cycle `elapsed` falls in, and how far through it (0.0 to just under 1.0).
fn cycle_position(elapsed: Duration, period: Duration) -> (u128, f64) {
    let period_ns = period.as_nanos().max(1);
    let elapsed_ns = elapsed.as_nanos();
    let cycle = elapsed_ns / period_ns;
    let phase = (elapsed_ns % period_ns) as f64 / period_ns as f64;
    (cycle, phase)
}

/// The workload thread's body: tick until asked to stop. All blocks are freed when it returns.
fn run(heap: &SimHeap, profile: Profile, period: Duration, seed: u64, stop: &AtomicBool) {
    let tick = tick_for(period);
    let mut workload = Workload::new(heap, profile, period, tick, seed);
    while !stop.load(Ordering::Acquire) {
        workload.step(Instant::now());
        let wake_at = Instant::now() + tick;
        // park_timeout may wake early (spuriously or from `stop`'s unpark): re-check both.
        while !stop.load(Ordering::Acquire) {
            let now = Instant::now();
            if now >= wake_at {
                break;
            }
            thread::park_timeout(wake_at - now);
        }
    }
}

/// A set of live blocks and their total size.
#[derive(Debug, Default)]
struct Pool<'h> {
    blocks: Vec<SimBlock<'h>>,
    held: usize,
}

impl<'h> Pool<'h> {
    /// Allocates random-sized blocks until the pool holds at least `target` bytes. Stops at the
    /// first allocation that does not fit.
    fn grow_to(
        &mut self,
        heap: &'h SimHeap,
        sizes: &mut BlockSizes,
        target: usize,
    ) -> Result<(), OutOfMemory> {
        while self.held < target {
            let mut block = heap.allocate(sizes.next())?;
            touch_pages(&mut block, sizes.rng.random());
            self.held += block.len();
            self.blocks.push(block);
        }
        Ok(())
    }

    /// Frees a random `share` of the blocks (at least one, if there are any).
    fn churn(&mut self, rng: &mut SmallRng, share: f64) {
        let count = ((self.blocks.len() as f64 * share) as usize).max(1);
        for _ in 0..count.min(self.blocks.len()) {
            let index = rng.random_range(0..self.blocks.len());
            let block = self.blocks.swap_remove(index);
            self.held -= block.len();
        }
    }

    /// Frees every block.
    fn clear(&mut self) {
        self.blocks.clear();
        self.held = 0;
    }
}

/// Writes one byte per page (and the last byte) so the host really backs the block with memory,
/// at a fraction of the cost of filling it.
fn touch_pages(block: &mut SimBlock<'_>, value: u8) {
    let bytes = block.as_mut_slice();
    for offset in (0..bytes.len()).step_by(PAGE_SIZE) {
        bytes[offset] = value;
    }
    if let Some(last) = bytes.last_mut() {
        *last = value;
    }
}

/// Random block sizes scaled to the heap.
#[derive(Debug)]
struct BlockSizes {
    rng: SmallRng,
    unit: usize,
}

impl BlockSizes {
    fn new(max_total_heap_size: usize, seed: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            // 64 bytes at the least so that allocator overhead (a 32-byte chunk granule) stays
            // small next to the block even on the smallest heap.
            unit: (max_total_heap_size / 512).max(64),
        }
    }

    fn next(&mut self) -> usize {
        self.rng.random_range(self.unit / 2..=self.unit * 2)
    }
}

/// One profile's state between ticks.
#[derive(Debug)]
struct Workload<'h> {
    heap: &'h SimHeap,
    profile: Profile,
    period: Duration,
    tick: Duration,
    max: usize,
    sizes: BlockSizes,
    /// The steady or baseline set; the growing set for sawtooth and leak.
    main: Pool<'h>,
    /// Spike only: the burst on top of the baseline.
    burst: Pool<'h>,
    /// When the current cycle began (leak restarts its cycle when it runs out of memory).
    cycle_start: Instant,
    /// Sawtooth: the cycle being ramped. Spike: the last cycle that had its burst.
    cycle: Option<u128>,
    /// Spike: when the burst in progress is released.
    burst_until: Option<Instant>,
}

impl<'h> Workload<'h> {
    fn new(
        heap: &'h SimHeap,
        profile: Profile,
        period: Duration,
        tick: Duration,
        seed: u64,
    ) -> Self {
        let max = heap.max_total_heap_size();
        Self {
            heap,
            profile,
            period,
            tick,
            max,
            sizes: BlockSizes::new(max, seed),
            main: Pool::default(),
            burst: Pool::default(),
            cycle_start: Instant::now(),
            cycle: None,
            burst_until: None,
        }
    }

    fn bytes(&self, fraction: f64) -> usize {
        (self.max as f64 * fraction) as usize
    }

    /// Churns the main pool and refills it to a random level inside `band`.
    fn hover(&mut self, band: (f64, f64)) {
        let fraction = self.sizes.rng.random_range(band.0..band.1);
        let target = self.bytes(fraction);
        self.main.churn(&mut self.sizes.rng, CHURN);
        // Out of memory here means the heap cannot hold the band (a tiny heap, or a burst on
        // top): keep what fits and try again next tick.
        let _ = self.main.grow_to(self.heap, &mut self.sizes, target);
    }

    fn step(&mut self, now: Instant) {
        let (cycle, phase) =
            cycle_position(now.saturating_duration_since(self.cycle_start), self.period);
        match self.profile {
            Profile::Idle => {}
            Profile::Steady => self.hover(STEADY_BAND),
            Profile::Sawtooth => {
                if self.cycle != Some(cycle) {
                    self.cycle = Some(cycle);
                    self.main.clear();
                }
                let target = self.bytes(SAWTOOTH_TOP * phase);
                let _ = self.main.grow_to(self.heap, &mut self.sizes, target);
            }
            Profile::Leak => {
                // Aim at the whole heap by the end of the period; the allocator's own metadata
                // guarantees an allocation fails before then.
                let progress = if cycle > 0 { 1.0 } else { phase };
                let target = self.bytes(progress);
                if self
                    .main
                    .grow_to(self.heap, &mut self.sizes, target)
                    .is_err()
                {
                    self.main.clear();
                    self.cycle_start = now;
                }
            }
            Profile::Spike => {
                self.hover(SPIKE_BASELINE);
                match self.burst_until {
                    Some(until) if now >= until => {
                        self.burst.clear();
                        self.burst_until = None;
                    }
                    Some(_) => {}
                    None if phase >= SPIKE_START && self.cycle != Some(cycle) => {
                        self.cycle = Some(cycle);
                        // At least two ticks, so a poller gets to see it however short the period.
                        let length = self.period.mul_f64(SPIKE_LENGTH).max(self.tick * 2);
                        self.burst_until = Some(now + length);
                        let target = self.bytes(SPIKE_TOP).saturating_sub(self.main.held);
                        let _ = self.burst.grow_to(self.heap, &mut self.sizes, target);
                    }
                    None => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_is_a_hundredth_of_the_period_within_bounds() {
        assert_eq!(tick_for(Duration::from_millis(300)), MIN_TICK);
        assert_eq!(tick_for(Duration::from_secs(3)), Duration::from_millis(30));
        assert_eq!(tick_for(Duration::from_secs(60)), MAX_TICK);
        assert_eq!(tick_for(Duration::from_nanos(1)), MIN_TICK);
    }

    #[test]
    fn cycle_position_wraps_each_period() {
        let period = Duration::from_millis(200);
        assert_eq!(cycle_position(Duration::ZERO, period), (0, 0.0));
        assert_eq!(cycle_position(Duration::from_millis(50), period), (0, 0.25));
        assert_eq!(cycle_position(Duration::from_millis(500), period), (2, 0.5));
    }

    #[test]
    fn block_sizes_scale_with_the_heap_and_repeat_with_the_seed() {
        let small = BlockSizes::new(16 * PAGE_SIZE, 7);
        assert_eq!(small.unit, 128);
        let huge = BlockSizes::new(crate::MAX_HEAP_PAGES * PAGE_SIZE, 7);
        assert_eq!(huge.unit, 8 << 20);

        let mut a = BlockSizes::new(1 << 20, 42);
        let mut b = BlockSizes::new(1 << 20, 42);
        for _ in 0..100 {
            let size = a.next();
            assert_eq!(size, b.next());
            assert!((a.unit / 2..=a.unit * 2).contains(&size));
        }
    }

    #[test]
    fn leak_on_the_smallest_heap_runs_out_of_memory_and_starts_over() {
        let heap = SimHeap::new(crate::MIN_HEAP_PAGES).unwrap();
        let period = Duration::from_millis(100);
        let mut workload = Workload::new(&heap, Profile::Leak, period, MIN_TICK, 1);
        let start = workload.cycle_start;
        // Past the end of the period the target is the whole heap, which cannot fit.
        workload.step(start + period * 2);
        assert_eq!(workload.main.held, 0);
        assert_eq!(heap.current_allocated(), 0);
        assert!(heap.peak_allocated() > heap.max_total_heap_size() * 8 / 10);
        assert_eq!(workload.cycle_start, start + period * 2);
    }

    #[test]
    fn pages_of_new_blocks_are_written() {
        let heap = SimHeap::new(64).unwrap();
        let mut block = heap.allocate(3 * PAGE_SIZE + 1).unwrap();
        touch_pages(&mut block, 0xA5);
        let bytes = block.as_slice();
        for offset in [0, PAGE_SIZE, 2 * PAGE_SIZE, 3 * PAGE_SIZE] {
            assert_eq!(bytes[offset], 0xA5);
        }
    }
}
