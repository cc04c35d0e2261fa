//! The agent client against test stand-ins for our agent and for a CCF node, on real loopback
//! TCP and Unix sockets: well-behaved servers (hyper), misbehaving ones (raw sockets) and TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use enclave_heap_host::agent_client::{
    AgentClient, AgentClientError, AgentClientOptions, AgentEndpoint, AgentReadError,
};
use enclave_heap_host::agent_protocol::{EnclaveEntry, ErrorReport, MemoryReport};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// What a CCF node answers at `GET /node/memory` (nlohmann::json sorts the keys), plus a field
/// that no version of our protocol knows. The peak is 2^53 + 1, which a float would round.
const CCF_NODE_MEMORY: &str = r#"{"current_allocated_heap_size":123456789,"max_total_heap_size":4294967296,"peak_allocated_heap_size":9007199254740993,"ccf_build":{"version":"6.0.0"}}"#;

const CCF_REPORT: MemoryReport = MemoryReport {
    max_total_heap_size: 4_294_967_296,
    current_allocated_heap_size: 123_456_789,
    peak_allocated_heap_size: 9_007_199_254_740_993,
    enclave: None,
    origin: None,
    age_seconds: None,
};

/// Generous bound for "returned within its timeout": the machine is shared and slow at times.
const SLACK: Duration = Duration::from_secs(3);

fn options() -> AgentClientOptions {
    AgentClientOptions {
        connect_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(5),
        ..AgentClientOptions::default()
    }
}

fn http_client(url: &str, options: AgentClientOptions) -> AgentClient {
    let url: Uri = url.parse().unwrap();
    AgentClient::new(AgentEndpoint::Http { url }, options).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Test stand-in: a well-behaved HTTP/1.1 server (hyper) on TCP, TCP+TLS or a Unix socket.

type Answer = Arc<dyn Fn(&str) -> (u16, String) + Send + Sync>;

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
struct SeenRequest {
    path_and_query: String,
    host: Option<String>,
    accept: Option<String>,
    user_agent: Option<String>,
}

/// Test stand-in for our agent or a CCF node: answers every request with `answer(path)`, keeps
/// connections alive, and counts the connections it accepted.
struct StandInServer {
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<SeenRequest>>>,
    task: JoinHandle<()>,
}

enum StandInListener {
    Tcp(TcpListener, Option<TlsAcceptor>),
    Unix(UnixListener),
}

impl StandInServer {
    fn start(
        listener: StandInListener,
        answer: impl Fn(&str) -> (u16, String) + Send + Sync + 'static,
    ) -> Self {
        let answer: Answer = Arc::new(answer);
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let connections = connections.clone();
            let requests = requests.clone();
            async move {
                // Owning the connection tasks here means stopping the server also closes them.
                let mut open = JoinSet::new();
                loop {
                    let (answer, requests) = (answer.clone(), requests.clone());
                    match &listener {
                        StandInListener::Tcp(listener, tls) => {
                            let Ok((stream, _)) = listener.accept().await else {
                                return;
                            };
                            connections.fetch_add(1, Ordering::SeqCst);
                            let tls = tls.clone();
                            open.spawn(async move {
                                match tls {
                                    None => serve_http(stream, answer, requests).await,
                                    Some(tls) => {
                                        if let Ok(stream) = tls.accept(stream).await {
                                            serve_http(stream, answer, requests).await;
                                        }
                                    }
                                }
                            });
                        }
                        StandInListener::Unix(listener) => {
                            let Ok((stream, _)) = listener.accept().await else {
                                return;
                            };
                            connections.fetch_add(1, Ordering::SeqCst);
                            open.spawn(serve_http(stream, answer, requests));
                        }
                    }
                }
            }
        });
        Self {
            connections,
            requests,
            task,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<SeenRequest> {
        self.requests.lock().unwrap().clone()
    }

    async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for StandInServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_http<S>(stream: S, answer: Answer, requests: Arc<Mutex<Vec<SeenRequest>>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let header = |name: http::header::HeaderName| {
            request
                .headers()
                .get(name)
                .map(|value| value.to_str().unwrap().to_owned())
        };
        let path_and_query = request
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        requests.lock().unwrap().push(SeenRequest {
            path_and_query: path_and_query.clone(),
            host: header(http::header::HOST),
            accept: header(http::header::ACCEPT),
            user_agent: header(http::header::USER_AGENT),
        });
        let (status, body) = answer(&path_and_query);
        async move {
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn tcp_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A stand-in answering every path with the same status and body, on loopback TCP.
async fn answering(status: u16, body: &str) -> (StandInServer, SocketAddr) {
    let (listener, addr) = tcp_listener().await;
    let body = body.to_owned();
    let server = StandInServer::start(StandInListener::Tcp(listener, None), move |_| {
        (status, body.clone())
    });
    (server, addr)
}

// ---------------------------------------------------------------------------------------------
// Test stand-in: a raw TCP server that misbehaves on purpose.

/// Starts a raw stand-in; `behave(stream, n)` runs for the n-th accepted connection (from 0).
async fn raw_stand_in<F, Fut>(behave: F) -> (SocketAddr, JoinHandle<()>)
where
    F: Fn(TcpStream, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (listener, addr) = tcp_listener().await;
    let task = tokio::spawn(async move {
        let mut open = JoinSet::new();
        for n in 0.. {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            open.spawn(behave(stream, n));
        }
    });
    (addr, task)
}

/// Reads one request head; `None` when the client closed first.
async fn read_request_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn ok_response(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

// ---------------------------------------------------------------------------------------------
// Reading, and keeping the connection.

#[tokio::test]
async fn reads_a_ccf_node_over_tcp_on_one_kept_alive_connection() {
    let (listener, addr) = tcp_listener().await;
    let server = StandInServer::start(StandInListener::Tcp(listener, None), |path| match path {
        "/node/memory" => (200, CCF_NODE_MEMORY.to_owned()),
        _ => (404, String::new()),
    });
    let client = http_client(&format!("http://{addr}/node/memory"), options());

    for _ in 0..3 {
        assert_eq!(client.get_memory().await.unwrap(), CCF_REPORT);
    }

    assert_eq!(
        server.connections(),
        1,
        "the three reads should share one connection"
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    let request = &requests[0];
    assert_eq!(request.path_and_query, "/node/memory");
    assert_eq!(request.host.as_deref(), Some(addr.to_string().as_str()));
    assert_eq!(request.accept.as_deref(), Some("application/json"));
    let user_agent = request.user_agent.as_deref().unwrap();
    assert_eq!(
        user_agent,
        concat!("enclave-heap-exporter/", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn reads_an_agent_over_a_unix_socket_on_one_kept_alive_connection() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let server = StandInServer::start(StandInListener::Unix(listener), |path| {
        match path {
        "/enclaves/app/memory" => (
            200,
            r#"{"max_total_heap_size":1048576,"current_allocated_heap_size":4096,"peak_allocated_heap_size":8192,"enclave":"app","origin":"ecall","age_seconds":0.25}"#.to_owned(),
        ),
        _ => (404, r#"{"error":"not_found"}"#.to_owned()),
    }
    });
    let endpoint = AgentEndpoint::Unix {
        socket: socket.clone(),
        path: "/enclaves/app/memory".to_owned(),
    };
    let client = AgentClient::new(endpoint, options()).unwrap();

    for _ in 0..3 {
        let report = client.get_memory().await.unwrap();
        assert_eq!(report.max_total_heap_size, 1_048_576);
        assert_eq!(report.current_allocated_heap_size, 4096);
        assert_eq!(report.peak_allocated_heap_size, 8192);
        assert_eq!(report.enclave.as_deref(), Some("app"));
        assert_eq!(report.age_seconds, Some(0.25));
    }

    assert_eq!(server.connections(), 1);
    assert_eq!(server.requests()[0].host.as_deref(), Some("localhost"));
}

#[tokio::test]
async fn reads_over_ipv6_loopback_with_a_bracketed_host_header() {
    let Ok(listener) = TcpListener::bind("[::1]:0").await else {
        // IPv6 is a property of the machine, not of the client: nothing to test without it.
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    };
    let addr = listener.local_addr().unwrap();
    let server = StandInServer::start(StandInListener::Tcp(listener, None), |_| {
        (200, CCF_NODE_MEMORY.to_owned())
    });
    let client = http_client(
        &format!("http://[::1]:{}/node/memory", addr.port()),
        options(),
    );

    assert_eq!(client.get_memory().await.unwrap(), CCF_REPORT);

    let expected_host = format!("[::1]:{}", addr.port());
    assert_eq!(
        server.requests()[0].host.as_deref(),
        Some(expected_host.as_str())
    );
}

#[tokio::test]
async fn get_list_reads_memory_and_error_entries_from_the_same_server() {
    let (listener, addr) = tcp_listener().await;
    let server = StandInServer::start(StandInListener::Tcp(listener, None), |path| {
        match path {
        "/enclaves" => (
            200,
            r#"{"enclaves":[
                {"enclave":"app","max_total_heap_size":100,"current_allocated_heap_size":10,"peak_allocated_heap_size":20,"origin":"ocall_push","age_seconds":3.5},
                {"enclave":"busy","error":"OE_OUT_OF_THREADS","message":"all TCS busy"}
            ],"host":"stand-in"}"#
                .to_owned(),
        ),
        _ => (404, String::new()),
    }
    });
    let client = http_client(&format!("http://{addr}/node/memory?enclave=app"), options());

    let list = client.get_list().await.unwrap();

    assert_eq!(server.requests()[0].path_and_query, "/enclaves");
    assert_eq!(list.enclaves.len(), 2);
    let EnclaveEntry::Memory(memory) = &list.enclaves[0] else {
        panic!("{list:?}")
    };
    assert_eq!(memory.enclave.as_deref(), Some("app"));
    assert_eq!(
        (
            memory.max_total_heap_size,
            memory.current_allocated_heap_size,
            memory.peak_allocated_heap_size
        ),
        (100, 10, 20)
    );
    assert_eq!(
        list.enclaves[1],
        EnclaveEntry::Error(ErrorReport {
            error: "OE_OUT_OF_THREADS".to_owned(),
            enclave: Some("busy".to_owned()),
            message: Some("all TCS busy".to_owned()),
        })
    );
}

#[tokio::test]
async fn an_entry_that_is_neither_kind_makes_the_list_invalid() {
    let (_server, addr) = answering(200, r#"{"enclaves":[{"enclave":"odd","heap":1}]}"#).await;
    let client = http_client(&format!("http://{addr}/node/memory"), options());

    let error = client.get_list().await.unwrap_err();

    let AgentReadError::InvalidResponse(message) = &error else {
        panic!("{error:?}")
    };
    assert!(message.contains("entry 0 (\"odd\")"), "{message}");
    assert_eq!(error.result_label(), "invalid_response");
}

// ---------------------------------------------------------------------------------------------
// Error answers.

#[tokio::test]
async fn a_503_with_an_oe_result_is_labelled_with_that_result() {
    let (_server, addr) = answering(
        503,
        r#"{"error":"OE_OUT_OF_THREADS","enclave":"app","message":"all NumTCS threads are busy"}"#,
    )
    .await;
    let client = http_client(&format!("http://{addr}/node/memory"), options());

    let error = client.get_memory().await.unwrap_err();

    let AgentReadError::Status {
        status: 503,
        error: Some(report),
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!(report.error, "OE_OUT_OF_THREADS");
    assert_eq!(error.result_label(), "OE_OUT_OF_THREADS");
}

#[tokio::test]
async fn other_error_answers_are_labelled_with_their_status() {
    let cases = [
        (500, "<html>Internal Server Error</html>", "http_500"),
        (404, r#"{"error":"not_found"}"#, "http_404"),
        (404, "", "http_404"),
        (
            503,
            r#"{"error":"something went wrong: free text"}"#,
            "http_503",
        ),
        (504, r#"{"error":"timeout"}"#, "timeout"),
    ];
    for (status, body, label) in cases {
        let (_server, addr) = answering(status, body).await;
        let client = http_client(&format!("http://{addr}/node/memory"), options());

        let error = client.get_memory().await.unwrap_err();

        assert!(
            matches!(error, AgentReadError::Status { status: s, .. } if s == status),
            "{error:?}"
        );
        assert_eq!(error.result_label(), label, "{status} {body}");
    }
}

#[tokio::test]
async fn answers_that_are_not_a_heap_report_are_invalid() {
    const CASES: [(&str, &str, &str); 8] = [
        ("malformed", r#"{"max_total_heap_size": 1,"#, "EOF"),
        (
            "missing",
            r#"{"max_total_heap_size":1,"current_allocated_heap_size":2}"#,
            "missing field `peak_allocated_heap_size`",
        ),
        (
            "string",
            r#"{"max_total_heap_size":"1","current_allocated_heap_size":2,"peak_allocated_heap_size":3}"#,
            "invalid type: string",
        ),
        (
            "negative",
            r#"{"max_total_heap_size":1,"current_allocated_heap_size":-2,"peak_allocated_heap_size":3}"#,
            "invalid value: integer `-2`",
        ),
        (
            "fraction",
            r#"{"max_total_heap_size":1,"current_allocated_heap_size":2,"peak_allocated_heap_size":3.5}"#,
            "floating point `3.5`",
        ),
        (
            "too-big",
            r#"{"max_total_heap_size":18446744073709551616,"current_allocated_heap_size":2,"peak_allocated_heap_size":3}"#,
            "floating point",
        ),
        ("empty", "", "the body is empty"),
        ("array", "[1,2,3]", "expected a JSON object"),
    ];
    let (listener, addr) = tcp_listener().await;
    let _server = StandInServer::start(StandInListener::Tcp(listener, None), |path| {
        let case = path.trim_start_matches('/');
        let body = CASES
            .iter()
            .find(|(name, _, _)| *name == case)
            .map(|(_, body, _)| *body)
            .unwrap_or("");
        (200, body.to_owned())
    });
    for (name, _, expected) in CASES {
        let client = http_client(&format!("http://{addr}/{name}"), options());

        let error = client.get_memory().await.expect_err(name);

        let AgentReadError::InvalidResponse(message) = &error else {
            panic!("{name}: {error:?}")
        };
        assert!(message.contains(expected), "{name}: {message}");
        assert_eq!(error.result_label(), "invalid_response");
    }
}

#[tokio::test]
async fn an_answer_that_is_not_utf8_is_invalid() {
    let (addr, _server) = raw_stand_in(|mut stream, _| async move {
        if read_request_head(&mut stream).await.is_some() {
            let body: &[u8] = b"{\"max_total_heap_size\":1,\"current_allocated_heap_size\":2,\"peak_allocated_heap_size\":3,\"enclave\":\"\xff\xfe\"}";
            let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            answer.extend_from_slice(body);
            let _ = stream.write_all(&answer).await;
        }
    })
    .await;
    let client = http_client(&format!("http://{addr}/node/memory"), options());

    let error = client.get_memory().await.unwrap_err();

    let AgentReadError::InvalidResponse(message) = &error else {
        panic!("{error:?}")
    };
    assert!(
        message.contains("unicode") || message.contains("UTF-8"),
        "{message}"
    );
}

#[tokio::test]
async fn a_server_that_is_not_http_gives_an_invalid_response() {
    let (addr, _server) = raw_stand_in(|mut stream, _| async move {
        if read_request_head(&mut stream).await.is_some() {
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
        }
    })
    .await;
    let client = http_client(&format!("http://{addr}/node/memory"), options());

    let error = client.get_memory().await.unwrap_err();

    assert!(
        matches!(error, AgentReadError::InvalidResponse(_)),
        "{error:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bounds: size and time.

#[tokio::test]
async fn an_endless_body_is_cut_off_at_the_limit() {
    let (addr, _server) = raw_stand_in(|mut stream, _| async move {
        if read_request_head(&mut stream).await.is_none() {
            return;
        }
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, " ".repeat(16 * 1024));
        // "Forever", but bounded so the stand-in always ends: 10 MB, or until the client hangs up.
        for _ in 0..640 {
            if stream.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await;
    let client = http_client(&format!("http://{addr}/node/memory"), options());

    let started = Instant::now();
    let error = client.get_memory().await.unwrap_err();

    assert_eq!(error, AgentReadError::TooLarge { limit: 64 * 1024 });
    assert_eq!(error.result_label(), "too_large");
    assert!(
        started.elapsed() < options().total_timeout,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_declared_10_mb_body_is_refused_without_reading_it() {
    let (addr, _server) = raw_stand_in(|mut stream, _| async move {
        if read_request_head(&mut stream).await.is_some() {
            let head =
                "HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n{\"max_total_heap_size\":";
            let _ = stream.write_all(head.as_bytes()).await;
            // Hold the connection open without sending the rest: only the header can end this.
            let _ = stream.read(&mut [0u8; 1]).await;
        }
    })
    .await;
    let options = AgentClientOptions {
        max_body_bytes: 1024,
        ..options()
    };
    let client = http_client(&format!("http://{addr}/node/memory"), options);

    let error = client.get_memory().await.unwrap_err();

    assert_eq!(error, AgentReadError::TooLarge { limit: 1024 });
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_at_the_total_timeout() {
    let (addr, _server) = raw_stand_in(|mut stream, _| async move {
        let _ = read_request_head(&mut stream).await;
        // Wait for the client to hang up, answering nothing.
        let _ = stream.read(&mut [0u8; 1]).await;
    })
    .await;
    let total_timeout = Duration::from_millis(300);
    let client = http_client(
        &format!("http://{addr}/node/memory"),
        AgentClientOptions {
            total_timeout,
            ..options()
        },
    );

    let started = Instant::now();
    let error = client.get_memory().await.unwrap_err();

    assert_eq!(error, AgentReadError::Timeout(total_timeout));
    assert_eq!(error.result_label(), "timeout");
    assert!(started.elapsed() >= total_timeout);
    assert!(
        started.elapsed() < total_timeout + SLACK,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_tls_server_that_never_handshakes_times_out_at_the_connect_timeout() {
    let (addr, _server) = raw_stand_in(|mut stream, _| async move {
        let _ = stream.read(&mut [0u8; 4096]).await;
        let _ = stream.read(&mut [0u8; 1]).await;
    })
    .await;
    let pki = TestPki::generate();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = pki.write_ca_file(dir.path());
    let connect_timeout = Duration::from_millis(200);
    let options = AgentClientOptions {
        connect_timeout,
        ca_file: Some(ca_file),
        ..options()
    };
    let client = http_client(&format!("https://{addr}/node/memory"), options);

    let error = client.get_memory().await.unwrap_err();

    assert_eq!(error, AgentReadError::Timeout(connect_timeout));
}

// ---------------------------------------------------------------------------------------------
// Connecting, breaking, reconnecting.

#[tokio::test]
async fn a_missing_socket_is_a_connect_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-agent-here.sock");
    let client = AgentClient::new(AgentEndpoint::unix(&socket), options()).unwrap();

    let error = client.get_memory().await.unwrap_err();

    let AgentReadError::Connect(message) = &error else {
        panic!("{error:?}")
    };
    assert!(message.contains(&socket.display().to_string()), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    assert_eq!(error.result_label(), "connect");
}

#[tokio::test]
async fn a_refused_tcp_connection_is_a_connect_error_naming_the_address() {
    let (listener, addr) = tcp_listener().await;
    drop(listener);
    let client = http_client(&format!("http://{addr}/node/memory"), options());

    let error = client.get_memory().await.unwrap_err();

    let AgentReadError::Connect(message) = &error else {
        panic!("{error:?}")
    };
    assert!(
        message.contains(&addr.to_string()) && message.contains("refused"),
        "{message}"
    );
}

#[tokio::test]
async fn a_restarted_server_is_read_on_a_new_connection() {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let first = StandInServer::start(
        StandInListener::Tcp(socket.listen(16).unwrap(), None),
        |_| (200, CCF_NODE_MEMORY.to_owned()),
    );
    let client = http_client(&format!("http://{addr}/node/memory"), options());
    assert_eq!(client.get_memory().await.unwrap(), CCF_REPORT);

    first.stop().await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let second = StandInServer::start(
        StandInListener::Tcp(socket.listen(16).unwrap(), None),
        |_| (200, CCF_NODE_MEMORY.to_owned()),
    );

    assert_eq!(client.get_memory().await.unwrap(), CCF_REPORT);
    assert_eq!(second.connections(), 1);
}

#[tokio::test]
async fn a_kept_alive_connection_that_dies_under_a_request_is_retried_once() {
    let (addr, _server) = raw_stand_in(|mut stream, n| async move {
        if read_request_head(&mut stream).await.is_none() {
            return;
        }
        let _ = stream
            .write_all(ok_response(CCF_NODE_MEMORY).as_bytes())
            .await;
        if n == 0 {
            // The first connection takes the next request and closes without answering, as an
            // agent that restarts or drops idle connections would.
            let _ = read_request_head(&mut stream).await;
        } else {
            let _ = stream.read(&mut [0u8; 1]).await;
        }
    })
    .await;
    let client = http_client(&format!("http://{addr}/node/memory"), options());

    assert_eq!(client.get_memory().await.unwrap(), CCF_REPORT);
    assert_eq!(client.get_memory().await.unwrap(), CCF_REPORT);
}

#[tokio::test]
async fn a_new_connection_that_breaks_is_not_retried() {
    // Each connection reads a request and closes, except a sentinel request, which is answered
    // with the number of the connection it came on.
    let (addr, _server) = raw_stand_in(|mut stream, n| async move {
        if let Some(head) = read_request_head(&mut stream).await {
            if head.starts_with("GET /sentinel") {
                let _ = stream
                    .write_all(ok_response(&n.to_string()).as_bytes())
                    .await;
            }
        }
    })
    .await;
    let client = http_client(&format!("http://{addr}/node/memory"), options());

    let error = client.get_memory().await.unwrap_err();

    let AgentReadError::Io(message) = &error else {
        panic!("{error:?}")
    };
    assert!(message.contains("closed"), "{message}");
    assert_eq!(error.result_label(), "io");
    // Connections are accepted in the order they were made, so a retry would have come before
    // the sentinel and made it connection 2.
    let mut sentinel = TcpStream::connect(addr).await.unwrap();
    sentinel
        .write_all(b"GET /sentinel HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    sentinel.read_to_string(&mut answer).await.unwrap();
    assert!(answer.ends_with("\r\n\r\n1"), "{answer}");
}

#[tokio::test]
async fn a_connection_that_breaks_mid_body_is_an_io_error() {
    let (addr, _server) = raw_stand_in(|mut stream, _| async move {
        if read_request_head(&mut stream).await.is_some() {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"max_total")
                .await;
        }
    })
    .await;
    let client = http_client(&format!("http://{addr}/node/memory"), options());

    let error = client.get_memory().await.unwrap_err();

    assert!(matches!(error, AgentReadError::Io(_)), "{error:?}");
}

// ---------------------------------------------------------------------------------------------
// TLS.

/// A private CA and a server certificate for 127.0.0.1 that it signed, made for each test run.
struct TestPki {
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
}

impl TestPki {
    fn generate() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test stand-in CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server_params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let server_cert = server_params.signed_by(&server_key, &ca).unwrap();
        Self {
            ca_pem: ca.pem(),
            server_chain: vec![server_cert.der().clone()],
            server_key: server_key.serialize_der(),
        }
    }

    fn write_ca_file(&self, dir: &Path) -> std::path::PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }

    fn acceptor(&self) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), key)
            .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }
}

async fn tls_stand_in(pki: &TestPki) -> (StandInServer, SocketAddr) {
    let (listener, addr) = tcp_listener().await;
    let server = StandInServer::start(StandInListener::Tcp(listener, Some(pki.acceptor())), |_| {
        (200, CCF_NODE_MEMORY.to_owned())
    });
    (server, addr)
}

#[tokio::test]
async fn https_with_the_servers_ca_file_reads_on_one_connection() {
    let pki = TestPki::generate();
    let (server, addr) = tls_stand_in(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let options = AgentClientOptions {
        ca_file: Some(pki.write_ca_file(dir.path())),
        ..options()
    };
    let client = http_client(&format!("https://{addr}/node/memory"), options);

    assert_eq!(client.get_memory().await.unwrap(), CCF_REPORT);
    assert_eq!(client.get_memory().await.unwrap(), CCF_REPORT);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn https_with_the_default_roots_refuses_a_private_ca() {
    let pki = TestPki::generate();
    let (_server, addr) = tls_stand_in(&pki).await;
    let client = http_client(&format!("https://{addr}/node/memory"), options());

    let error = client.get_memory().await.unwrap_err();

    let AgentReadError::Connect(message) = &error else {
        panic!("{error:?}")
    };
    assert!(
        message.contains("TLS") && message.contains("certificate"),
        "{message}"
    );
    assert_eq!(error.result_label(), "connect");
}

#[test]
fn a_missing_ca_file_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("missing-ca.pem");
    let options = AgentClientOptions {
        ca_file: Some(ca_file.clone()),
        ..options()
    };
    let url = "https://node.example:8080/node/memory".parse().unwrap();

    let error = AgentClient::new(AgentEndpoint::Http { url }, options).unwrap_err();

    assert!(
        matches!(error, AgentClientError::CaFileRead { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&ca_file.display().to_string()),
        "{error}"
    );
}

#[test]
fn a_ca_file_without_pem_certificates_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.der");
    std::fs::write(&ca_file, [0x30, 0x82, 0x01, 0x0a]).unwrap();
    let options = AgentClientOptions {
        ca_file: Some(ca_file.clone()),
        ..options()
    };
    let url = "https://node.example:8080/node/memory".parse().unwrap();

    let error = AgentClient::new(AgentEndpoint::Http { url }, options).unwrap_err();

    assert!(
        matches!(error, AgentClientError::CaFileEmpty { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&ca_file.display().to_string()),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// Endpoint validation.

#[test]
fn endpoints_that_cannot_work_are_refused_at_construction() {
    let http = |url: &str| {
        AgentClient::new(
            AgentEndpoint::Http {
                url: url.parse().unwrap(),
            },
            options(),
        )
    };
    assert!(matches!(
        http("ftp://node/node/memory"),
        Err(AgentClientError::UnsupportedScheme { .. })
    ));
    assert!(matches!(
        http("/node/memory"),
        Err(AgentClientError::UnsupportedScheme { scheme: None, .. })
    ));

    let unix = |path: &str| {
        AgentClient::new(
            AgentEndpoint::Unix {
                socket: "/run/agent.sock".into(),
                path: path.to_owned(),
            },
            options(),
        )
    };
    assert!(matches!(
        unix("node/memory"),
        Err(AgentClientError::InvalidRequestPath { .. })
    ));
    assert!(unix("/enclaves/app/memory").is_ok());

    let long = format!("/{}.sock", "s".repeat(200));
    let error = AgentClient::new(AgentEndpoint::unix(&long), options()).unwrap_err();
    assert!(
        matches!(error, AgentClientError::InvalidSocketPath { .. }),
        "{error:?}"
    );
}

#[test]
fn default_options_are_the_documented_ones() {
    let defaults = AgentClientOptions::default();
    assert_eq!(defaults.connect_timeout, Duration::from_secs(1));
    assert_eq!(defaults.total_timeout, Duration::from_secs(2));
    assert_eq!(defaults.max_body_bytes, 64 * 1024);
    assert_eq!(defaults.ca_file, None);
}
