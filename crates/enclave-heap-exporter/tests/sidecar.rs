//! Sidecar mode: the real exporter binary reads enclaves served by an agent in another "host"
//! (here the test process, running the real `AgentServer` on a real Unix socket), a CCF-shaped
//! node over TCP, and agents that misbehave.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use enclave_heap_host::agent::{AgentConfig, AgentEnclave, AgentServer, AgentSocket};
use enclave_heap_host::coalesce::ReadPolicy;
use enclave_heap_host::{SourceSpec, open_source};
use support::{Exporter, lines_starting, sample};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "ehe-{tag}-{}-{:?}",
            std::process::id(),
            thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn agent(socket: &Path, enclaves: &[(&str, &str)]) -> AgentServer {
    let enclaves = enclaves
        .iter()
        .map(|(name, url)| AgentEnclave {
            name: (*name).to_owned(),
            source: open_source(&url.parse::<SourceSpec>().unwrap()).unwrap(),
        })
        .collect();
    AgentServer::start(
        AgentConfig {
            socket: Some(AgentSocket {
                path: socket.to_owned(),
                group: None,
            }),
            tcp: None,
            policy: ReadPolicy {
                timeout: Duration::from_secs(2),
                min_interval: Duration::ZERO,
            },
            ..AgentConfig::default()
        },
        enclaves,
    )
    .unwrap()
}

/// Scrapes until `check` accepts the exposition (the agent or the exporter may need a moment).
fn scrape_until(exporter: &Exporter, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = exporter.metrics();
        if check(&metrics) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "never saw {what}:\n{metrics}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reads_an_agent_on_a_unix_socket_and_survives_the_host_going_away() {
    let dir = TempDir::new("sidecar");
    let socket = dir.0.join("heap.sock");
    let host = agent(&socket, &[("main", "sim:idle?heap_pages=64")]);
    let url = format!("app=unix://{}", socket.display());
    let exporter = Exporter::start(&["--source", &url, "--source.min-interval=0s"]);
    let metrics = exporter.metrics();
    assert_eq!(
        sample(&metrics, "enclave_heap_up{enclave=\"app\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "enclave_heap_max_bytes{enclave=\"app\"}"),
        Some(64.0 * 4096.0)
    );
    assert_eq!(
        sample(&metrics, "enclave_heap_allocated_bytes{enclave=\"app\"}"),
        Some(24.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "enclave_heap_info{enclave=\"app\",source=\"agent\"}"
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &metrics,
            "enclave_heap_snapshot_age_seconds{enclave=\"app\"}"
        )
        .unwrap()
            < 5.0
    );

    // The host stops (its socket file goes away): down, no stale gauges, counted.
    host.stop();
    assert!(!socket.exists());
    let metrics = exporter.metrics();
    assert_eq!(
        sample(&metrics, "enclave_heap_up{enclave=\"app\"}"),
        Some(0.0)
    );
    assert!(lines_starting(&metrics, "enclave_heap_max_bytes{enclave=\"app\"}").is_empty());
    assert!(
        sample(
            &metrics,
            "enclave_heap_read_errors_total{enclave=\"app\",result=\"connect\"}"
        )
        .unwrap()
            >= 1.0
    );

    // It comes back: the next scrape reads it again, no exporter restart.
    let _host = agent(&socket, &[("main", "sim:idle?heap_pages=128")]);
    let metrics = scrape_until(&exporter, "the host back", |m| {
        sample(m, "enclave_heap_up{enclave=\"app\"}") == Some(1.0)
    });
    assert_eq!(
        sample(&metrics, "enclave_heap_max_bytes{enclave=\"app\"}"),
        Some(128.0 * 4096.0)
    );
}

#[test]
fn a_named_enclave_and_a_whole_host_expanded() {
    let dir = TempDir::new("expand");
    let socket = dir.0.join("heap.sock");
    let _host = agent(
        &socket,
        &[
            ("db", "sim:idle?heap_pages=32"),
            ("web", "sim:idle?heap_pages=64"),
            ("busy", "sim:idle?fail=OE_OUT_OF_THREADS"),
        ],
    );
    let one = format!("web=unix://{}?enclave=web", socket.display());
    let all = format!("host=unix://{}?enclave=*", socket.display());
    let exporter = Exporter::start(&["--source", &one, "--source", &all]);
    let metrics = exporter.metrics();
    assert_eq!(
        sample(&metrics, "enclave_heap_max_bytes{enclave=\"web\"}"),
        Some(64.0 * 4096.0)
    );
    assert_eq!(
        sample(&metrics, "enclave_heap_max_bytes{enclave=\"host/db\"}"),
        Some(32.0 * 4096.0)
    );
    assert_eq!(
        sample(&metrics, "enclave_heap_max_bytes{enclave=\"host/web\"}"),
        Some(64.0 * 4096.0)
    );
    assert_eq!(
        sample(&metrics, "enclave_heap_up{enclave=\"host/busy\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "enclave_heap_read_errors_total{enclave=\"host/busy\",result=\"OE_OUT_OF_THREADS\"}"
        ),
        Some(1.0)
    );
    assert!(lines_starting(&metrics, "enclave_heap_up{enclave=\"host\"}").is_empty());
}

#[test]
fn a_pushed_snapshot_stands_in_when_all_enclave_threads_are_busy() {
    let dir = TempDir::new("push");
    let socket = dir.0.join("heap.sock");
    let _host = agent(
        &socket,
        &[(
            "main",
            "sim:idle?heap_pages=64&fail=OE_OUT_OF_THREADS&push=50ms",
        )],
    );
    let url = format!("app=unix://{}", socket.display());
    let exporter = Exporter::start(&["--source", &url, "--source.min-interval=0s"]);
    let metrics = scrape_until(&exporter, "a push standing in", |m| {
        sample(m, "enclave_heap_up{enclave=\"app\"}") == Some(1.0)
    });
    assert_eq!(
        sample(&metrics, "enclave_heap_max_bytes{enclave=\"app\"}"),
        Some(64.0 * 4096.0)
    );
    // A push carries no ECALL buffer: nothing is allocated in the idle enclave.
    assert_eq!(
        sample(&metrics, "enclave_heap_allocated_bytes{enclave=\"app\"}"),
        Some(0.0)
    );
    let age = sample(
        &metrics,
        "enclave_heap_snapshot_age_seconds{enclave=\"app\"}",
    )
    .unwrap();
    assert!(age < 5.0, "push age {age}");
}

/// A test stand-in for a CCF node or a broken agent: answers every request on TCP with a fixed
/// JSON body, or with a body that never ends.
enum Answer {
    Json(u16, String),
    Endless,
}

struct StandInNode {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl StandInNode {
    fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let answer = Arc::new(answer);
        let stopping = Arc::clone(&stop);
        thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let answer = Arc::clone(&answer);
                thread::spawn(move || serve(stream, &answer));
            }
        });
        Self { address, stop }
    }
}

impl Drop for StandInNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(stream: std::net::TcpStream, answer: &Answer) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        // Read one request's head; keep-alive until the client closes.
        let mut line = String::new();
        let mut head_seen = false;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" && head_seen => break,
                Ok(_) => head_seen = true,
            }
        }
        match answer {
            Answer::Json(status, body) => {
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(response.as_bytes()).is_err() {
                    return;
                }
            }
            Answer::Endless => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
                let chunk = format!("{:x}\r\n{}\r\n", 8192, "9".repeat(8192));
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(10) {
                    if stream.write_all(chunk.as_bytes()).is_err() {
                        return;
                    }
                }
                return;
            }
        }
    }
}

#[test]
fn a_ccf_node_is_exported_exactly() {
    let node = StandInNode::start(Answer::Json(
        200,
        r#"{"max_total_heap_size":4294967296,"current_allocated_heap_size":123456789,"peak_allocated_heap_size":987654321,"extra":"ignored"}"#.to_owned(),
    ));
    let url = format!("ccf=http://{}/node/memory", node.address);
    let exporter = Exporter::start(&["--source", &url]);
    let metrics = exporter.metrics();
    assert_eq!(
        sample(&metrics, "enclave_heap_max_bytes{enclave=\"ccf\"}"),
        Some(4294967296.0)
    );
    assert_eq!(
        sample(&metrics, "enclave_heap_allocated_bytes{enclave=\"ccf\"}"),
        Some(123456789.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "enclave_heap_peak_allocated_bytes{enclave=\"ccf\"}"
        ),
        Some(987654321.0)
    );
    assert_eq!(
        sample(&metrics, "enclave_heap_up{enclave=\"ccf\"}"),
        Some(1.0)
    );
}

#[test]
fn misbehaving_agents_are_failed_reads_not_crashes() {
    let cases = [
        ("garbage", Answer::Json(200, "not json".to_owned()), "invalid_response"),
        ("missing", Answer::Json(200, r#"{"max_total_heap_size":1,"current_allocated_heap_size":1}"#.to_owned()), "invalid_response"),
        ("wrongtype", Answer::Json(200, r#"{"max_total_heap_size":"1","current_allocated_heap_size":1,"peak_allocated_heap_size":1}"#.to_owned()), "invalid_response"),
        ("negative", Answer::Json(200, r#"{"max_total_heap_size":-1,"current_allocated_heap_size":1,"peak_allocated_heap_size":1}"#.to_owned()), "invalid_response"),
        ("error", Answer::Json(503, r#"{"error":"OE_ENCLAVE_ABORTING"}"#.to_owned()), "OE_ENCLAVE_ABORTING"),
        ("endless", Answer::Endless, "too_large"),
    ];
    let nodes: Vec<_> = cases
        .into_iter()
        .map(|(name, answer, label)| (name, StandInNode::start(answer), label))
        .collect();
    let urls: Vec<String> = nodes
        .iter()
        .map(|(name, node, _)| format!("{name}=http://{}/node/memory", node.address))
        .collect();
    let mut args = Vec::new();
    for url in &urls {
        args.push("--source");
        args.push(url.as_str());
    }
    let exporter = Exporter::start(&args);
    let metrics = exporter.metrics();
    for (name, _, label) in &nodes {
        assert_eq!(
            sample(&metrics, &format!("enclave_heap_up{{enclave=\"{name}\"}}")),
            Some(0.0),
            "{name}"
        );
        assert!(
            lines_starting(
                &metrics,
                &format!("enclave_heap_max_bytes{{enclave=\"{name}\"}}")
            )
            .is_empty()
        );
        assert_eq!(
            sample(
                &metrics,
                &format!("enclave_heap_read_errors_total{{enclave=\"{name}\",result=\"{label}\"}}")
            ),
            Some(1.0),
            "{name}: {metrics}"
        );
    }
    // The exporter itself is fine.
    assert_eq!(exporter.get("/-/healthy").status, 200);
}
