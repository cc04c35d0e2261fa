//! Golden exposition: one scrape of known sources, in both wire formats, compared byte for byte
//! with the committed files in `tests/golden/`.
//!
//! The sources are idle simulated enclaves, whose figures are exact: 16 pages (65536 bytes) and
//! only the read's own 24-byte marshalling buffer allocated. Values that depend on the machine
//! (read durations, snapshot ages, the build's revision and compiler) are replaced by
//! placeholders.
//!
//! Regenerate after an intended change with:
//! `UPDATE_GOLDEN=1 cargo test -p enclave-heap-exporter --test golden`
//! and review the diff like code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use enclave_heap_exporter::Exporter;
use enclave_heap_exporter::collector::{CollectorOptions, CollectorSource};
use enclave_heap_exporter::exposition::Format;
use enclave_heap_exporter::metrics::ProcessMetrics;
use enclave_heap_host::{HeapSource, SourceSpec, open_source};

fn source(url: &str) -> Arc<dyn HeapSource> {
    open_source(&url.parse::<SourceSpec>().unwrap()).unwrap()
}

async fn scrape(format: Format) -> String {
    let exporter = Exporter::new(
        vec![
            CollectorSource::blocking("app", source("sim:idle?heap_pages=16")),
            CollectorSource::blocking("busy", source("sim:idle?fail=OE_OUT_OF_THREADS")),
        ],
        CollectorOptions {
            timeout: Duration::from_secs(5),
            min_interval: Duration::ZERO,
        },
        "/metrics",
        ProcessMetrics::Exclude,
    )
    .unwrap();
    let body = exporter.render(format).await.unwrap();
    normalise(std::str::from_utf8(&body).unwrap())
}

fn normalise(exposition: &str) -> String {
    let mut out = String::new();
    for line in exposition.lines() {
        let line = if line.starts_with("enclave_heap_read_duration_seconds_bucket")
            || line.starts_with("enclave_heap_read_duration_seconds_sum")
            || line.starts_with("enclave_heap_snapshot_age_seconds{")
        {
            let (series, _) = line.rsplit_once(' ').unwrap();
            format!("{series} <machine-dependent>")
        } else if line.starts_with("enclave_heap_exporter_build_info{") {
            let value = line.rsplit_once(' ').unwrap().1;
            format!(
                "enclave_heap_exporter_build_info{{revision=\"<revision>\",rustc_version=\"<rustc>\",version=\"<version>\"}} {value}"
            )
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "{}: {err}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "{} differs; if the change is intended, regenerate with UPDATE_GOLDEN=1 cargo test -p enclave-heap-exporter --test golden",
        path.display()
    );
}

#[tokio::test]
async fn classic_text_format() {
    check("scrape.prom", &scrape(Format::Text).await);
}

#[tokio::test]
async fn openmetrics_format() {
    check("scrape.om", &scrape(Format::OpenMetrics).await);
}
