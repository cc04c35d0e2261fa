//! Snapshots the enclave pushes by OCALL, and the fallback that serves them when an ECALL cannot
//! run.
//!
//! An ECALL needs a free enclave thread (TCS). When all `NumTCS` are busy, which is exactly when
//! a loaded service is most interesting to watch, the ECALL fails at once with
//! `OE_OUT_OF_THREADS`. An enclave that calls `publish()` from its own threads keeps a recent
//! snapshot on the host; [`PushFallback`] serves it in that case if it is younger than
//! `max_age`, marked as pushed so its age is visible. Any other failure is reported as is: a
//! pushed snapshot must not hide an aborting enclave.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openenclave_sys::{OE_OUT_OF_THREADS, oe_mallinfo_t};

use crate::error::ReadError;
use crate::snapshot::{HeapSnapshot, SnapshotOrigin};
use crate::source::{HeapSource, SourceKind};

/// How old a pushed snapshot may be and still stand in for a failed ECALL, unless configured.
pub const DEFAULT_PUSH_MAX_AGE: Duration = Duration::from_secs(30);

/// The latest snapshot one enclave pushed.
#[derive(Debug, Default)]
pub struct PushSlot {
    latest: Mutex<Option<HeapSnapshot>>,
}

impl PushSlot {
    /// An empty slot.
    pub const fn new() -> Self {
        Self {
            latest: Mutex::new(None),
        }
    }

    /// Records a pushed snapshot, taken now.
    pub fn push(&self, info: &oe_mallinfo_t) {
        let snapshot = HeapSnapshot::from_mallinfo(info, SnapshotOrigin::OcallPush);
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(snapshot);
    }

    /// The latest pushed snapshot, if any.
    pub fn latest(&self) -> Option<HeapSnapshot> {
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A source whose `OE_OUT_OF_THREADS` failures are answered by a recent enough push.
#[derive(Debug)]
pub struct PushFallback<S> {
    source: S,
    pushes: Arc<PushSlot>,
    max_age: Duration,
}

impl<S: HeapSource> PushFallback<S> {
    /// Wraps `source`; pushes land in `pushes`.
    pub fn new(source: S, pushes: Arc<PushSlot>, max_age: Duration) -> Self {
        Self {
            source,
            pushes,
            max_age,
        }
    }

    /// The wrapped source.
    pub fn inner(&self) -> &S {
        &self.source
    }

    /// Where pushes for this source land.
    pub fn pushes(&self) -> &Arc<PushSlot> {
        &self.pushes
    }
}

impl<S: HeapSource> HeapSource for PushFallback<S> {
    fn kind(&self) -> SourceKind {
        self.source.kind()
    }

    fn read(&self) -> Result<HeapSnapshot, ReadError> {
        match self.source.read() {
            Err(ReadError::Ecall(result)) if result.0 == OE_OUT_OF_THREADS => {
                match self.pushes.latest() {
                    Some(pushed) if pushed.taken_at.elapsed() <= self.max_age => Ok(pushed),
                    _ => Err(ReadError::Ecall(result)),
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::thread::sleep;

    use super::*;
    use crate::SimulatedSource;
    use enclave_heap_sim::{Profile, SimConfig};
    use openenclave_sys::OE_ENCLAVE_ABORTING;

    fn sim(fail: Option<u32>) -> SimulatedSource {
        SimulatedSource::start(SimConfig {
            heap_pages: 32,
            profile: Profile::Idle,
            fail,
            ..SimConfig::default()
        })
        .unwrap()
    }

    fn info(current: usize) -> oe_mallinfo_t {
        oe_mallinfo_t {
            max_total_heap_size: 32 * 4096,
            current_allocated_heap_size: current,
            peak_allocated_heap_size: current,
        }
    }

    #[test]
    fn a_successful_pull_wins_over_a_push() {
        let slot = Arc::new(PushSlot::new());
        slot.push(&info(1000));
        let source = PushFallback::new(sim(None), slot, Duration::from_secs(30));
        let snapshot = source.read().unwrap();
        assert_eq!(snapshot.origin, SnapshotOrigin::Ecall);
        assert_eq!(snapshot.current_allocated_heap_size, 24);
    }

    #[test]
    fn a_recent_push_stands_in_for_out_of_threads_and_an_old_one_does_not() {
        let slot = Arc::new(PushSlot::new());
        let source = PushFallback::new(
            sim(Some(OE_OUT_OF_THREADS)),
            Arc::clone(&slot),
            Duration::from_millis(100),
        );
        assert_eq!(
            source.read().unwrap_err().result().0,
            OE_OUT_OF_THREADS,
            "no push yet"
        );
        slot.push(&info(1000));
        let snapshot = source.read().unwrap();
        assert_eq!(snapshot.origin, SnapshotOrigin::OcallPush);
        assert_eq!(snapshot.current_allocated_heap_size, 1000);
        sleep(Duration::from_millis(150));
        assert_eq!(
            source.read().unwrap_err().result().0,
            OE_OUT_OF_THREADS,
            "push too old"
        );
    }

    #[test]
    fn other_failures_are_never_hidden() {
        let slot = Arc::new(PushSlot::new());
        slot.push(&info(1000));
        let source = PushFallback::new(
            sim(Some(OE_ENCLAVE_ABORTING)),
            slot,
            Duration::from_secs(30),
        );
        assert_eq!(source.read().unwrap_err().result().0, OE_ENCLAVE_ABORTING);
    }
}
