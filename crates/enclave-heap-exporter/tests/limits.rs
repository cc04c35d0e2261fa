//! The exporter's connection and request limits, against the real binary on loopback:
//! `--web.max-requests` (503 beyond it, health checks exempt), `--web.max-connections` (further
//! clients wait for a slot), request bodies (413), other methods (405), oversized heads (431).
//! The header and idle timeouts are tested with short settings in
//! `crates/enclave-heap-host/tests/http_limits.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use support::{Exporter, HttpResponse, binary, request};

/// Sends `raw` as is and reads the answer until the server closes the connection (10 s bound).
fn raw_request(exporter: &Exporter, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(exporter.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The server may answer (and close) before it has read everything.
    let _ = stream.write_all(raw);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

#[test]
fn scrapes_beyond_max_requests_get_503_and_health_checks_are_not_counted() {
    let exporter = Exporter::start(&[
        "--web.max-requests=2",
        "--source",
        "slow=sim:idle?heap_pages=16&delay=3s",
        "--source.timeout=10s",
        "--source.min-interval=0s",
    ]);
    let address = exporter.address;
    let slow: Vec<_> = (0..2)
        .map(|_| thread::spawn(move || request(address, "GET", "/metrics", &[])))
        .collect();
    // Both slow scrapes are in (they wait about 3 s for the read).
    thread::sleep(Duration::from_millis(1000));
    let refused = exporter.get("/metrics");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.body.contains("limit 2"), "{}", refused.body);
    // The landing page reads the sources too, so it counts.
    assert_eq!(exporter.get("/").status, 503);
    let started = Instant::now();
    assert_eq!(exporter.get("/-/healthy").status, 200);
    assert_eq!(exporter.get("/-/ready").status, 200);
    println!(
        "FIGURE /-/healthy and /-/ready answered in {:?} with --web.max-requests=2 reached",
        started.elapsed()
    );
    for scrape in slow {
        let scrape: HttpResponse = scrape.join().unwrap();
        assert_eq!(scrape.status, 200, "{}", scrape.body);
    }
    // The slots are free again.
    assert_eq!(exporter.get("/metrics").status, 200);
}

#[test]
fn bodies_other_methods_and_oversized_heads_are_refused() {
    let exporter = Exporter::start(&[]);
    let with_body = raw_request(
        &exporter,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world",
    );
    assert_eq!(status_of(&with_body), 413, "{with_body}");
    assert!(
        with_body.to_ascii_lowercase().contains("connection: close"),
        "{with_body}"
    );
    let chunked = raw_request(
        &exporter,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    );
    assert_eq!(status_of(&chunked), 413, "{chunked}");
    // A large upload is refused without being read.
    let mut upload =
        b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 104857600\r\n\r\n".to_vec();
    upload.extend(std::iter::repeat_n(b'x', 64 * 1024));
    let post = raw_request(&exporter, &upload);
    assert_eq!(status_of(&post), 405, "{post}");
    assert!(post.contains("Allow: GET, HEAD") || post.contains("allow: GET, HEAD"));
    for method in ["PUT", "DELETE", "OPTIONS", "PATCH"] {
        let response = request(exporter.address, method, "/metrics", &[]);
        assert_eq!(response.status, 405, "{method}");
    }
    let padding = "a".repeat(20 * 1024);
    let oversized = raw_request(
        &exporter,
        format!("GET /metrics HTTP/1.1\r\nHost: t\r\nX-Padding: {padding}\r\n\r\n").as_bytes(),
    );
    assert_eq!(status_of(&oversized), 431, "{oversized}");
    // HEAD is served, without a body.
    let head = raw_request(
        &exporter,
        b"HEAD /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&head), 200, "{head}");
    assert!(head.ends_with("\r\n\r\n"), "{head}");
    assert_eq!(exporter.get("/-/healthy").status, 200);
}

#[test]
fn connections_beyond_max_connections_wait_until_one_closes() {
    let exporter = Exporter::start(&["--web.max-connections=3"]);
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(exporter.address).unwrap();
            // One answered request each, so all three are accepted and kept alive.
            stream
                .write_all(b"GET /-/healthy HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            let mut head = [0_u8; 12];
            stream.read_exact(&mut head).unwrap();
            assert_eq!(&head, b"HTTP/1.1 200");
            stream
        })
        .collect();
    let mut waiting = TcpStream::connect(exporter.address).unwrap();
    waiting
        .write_all(b"GET /-/healthy HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut byte = [0_u8; 1];
    let early = waiting.read(&mut byte);
    assert!(
        matches!(&early, Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "served beyond the cap: {early:?}"
    );
    drop(held);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    waiting.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    println!(
        "a connection queued behind --web.max-connections=3 was served {:?} after the others closed",
        started.elapsed()
    );
}

#[test]
fn limit_flags_are_checked() {
    for (flag, expected) in [
        (
            "--web.max-connections=0",
            "--web.max-connections must be at least 1",
        ),
        ("--web.max-requests=many", "--web.max-requests"),
        ("--web.max-connections=-1", "--web.max-connections"),
    ] {
        let output = binary()
            .args(["--web.listen-address=127.0.0.1:0", flag])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flag}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{flag}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{flag}: {stderr}");
    }
}
