//! Reading every source at scrape time, safely for an enclave.
//!
//! Following Prometheus' "Writing exporters" advice, sources are read when Prometheus scrapes,
//! not on a timer. An ECALL is not free (and OE's dlmalloc walks the whole heap under its global
//! lock to answer), and it cannot be cancelled, so for each source:
//!
//! - at most one read is in flight, whatever the scrape load: concurrent scrapes wait for the
//!   same read (single flight), and a read that outlives its timeout blocks new reads until it
//!   returns, so blocking threads never pile up;
//! - a read that started less than `min_interval` ago is reused instead of starting another;
//! - each scrape waits at most until the read's deadline (`started + timeout`); past it, the
//!   scrape reports the source as failed with result `timeout`, counted once per read.
//!
//! Reads of different sources run concurrently, each on its own blocking thread.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use enclave_heap_host::{HeapSnapshot, HeapSource, ReadError, SourceKind};
use tokio::sync::watch;

use crate::metrics::ReadTelemetry;

/// Timing rules shared by every source.
#[derive(Debug, Clone, Copy)]
pub struct CollectorOptions {
    /// How long a scrape waits for one read.
    pub timeout: Duration,
    /// Minimum time between the starts of two reads of one source.
    pub min_interval: Duration,
}

/// Why a read produced no snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadFailure {
    /// The source answered with an OE result other than `OE_OK`.
    #[error(transparent)]
    Source(#[from] ReadError),
    /// The read did not finish within `--source.timeout`.
    #[error("no answer within {}", enclave_heap_host::PromDuration(*.0))]
    Timeout(Duration),
    /// The source panicked while reading (a bug in the source, reported instead of crashing).
    #[error("the source panicked while reading: {0}")]
    Panicked(String),
}

impl ReadFailure {
    /// The `result` label of `enclave_heap_read_errors_total`: the OE result name, `timeout` or
    /// `panic`.
    pub fn result_label(&self) -> String {
        match self {
            ReadFailure::Source(error) => error.result().to_string(),
            ReadFailure::Timeout(_) => "timeout".to_owned(),
            ReadFailure::Panicked(_) => "panic".to_owned(),
        }
    }
}

/// What one scrape learned about one source.
#[derive(Debug, Clone)]
pub struct SourceReading {
    /// The source's `enclave` label.
    pub name: Arc<str>,
    /// What kind of source it is.
    pub kind: SourceKind,
    /// The snapshot, or why there is none.
    pub outcome: Result<HeapSnapshot, ReadFailure>,
}

/// Reads all sources for a scrape.
#[derive(Debug)]
pub struct Collector {
    slots: Vec<Arc<SourceSlot>>,
    options: CollectorOptions,
    telemetry: ReadTelemetry,
}

impl Collector {
    /// A collector over `sources` (name, source), recording read errors and durations in
    /// `telemetry`.
    pub fn new(
        sources: Vec<(String, Arc<dyn HeapSource>)>,
        options: CollectorOptions,
        telemetry: ReadTelemetry,
    ) -> Self {
        let slots = sources
            .into_iter()
            .map(|(name, source)| {
                Arc::new(SourceSlot {
                    name: name.into(),
                    kind: source.kind(),
                    source,
                    state: Mutex::new(SlotState::default()),
                })
            })
            .collect();
        Self {
            slots,
            options,
            telemetry,
        }
    }

    /// The sources' names and kinds, in configuration order.
    pub fn sources(&self) -> impl Iterator<Item = (&str, SourceKind)> {
        self.slots.iter().map(|slot| (&*slot.name, slot.kind))
    }

    /// Reads every source (or reuses a fresh read) and returns one reading per source, in
    /// configuration order. Waits at most `timeout` past the oldest in-flight read's start.
    pub async fn collect(&self) -> Vec<SourceReading> {
        // Start (or join) every read first, then wait: the reads run concurrently.
        let pending: Vec<Pending> = self
            .slots
            .iter()
            .map(|slot| slot.begin(&self.options, &self.telemetry))
            .collect();
        let mut readings = Vec::with_capacity(pending.len());
        for (slot, pending) in self.slots.iter().zip(pending) {
            let outcome = match pending {
                Pending::Done(read) => read.outcome.clone(),
                Pending::Wait(flight) => {
                    flight
                        .wait(&self.options, &self.telemetry, &slot.name)
                        .await
                }
            };
            readings.push(SourceReading {
                name: slot.name.clone(),
                kind: slot.kind,
                outcome,
            });
        }
        readings
    }
}

struct SourceSlot {
    name: Arc<str>,
    kind: SourceKind,
    source: Arc<dyn HeapSource>,
    state: Mutex<SlotState>,
}

impl std::fmt::Debug for SourceSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSlot")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct SlotState {
    last: Option<Arc<CompletedRead>>,
    in_flight: Option<Flight>,
}

struct CompletedRead {
    started: Instant,
    outcome: Result<HeapSnapshot, ReadFailure>,
}

/// A read in progress that scrapes can join.
#[derive(Clone)]
struct Flight {
    started: Instant,
    done: watch::Receiver<Option<Arc<CompletedRead>>>,
    /// Who settled the read's fate first: the read itself, or a scrape that gave up on it.
    fate: Arc<AtomicU8>,
}

const RUNNING: u8 = 0;
const COMPLETED: u8 = 1;
const TIMED_OUT: u8 = 2;

enum Pending {
    Done(Arc<CompletedRead>),
    Wait(Flight),
}

impl SourceSlot {
    fn begin(self: &Arc<Self>, options: &CollectorOptions, telemetry: &ReadTelemetry) -> Pending {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = &state.in_flight {
            return Pending::Wait(flight.clone());
        }
        if let Some(last) = &state.last {
            if now.duration_since(last.started) < options.min_interval {
                return Pending::Done(last.clone());
            }
        }
        let (sender, done) = watch::channel(None);
        let flight = Flight {
            started: now,
            done,
            fate: Arc::new(AtomicU8::new(RUNNING)),
        };
        state.in_flight = Some(flight.clone());
        drop(state);

        let slot = Arc::clone(self);
        let fate = Arc::clone(&flight.fate);
        let telemetry = telemetry.clone();
        // The read may block for as long as the enclave takes; it runs to completion even if
        // every scrape has stopped waiting, because an ECALL cannot be cancelled.
        tokio::task::spawn_blocking(move || {
            let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| slot.source.read())) {
                Ok(result) => result.map_err(ReadFailure::from),
                Err(panic) => Err(ReadFailure::Panicked(panic_message(panic.as_ref()))),
            };
            let elapsed = now.elapsed();
            telemetry.observe_duration(&slot.name, elapsed);
            let first_to_settle = fate
                .compare_exchange(RUNNING, COMPLETED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            match &outcome {
                Err(failure) if first_to_settle => telemetry.count_error(&slot.name, failure),
                Err(failure) => {
                    tracing::debug!(enclave = %slot.name, %failure, "late answer of a read already counted as timed out")
                }
                Ok(_) => {}
            }
            if let Err(failure) = &outcome {
                tracing::debug!(enclave = %slot.name, %failure, elapsed_ms = elapsed.as_millis() as u64, "read failed");
            }
            let read = Arc::new(CompletedRead {
                started: now,
                outcome,
            });
            let mut state = slot.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.last = Some(read.clone());
            state.in_flight = None;
            drop(state);
            // Nobody may be waiting any more; that is fine.
            let _ = sender.send(Some(read));
        });
        Pending::Wait(flight)
    }
}

impl Flight {
    async fn wait(
        mut self,
        options: &CollectorOptions,
        telemetry: &ReadTelemetry,
        name: &str,
    ) -> Result<HeapSnapshot, ReadFailure> {
        let deadline = tokio::time::Instant::from_std(self.started + options.timeout);
        match tokio::time::timeout_at(deadline, self.done.wait_for(Option::is_some)).await {
            Ok(Ok(read)) => return completed_outcome(&read),
            Ok(Err(_)) => {
                return Err(ReadFailure::Panicked(
                    "the read task ended without an answer".into(),
                ));
            }
            Err(_elapsed) => {}
        }
        match self
            .fate
            .compare_exchange(RUNNING, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                let failure = ReadFailure::Timeout(options.timeout);
                tracing::warn!(enclave = %name, timeout = %enclave_heap_host::PromDuration(options.timeout), "read timed out; no new read of this source starts until it returns");
                telemetry.count_error(name, &failure);
                Err(failure)
            }
            Err(TIMED_OUT) => Err(ReadFailure::Timeout(options.timeout)),
            // The read completed in the instant between the deadline and now; its answer is
            // about to be published.
            Err(_) => match self.done.wait_for(Option::is_some).await {
                Ok(read) => completed_outcome(&read),
                Err(_) => Err(ReadFailure::Panicked(
                    "the read task ended without an answer".into(),
                )),
            },
        }
    }
}

fn completed_outcome(read: &Option<Arc<CompletedRead>>) -> Result<HeapSnapshot, ReadFailure> {
    match read {
        Some(read) => read.outcome.clone(),
        None => Err(ReadFailure::Panicked(
            "the read task ended without an answer".into(),
        )),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}
