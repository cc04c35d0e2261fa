//! Bad input fails fast: one clear line on stderr, a non-zero exit, no panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{binary, wait_with_timeout};

/// Runs the binary with `args`; returns (exit code, stderr), asserting it exits within 1 s.
fn fail(args: &[&str]) -> (i32, String) {
    let started = Instant::now();
    let mut child = binary()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(5)).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{args:?} did not exit");
    });
    let elapsed = started.elapsed();
    let mut stderr = String::new();
    use std::io::Read as _;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        elapsed < Duration::from_secs(1),
        "{args:?} took {elapsed:?} to fail"
    );
    assert!(!status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    let errors: Vec<_> = stderr
        .lines()
        .filter(|line| line.starts_with("enclave-heap-exporter:"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "{args:?} should print exactly one error line, got:\n{stderr}"
    );
    (status.code().unwrap(), errors[0].to_owned())
}

#[test]
fn unknown_flag() {
    let (code, line) = fail(&["--web.listen-adress=:1"]);
    assert_eq!(code, 2);
    assert!(line.contains("--web.listen-adress"), "{line}");
}

#[test]
fn malformed_sources() {
    let (code, line) = fail(&["--source", "a=sim:lek"]);
    assert_eq!(code, 2);
    assert!(line.contains("unknown profile \"lek\""), "{line}");
    let (_, line) = fail(&["--source", "nameless"]);
    assert!(line.contains("expected NAME=URL"), "{line}");
    let (_, line) = fail(&["--source", "a=unix://relative"]);
    assert!(line.contains("unix:///absolute/path"), "{line}");
    let (_, line) = fail(&["--source", "a=sim:?heap_pages=1"]);
    assert!(line.contains("heap_pages"), "{line}");
    let (_, line) = fail(&["--source", "a=unix:///run/app.sock?enclave=a/b"]);
    assert!(line.contains("enclave=\"a/b\""), "{line}");
}

#[test]
fn bad_durations_and_log_settings() {
    let (_, line) = fail(&["--source.timeout=10"]);
    assert!(line.contains("--source.timeout"), "{line}");
    let (_, line) = fail(&["--log.format=xml"]);
    assert!(line.contains("--log.format"), "{line}");
}

#[test]
fn port_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let (code, line) = fail(&["--web.listen-address", &address, "--source", "a=sim:idle"]);
    assert_eq!(code, 1);
    assert!(
        line.contains(&format!("cannot listen on {address}")),
        "{line}"
    );
}

#[test]
fn unreadable_ca_file() {
    let (code, line) = fail(&[
        "--web.listen-address=127.0.0.1:0",
        "--source.ca-file=/no/such/ca.pem",
        "--source",
        "node=https://127.0.0.1:1/node/memory",
    ]);
    assert_eq!(code, 1);
    assert!(line.contains("/no/such/ca.pem"), "{line}");
}

#[cfg(not(feature = "openenclave"))]
#[test]
fn oe_sources_need_the_feature() {
    let (code, line) = fail(&[
        "--web.listen-address=127.0.0.1:0",
        "--source",
        "a=oe:///no/such/enclave.signed",
    ]);
    assert_eq!(code, 1);
    assert!(line.contains("--features openenclave"), "{line}");
}

#[cfg(feature = "openenclave")]
#[test]
fn missing_enclave_image() {
    let (code, line) = fail(&[
        "--web.listen-address=127.0.0.1:0",
        "--source",
        "a=oe:///no/such/enclave.signed",
    ]);
    assert_eq!(code, 1);
    assert!(line.contains("/no/such/enclave.signed"), "{line}");
}
