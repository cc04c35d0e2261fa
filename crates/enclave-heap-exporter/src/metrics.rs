//! The metrics the exporter publishes: names, help texts, and how one scrape's readings become
//! metric families.
//!
//! Heap gauges are built fresh on every scrape from that scrape's readings (no timers, no
//! timestamps, nothing stale): a source that failed simply has no heap gauges this time. Counters
//! and histograms that must survive between scrapes live in a `prometheus::Registry`.

use std::time::Duration;

use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::build_info;
use crate::collector::{ReadFailure, SourceReading};

/// `enclave_heap_max_bytes`.
pub const MAX_BYTES: &str = "enclave_heap_max_bytes";
/// `enclave_heap_allocated_bytes`.
pub const ALLOCATED_BYTES: &str = "enclave_heap_allocated_bytes";
/// `enclave_heap_peak_allocated_bytes`.
pub const PEAK_ALLOCATED_BYTES: &str = "enclave_heap_peak_allocated_bytes";
/// `enclave_heap_snapshot_age_seconds`.
pub const SNAPSHOT_AGE: &str = "enclave_heap_snapshot_age_seconds";
/// `enclave_heap_up`.
pub const UP: &str = "enclave_heap_up";
/// `enclave_heap_info`.
pub const INFO: &str = "enclave_heap_info";
/// `enclave_heap_read_errors_total`.
pub const READ_ERRORS: &str = "enclave_heap_read_errors_total";
/// `enclave_heap_read_duration_seconds`.
pub const READ_DURATION: &str = "enclave_heap_read_duration_seconds";
/// `enclave_heap_exporter_build_info`.
pub const BUILD_INFO: &str = "enclave_heap_exporter_build_info";

const MAX_HELP: &str = "Size of the enclave heap in bytes (oe_mallinfo_t.max_total_heap_size): fixed when the enclave is signed, NumHeapPages x 4096.";
const ALLOCATED_HELP: &str = "Bytes of the enclave heap allocated now (oe_mallinfo_t.current_allocated_heap_size); OE's default dlmalloc includes chunk headers, and each read's own ECALL buffer.";
const PEAK_HELP: &str = "Peak bytes of the enclave heap since the enclave started (oe_mallinfo_t.peak_allocated_heap_size). OE's default dlmalloc reports its peak footprint here (memory ever taken from the heap, free chunks included), which can sit well above the peak of enclave_heap_allocated_bytes; snmalloc reports a coarse over-estimate.";
const SNAPSHOT_AGE_HELP: &str = "Age of the heap figures when scraped: near 0 for a fresh ECALL, up to --source.min-interval for a reused read, and the push's age when an OCALL push stood in for an ECALL that failed with OE_OUT_OF_THREADS.";
const UP_HELP: &str = "1 if the last read of this enclave's heap succeeded, 0 if it failed or timed out (the heap gauges are then absent).";
const INFO_HELP: &str =
    "Where an enclave's heap figures come from: source is simulated or openenclave. Always 1.";
const READ_ERRORS_HELP: &str = "Failed reads of an enclave's heap, by OE result name (OE_OUT_OF_THREADS, OE_ENCLAVE_ABORTING, ...), timeout, or panic.";
const READ_DURATION_HELP: &str = "Time one read of an enclave's heap took (the ECALL, or the agent round trip), including reads that timed out.";
const BUILD_INFO_HELP: &str = "The exporter's version, git revision and compiler. Always 1.";

/// Buckets for `enclave_heap_read_duration_seconds`: an ECALL takes microseconds, a mallinfo walk
/// of a large dlmalloc heap milliseconds, an agent round trip a few milliseconds.
const READ_DURATION_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The metrics that outlive a scrape: read errors and read durations, per enclave.
#[derive(Debug, Clone)]
pub struct ReadTelemetry {
    errors: IntCounterVec,
    duration: HistogramVec,
}

impl ReadTelemetry {
    /// Counts one failed read.
    pub fn count_error(&self, enclave: &str, failure: &ReadFailure) {
        self.errors
            .with_label_values(&[enclave, &failure.result_label()])
            .inc();
    }

    /// Records how long one read took.
    pub fn observe_duration(&self, enclave: &str, elapsed: Duration) {
        self.duration
            .with_label_values(&[enclave])
            .observe(elapsed.as_secs_f64());
    }
}

/// Which of the exporter's own metrics to include.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessMetrics {
    /// `process_*` for this process (CPU, memory, file descriptors, start time).
    Include,
    /// None: for deterministic output in tests.
    Exclude,
}

/// The exporter's metric state and the way a scrape is turned into families.
#[derive(Debug)]
pub struct ExporterMetrics {
    registry: Registry,
    telemetry: ReadTelemetry,
}

impl ExporterMetrics {
    /// Registers the persistent metrics.
    pub fn new(process: ProcessMetrics) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let errors = IntCounterVec::new(
            Opts::new(READ_ERRORS, READ_ERRORS_HELP),
            &["enclave", "result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(READ_DURATION, READ_DURATION_HELP)
                .buckets(READ_DURATION_BUCKETS.to_vec()),
            &["enclave"],
        )?;
        let build_info_gauge = IntGaugeVec::new(
            Opts::new(BUILD_INFO, BUILD_INFO_HELP),
            &["version", "revision", "rustc_version"],
        )?;
        build_info_gauge
            .with_label_values(&[
                build_info::VERSION,
                build_info::REVISION,
                build_info::RUSTC_VERSION,
            ])
            .set(1);
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(build_info_gauge))?;
        if process == ProcessMetrics::Include {
            registry.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))?;
        }
        Ok(Self {
            registry,
            telemetry: ReadTelemetry { errors, duration },
        })
    }

    /// The handle the collector records reads through.
    pub fn telemetry(&self) -> ReadTelemetry {
        self.telemetry.clone()
    }

    /// All families for one scrape, sorted by name.
    pub fn families(&self, readings: &[SourceReading]) -> Vec<MetricFamily> {
        let mut max = family(MAX_BYTES, MAX_HELP);
        let mut allocated = family(ALLOCATED_BYTES, ALLOCATED_HELP);
        let mut peak = family(PEAK_ALLOCATED_BYTES, PEAK_HELP);
        let mut up = family(UP, UP_HELP);
        let mut age = family(SNAPSHOT_AGE, SNAPSHOT_AGE_HELP);
        let mut info = family(INFO, INFO_HELP);
        for reading in readings {
            let enclave = label("enclave", &reading.name);
            info.mut_metric().push(gauge(
                vec![enclave.clone(), label("source", reading.kind)],
                1.0,
            ));
            match &reading.outcome {
                Ok(snapshot) => {
                    up.mut_metric().push(gauge(vec![enclave.clone()], 1.0));
                    max.mut_metric().push(gauge(
                        vec![enclave.clone()],
                        snapshot.max_total_heap_size as f64,
                    ));
                    allocated.mut_metric().push(gauge(
                        vec![enclave.clone()],
                        snapshot.current_allocated_heap_size as f64,
                    ));
                    peak.mut_metric().push(gauge(
                        vec![enclave.clone()],
                        snapshot.peak_allocated_heap_size as f64,
                    ));
                    age.mut_metric().push(gauge(
                        vec![enclave],
                        snapshot.taken_at.elapsed().as_secs_f64(),
                    ));
                }
                Err(_) => up.mut_metric().push(gauge(vec![enclave], 0.0)),
            }
        }
        let mut families = self.registry.gather();
        families.extend(
            [max, allocated, peak, up, info, age]
                .into_iter()
                .filter(|family| !family.get_metric().is_empty()),
        );
        families.sort_by(|a, b| a.name().cmp(b.name()));
        families
    }
}

fn family(name: &str, help: &str) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(MetricType::GAUGE);
    family
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

fn gauge(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut gauge = Gauge::default();
    gauge.set_value(value);
    let mut metric = Metric::from_gauge(gauge);
    metric.set_label(labels);
    metric
}
