//! The heap on its own: arena size, exact accounting, out-of-memory, block placement, threads.

// Helpers outside #[test] functions unwrap too: in a test, a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, mpsc};
use std::thread;

use enclave_heap_sim::{
    BLOCK_ALIGN, MAX_HEAP_PAGES, MIN_HEAP_PAGES, PAGE_SIZE, SimBlock, SimError, SimHeap,
};
use enclave_heap_trusted::EnclaveAllocator;
use openenclave_sys::{OE_OK, OE_OUT_OF_MEMORY, oe_mallinfo_t};
use proptest::prelude::*;

/// Deterministic sizes without pulling an RNG into the test: a small xorshift.
fn sizes(seed: u64, count: usize, max: usize) -> Vec<usize> {
    let mut state = seed | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state as usize) % max
        })
        .collect()
}

/// Fills a block with a pattern derived from `tag`, so overlaps or stray writes show up.
fn stamp(block: &mut SimBlock<'_>, tag: usize) {
    for (offset, byte) in block.as_mut_slice().iter_mut().enumerate() {
        *byte = (tag.wrapping_mul(31).wrapping_add(offset)) as u8;
    }
}

fn stamped(block: &SimBlock<'_>, tag: usize) -> bool {
    block
        .as_slice()
        .iter()
        .enumerate()
        .all(|(offset, byte)| *byte == (tag.wrapping_mul(31).wrapping_add(offset)) as u8)
}

#[test]
fn arena_is_exactly_heap_pages_times_4096() {
    for heap_pages in [MIN_HEAP_PAGES, 17, 256, 4096, 65_536, MAX_HEAP_PAGES] {
        let heap = SimHeap::new(heap_pages).unwrap();
        let arena = heap.arena();
        assert_eq!(heap.heap_pages(), heap_pages);
        assert_eq!(heap.max_total_heap_size(), heap_pages * PAGE_SIZE);
        assert_eq!(
            arena.end as usize - arena.start as usize,
            heap_pages * PAGE_SIZE
        );
        assert_eq!(arena.start as usize % PAGE_SIZE, 0, "arena is page-aligned");
        assert_eq!(
            heap.mallinfo(),
            oe_mallinfo_t {
                max_total_heap_size: heap_pages * PAGE_SIZE,
                current_allocated_heap_size: 0,
                peak_allocated_heap_size: 0,
            }
        );
    }
}

#[test]
fn heap_pages_outside_the_limits_are_refused() {
    assert!(matches!(
        SimHeap::new(MIN_HEAP_PAGES - 1),
        Err(SimError::HeapTooSmall {
            heap_pages: 15,
            min: 16
        })
    ));
    assert!(matches!(
        SimHeap::new(0),
        Err(SimError::HeapTooSmall { heap_pages: 0, .. })
    ));
    assert!(matches!(
        SimHeap::new(MAX_HEAP_PAGES + 1),
        Err(SimError::HeapTooLarge { .. })
    ));
}

#[test]
fn accounting_is_exact_for_a_known_sequence() {
    let heap = SimHeap::new(64).unwrap();
    let check = |current: usize, peak: usize| {
        assert_eq!(heap.current_allocated(), current);
        assert_eq!(heap.peak_allocated(), peak);
        let info = heap.mallinfo();
        assert_eq!(info.current_allocated_heap_size, current);
        assert_eq!(info.peak_allocated_heap_size, peak);
    };
    let a = heap.allocate(100).unwrap();
    check(100, 100);
    let b = heap.allocate(200).unwrap();
    check(300, 300);
    let empty = heap.allocate(0).unwrap();
    assert!(empty.is_empty());
    check(300, 300);
    let c = heap.allocate(4000).unwrap();
    check(4300, 4300);
    drop(b);
    check(4100, 4300);
    let d = heap.allocate(50).unwrap();
    check(4150, 4300);
    drop(c);
    check(150, 4300);
    let e = heap.allocate(5000).unwrap();
    check(5150, 5150);
    drop((a, d, e, empty));
    check(0, 5150);
}

#[test]
fn out_of_memory_when_full_and_recovery_after_a_free() {
    let heap = SimHeap::new(64).unwrap();
    let max = heap.max_total_heap_size();
    // Never fits: the whole arena, more than it, or a size no layout can describe.
    for size in [max, max + 1, usize::MAX] {
        let error = heap.allocate(size).unwrap_err();
        assert_eq!(error.requested, size);
        assert_eq!(error.oe_result(), OE_OUT_OF_MEMORY);
    }

    let mut blocks = Vec::new();
    let error = loop {
        match heap.allocate(1024) {
            Ok(block) => blocks.push(block),
            Err(error) => break error,
        }
    };
    let full = heap.current_allocated();
    assert_eq!(full, blocks.len() * 1024);
    // talc's metadata and 8-byte chunk tails (rounded to 32) are the only overhead.
    assert!(full > max * 9 / 10, "only {full} of {max} bytes usable");
    assert!(full < max);
    assert_eq!(error.requested, 1024);
    assert_eq!(error.current_allocated, full);
    assert_eq!(error.max_total_heap_size, max);
    assert!(error.to_string().contains("no room for 1024 more bytes"));
    assert_eq!(heap.peak_allocated(), full);

    // A failed allocation changes nothing; a free makes room again.
    assert!(heap.allocate(1024).is_err());
    assert_eq!(heap.current_allocated(), full);
    blocks.swap_remove(blocks.len() / 2);
    let again = heap.allocate(1024).unwrap();
    assert_eq!(heap.current_allocated(), full);
    drop(again);
    blocks.clear();
    assert_eq!(heap.current_allocated(), 0);
    assert_eq!(heap.peak_allocated(), full);
}

#[test]
fn blocks_are_inside_the_arena_aligned_and_disjoint() {
    let heap = SimHeap::new(256).unwrap();
    let arena = heap.arena();
    let mut blocks: Vec<(usize, SimBlock<'_>)> = Vec::new();
    let verify = |blocks: &[(usize, SimBlock<'_>)]| {
        let mut ranges: Vec<(usize, usize)> = blocks
            .iter()
            .map(|(tag, block)| {
                assert!(stamped(block, *tag), "block {tag} was overwritten");
                let start = block.as_ptr() as usize;
                assert_eq!(start % BLOCK_ALIGN, 0);
                assert!(arena.start as usize <= start);
                assert!(start + block.len() <= arena.end as usize);
                (start, start + block.len())
            })
            .collect();
        ranges.sort_unstable();
        for pair in ranges.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "{:x?} overlaps {:x?}",
                pair[0],
                pair[1]
            );
        }
    };

    for (tag, size) in sizes(7, 300, 3000).into_iter().enumerate() {
        let mut block = heap.allocate(size).unwrap();
        stamp(&mut block, tag);
        blocks.push((tag, block));
    }
    verify(&blocks);
    // Free every other block and fill the holes with new ones of other sizes.
    let mut index = 0;
    blocks.retain(|_| {
        index += 1;
        index % 2 == 0
    });
    for (tag, size) in sizes(8, 150, 2000).into_iter().enumerate() {
        let mut block = heap.allocate(size).unwrap();
        stamp(&mut block, 1000 + tag);
        blocks.push((1000 + tag, block));
    }
    verify(&blocks);
    let live: usize = blocks.iter().map(|(_, block)| block.len()).sum();
    assert_eq!(heap.current_allocated(), live);
}

#[test]
fn blocks_can_be_freed_on_another_thread() {
    let heap = SimHeap::new(64).unwrap();
    let block = heap.allocate(777).unwrap();
    thread::scope(|scope| {
        scope.spawn(move || drop(block));
    });
    assert_eq!(heap.current_allocated(), 0);
    assert_eq!(heap.peak_allocated(), 777);
}

#[test]
fn concurrent_churn_keeps_current_exact_and_peak_above_every_reading() {
    const THREADS: usize = 4;
    let heap = SimHeap::new(1024).unwrap();
    let done = AtomicBool::new(false);
    let highest_seen = AtomicUsize::new(0);
    thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Acquire) {
                let info = heap.mallinfo();
                assert!(info.current_allocated_heap_size <= info.peak_allocated_heap_size);
                assert!(info.peak_allocated_heap_size <= info.max_total_heap_size);
                highest_seen.fetch_max(info.current_allocated_heap_size, Ordering::Relaxed);
            }
        });
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let heap = &heap;
                scope.spawn(move || {
                    let mut ring: Vec<Option<SimBlock<'_>>> = (0..32).map(|_| None).collect();
                    for (i, size) in sizes(t as u64 + 1, 3000, 2048).into_iter().enumerate() {
                        ring[i % 32] = Some(heap.allocate(size).unwrap());
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        done.store(true, Ordering::Release);
    });
    assert_eq!(heap.current_allocated(), 0);
    assert!(heap.peak_allocated() >= highest_seen.load(Ordering::Relaxed));
    assert!(heap.peak_allocated() > 0);
}

#[test]
fn concurrent_peak_is_exact_when_every_thread_holds_its_blocks_at_once() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 20;
    let heap = SimHeap::new(1024).unwrap();
    let barrier = Barrier::new(THREADS);
    let (totals, round_totals) = mpsc::channel();
    thread::scope(|scope| {
        for t in 0..THREADS {
            let (heap, barrier, totals) = (&heap, &barrier, totals.clone());
            scope.spawn(move || {
                for round in 0..ROUNDS {
                    let sizes = sizes((t * ROUNDS + round) as u64 + 1, 20, 1000);
                    let blocks: Vec<_> = sizes.iter().map(|&s| heap.allocate(s).unwrap()).collect();
                    totals.send((round, sizes.iter().sum::<usize>())).unwrap();
                    // Everyone holds their blocks here, so the sum of this round is live at once.
                    barrier.wait();
                    drop(blocks);
                    // Nobody allocates the next round before everyone has freed this one.
                    barrier.wait();
                }
            });
        }
    });
    drop(totals);
    let mut per_round = [0usize; ROUNDS];
    for (round, total) in round_totals {
        per_round[round] += total;
    }
    assert_eq!(heap.current_allocated(), 0);
    assert_eq!(heap.peak_allocated(), per_round.into_iter().max().unwrap());
}

#[test]
fn the_trusted_crate_sees_the_same_figures() {
    let heap = SimHeap::new(32).unwrap();
    let _block = heap.allocate(500).unwrap();
    let mut info = oe_mallinfo_t::default();
    assert_eq!(EnclaveAllocator::mallinfo(&heap, &mut info), OE_OK);
    assert_eq!(info, heap.mallinfo());
    assert_eq!(info.current_allocated_heap_size, 500);
}

#[derive(Debug, Clone)]
enum Op {
    Allocate(usize),
    /// Free the live block at this index, modulo the number live.
    Free(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..4096).prop_map(Op::Allocate),
        2 => any::<usize>().prop_map(Op::Free),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Against a model: current is the sum of live sizes and peak its running maximum after
    /// every step, and no block's bytes are disturbed by the others.
    #[test]
    fn accounting_matches_a_model(ops in prop::collection::vec(op(), 1..200)) {
        // 200 blocks of < 4 KiB plus overhead fit in 2 MiB, so no allocation may fail.
        let heap = SimHeap::new(512).unwrap();
        let mut live: Vec<(usize, SimBlock<'_>)> = Vec::new();
        let (mut sum, mut running_max) = (0usize, 0usize);
        for (tag, op) in ops.into_iter().enumerate() {
            match op {
                Op::Allocate(size) => {
                    let mut block = heap.allocate(size).unwrap();
                    stamp(&mut block, tag);
                    live.push((tag, block));
                    sum += size;
                }
                Op::Free(index) if !live.is_empty() => {
                    let (_, block) = live.swap_remove(index % live.len());
                    sum -= block.len();
                }
                Op::Free(_) => {}
            }
            running_max = running_max.max(sum);
            prop_assert_eq!(heap.current_allocated(), sum);
            prop_assert_eq!(heap.peak_allocated(), running_max);
        }
        for (tag, block) in &live {
            prop_assert!(stamped(block, *tag));
        }
        drop(live);
        prop_assert_eq!(heap.current_allocated(), 0);
        prop_assert_eq!(heap.peak_allocated(), running_max);
    }
}
