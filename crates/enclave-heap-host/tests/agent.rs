//! The agent on real sockets: what a sidecar exporter sees over the Unix socket and TCP, how reads
//! are shared and bounded, how the socket file is created, replaced and removed, and the
//! `sim-host` example run as a real process.
//!
//! Requests are written by hand (HTTP/1.1, `Connection: close`) over std sockets, so the test
//! sees exactly the bytes the agent sends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use enclave_heap_host::agent::{
    AgentConfig, AgentEnclave, AgentError, AgentServer, AgentSocket, DEFAULT_AGENT_POLICY,
};
use enclave_heap_host::agent_protocol::{EnclaveEntry, EnclaveList, ErrorReport, MemoryReport};
use enclave_heap_host::coalesce::ReadPolicy;
use enclave_heap_host::{
    HeapSnapshot, HeapSource, ReadError, SourceKind, SourceOptions, SourceSpec, open_source,
    open_source_with,
};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// A hand-written HTTP/1.1 client.

#[derive(Debug, Clone, Copy)]
enum Endpoint<'a> {
    Unix(&'a Path),
    Tcp(SocketAddr),
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn parse<T: serde::de::DeserializeOwned>(&self) -> T {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn memory(&self) -> MemoryReport {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        self.parse()
    }

    fn error(&self, status: u16) -> ErrorReport {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        self.parse()
    }
}

fn request(endpoint: Endpoint<'_>, method: &str, path: &str) -> Reply {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
    let raw = match endpoint {
        Endpoint::Unix(socket) => {
            let stream = UnixStream::connect(socket).unwrap();
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
            exchange(stream, &request)
        }
        Endpoint::Tcp(address) => {
            let stream = TcpStream::connect(address).unwrap();
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
            exchange(stream, &request)
        }
    };
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(&raw)));
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let reply = Reply {
        status,
        headers,
        body,
    };
    if method != "HEAD" {
        if let Some(length) = reply.header("content-length") {
            assert_eq!(length.parse::<usize>().unwrap(), reply.body.len());
        }
    }
    reply
}

fn exchange(mut stream: impl Read + Write, request: &str) -> Vec<u8> {
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    raw
}

fn get(endpoint: Endpoint<'_>, path: &str) -> Reply {
    request(endpoint, "GET", path)
}

// ---------------------------------------------------------------------------------------------
// Agents and enclaves.

fn sim(url: &str) -> Arc<dyn HeapSource> {
    open_source(&url.parse::<SourceSpec>().unwrap()).unwrap()
}

fn enclave(name: &str, source: Arc<dyn HeapSource>) -> AgentEnclave {
    AgentEnclave {
        name: name.to_owned(),
        source,
    }
}

fn socket_config(path: &Path, policy: ReadPolicy) -> AgentConfig {
    AgentConfig {
        socket: Some(AgentSocket {
            path: path.to_owned(),
            group: None,
        }),
        tcp: None,
        policy,
        ..AgentConfig::default()
    }
}

/// An agent on `agent.sock` in a fresh temporary directory (kept alive by the returned guard).
fn unix_agent(
    enclaves: Vec<AgentEnclave>,
    policy: ReadPolicy,
) -> (AgentServer, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let server = AgentServer::start(socket_config(&path, policy), enclaves).unwrap();
    assert_eq!(server.socket_path(), Some(path.as_path()));
    (server, path, dir)
}

fn policy(timeout: Duration, min_interval: Duration) -> ReadPolicy {
    ReadPolicy {
        timeout,
        min_interval,
    }
}

fn assert_idle_sixteen_pages(report: &MemoryReport, name: &str) {
    // Idle: only the read's own 24-byte marshalling buffer is allocated while it runs.
    assert_eq!(report.max_total_heap_size, 16 * 4096);
    assert_eq!(report.current_allocated_heap_size, 24);
    assert_eq!(report.peak_allocated_heap_size, 24);
    assert_eq!(report.enclave.as_deref(), Some(name));
    assert_eq!(
        report.origin,
        Some(enclave_heap_host::agent_protocol::ReportOrigin::Ecall)
    );
    let age = report.age_seconds.unwrap();
    assert!((0.0..60.0).contains(&age), "age_seconds={age}");
}

/// Test double: the real simulated source, counting how often it is read.
#[derive(Debug)]
struct CountingSource {
    inner: Arc<dyn HeapSource>,
    reads: AtomicUsize,
}

impl HeapSource for CountingSource {
    fn kind(&self) -> SourceKind {
        self.inner.kind()
    }

    fn read(&self) -> Result<HeapSnapshot, ReadError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read()
    }
}

/// Test double: the real simulated source, whose reads each wait until every source sharing the
/// barrier is being read at the same time.
#[derive(Debug)]
struct RendezvousSource {
    inner: Arc<dyn HeapSource>,
    barrier: Arc<Barrier>,
}

impl HeapSource for RendezvousSource {
    fn kind(&self) -> SourceKind {
        self.inner.kind()
    }

    fn read(&self) -> Result<HeapSnapshot, ReadError> {
        self.barrier.wait();
        self.inner.read()
    }
}

// ---------------------------------------------------------------------------------------------
// What a sidecar sees.

#[test]
fn node_memory_over_the_unix_socket() {
    let (server, socket, _dir) = unix_agent(
        vec![enclave("app", sim("sim:idle?heap_pages=16"))],
        DEFAULT_AGENT_POLICY,
    );
    let reply = get(Endpoint::Unix(&socket), "/node/memory");
    assert_idle_sixteen_pages(&reply.memory(), "app");
    // The body is CCF's shape plus our optional fields, nothing else.
    let body: serde_json::Value = reply.parse();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "age_seconds",
            "current_allocated_heap_size",
            "enclave",
            "max_total_heap_size",
            "origin",
            "peak_allocated_heap_size"
        ]
    );
    assert_eq!(body["origin"], "ecall");
    server.stop();
}

#[test]
fn node_memory_over_tcp() {
    let server = AgentServer::start(
        AgentConfig {
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            ..AgentConfig::default()
        },
        vec![enclave("app", sim("sim:idle?heap_pages=16"))],
    )
    .unwrap();
    assert_eq!(server.socket_path(), None);
    let address = server.tcp_address().unwrap();
    assert_ne!(address.port(), 0);
    assert_idle_sixteen_pages(&get(Endpoint::Tcp(address), "/node/memory").memory(), "app");
    server.stop();
}

#[test]
fn socket_and_tcp_serve_the_same_enclaves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let server = AgentServer::start(
        AgentConfig {
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            ..socket_config(&path, DEFAULT_AGENT_POLICY)
        },
        vec![enclave("app", sim("sim:idle?heap_pages=16"))],
    )
    .unwrap();
    let over_tcp = get(Endpoint::Tcp(server.tcp_address().unwrap()), "/node/memory").memory();
    let over_unix = get(Endpoint::Unix(&path), "/node/memory").memory();
    assert_idle_sixteen_pages(&over_tcp, "app");
    assert_idle_sixteen_pages(&over_unix, "app");
    server.stop();
    assert!(!path.exists());
}

#[test]
fn several_enclaves_by_name_in_order_with_errors_apart() {
    let (server, socket, _dir) = unix_agent(
        vec![
            enclave("a", sim("sim:idle?heap_pages=16")),
            enclave("b", sim("sim:idle?heap_pages=32")),
            enclave("bad", sim("sim:idle?fail=OE_ENCLAVE_ABORTING")),
        ],
        policy(Duration::from_secs(5), Duration::ZERO),
    );
    let endpoint = Endpoint::Unix(&socket);

    // The first registered enclave answers for the CCF path.
    assert_idle_sixteen_pages(&get(endpoint, "/node/memory").memory(), "a");
    assert_idle_sixteen_pages(&get(endpoint, "/enclaves/a/memory").memory(), "a");
    let b = get(endpoint, "/enclaves/b/memory").memory();
    assert_eq!(b.max_total_heap_size, 32 * 4096);
    assert_eq!(b.enclave.as_deref(), Some("b"));

    let list: EnclaveList = get(endpoint, "/enclaves").parse();
    assert_eq!(list.enclaves.len(), 3);
    match &list.enclaves[..] {
        [
            EnclaveEntry::Memory(a),
            EnclaveEntry::Memory(b),
            EnclaveEntry::Error(bad),
        ] => {
            assert_idle_sixteen_pages(a, "a");
            assert_eq!(b.enclave.as_deref(), Some("b"));
            assert_eq!(b.max_total_heap_size, 32 * 4096);
            assert_eq!(bad.error, "OE_ENCLAVE_ABORTING");
            assert_eq!(bad.enclave.as_deref(), Some("bad"));
        }
        other => panic!("{other:?}"),
    }

    // A failed read: 503 with the OE result name, the enclave and a sentence.
    let bad = get(endpoint, "/enclaves/bad/memory").error(503);
    assert_eq!(bad.error, "OE_ENCLAVE_ABORTING");
    assert_eq!(bad.enclave.as_deref(), Some("bad"));
    assert!(
        bad.message.unwrap().contains("OE_ENCLAVE_ABORTING"),
        "the message names the result"
    );

    for unknown in [
        "/enclaves/nope/memory",
        "/enclaves/a",
        "/enclaves/a/memory/extra",
        "/enclaves//memory",
        "/metrics",
        "/",
    ] {
        let reply = get(endpoint, unknown).error(404);
        assert_eq!(reply.error, "not_found", "{unknown}");
    }
    assert_eq!(get(endpoint, "/-/healthy").status, 200);

    // Only GET and HEAD: anything else is 405 with Allow.
    for method in ["POST", "PUT", "DELETE"] {
        let reply = request(endpoint, method, "/node/memory");
        assert_eq!(reply.error(405).error, "method_not_allowed");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    }
    // HEAD: GET's headers, Content-Length included, and no body.
    let head = request(endpoint, "HEAD", "/node/memory");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("application/json"));
    let length: usize = head.header("content-length").unwrap().parse().unwrap();
    assert!(length > 50, "content-length {length} is GET's");
    assert!(head.body.is_empty());
    assert_eq!(
        request(endpoint, "HEAD", "/enclaves/nope/memory").status,
        404
    );
    server.stop();
}

#[test]
fn a_slow_read_answers_504_at_its_deadline() {
    let (server, socket, _dir) = unix_agent(
        vec![enclave("slow", sim("sim:idle?delay=3s"))],
        policy(Duration::from_millis(200), Duration::ZERO),
    );
    let started = Instant::now();
    let reply = get(Endpoint::Unix(&socket), "/node/memory").error(504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(reply.error, "timeout");
    assert_eq!(reply.enclave.as_deref(), Some("slow"));
    // The stuck read is still in flight: a second request does not start another one, and its
    // deadline (counted from the read's start) has already passed.
    let again = get(Endpoint::Unix(&socket), "/enclaves/slow/memory").error(504);
    assert_eq!(again.error, "timeout");
    let list: EnclaveList = get(Endpoint::Unix(&socket), "/enclaves").parse();
    assert!(
        matches!(&list.enclaves[..], [EnclaveEntry::Error(entry)] if entry.error == "timeout"),
        "{list:?}"
    );
    // Stopping does not wait for the uncancellable read.
    server.stop();
    assert!(!socket.exists());
}

#[test]
fn the_list_reads_its_enclaves_concurrently() {
    // Each read returns only once both are in progress: read one after the other, the first
    // would time out.
    let barrier = Arc::new(Barrier::new(2));
    let rendezvous = |url: &str| -> Arc<dyn HeapSource> {
        Arc::new(RendezvousSource {
            inner: sim(url),
            barrier: Arc::clone(&barrier),
        })
    };
    let (server, socket, _dir) = unix_agent(
        vec![
            enclave("a", rendezvous("sim:idle?heap_pages=16")),
            enclave("b", rendezvous("sim:idle?heap_pages=32")),
        ],
        policy(Duration::from_secs(2), Duration::ZERO),
    );
    let list: EnclaveList = get(Endpoint::Unix(&socket), "/enclaves").parse();
    match &list.enclaves[..] {
        [EnclaveEntry::Memory(a), EnclaveEntry::Memory(b)] => {
            assert_idle_sixteen_pages(a, "a");
            assert_eq!(b.max_total_heap_size, 32 * 4096);
        }
        other => panic!("expected both enclaves' figures: {other:?}"),
    }
    server.stop();
}

#[test]
fn concurrent_requests_share_one_read() {
    let counting = Arc::new(CountingSource {
        inner: sim("sim:steady?heap_pages=64&period=1s&delay=300ms"),
        reads: AtomicUsize::new(0),
    });
    let (server, socket, _dir) = unix_agent(
        vec![enclave("app", Arc::clone(&counting) as Arc<dyn HeapSource>)],
        policy(Duration::from_secs(5), Duration::from_secs(10)),
    );
    let reports: Vec<MemoryReport> = std::thread::scope(|scope| {
        let requests: Vec<_> = (0..20)
            .map(|_| scope.spawn(|| get(Endpoint::Unix(&socket), "/node/memory").memory()))
            .collect();
        requests
            .into_iter()
            .map(|request| request.join().unwrap())
            .collect()
    });
    assert_eq!(counting.reads.load(Ordering::SeqCst), 1, "one read for all");
    let figures = |report: &MemoryReport| {
        (
            report.max_total_heap_size,
            report.current_allocated_heap_size,
            report.peak_allocated_heap_size,
        )
    };
    let first = figures(&reports[0]);
    assert_eq!(first.0, 64 * 4096);
    assert!(reports.iter().all(|report| figures(report) == first));
    // Within min_interval a later request reuses the same read too.
    assert_eq!(
        figures(&get(Endpoint::Unix(&socket), "/node/memory").memory()),
        first
    );
    assert_eq!(counting.reads.load(Ordering::SeqCst), 1);
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// Pushed snapshots standing in for an ECALL that found no free thread.

#[test]
fn a_recent_push_stands_in_for_out_of_threads() {
    let source = sim("sim:idle?heap_pages=16&fail=OE_OUT_OF_THREADS&push=20ms");
    let (server, socket, _dir) = unix_agent(
        vec![enclave("app", source)],
        policy(Duration::from_secs(2), Duration::ZERO),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let reply = loop {
        let reply = get(Endpoint::Unix(&socket), "/node/memory");
        if reply.status == 200 || Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let report = reply.memory();
    assert_eq!(
        report.origin,
        Some(enclave_heap_host::agent_protocol::ReportOrigin::OcallPush)
    );
    assert_eq!(report.max_total_heap_size, 16 * 4096);
    assert_eq!(report.enclave.as_deref(), Some("app"));
    let age = report.age_seconds.unwrap();
    assert!((0.0..5.0).contains(&age), "age_seconds={age}");
    let body: serde_json::Value = reply.parse();
    assert_eq!(body["origin"], "ocall_push");
    server.stop();
}

#[test]
fn a_push_too_old_does_not_stand_in() {
    // The simulated enclave pushes once when it starts, then not for an hour.
    let spec: SourceSpec = "sim:idle?heap_pages=16&fail=OE_OUT_OF_THREADS&push=1h"
        .parse()
        .unwrap();
    let source = open_source_with(
        &spec,
        &SourceOptions {
            push_max_age: Duration::from_millis(50),
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let (server, socket, _dir) = unix_agent(
        vec![enclave("app", source)],
        policy(Duration::from_secs(2), Duration::ZERO),
    );
    for _ in 0..2 {
        let error = get(Endpoint::Unix(&socket), "/node/memory").error(503);
        assert_eq!(error.error, "OE_OUT_OF_THREADS");
        assert_eq!(error.enclave.as_deref(), Some("app"));
    }
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// The socket file.

#[test]
fn the_socket_is_private_by_default() {
    let (server, socket, _dir) = unix_agent(
        vec![enclave("app", sim("sim:idle?heap_pages=16"))],
        DEFAULT_AGENT_POLICY,
    );
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // No temporary name is left next to it.
    let names: Vec<_> = std::fs::read_dir(socket.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["agent.sock"]);
    server.stop();
}

#[test]
fn a_group_gets_mode_0660_and_ownership() {
    // SAFETY: getegid has no preconditions and cannot fail.
    let gid = unsafe { libc::getegid() };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let server = AgentServer::start(
        AgentConfig {
            socket: Some(AgentSocket {
                path: path.clone(),
                group: Some(gid),
            }),
            ..AgentConfig::default()
        },
        vec![enclave("app", sim("sim:idle?heap_pages=16"))],
    )
    .unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid);
    assert_idle_sixteen_pages(&get(Endpoint::Unix(&path), "/node/memory").memory(), "app");
    server.stop();
}

#[test]
fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    // A listener dropped without cleaning up leaves its file, and nobody answers on it.
    drop(UnixListener::bind(&path).unwrap());
    let stale_inode = std::fs::symlink_metadata(&path).unwrap().ino();
    let server = AgentServer::start(
        socket_config(&path, DEFAULT_AGENT_POLICY),
        vec![enclave("app", sim("sim:idle?heap_pages=16"))],
    )
    .unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_ne!(meta.ino(), stale_inode);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_idle_sixteen_pages(&get(Endpoint::Unix(&path), "/node/memory").memory(), "app");
    server.stop();
    assert!(!path.exists());
}

#[test]
fn a_live_socket_is_not_taken_over() {
    let (first, socket, _dir) = unix_agent(
        vec![enclave("first", sim("sim:idle?heap_pages=16"))],
        DEFAULT_AGENT_POLICY,
    );
    let error = AgentServer::start(
        socket_config(&socket, DEFAULT_AGENT_POLICY),
        vec![enclave("second", sim("sim:idle?heap_pages=16"))],
    )
    .unwrap_err();
    assert!(
        matches!(&error, AgentError::SocketInUse(path) if *path == socket),
        "{error:?}"
    );
    assert!(error.to_string().contains("another process is serving"));
    // The first agent is unharmed and nothing was left behind.
    assert_idle_sixteen_pages(
        &get(Endpoint::Unix(&socket), "/node/memory").memory(),
        "first",
    );
    assert_eq!(
        std::fs::read_dir(socket.parent().unwrap()).unwrap().count(),
        1
    );
    first.stop();
}

#[test]
fn a_file_that_is_not_a_socket_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    std::fs::write(&path, "keep me").unwrap();
    let error = AgentServer::start(
        socket_config(&path, DEFAULT_AGENT_POLICY),
        vec![enclave("app", sim("sim:idle?heap_pages=16"))],
    )
    .unwrap_err();
    assert!(
        matches!(&error, AgentError::NotASocket(bad) if *bad == path),
        "{error:?}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn the_socket_file_goes_with_stop_and_with_drop() {
    let (server, socket, _dir) = unix_agent(
        vec![enclave("app", sim("sim:idle?heap_pages=16"))],
        DEFAULT_AGENT_POLICY,
    );
    assert!(socket.exists());
    server.stop();
    assert!(!socket.exists());

    let (server, socket, _dir) = unix_agent(
        vec![enclave("app", sim("sim:idle?heap_pages=16"))],
        DEFAULT_AGENT_POLICY,
    );
    get(Endpoint::Unix(&socket), "/node/memory").memory();
    drop(server);
    assert!(!socket.exists());
    assert!(UnixStream::connect(&socket).is_err());
}

#[test]
fn a_successors_socket_is_not_removed() {
    let (first, socket, _dir) = unix_agent(
        vec![enclave("first", sim("sim:idle?heap_pages=16"))],
        DEFAULT_AGENT_POLICY,
    );
    // Someone removes the first agent's file and a second agent takes the path.
    std::fs::remove_file(&socket).unwrap();
    let second = AgentServer::start(
        socket_config(&socket, DEFAULT_AGENT_POLICY),
        vec![enclave("second", sim("sim:idle?heap_pages=16"))],
    )
    .unwrap();
    first.stop();
    assert!(
        socket.exists(),
        "the first agent removed the second's socket"
    );
    assert_idle_sixteen_pages(
        &get(Endpoint::Unix(&socket), "/node/memory").memory(),
        "second",
    );
    second.stop();
    assert!(!socket.exists());
}

#[test]
fn a_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("agent.sock");
    let error = AgentServer::start(
        socket_config(&path, DEFAULT_AGENT_POLICY),
        vec![enclave("app", sim("sim:idle?heap_pages=16"))],
    )
    .unwrap_err();
    assert!(
        matches!(&error, AgentError::Socket { path: bad, .. } if *bad == path),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("directory does not exist"), "{message}");
}

#[test]
fn invalid_configurations_are_rejected_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let app = || vec![enclave("app", sim("sim:idle?heap_pages=16"))];
    let start = |config: AgentConfig, enclaves| AgentServer::start(config, enclaves).unwrap_err();

    assert!(matches!(
        start(AgentConfig::default(), app()),
        AgentError::NoListener
    ));
    assert!(matches!(
        start(socket_config(&path, DEFAULT_AGENT_POLICY), Vec::new()),
        AgentError::NoEnclaves
    ));
    let too_long = "x".repeat(65);
    for bad in [
        "",
        "a/b",
        "with space",
        "caf\u{e9}",
        "a?b",
        too_long.as_str(),
    ] {
        let error = start(
            socket_config(&path, DEFAULT_AGENT_POLICY),
            vec![enclave(bad, sim("sim:idle?heap_pages=16"))],
        );
        assert!(
            matches!(&error, AgentError::EnclaveName(name) if name == bad),
            "{bad:?}: {error:?}"
        );
    }
    let mut twice = app();
    twice.push(enclave("b", sim("sim:idle?heap_pages=16")));
    twice.push(enclave("app", sim("sim:idle?heap_pages=16")));
    let error = start(socket_config(&path, DEFAULT_AGENT_POLICY), twice);
    assert!(
        matches!(&error, AgentError::DuplicateEnclave(name) if name == "app"),
        "{error:?}"
    );
    // Names at the limits are fine.
    let longest = "y".repeat(64);
    let server = AgentServer::start(
        socket_config(&path, DEFAULT_AGENT_POLICY),
        vec![
            enclave(&longest, sim("sim:idle?heap_pages=16")),
            enclave("A-z_0.9:x", sim("sim:idle?heap_pages=16")),
        ],
    )
    .unwrap();
    let named = get(Endpoint::Unix(&path), "/enclaves/A-z_0.9:x/memory").memory();
    assert_eq!(named.enclave.as_deref(), Some("A-z_0.9:x"));
    server.stop();
    // A rejected configuration never created the socket.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

// ---------------------------------------------------------------------------------------------
// The `sim-host` example as a real process.

/// Builds the example once per test run and returns its path.
///
/// Cargo gives integration tests `CARGO_BIN_EXE_*` for binaries only, not for examples, and
/// `cargo test --test agent` does not build examples. So we ask cargo itself to build it, in the
/// target directory this test was built in (the parent of `CARGO_TARGET_TMPDIR`) with the same
/// profile, and take the executable's path from cargo's JSON messages instead of guessing the
/// layout. When the example is up to date this is a no-op that takes a fraction of a second.
fn sim_host() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
        let mut build = Command::new(cargo);
        build
            .args(["build", "--example", "sim-host", "--message-format=json"])
            .arg("--manifest-path")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir)
            .stderr(Stdio::inherit());
        // Cargo sets these for the test process; build scripts that track them (ring tracks
        // OUT_DIR) would otherwise rebuild, and again at the next plain `cargo build`.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name == "OUT_DIR"
                || name == "CARGO_PRIMARY_PACKAGE"
                || name == "CARGO_TARGET_TMPDIR"
                || [
                    "CARGO_PKG_",
                    "CARGO_MANIFEST_",
                    "CARGO_CRATE_",
                    "CARGO_BIN_",
                ]
                .iter()
                .any(|prefix| name.starts_with(prefix))
            {
                build.env_remove(name.as_ref());
            }
        }
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let output = build.output().unwrap();
        assert!(
            output.status.success(),
            "cargo build --example sim-host failed"
        );
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|message| {
                message["reason"] == "compiler-artifact" && message["target"]["name"] == "sim-host"
            })
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no sim-host executable")
    })
}

/// A running `sim-host`, killed if a test fails before stopping it.
struct SimHost {
    child: Child,
    socket: Option<PathBuf>,
    tcp: Option<SocketAddr>,
}

impl SimHost {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(sim_host())
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (line_sender, line) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = line_sender.send(line);
        });
        let mut host = Self {
            child,
            socket: None,
            tcp: None,
        };
        let line = line
            .recv_timeout(IO_TIMEOUT)
            .expect("sim-host did not say it was listening");
        let fields = line
            .trim_end()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        for field in fields.split(' ') {
            match field.split_once('=') {
                Some(("socket", "none")) | Some(("tcp", "none")) => {}
                Some(("socket", path)) => host.socket = Some(PathBuf::from(path)),
                Some(("tcp", address)) => host.tcp = Some(address.parse().unwrap()),
                _ => panic!("unexpected field {field:?} in {line:?}"),
            }
        }
        host
    }

    /// Sends `signal` and returns the exit status and what it wrote on stderr.
    fn stop_with(mut self, signal: libc::c_int) -> (std::process::ExitStatus, String) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child, which has
        // not been waited for, so it cannot have been reused.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let deadline = Instant::now() + IO_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "sim-host did not stop");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status, stderr)
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn sim_host_serves_its_enclave_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("host.sock");
    let host = SimHost::start(&[
        "--socket",
        socket.to_str().unwrap(),
        "--profile",
        "idle",
        "--heap-pages",
        "16",
        "--name",
        "app",
    ]);
    assert_eq!(host.socket.as_deref(), Some(socket.as_path()));
    assert_eq!(host.tcp, None);
    assert_eq!(
        std::fs::symlink_metadata(&socket)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_idle_sixteen_pages(
        &get(Endpoint::Unix(&socket), "/node/memory").memory(),
        "app",
    );
    let (status, stderr) = host.stop_with(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!socket.exists(), "the socket file outlived a clean stop");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}

#[test]
fn sim_host_with_tcp_and_extra_enclaves_until_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("host.sock");
    let host = SimHost::start(&[
        "--socket",
        socket.to_str().unwrap(),
        "--tcp",
        "127.0.0.1:0",
        "--profile",
        "idle",
        "--heap-pages",
        "16",
        "--fail",
        "OE_OUT_OF_THREADS",
        "--push",
        "20ms",
        "--extra",
        "b=sim:idle?heap_pages=32",
        "--extra",
        "c=sim:idle?fail=OE_ENCLAVE_ABORTING",
    ]);
    let tcp = Endpoint::Tcp(host.tcp.unwrap());
    // The first enclave fails every ECALL but pushes, so its pushed figures are served.
    let deadline = Instant::now() + Duration::from_secs(5);
    let report = loop {
        let reply = get(tcp, "/enclaves/sim/memory");
        if reply.status == 200 || Instant::now() > deadline {
            break reply.memory();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(report.max_total_heap_size, 16 * 4096);
    assert_eq!(
        report.origin,
        Some(enclave_heap_host::agent_protocol::ReportOrigin::OcallPush)
    );
    let list: EnclaveList = get(tcp, "/enclaves").parse();
    let names: Vec<_> = list
        .enclaves
        .iter()
        .map(|entry| match entry {
            EnclaveEntry::Memory(report) => report.enclave.clone().unwrap(),
            EnclaveEntry::Error(error) => {
                format!("{}:{}", error.enclave.clone().unwrap(), error.error)
            }
        })
        .collect();
    assert_eq!(names, ["sim", "b", "c:OE_ENCLAVE_ABORTING"]);
    assert_eq!(
        get(Endpoint::Unix(&socket), "/enclaves/b/memory")
            .memory()
            .max_total_heap_size,
        32 * 4096
    );
    let (status, stderr) = host.stop_with(libc::SIGINT);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!socket.exists());
}

#[test]
fn sim_host_rejects_bad_flags_with_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("host.sock");
    let socket = socket.to_str().unwrap();
    for (args, expected) in [
        (vec!["--bogus"], "--bogus"),
        (vec![], "--socket"),
        (vec!["--socket", socket, "--heap-pages", "1"], "heap_pages"),
        (vec!["--socket", socket, "--profile", "lazy"], "lazy"),
        (vec!["--socket", socket, "--push", "1"], "--push"),
        (vec!["--socket", socket, "--fail", "OE_NOPE"], "OE_NOPE"),
        (vec!["--socket", socket, "--extra", "b"], "NAME=SIMURL"),
        (
            vec!["--socket", socket, "--extra", "b=unix:///x.sock"],
            "sim:",
        ),
        (vec!["--socket", socket, "--name", "a/b"], "a/b"),
        (vec!["--socket", socket, "--extra", "sim=sim:idle"], "twice"),
        (vec!["--tcp", "not-an-address"], "--tcp"),
    ] {
        let output = Command::new(sim_host())
            .args(&args)
            .env("RUST_LOG", "off")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        let lines: Vec<_> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(lines[0].starts_with("sim-host: "), "{stderr}");
        assert!(lines[0].contains(expected), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    // Nothing was left behind by any of them.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn sim_host_fails_with_exit_1_when_the_socket_is_taken() {
    let (server, socket, _dir) = unix_agent(
        vec![enclave("app", sim("sim:idle?heap_pages=16"))],
        DEFAULT_AGENT_POLICY,
    );
    let output = Command::new(sim_host())
        .args(["--socket", socket.to_str().unwrap(), "--profile", "idle"])
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("another process is serving"), "{stderr}");
    assert_idle_sixteen_pages(
        &get(Endpoint::Unix(&socket), "/node/memory").memory(),
        "app",
    );
    server.stop();
}
