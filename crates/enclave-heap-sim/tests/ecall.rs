//! The ECALL as the host sees it: figures, the marshalling buffer, fault injection, publishing.

// Helpers outside #[test] functions unwrap too: in a test, a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};
use std::{mem, thread};

use enclave_heap_sim::{PAGE_SIZE, Profile, SimConfig, SimError, SimHeap, SimulatedEnclave};
use openenclave_sys::{OE_FAILURE, OE_OK, OE_OUT_OF_MEMORY, OE_OUT_OF_THREADS, oe_mallinfo_t};

const SENTINEL: oe_mallinfo_t = oe_mallinfo_t {
    max_total_heap_size: 1,
    current_allocated_heap_size: 2,
    peak_allocated_heap_size: 3,
};

fn enclave(config: SimConfig) -> SimulatedEnclave {
    SimulatedEnclave::new(config).unwrap()
}

fn idle(heap_pages: usize) -> SimConfig {
    SimConfig {
        heap_pages,
        profile: Profile::Idle,
        ..SimConfig::default()
    }
}

#[test]
fn simulated_types_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SimulatedEnclave>();
    send_sync::<SimHeap>();
    send_sync::<enclave_heap_sim::SimBlock<'static>>();
}

#[test]
fn an_idle_read_counts_only_its_own_marshalling_buffer() {
    let enclave = enclave(idle(64));
    let mut info = SENTINEL;
    assert_eq!(enclave.ecall_mallinfo(&mut info), OE_OK);
    let buffer = mem::size_of::<oe_mallinfo_t>();
    assert_eq!(buffer, 24);
    assert_eq!(
        info,
        oe_mallinfo_t {
            max_total_heap_size: 64 * PAGE_SIZE,
            current_allocated_heap_size: buffer,
            peak_allocated_heap_size: buffer,
        }
    );
    // The buffer is gone after the call, and the peak remembers it.
    assert_eq!(enclave.heap().current_allocated(), 0);
    assert_eq!(enclave.heap().peak_allocated(), buffer);
}

#[test]
fn concurrent_reads_see_one_or_two_buffers() {
    let enclave = enclave(idle(64));
    thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..500 {
                    let mut info = oe_mallinfo_t::default();
                    assert_eq!(enclave.ecall_mallinfo(&mut info), OE_OK);
                    assert!([24, 48].contains(&info.current_allocated_heap_size));
                    assert!(info.peak_allocated_heap_size <= 48);
                }
            });
        }
    });
    assert_eq!(enclave.heap().current_allocated(), 0);
}

#[test]
fn reads_under_a_running_workload_are_consistent() {
    let enclave = enclave(SimConfig {
        heap_pages: 256,
        profile: Profile::Sawtooth,
        period: Duration::from_millis(100),
        ..SimConfig::default()
    });
    let deadline = Instant::now() + Duration::from_millis(300);
    let mut reads = 0;
    while Instant::now() < deadline || reads < 100 {
        let mut info = oe_mallinfo_t::default();
        assert_eq!(enclave.ecall_mallinfo(&mut info), OE_OK);
        assert_eq!(info.max_total_heap_size, 256 * PAGE_SIZE);
        assert!(
            info.current_allocated_heap_size >= 24,
            "the read's own buffer is counted"
        );
        assert!(info.current_allocated_heap_size <= info.peak_allocated_heap_size);
        assert!(info.peak_allocated_heap_size <= info.max_total_heap_size);
        reads += 1;
    }
}

#[test]
fn fail_returns_its_result_and_writes_nothing() {
    let enclave = enclave(SimConfig {
        fail: Some(OE_OUT_OF_THREADS),
        ..idle(64)
    });
    let mut info = SENTINEL;
    assert_eq!(enclave.ecall_mallinfo(&mut info), OE_OUT_OF_THREADS);
    assert_eq!(info, SENTINEL);
    // Like a real ECALL refused for want of a thread, it never reached the enclave heap.
    assert_eq!(enclave.heap().peak_allocated(), 0);
}

#[test]
fn delay_comes_before_the_answer_and_before_a_failure() {
    let delay = Duration::from_millis(50);
    let slow = enclave(SimConfig {
        delay: Some(delay),
        ..idle(64)
    });
    let started = Instant::now();
    let mut info = oe_mallinfo_t::default();
    assert_eq!(slow.ecall_mallinfo(&mut info), OE_OK);
    assert!(started.elapsed() >= delay);
    assert_eq!(info.max_total_heap_size, 64 * PAGE_SIZE);

    let slow_failure = enclave(SimConfig {
        delay: Some(delay),
        fail: Some(OE_FAILURE),
        ..idle(64)
    });
    let started = Instant::now();
    assert_eq!(slow_failure.ecall_mallinfo(&mut info), OE_FAILURE);
    assert!(started.elapsed() >= delay);
}

#[test]
fn a_full_heap_fails_the_read_with_out_of_memory() {
    let enclave = enclave(idle(16));
    let heap = enclave.heap();
    // Fill with large blocks, then with the smallest ones until not even a minimal chunk is left.
    let mut blocks = Vec::new();
    for size in [4096, 256, 1] {
        while let Ok(block) = heap.allocate(size) {
            blocks.push(block);
        }
    }
    let mut info = SENTINEL;
    assert_eq!(enclave.ecall_mallinfo(&mut info), OE_OUT_OF_MEMORY);
    assert_eq!(info, SENTINEL);
    blocks.pop();
    assert_eq!(enclave.ecall_mallinfo(&mut info), OE_OK);
    assert_eq!(
        info.current_allocated_heap_size,
        heap.current_allocated() + 24
    );
}

#[test]
fn publish_pushes_the_current_figures_and_returns_the_push_result() {
    let enclave = enclave(idle(32));
    let _block = enclave.heap().allocate(1000).unwrap();
    let mut pushed = None;
    let result = enclave.publish(|info| {
        pushed = Some(*info);
        OE_OK
    });
    assert_eq!(result, OE_OK);
    assert_eq!(pushed, Some(enclave.heap().mallinfo()));
    assert_eq!(enclave.publish(|_| OE_FAILURE), OE_FAILURE);
}

#[test]
fn new_refuses_a_bad_configuration() {
    let error = SimulatedEnclave::new(SimConfig {
        heap_pages: 0,
        ..SimConfig::default()
    })
    .unwrap_err();
    assert!(matches!(
        error,
        SimError::HeapTooSmall { heap_pages: 0, .. }
    ));
    let error = SimulatedEnclave::new(SimConfig {
        fail: Some(OE_OK),
        ..SimConfig::default()
    })
    .unwrap_err();
    assert!(matches!(error, SimError::FailIsOk));
}

#[test]
fn config_is_kept() {
    let config = SimConfig {
        seed: 99,
        ..idle(20)
    };
    assert_eq!(enclave(config.clone()).config(), &config);
}

#[test]
fn pushes_arrive_at_the_target_even_when_every_ecall_fails() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let received = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let target: enclave_heap_sim::PushTarget = {
        let received = Arc::clone(&received);
        let count = Arc::clone(&count);
        Arc::new(move |info: &oe_mallinfo_t| {
            received.lock().unwrap().push(*info);
            count.fetch_add(1, Ordering::SeqCst);
            OE_OK
        })
    };
    let config = SimConfig {
        heap_pages: 64,
        profile: Profile::Idle,
        fail: Some(OE_OUT_OF_THREADS),
        push: Some(Duration::from_millis(20)),
        ..SimConfig::default()
    };
    let enclave = SimulatedEnclave::with_push_target(config, target).unwrap();
    let mut out = oe_mallinfo_t::default();
    assert_eq!(enclave.ecall_mallinfo(&mut out), OE_OUT_OF_THREADS);
    let deadline = Instant::now() + Duration::from_secs(5);
    while count.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "fewer than 3 pushes in 5 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(enclave);
    let after_drop = count.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(
        count.load(Ordering::SeqCst),
        after_drop,
        "pushes continued after drop"
    );
    for info in received.lock().unwrap().iter() {
        assert_eq!(info.max_total_heap_size, 64 * 4096);
        assert_eq!(info.current_allocated_heap_size, 0);
    }
}

#[test]
fn push_needs_a_target_and_a_sane_interval() {
    let config = SimConfig {
        push: Some(Duration::from_millis(100)),
        ..SimConfig::default()
    };
    assert!(matches!(
        SimulatedEnclave::new(config),
        Err(SimError::NoPushTarget)
    ));
    let config = SimConfig {
        push: Some(Duration::from_millis(1)),
        ..SimConfig::default()
    };
    assert!(matches!(
        config.validate(),
        Err(SimError::PushTooOften { .. })
    ));
}
