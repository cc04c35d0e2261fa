//! Opening sources from their URLs and reading them, as the exporter does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use enclave_heap_host::{
    OpenError, ReadError, SnapshotOrigin, SourceKind, SourceSpec, open_source,
};
use openenclave_sys::{OE_ENCLAVE_ABORTING, OE_OUT_OF_THREADS};

fn open(url: &str) -> Result<std::sync::Arc<dyn enclave_heap_host::HeapSource>, OpenError> {
    open_source(&url.parse::<SourceSpec>().unwrap())
}

#[test]
fn simulated_source_reads_through_the_ecall_path() {
    let source = open("sim:idle?heap_pages=32").unwrap();
    assert_eq!(source.kind(), SourceKind::Simulated);
    let before = Instant::now();
    let snapshot = source.read().unwrap();
    assert_eq!(snapshot.max_total_heap_size, 32 * 4096);
    // Idle: only the read's own 24-byte marshalling buffer is allocated while it runs.
    assert_eq!(snapshot.current_allocated_heap_size, 24);
    assert_eq!(snapshot.peak_allocated_heap_size, 24);
    assert_eq!(snapshot.origin, SnapshotOrigin::Ecall);
    assert!(snapshot.taken_at >= before);
}

#[test]
fn busy_simulated_source_stays_consistent() {
    let source = open("sim:sawtooth?heap_pages=256&period=300ms").unwrap();
    for _ in 0..50 {
        let snapshot = source.read().unwrap();
        assert!(snapshot.current_allocated_heap_size <= snapshot.peak_allocated_heap_size);
        assert!(snapshot.peak_allocated_heap_size <= snapshot.max_total_heap_size);
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn injected_faults_surface_as_ecall_errors() {
    let source = open("sim:idle?fail=OE_OUT_OF_THREADS").unwrap();
    let error = source.read().unwrap_err();
    assert_eq!(
        error,
        ReadError::Ecall(enclave_heap_host::OeResult(OE_OUT_OF_THREADS))
    );
    assert_eq!(
        error.to_string(),
        "the mallinfo ECALL failed: OE_OUT_OF_THREADS"
    );
    let source = open("sim:idle?fail=OE_ENCLAVE_ABORTING").unwrap();
    assert_eq!(source.read().unwrap_err().result().0, OE_ENCLAVE_ABORTING);
}

#[test]
fn injected_delay_slows_every_read() {
    let source = open("sim:idle?delay=150ms").unwrap();
    let started = Instant::now();
    source.read().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[test]
fn invalid_simulated_configuration_is_an_open_error() {
    let error = open("sim:?heap_pages=1").unwrap_err();
    assert!(matches!(error, OpenError::Simulated(_)), "{error:?}");
    assert!(error.to_string().contains("heap_pages"), "{error}");
}

#[test]
fn agent_sources_are_not_opened_in_process() {
    for url in [
        "unix:///run/app/heap.sock",
        "http://127.0.0.1:1/node/memory",
    ] {
        let error = open(url).unwrap_err();
        assert!(matches!(error, OpenError::NotInProcess { .. }), "{error:?}");
        assert!(error.to_string().contains(url));
    }
}

#[cfg(not(feature = "openenclave"))]
#[test]
fn oe_sources_name_the_missing_feature() {
    let error = open("oe:///opt/app/enclave.signed").unwrap_err();
    assert!(
        matches!(
            error,
            OpenError::FeatureNotBuilt {
                feature: "openenclave",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("--features openenclave"));
}
