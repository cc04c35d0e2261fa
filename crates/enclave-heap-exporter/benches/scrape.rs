//! Where a scrape's time goes, piece by piece, on a simulated source:
//! - `collect/reused`: reading all sources when their reads are still current (the common case);
//! - `families`: turning readings into metric families (fresh gauges + the registry);
//! - `encode/text`, `encode/openmetrics`: writing the families out;
//! - `render/uncached`: all of it (`--source.min-interval=0s`, every scrape reads the source);
//! - `render/cached`: a scrape while the last body is current (what a scrape storm costs).
//!
//! Run: `cargo bench -p enclave-heap-exporter --bench scrape` (about a minute).

// Setup that cannot proceed should stop the benchmark loudly.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use enclave_heap_exporter::Exporter;
use enclave_heap_exporter::collector::{Collector, CollectorOptions, CollectorSource};
use enclave_heap_exporter::exposition::{self, Format};
use enclave_heap_exporter::metrics::{ExporterMetrics, ProcessMetrics};
use enclave_heap_host::{SourceSpec, open_source};

fn sources(count: usize) -> Vec<CollectorSource> {
    (0..count)
        .map(|i| {
            let source =
                open_source(&"sim:idle?heap_pages=64".parse::<SourceSpec>().unwrap()).unwrap();
            CollectorSource::blocking(format!("enclave-{i}"), source)
        })
        .collect()
}

fn options(min_interval: Duration) -> CollectorOptions {
    CollectorOptions {
        timeout: Duration::from_secs(2),
        min_interval,
    }
}

fn scrape(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let metrics = ExporterMetrics::new(ProcessMetrics::Include).unwrap();
    let collector = Collector::new(
        sources(4),
        options(Duration::from_secs(3600)),
        metrics.telemetry(),
    );
    let readings = runtime.block_on(collector.collect());
    let families = metrics.families(&readings);

    c.bench_function("collect/reused", |b| {
        b.iter(|| black_box(runtime.block_on(collector.collect())))
    });
    c.bench_function("families", |b| {
        b.iter(|| black_box(metrics.families(&readings)))
    });
    for (name, format) in [
        ("encode/text", Format::Text),
        ("encode/openmetrics", Format::OpenMetrics),
    ] {
        let mut buffer = Vec::with_capacity(8192);
        c.bench_function(name, |b| {
            b.iter(|| {
                buffer.clear();
                exposition::encode(black_box(&families), format, &mut buffer).unwrap();
                black_box(buffer.len())
            })
        });
    }

    let uncached = Arc::new(
        Exporter::new(
            sources(4),
            options(Duration::ZERO),
            "/metrics",
            ProcessMetrics::Include,
        )
        .unwrap(),
    );
    c.bench_function("render/uncached", |b| {
        b.iter(|| black_box(runtime.block_on(uncached.render(Format::Text)).unwrap()))
    });
    let cached = Arc::new(
        Exporter::new(
            sources(4),
            options(Duration::from_secs(3600)),
            "/metrics",
            ProcessMetrics::Include,
        )
        .unwrap(),
    );
    c.bench_function("render/cached", |b| {
        b.iter(|| black_box(runtime.block_on(cached.render(Format::Text)).unwrap()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = scrape
}
criterion_main!(benches);
