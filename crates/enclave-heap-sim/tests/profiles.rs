//! Each workload profile moves a real heap the way its documentation says, within a short period.
//!
//! The checks look for events (a level reached, then a drop) with generous deadlines rather than
//! timing anything, so a busy machine makes them slower, not flaky.

// Helpers outside #[test] functions unwrap too: in a test, a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use enclave_heap_sim::{Profile, SimConfig, SimulatedEnclave};

const PERIOD: Duration = Duration::from_millis(300);
/// Long enough for several periods even when ticks are late on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(5);

fn start(profile: Profile) -> SimulatedEnclave {
    SimulatedEnclave::new(SimConfig {
        heap_pages: 256,
        profile,
        period: PERIOD,
        seed: 3,
        ..SimConfig::default()
    })
    .unwrap()
}

/// The share of the heap currently allocated.
fn level(enclave: &SimulatedEnclave) -> f64 {
    let heap = enclave.heap();
    heap.current_allocated() as f64 / heap.max_total_heap_size() as f64
}

/// Samples the level every millisecond, passing each sample to `check`, until `check` returns
/// true (returns true) or the deadline passes (returns false).
fn watch(enclave: &SimulatedEnclave, mut check: impl FnMut(f64) -> bool) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if check(level(enclave)) {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Waits for the level to pass the given thresholds in order: `(above, x)` waits for a sample
/// above `x`, `(below, x)` for one below `x`. Also asserts every sample stays at or under `ceiling`.
fn passes_through(enclave: &SimulatedEnclave, steps: &[(bool, f64)], ceiling: f64) -> bool {
    let mut next = 0;
    let mut highest = 0.0f64;
    let reached = watch(enclave, |level| {
        highest = highest.max(level);
        let (above, threshold) = steps[next];
        if (above && level > threshold) || (!above && level < threshold) {
            next += 1;
        }
        next == steps.len()
    });
    assert!(
        highest <= ceiling,
        "level reached {highest}, above {ceiling}"
    );
    reached
}

const ABOVE: bool = true;
const BELOW: bool = false;

#[test]
fn idle_allocates_nothing() {
    let enclave = start(Profile::Idle);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(enclave.heap().current_allocated(), 0);
    assert_eq!(enclave.heap().peak_allocated(), 0);
}

#[test]
fn steady_hovers_between_30_and_40_percent_with_churn() {
    let enclave = start(Profile::Steady);
    assert!(
        watch(&enclave, |level| level > 0.30),
        "steady never reached 30%"
    );
    let (mut low, mut high) = (1.0f64, 0.0f64);
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        let level = level(&enclave);
        low = low.min(level);
        high = high.max(level);
        thread::sleep(Duration::from_millis(1));
    }
    assert!(
        low >= 0.28 && high <= 0.42,
        "steady left its band: {low}..{high}"
    );
    assert!(high > low, "steady did not churn");
}

#[test]
fn sawtooth_rises_to_75_percent_and_falls_back() {
    let enclave = start(Profile::Sawtooth);
    let steps = [(ABOVE, 0.5), (BELOW, 0.1), (ABOVE, 0.5)];
    assert!(
        passes_through(&enclave, &steps, 0.80),
        "no rise, fall and rise again"
    );
}

#[test]
fn leak_grows_until_out_of_memory_then_starts_over() {
    let enclave = start(Profile::Leak);
    let steps = [(ABOVE, 0.5), (BELOW, 0.2), (ABOVE, 0.5)];
    assert!(
        passes_through(&enclave, &steps, 1.0),
        "no growth, drop and regrowth"
    );
    // It only starts over when an allocation fails, which is close to full.
    let heap = enclave.heap();
    assert!(heap.peak_allocated() > heap.max_total_heap_size() * 85 / 100);
}

#[test]
fn spike_bursts_above_60_percent_from_a_low_baseline_and_releases() {
    let enclave = start(Profile::Spike);
    let steps = [(ABOVE, 0.15), (ABOVE, 0.6), (BELOW, 0.3)];
    // The baseline keeps churning under the burst, so the total may sit a few points above 85%.
    assert!(
        passes_through(&enclave, &steps, 0.95),
        "no baseline, spike and release"
    );
}

#[test]
fn drop_stops_every_workload_promptly() {
    for profile in Profile::ALL {
        // A long period gives the longest tick (50 ms): Drop must not wait for a cycle to end.
        let enclave = SimulatedEnclave::new(SimConfig {
            heap_pages: 64,
            profile,
            period: Duration::from_secs(3600),
            ..SimConfig::default()
        })
        .unwrap();
        thread::sleep(Duration::from_millis(20));
        let (dropped, done) = mpsc::channel();
        thread::spawn(move || {
            drop(enclave);
            let _ = dropped.send(());
        });
        // A hang check, not a performance bound.
        done.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("dropping a {profile} enclave hung"));
    }
}
