//! Fault injection against the real binary on loopback: sources failing with each interesting OE
//! result, a source that hangs under a storm of concurrent scrapes, hundreds of hostile
//! connections, and agents that answer garbage or never stop answering.
//!
//! The tests print the figures the hardening note quotes, on lines starting with `FIGURE`:
//! `cargo test -p enclave-heap-exporter --test faults -- --nocapture | grep FIGURE`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use enclave_heap_host::agent::{AgentConfig, AgentEnclave, AgentServer, AgentSocket};
use enclave_heap_host::coalesce::ReadPolicy;
use enclave_heap_host::{SourceSpec, open_source};
use support::{Exporter, lines_starting, request, sample};

/// Threads of process `pid` (its entries in /proc/PID/task).
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// A `VmHWM`/`VmRSS` line of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn args<'a>(sources: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args: Vec<&str> = extra.to_vec();
    for source in sources {
        args.push("--source");
        args.push(source);
    }
    args
}

fn error_count(metrics: &str, enclave: &str, result: &str) -> Option<f64> {
    sample(
        metrics,
        &format!("enclave_heap_read_errors_total{{enclave=\"{enclave}\",result=\"{result}\"}}"),
    )
}

fn assert_down_with(metrics: &str, enclave: &str, result: &str) {
    assert_eq!(
        sample(
            metrics,
            &format!("enclave_heap_up{{enclave=\"{enclave}\"}}")
        ),
        Some(0.0),
        "{enclave} should be down:\n{metrics}"
    );
    assert_eq!(
        error_count(metrics, enclave, result),
        Some(1.0),
        "{enclave} should count one {result}:\n{metrics}"
    );
    for gauge in [
        "enclave_heap_max_bytes",
        "enclave_heap_allocated_bytes",
        "enclave_heap_peak_allocated_bytes",
    ] {
        assert!(
            lines_starting(metrics, &format!("{gauge}{{enclave=\"{enclave}\"}}")).is_empty(),
            "{gauge} for {enclave} must be absent when down"
        );
    }
}

const INTERESTING_RESULTS: [&str; 6] = [
    "OE_OUT_OF_THREADS",
    "OE_ENCLAVE_ABORTING",
    "OE_ENCLAVE_ABORTED",
    "OE_FAILURE",
    "OE_UNEXPECTED",
    // A code newer than our bindings: shown and labelled by number.
    "OE_RESULT_4242",
];

#[test]
fn each_oe_result_becomes_its_own_label_in_process_and_through_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    // The agent's enclaves fail the same ways; the exporter reads them all in one listing.
    let enclaves = INTERESTING_RESULTS
        .iter()
        .map(|result| AgentEnclave {
            name: result.to_ascii_lowercase(),
            source: open_source(
                &format!("sim:idle?heap_pages=16&fail={result}")
                    .parse::<SourceSpec>()
                    .unwrap(),
            )
            .unwrap(),
        })
        .collect();
    let agent = AgentServer::start(
        AgentConfig {
            socket: Some(AgentSocket {
                path: socket.clone(),
                group: None,
            }),
            policy: ReadPolicy {
                timeout: Duration::from_secs(2),
                min_interval: Duration::ZERO,
            },
            ..AgentConfig::default()
        },
        enclaves,
    )
    .unwrap();

    let mut sources: Vec<String> = INTERESTING_RESULTS
        .iter()
        .map(|result| {
            format!(
                "{}=sim:idle?heap_pages=16&fail={result}",
                result.to_ascii_lowercase()
            )
        })
        .collect();
    sources.push(format!("host=unix://{}?enclave=*", socket.display()));
    let exporter = Exporter::start(&args(&sources, &["--source.min-interval=0s"]));
    let metrics = exporter.metrics();
    for result in INTERESTING_RESULTS {
        let name = result.to_ascii_lowercase();
        assert_down_with(&metrics, &name, result);
        assert_down_with(&metrics, &format!("host/{name}"), result);
    }
    println!(
        "{}",
        lines_starting(&metrics, "enclave_heap_read_errors_total{").join("\n")
    );
    // Counted once per read: a second scrape adds exactly one more of each.
    let metrics = exporter.metrics();
    for result in INTERESTING_RESULTS {
        let name = result.to_ascii_lowercase();
        assert_eq!(error_count(&metrics, &name, result), Some(2.0), "{name}");
    }
    assert_eq!(exporter.get("/-/healthy").status, 200);
    agent.stop();
}

/// Scrapes `/metrics` from `count` threads at once; returns each one's status and duration.
fn storm(address: SocketAddr, count: usize) -> Vec<(u16, Duration)> {
    let workers: Vec<_> = (0..count)
        .map(|_| {
            thread::spawn(move || {
                let started = Instant::now();
                let response = request(address, "GET", "/metrics", &[]);
                (response.status, started.elapsed(), response.body)
            })
        })
        .collect();
    workers
        .into_iter()
        .map(|worker| {
            let (status, took, body) = worker.join().unwrap();
            assert_eq!(
                sample(&body, "enclave_heap_up{enclave=\"stuck\"}"),
                Some(0.0),
                "{body}"
            );
            (status, took)
        })
        .collect()
}

#[test]
fn a_hung_source_under_40_concurrent_scrapes_holds_one_read_and_one_thread() {
    let exporter = Exporter::start(&[
        "--source",
        "stuck=sim:idle?heap_pages=16&delay=1h",
        "--source.timeout=200ms",
        "--source.min-interval=0s",
        "--web.max-requests=0",
    ]);
    let pid = exporter.child.id();
    let before = threads(pid);
    let mut after_rounds = Vec::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        for (status, took) in storm(exporter.address, 40) {
            assert_eq!(status, 200);
            slowest = slowest.max(took);
        }
        after_rounds.push(threads(pid));
        // Longer than the timeout, so every round's scrapes find the same read still hung.
        thread::sleep(Duration::from_millis(300));
    }
    println!(
        "FIGURE threads of the exporter before a stuck-source storm: {before}; after each of 3 rounds of 40 concurrent scrapes: {after_rounds:?}; slowest scrape {slowest:?} (--source.timeout=200ms)"
    );
    // Exactly one blocking thread more: the one read still stuck in its hour-long "ECALL".
    assert_eq!(after_rounds, vec![before + 1; 3]);
    assert!(slowest < Duration::from_secs(5), "{slowest:?}");
    let metrics = exporter.metrics();
    // One read started in all 121 scrapes, timed out once, never finished (no duration).
    assert_eq!(error_count(&metrics, "stuck", "timeout"), Some(1.0));
    assert_eq!(
        sample(
            &metrics,
            "enclave_heap_read_duration_seconds_count{enclave=\"stuck\"}"
        )
        .unwrap_or(0.0),
        0.0
    );
    assert_eq!(threads(pid), before + 1);
}

#[test]
fn health_and_scrapes_stay_fast_with_hundreds_of_idle_and_slow_header_connections() {
    let exporter = Exporter::start(&["--source", "app=sim:steady?heap_pages=64"]);
    let address = exporter.address;
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    let slow: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    let trickling = Arc::new(AtomicBool::new(true));
    let trickler = {
        let trickling = Arc::clone(&trickling);
        let mut slow: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
        thread::spawn(move || {
            let head = b"GET /metrics HTTP/1.1\r\nHost: slow\r\nX-Slow: ".to_vec();
            let mut sent = 0;
            while trickling.load(Ordering::Relaxed) {
                let byte = head.get(sent).copied().unwrap_or(b'x');
                for stream in &mut slow {
                    let _ = stream.write_all(&[byte]);
                }
                sent += 1;
                thread::sleep(Duration::from_secs(1));
            }
        })
    };
    // Let the hostile connections be accepted and the trickle start.
    thread::sleep(Duration::from_millis(1500));
    let time = |path: &str| {
        let started = Instant::now();
        let response = request(address, "GET", path, &[]);
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        started.elapsed()
    };
    let mut health = Vec::new();
    let mut scrapes = Vec::new();
    for _ in 0..5 {
        health.push(time("/-/healthy"));
        scrapes.push(time("/metrics"));
    }
    let worst_health = health.iter().max().copied().unwrap_or_default();
    let worst_scrape = scrapes.iter().max().copied().unwrap_or_default();
    let metrics = exporter.metrics();
    let open = sample(&metrics, "process_open_fds").unwrap_or(f64::NAN);
    println!(
        "FIGURE with 300 idle + 100 slow-header connections open (exporter fds: {open}): /-/healthy worst {worst_health:?} of 5 ({health:?}); /metrics worst {worst_scrape:?} of 5"
    );
    assert!(open >= 400.0, "the hostile connections are open: {open}");
    assert!(worst_health < Duration::from_secs(2), "{health:?}");
    assert!(worst_scrape < Duration::from_secs(2), "{scrapes:?}");
    trickling.store(false, Ordering::Relaxed);
    trickler.join().unwrap();
    drop((idle, slow));
}

/// What a stand-in agent answers to every request.
#[derive(Clone, Copy)]
enum Hostile {
    Garbage,
    WrongTypes,
    Negative,
    /// `200`, chunked, then JSON-ish bytes forever (until the client hangs up or 20 s pass).
    Endless,
    /// Claims a 10 GiB body.
    HugeLength,
    /// Reads the request and never answers.
    Silent,
}

impl Hostile {
    fn answer(self, stream: &mut TcpStream) {
        let json = |status: u16, body: &str| {
            format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let _ = match self {
            Hostile::Garbage => stream.write_all(json(200, "\u{1}\u{2}not json at all").as_bytes()),
            Hostile::WrongTypes => stream.write_all(json(200, r#"{"max_total_heap_size":"lots","current_allocated_heap_size":[1],"peak_allocated_heap_size":{"a":1}}"#).as_bytes()),
            Hostile::Negative => stream.write_all(json(200, r#"{"max_total_heap_size":-4096,"current_allocated_heap_size":-1,"peak_allocated_heap_size":-1}"#).as_bytes()),
            Hostile::HugeLength => stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10737418240\r\n\r\n{\"max_total_heap_size\":"),
            Hostile::Endless => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "[".repeat(64 * 1024));
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(20) {
                    if stream.write_all(chunk.as_bytes()).is_err() {
                        return;
                    }
                }
                Ok(())
            }
            Hostile::Silent => {
                thread::sleep(Duration::from_secs(5));
                Ok(())
            }
        };
    }
}

/// A TCP server answering every request with `hostile`; stops accepting when dropped.
struct HostileAgent {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl HostileAgent {
    fn start(hostile: Hostile) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                thread::spawn(move || serve_hostile(stream, hostile));
            }
        });
        Self { address, stop }
    }
}

impl Drop for HostileAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_hostile(stream: TcpStream, hostile: Hostile) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut line = String::new();
        let mut seen = false;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" && seen => break,
                Ok(_) => seen = true,
            }
        }
        hostile.answer(&mut stream);
        if matches!(
            hostile,
            Hostile::Endless | Hostile::HugeLength | Hostile::Silent
        ) {
            return;
        }
    }
}

#[test]
fn hostile_agents_are_failed_reads_and_memory_stays_bounded() {
    let cases = [
        ("garbage", Hostile::Garbage, "invalid_response"),
        ("wrongtypes", Hostile::WrongTypes, "invalid_response"),
        ("negative", Hostile::Negative, "invalid_response"),
        ("endless", Hostile::Endless, "too_large"),
        ("hugelength", Hostile::HugeLength, "too_large"),
        ("silent", Hostile::Silent, "timeout"),
    ];
    let agents: Vec<_> = cases
        .iter()
        .map(|(name, hostile, label)| (*name, HostileAgent::start(*hostile), *label))
        .collect();
    let sources: Vec<String> = agents
        .iter()
        .map(|(name, agent, _)| format!("{name}=http://{}/node/memory", agent.address))
        .collect();
    let exporter = Exporter::start(&args(
        &sources,
        // Every scrape waits this long for the silent agent.
        &["--source.timeout=400ms", "--source.min-interval=0s"],
    ));
    let pid = exporter.child.id();
    let first = exporter.metrics();
    for (name, _, label) in &agents {
        assert_down_with(&first, name, label);
    }
    let hwm_before = status_kib(pid, "VmHWM");
    let scrapes = 20;
    let started = Instant::now();
    for _ in 0..scrapes {
        let metrics = exporter.metrics();
        assert_eq!(
            sample(&metrics, "enclave_heap_up{enclave=\"endless\"}"),
            Some(0.0)
        );
    }
    let took = started.elapsed();
    let hwm_after = status_kib(pid, "VmHWM");
    let rss_after = status_kib(pid, "VmRSS");
    let metrics = exporter.metrics();
    let endless_reads = error_count(&metrics, "endless", "too_large").unwrap_or(0.0);
    println!(
        "FIGURE exporter peak RSS (VmHWM) against hostile agents (garbage, wrong types, negative numbers, endless body, 10 GiB Content-Length, silence): {hwm_before} KiB after the first scrape, {hwm_after} KiB after {scrapes} more ({endless_reads} endless-body reads cut at 64 KiB); RSS now {rss_after} KiB; {scrapes} scrapes took {took:?}"
    );
    assert!(endless_reads >= f64::from(scrapes), "{metrics}");
    assert!(
        hwm_after <= hwm_before + 8 * 1024,
        "peak RSS grew from {hwm_before} KiB to {hwm_after} KiB"
    );
    assert_eq!(exporter.get("/-/healthy").status, 200);
}

#[test]
fn an_agent_refusing_our_credentials_is_a_403_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    // The directory we just created is ours: its owner is our uid.
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.path()).unwrap());
    let agent = AgentServer::start(
        AgentConfig {
            socket: Some(AgentSocket {
                path: socket.clone(),
                group: None,
            }),
            allowed_peers: enclave_heap_host::agent::AllowedPeers {
                uids: vec![uid.wrapping_add(4242)],
                gids: vec![],
            },
            ..AgentConfig::default()
        },
        vec![AgentEnclave {
            name: "app".to_owned(),
            source: open_source(&"sim:idle?heap_pages=16".parse::<SourceSpec>().unwrap()).unwrap(),
        }],
    )
    .unwrap();
    let source = format!("app=unix://{}", socket.display());
    let exporter = Exporter::start(&["--source", &source]);
    let metrics = exporter.metrics();
    assert_down_with(&metrics, "app", "http_403");
    agent.stop();
    drop(dir);
}
