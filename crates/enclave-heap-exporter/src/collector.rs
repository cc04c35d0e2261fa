//! Reading every source at scrape time.
//!
//! Following Prometheus' "Writing exporters" advice, sources are read when Prometheus scrapes,
//! not on a timer. Each source sits behind a [`Coalescer`] from `enclave-heap-host`: at most one
//! read in flight per source however many scrapes arrive, a read younger than
//! `--source.min-interval` reused, and every scrape bounded by `--source.timeout` from the
//! read's start. All sources are started first and then awaited, so they are read concurrently
//! and a scrape takes as long as the slowest source, not the sum.
//!
//! Read errors are counted once per read (not per scrape that saw them), by result label; read
//! durations are observed when a read completes, including reads that completed after their
//! scrape gave up on them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use enclave_heap_host::ReadFailure;
use enclave_heap_host::coalesce::{Coalescer, PendingRead, ReadPolicy, ReadReport, read_blocking};
use enclave_heap_host::{HeapSnapshot, HeapSource};

use crate::metrics::ReadTelemetry;

/// Timing rules shared by every source.
#[derive(Debug, Clone, Copy)]
pub struct CollectorOptions {
    /// How long a scrape waits for one read.
    pub timeout: Duration,
    /// Minimum time between the starts of two reads of one source.
    pub min_interval: Duration,
}

/// What one scrape learned about one enclave.
#[derive(Debug, Clone)]
pub struct SourceReading {
    /// The enclave's `enclave` label.
    pub name: Arc<str>,
    /// The `source` label of `enclave_heap_info`: `simulated`, `openenclave` or `agent`.
    pub kind: &'static str,
    /// The snapshot, or why there is none.
    pub outcome: Result<HeapSnapshot, ReadFailure>,
}

/// A future that reads one snapshot.
pub type SnapshotFuture = Pin<Box<dyn Future<Output = Result<HeapSnapshot, ReadFailure>> + Send>>;

/// Several enclaves read in one go (an agent's `/enclaves`): each name with its own outcome.
pub type Listing = Vec<(String, Result<HeapSnapshot, ReadFailure>)>;

/// A future that reads a [`Listing`].
pub type ListingFuture = Pin<Box<dyn Future<Output = Result<Listing, ReadFailure>> + Send>>;

/// Something the collector can read: a name, a kind and a way to start one read.
pub struct CollectorSource {
    name: Arc<str>,
    kind: &'static str,
    start: Start,
}

enum Start {
    Single(Arc<dyn Fn() -> SnapshotFuture + Send + Sync>),
    Listing(Arc<dyn Fn() -> ListingFuture + Send + Sync>),
}

impl std::fmt::Debug for CollectorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorSource")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl CollectorSource {
    /// A blocking (ECALL-backed or simulated) source, read on the blocking thread pool.
    pub fn blocking(name: impl Into<Arc<str>>, source: Arc<dyn HeapSource>) -> Self {
        Self {
            name: name.into(),
            kind: source.kind().label(),
            start: Start::Single(Arc::new(move || {
                Box::pin(read_blocking(Arc::clone(&source)))
            })),
        }
    }

    /// Any asynchronous reader, e.g. an agent client.
    pub fn asynchronous(
        name: impl Into<Arc<str>>,
        kind: &'static str,
        start: impl Fn() -> SnapshotFuture + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            start: Start::Single(Arc::new(start)),
        }
    }

    /// A reader of several enclaves at once. Each enclave `E` in a listing is exported as
    /// `NAME/E`; when the whole read fails, `NAME` itself is reported down.
    pub fn listing(
        name: impl Into<Arc<str>>,
        kind: &'static str,
        start: impl Fn() -> ListingFuture + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            start: Start::Listing(Arc::new(start)),
        }
    }
}

/// Reads all sources for a scrape.
#[derive(Debug)]
pub struct Collector {
    slots: Vec<Slot>,
    telemetry: ReadTelemetry,
}

#[derive(Debug)]
struct Slot {
    name: Arc<str>,
    kind: &'static str,
    read: SlotRead,
}

enum SlotRead {
    Single {
        start: Arc<dyn Fn() -> SnapshotFuture + Send + Sync>,
        coalescer: Arc<Coalescer<HeapSnapshot>>,
    },
    Listing {
        start: Arc<dyn Fn() -> ListingFuture + Send + Sync>,
        coalescer: Arc<Coalescer<Listing>>,
    },
}

impl std::fmt::Debug for SlotRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SlotRead::Single { .. } => "Single",
            SlotRead::Listing { .. } => "Listing",
        })
    }
}

enum Waiting {
    Single(PendingRead<HeapSnapshot>),
    Listing(PendingRead<Listing>),
}

impl Collector {
    /// A collector over `sources`, recording read errors and durations in `telemetry`.
    pub fn new(
        sources: Vec<CollectorSource>,
        options: CollectorOptions,
        telemetry: ReadTelemetry,
    ) -> Self {
        let policy = ReadPolicy {
            timeout: options.timeout,
            min_interval: options.min_interval,
        };
        let slots = sources
            .into_iter()
            .map(|source| Slot {
                name: source.name,
                kind: source.kind,
                read: match source.start {
                    Start::Single(start) => SlotRead::Single {
                        start,
                        coalescer: Arc::new(Coalescer::new(policy)),
                    },
                    Start::Listing(start) => SlotRead::Listing {
                        start,
                        coalescer: Arc::new(Coalescer::new(policy)),
                    },
                },
            })
            .collect();
        Self { slots, telemetry }
    }

    /// The sources' names and kinds, in configuration order.
    pub fn sources(&self) -> impl Iterator<Item = (&str, &'static str)> {
        self.slots.iter().map(|slot| (&*slot.name, slot.kind))
    }

    /// Until when every source would answer from its last completed read (see
    /// [`Coalescer::fresh_until`]); `None` if any source would read now.
    pub fn fresh_until(&self) -> Option<std::time::Instant> {
        self.slots
            .iter()
            .map(|slot| match &slot.read {
                SlotRead::Single { coalescer, .. } => coalescer.fresh_until(),
                SlotRead::Listing { coalescer, .. } => coalescer.fresh_until(),
            })
            .try_fold(None, |earliest: Option<std::time::Instant>, until| {
                until.map(|until| Some(earliest.map_or(until, |earliest| earliest.min(until))))
            })
            .flatten()
    }

    /// Reads every source (or reuses a fresh read) and returns the readings in configuration
    /// order: one per source, or one per enclave of a listing source.
    pub async fn collect(&self) -> Vec<SourceReading> {
        let waiting: Vec<Waiting> = self.slots.iter().map(|slot| self.begin(slot)).collect();
        let mut readings = Vec::with_capacity(waiting.len());
        for (slot, waiting) in self.slots.iter().zip(waiting) {
            let name = &slot.name;
            let timed_out = |failure: &ReadFailure| {
                tracing::warn!(enclave = %name, %failure, "read timed out; no new read of this source starts until it returns");
                self.telemetry.count_error(name, failure);
            };
            match waiting {
                Waiting::Single(pending) => readings.push(SourceReading {
                    name: Arc::clone(name),
                    kind: slot.kind,
                    outcome: pending.wait(timed_out).await,
                }),
                Waiting::Listing(pending) => match pending.wait(timed_out).await {
                    Ok(listing) => {
                        readings.extend(listing.into_iter().map(|(enclave, outcome)| {
                            SourceReading {
                                name: listed_name(name, &enclave).into(),
                                kind: slot.kind,
                                outcome,
                            }
                        }))
                    }
                    Err(failure) => readings.push(SourceReading {
                        name: Arc::clone(name),
                        kind: slot.kind,
                        outcome: Err(failure),
                    }),
                },
            }
        }
        readings
    }

    fn begin(&self, slot: &Slot) -> Waiting {
        let telemetry = self.telemetry.clone();
        let name = Arc::clone(&slot.name);
        match &slot.read {
            SlotRead::Single { start, coalescer } => Waiting::Single(coalescer.begin(
                &**start,
                move |report: ReadReport<'_, HeapSnapshot>| {
                    telemetry.observe_duration(&name, report.elapsed);
                    if let Err(failure) = report.outcome {
                        if report.first_report {
                            telemetry.count_error(&name, failure);
                        }
                        tracing::debug!(enclave = %name, %failure, "read failed");
                    }
                },
            )),
            SlotRead::Listing { start, coalescer } => {
                Waiting::Listing(coalescer.begin(
                    &**start,
                    move |report: ReadReport<'_, Listing>| {
                        telemetry.observe_duration(&name, report.elapsed);
                        match report.outcome {
                            Err(failure) => {
                                if report.first_report {
                                    telemetry.count_error(&name, failure);
                                }
                                tracing::debug!(enclave = %name, %failure, "read failed");
                            }
                            // Failures inside a listing were never reported as timeouts: count them.
                            Ok(listing) => {
                                for (enclave, outcome) in listing {
                                    if let Err(failure) = outcome {
                                        telemetry
                                            .count_error(&listed_name(&name, enclave), failure);
                                    }
                                }
                            }
                        }
                    },
                ))
            }
        }
    }
}

/// The `enclave` label of enclave `enclave` in listing source `source`.
fn listed_name(source: &str, enclave: &str) -> String {
    format!("{source}/{enclave}")
}
