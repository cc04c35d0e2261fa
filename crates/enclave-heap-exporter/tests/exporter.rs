//! The real binary on loopback: what an operator (and Prometheus) sees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::{Exporter, lines_starting, request, sample};

fn heap_gauges(metrics: &str, enclave: &str) -> (f64, f64, f64) {
    let get = |name: &str| {
        sample(metrics, &format!("{name}{{enclave=\"{enclave}\"}}"))
            .unwrap_or_else(|| panic!("{name} for {enclave} missing in:\n{metrics}"))
    };
    (
        get("enclave_heap_max_bytes"),
        get("enclave_heap_allocated_bytes"),
        get("enclave_heap_peak_allocated_bytes"),
    )
}

fn assert_consistent(metrics: &str, enclave: &str) {
    let (max, current, peak) = heap_gauges(metrics, enclave);
    assert!(
        max > 0.0 && max % 4096.0 == 0.0,
        "max {max} is not a whole number of pages"
    );
    assert!(current <= peak, "current {current} > peak {peak}");
    assert!(peak <= max, "peak {peak} > max {max}");
}

#[test]
fn default_run_exports_the_simulated_enclave() {
    let exporter = Exporter::start(&[]);
    assert!(
        exporter
            .startup_log
            .iter()
            .any(|line| line.contains("level=warn") && line.contains("SIMULATED")),
        "no warning that the enclave is simulated: {:?}",
        exporter.startup_log
    );
    let metrics = exporter.metrics();
    assert_consistent(&metrics, "sim");
    // The default simulated enclave has 4096 pages (16 MiB).
    assert_eq!(heap_gauges(&metrics, "sim").0, 16.0 * 1024.0 * 1024.0);
    assert_eq!(
        sample(&metrics, "enclave_heap_up{enclave=\"sim\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "enclave_heap_info{enclave=\"sim\",source=\"simulated\"}"
        ),
        Some(1.0)
    );
    let build_info = lines_starting(&metrics, "enclave_heap_exporter_build_info{");
    assert_eq!(build_info.len(), 1, "{metrics}");
    assert!(build_info[0].contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))));
    assert!(build_info[0].contains("rustc_version=\"1."));
    assert!(
        sample(
            &metrics,
            "enclave_heap_read_duration_seconds_count{enclave=\"sim\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert!(sample(&metrics, "process_resident_memory_bytes").unwrap() > 0.0);
    assert!(sample(&metrics, "process_open_fds").unwrap() > 0.0);
    let response = exporter.get("/metrics");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
}

#[test]
fn two_sources_are_exported_side_by_side() {
    let exporter = Exporter::start(&[
        "--source",
        "a=sim:",
        "--source",
        "b=sim:leak?period=2s&heap_pages=256",
    ]);
    let metrics = exporter.metrics();
    assert_consistent(&metrics, "a");
    assert_consistent(&metrics, "b");
    assert_eq!(heap_gauges(&metrics, "b").0, 256.0 * 4096.0);
    assert_eq!(
        sample(&metrics, "enclave_heap_up{enclave=\"a\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "enclave_heap_up{enclave=\"b\"}"),
        Some(1.0)
    );
    assert!(lines_starting(&metrics, "enclave_heap_up{enclave=\"sim\"}").is_empty());
}

#[test]
fn a_failing_source_is_down_without_heap_gauges_and_others_are_unaffected() {
    let exporter = Exporter::start(&[
        "--source",
        "busy=sim:?fail=OE_OUT_OF_THREADS",
        "--source",
        "fine=sim:",
        "--source.min-interval=0s",
    ]);
    let first = exporter.metrics();
    let second = exporter.metrics();
    for metrics in [&first, &second] {
        assert_eq!(
            sample(metrics, "enclave_heap_up{enclave=\"busy\"}"),
            Some(0.0)
        );
        for name in [
            "enclave_heap_max_bytes",
            "enclave_heap_allocated_bytes",
            "enclave_heap_peak_allocated_bytes",
        ] {
            assert!(
                lines_starting(metrics, &format!("{name}{{enclave=\"busy\"}}")).is_empty(),
                "stale {name}"
            );
        }
        assert_eq!(
            sample(metrics, "enclave_heap_up{enclave=\"fine\"}"),
            Some(1.0)
        );
        assert_consistent(metrics, "fine");
    }
    // min-interval 0s: every scrape reads again, and every failed read is counted once.
    assert_eq!(
        sample(
            &second,
            "enclave_heap_read_errors_total{enclave=\"busy\",result=\"OE_OUT_OF_THREADS\"}"
        ),
        Some(2.0)
    );
}

#[test]
fn a_slow_source_times_out_and_is_never_read_twice_at_once() {
    let exporter = Exporter::start(&[
        "--source",
        "slow=sim:?delay=1500ms",
        "--source",
        "fine=sim:",
        "--source.timeout=200ms",
        "--source.min-interval=0s",
    ]);
    let started = Instant::now();
    let metrics = exporter.metrics();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "scrape waited {:?}",
        started.elapsed()
    );
    assert_eq!(
        sample(&metrics, "enclave_heap_up{enclave=\"slow\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, "enclave_heap_up{enclave=\"fine\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "enclave_heap_read_errors_total{enclave=\"slow\",result=\"timeout\"}"
        ),
        Some(1.0)
    );
    // Scrapes while the first read is still stuck neither start a read nor count it again.
    let address = exporter.address;
    let storm: Vec<_> = (0..8)
        .map(|_| thread::spawn(move || request(address, "GET", "/metrics", &[]).status))
        .collect();
    for scrape in storm {
        assert_eq!(scrape.join().unwrap(), 200);
    }
    // Once the stuck read returns, its duration is recorded: exactly one read happened.
    thread::sleep(Duration::from_millis(1600).saturating_sub(started.elapsed()));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = exporter.metrics();
        let count = sample(
            &metrics,
            "enclave_heap_read_duration_seconds_count{enclave=\"slow\"}",
        );
        if count.is_some() {
            // This scrape itself may have started the second read, which is still in flight.
            assert_eq!(count, Some(1.0), "{metrics}");
            assert_eq!(
                sample(
                    &metrics,
                    "enclave_heap_read_errors_total{enclave=\"slow\",result=\"timeout\"}"
                ),
                Some(2.0),
                "the second read (started by this scrape) timed out too"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stuck read never completed:\n{metrics}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn min_interval_reuses_a_recent_read() {
    let exporter = Exporter::start(&["--source", "a=sim:", "--source.min-interval=1h"]);
    for _ in 0..5 {
        exporter.metrics();
    }
    let metrics = exporter.metrics();
    assert_eq!(
        sample(
            &metrics,
            "enclave_heap_read_duration_seconds_count{enclave=\"a\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn openmetrics_when_the_scraper_prefers_it() {
    let exporter = Exporter::start(&["--source", "a=sim:"]);
    let response = request(
        exporter.address,
        "GET",
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
    );
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(response.body.ends_with("# EOF\n"));
    assert!(
        response
            .body
            .contains("# TYPE enclave_heap_read_duration_seconds histogram")
    );
    assert!(response.body.contains("enclave_heap_up{enclave=\"a\"} 1.0"));
    assert!(response.body.contains("# TYPE process_cpu_seconds counter"));
    assert!(response.body.contains("\nprocess_cpu_seconds_total "));
}

#[test]
fn landing_page_health_readiness_and_unknown_paths() {
    let exporter = Exporter::start(&["--source", "app=sim:", "--web.telemetry-path=/heap"]);
    let landing = exporter.get("/");
    assert_eq!(landing.status, 200);
    assert_eq!(
        landing.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(landing.body.contains("<a href=\"/heap\">"));
    assert!(
        landing
            .body
            .contains("<h2>app</h2><span class=\"badge sim\">SIMULATED</span>"),
        "{}",
        landing.body
    );
    assert_eq!(exporter.get("/-/healthy").status, 200);
    assert_eq!(exporter.get("/-/ready").status, 200);
    assert_eq!(exporter.get("/heap").status, 200);
    assert_eq!(exporter.get("/metrics").status, 404);
    assert_eq!(exporter.get("/nope").status, 404);
    let post = request(
        exporter.address,
        "POST",
        "/heap",
        &[("Content-Length", "0")],
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let head = request(exporter.address, "HEAD", "/heap", &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[test]
fn sigterm_drains_an_in_flight_scrape_and_exits_zero() {
    let exporter = Exporter::start(&["--source", "slow=sim:?delay=700ms", "--source.timeout=5s"]);
    let address = exporter.address;
    let scrape = thread::spawn(move || request(address, "GET", "/metrics", &[]));
    thread::sleep(Duration::from_millis(200));
    let status = exporter.terminate();
    let response = scrape.join().unwrap();
    assert_eq!(response.status, 200, "the in-flight scrape was cut off");
    assert_eq!(
        sample(&response.body, "enclave_heap_up{enclave=\"slow\"}"),
        Some(1.0)
    );
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn sigterm_does_not_wait_for_a_stuck_read() {
    let exporter = Exporter::start(&["--source", "stuck=sim:?delay=1h", "--source.timeout=100ms"]);
    assert_eq!(
        sample(&exporter.metrics(), "enclave_heap_up{enclave=\"stuck\"}"),
        Some(0.0)
    );
    let started = Instant::now();
    let status = exporter.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        started.elapsed()
    );
}

#[test]
fn promtool_accepts_a_live_scrape() {
    let exporter = Exporter::start(&[
        "--source",
        "a=sim:",
        "--source",
        "down=sim:?fail=OE_FAILURE",
    ]);
    let metrics = exporter.metrics();
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is needed for this test: `apt-get install -y prometheus` (Debian) puts it on PATH");
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // promtool's linter also warns on stdout/stderr without failing; keep it silent.
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(complaints.trim().is_empty(), "promtool lint: {complaints}");
}

#[test]
fn the_embedded_example_serves_metrics_in_process() {
    // `cargo test` builds this package's examples next to the test binaries.
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("examples/embedded");
    if !example.exists() {
        // Only a filtered run (`--test exporter`) skips building examples; build it now.
        let status = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "-q",
                "-p",
                "enclave-heap-exporter",
                "--example",
                "embedded",
            ])
            .status()
            .unwrap();
        assert!(status.success(), "building the embedded example failed");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(&example)
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead as _;
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    let response = request(
        format!("127.0.0.1:{port}").parse().unwrap(),
        "GET",
        "/metrics",
        &[],
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(response.status, 200);
    assert_eq!(
        sample(&response.body, "enclave_heap_max_bytes{enclave=\"app\"}"),
        Some(1024.0 * 4096.0)
    );
    assert_eq!(
        sample(&response.body, "enclave_heap_up{enclave=\"app\"}"),
        Some(1.0)
    );
}
