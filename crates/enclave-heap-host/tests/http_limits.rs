//! The serving loop's limits (`enclave_heap_host::http_server`), against a real server on
//! loopback and a Unix socket, with short timeouts so every test ends within a few seconds:
//! header and idle deadlines kept apart, the request limit and its `/-/` exemption, request
//! bodies refused, oversized heads, the connection cap, and each request's peer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use enclave_heap_host::http_server::{self, Listener, Peer, ServeOptions};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::{Semaphore, oneshot};

/// A server on 127.0.0.1:0 (and optionally a Unix socket) with a test handler; stops on drop.
struct TestServer {
    address: SocketAddr,
    /// Requests to `/slow` that have entered the handler.
    entered: Arc<AtomicUsize>,
    /// Permits released here let `/slow` requests finish.
    release: Arc<Semaphore>,
    shutdown: Option<oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    fn start(options: ServeOptions) -> Self {
        Self::start_with(options, None)
    }

    fn start_with(options: ServeOptions, unix: Option<&std::path::Path>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let entered = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Semaphore::new(0));
        let (shutdown, stop) = oneshot::channel::<()>();
        let (listeners, address) = runtime.block_on(async {
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = tcp.local_addr().unwrap();
            let mut listeners = vec![Listener::Tcp(tcp)];
            if let Some(path) = unix {
                listeners.push(Listener::Unix(
                    tokio::net::UnixListener::bind(path).unwrap(),
                ));
            }
            (listeners, address)
        });
        let handler = {
            let entered = Arc::clone(&entered);
            let release = Arc::clone(&release);
            move |request: Request<Incoming>| {
                let entered = Arc::clone(&entered);
                let release = Arc::clone(&release);
                async move { handle(request, &entered, &release).await }
            }
        };
        runtime.spawn(http_server::serve(listeners, handler, options, async {
            let _ = stop.await;
        }));
        Self {
            address,
            entered,
            release,
            shutdown: Some(shutdown),
            runtime: Some(runtime),
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.release.add_permits(1000);
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

async fn handle(
    request: Request<Incoming>,
    entered: &AtomicUsize,
    release: &Semaphore,
) -> Response<Full<Bytes>> {
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        let mut response = Response::new(Full::new(Bytes::from_static(b"GET only\n")));
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return response;
    }
    let body = match request.uri().path() {
        "/slow" | "/-/slow" => {
            entered.fetch_add(1, Ordering::SeqCst);
            let _permit = release.acquire().await.unwrap();
            "slow done\n".to_owned()
        }
        "/peer" => match request.extensions().get::<Peer>() {
            Some(Peer::Unix(Some(peer))) => format!("unix {} {}\n", peer.uid, peer.gid),
            Some(Peer::Unix(None)) => "unix unknown\n".to_owned(),
            Some(Peer::Tcp(address)) => format!("tcp {address}\n"),
            None => "none\n".to_owned(),
        },
        _ => "ok\n".to_owned(),
    };
    Response::new(Full::new(Bytes::from(body)))
}

fn options() -> ServeOptions {
    ServeOptions {
        max_connections: 64,
        max_requests: 0,
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        max_header_bytes: 16 * 1024,
        drain_timeout: Duration::from_secs(1),
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// Sends one request on `stream` (kept alive unless the request says otherwise) and reads one
/// answer with a `Content-Length` body (none for HEAD).
fn exchange(stream: &mut TcpStream, request: &str) -> Answer {
    stream.write_all(request.as_bytes()).unwrap();
    if request.starts_with("HEAD ") {
        read_head(stream)
    } else {
        read_answer(stream)
    }
    .unwrap_or_else(|| panic!("no answer to {request:?}"))
}

fn read_answer(stream: &mut impl Read) -> Option<Answer> {
    let mut answer = read_head(stream)?;
    let length: usize = answer
        .header("content-length")
        .map_or(0, |length| length.parse().unwrap());
    let mut body = vec![0_u8; length];
    stream.read_exact(&mut body).ok()?;
    answer.body = String::from_utf8(body).unwrap();
    Some(answer)
}

fn read_head(stream: &mut impl Read) -> Option<Answer> {
    let mut raw = Vec::new();
    let mut byte = [0_u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8(raw).unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Some(Answer {
        status,
        head,
        body: String::new(),
    })
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

/// Waits (bounded) until the server closes `stream`: a read returns end of file or a reset.
/// Returns how long that took.
fn closed_within(stream: &mut TcpStream, bound: Duration) -> Duration {
    let started = Instant::now();
    stream.set_read_timeout(Some(bound)).unwrap();
    let mut sink = [0_u8; 256];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return started.elapsed(),
            Ok(_) => continue,
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return started.elapsed();
            }
            Err(error) => panic!(
                "the connection was still open after {:?}: {error}",
                started.elapsed()
            ),
        }
    }
}

#[test]
fn a_connection_that_sends_nothing_is_closed_at_the_header_deadline() {
    let server = TestServer::start(ServeOptions {
        header_read_timeout: Duration::from_millis(300),
        ..options()
    });
    let mut stream = server.connect();
    let took = closed_within(&mut stream, Duration::from_secs(5));
    println!("silent connection closed after {took:?} (header read timeout 300ms)");
    assert!(took >= Duration::from_millis(250), "{took:?}");
}

#[test]
fn a_trickled_head_is_closed_at_the_header_deadline_without_an_answer() {
    let server = TestServer::start(ServeOptions {
        header_read_timeout: Duration::from_millis(500),
        ..options()
    });
    let mut stream = server.connect();
    let mut writer = stream.try_clone().unwrap();
    // One byte every 50 ms: the whole head would take about 3 s, far past the deadline.
    let trickle = thread::spawn(move || {
        for byte in get("/").bytes().chain(std::iter::repeat_n(b'x', 40)) {
            if writer.write_all(&[byte]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
    let started = Instant::now();
    let answer = read_answer(&mut stream);
    let took = started.elapsed();
    println!("slow-header connection closed after {took:?} (header read timeout 500ms)");
    assert!(answer.is_none(), "{answer:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    trickle.join().unwrap();
}

#[test]
fn kept_alive_connections_wait_for_the_idle_deadline_not_the_header_deadline() {
    let server = TestServer::start(ServeOptions {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(1500),
        ..options()
    });
    let mut stream = server.connect();
    assert_eq!(exchange(&mut stream, &get("/")).status, 200);
    // Longer than the header read timeout, well within the idle timeout.
    thread::sleep(Duration::from_millis(700));
    let second = exchange(&mut stream, &get("/"));
    assert_eq!(second.status, 200, "{second:?}");
    let took = closed_within(&mut stream, Duration::from_secs(6));
    println!(
        "idle kept-alive connection closed {took:?} after its last answer (idle timeout 1.5s)"
    );
    assert!(took >= Duration::from_millis(1200), "{took:?}");
}

#[test]
fn requests_beyond_the_limit_get_503_and_health_paths_are_exempt() {
    let server = TestServer::start(ServeOptions {
        max_requests: 2,
        ..options()
    });
    let mut slow: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = server.connect();
            stream.write_all(get("/slow").as_bytes()).unwrap();
            stream
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.entered.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the slow requests never started");
        thread::sleep(Duration::from_millis(10));
    }
    let refused = exchange(&mut server.connect(), &get("/slow"));
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.body.contains("limit 2"), "{refused:?}");
    // Health checks and other /-/ paths are not counted, even a slow one.
    assert_eq!(
        exchange(&mut server.connect(), &get("/-/healthy")).status,
        200
    );
    let mut exempt_slow = server.connect();
    exempt_slow.write_all(get("/-/slow").as_bytes()).unwrap();
    server.release.add_permits(3);
    for stream in slow.iter_mut().chain(std::iter::once(&mut exempt_slow)) {
        assert_eq!(read_answer(stream).unwrap().status, 200);
    }
    // The slots are free again.
    let again = exchange(&mut server.connect(), &get("/"));
    assert_eq!(again.status, 200, "{again:?}");
}

#[test]
fn request_bodies_are_refused_and_the_connection_closed() {
    let server = TestServer::start(options());
    let cases = [
        (
            "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
            413,
        ),
        (
            "HEAD / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n",
            413,
        ),
        (
            "GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            413,
        ),
        // Other methods get the handler's answer (here 405), and the body is not read either.
        (
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\nxx",
            405,
        ),
    ];
    for (request, status) in cases {
        let mut stream = server.connect();
        let answer = exchange(&mut stream, request);
        assert_eq!(answer.status, status, "{request:?}: {answer:?}");
        assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
        closed_within(&mut stream, Duration::from_secs(5));
    }
    // An explicitly empty body is no body: the connection stays usable.
    let mut stream = server.connect();
    let empty = exchange(
        &mut stream,
        "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(empty.status, 200);
    assert_eq!(exchange(&mut stream, &get("/")).status, 200);
}

#[test]
fn oversized_request_heads_get_431() {
    let server = TestServer::start(ServeOptions {
        max_header_bytes: 4096,
        ..options()
    });
    let request = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(8000)
    );
    let mut stream = server.connect();
    // The server may answer before it has read everything we send.
    let _ = stream.write_all(request.as_bytes());
    let answer = read_answer(&mut stream).expect("an answer");
    assert_eq!(answer.status, 431, "{answer:?}");
    // A head within the limit is fine.
    let fits = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(3000)
    );
    assert_eq!(exchange(&mut server.connect(), &fits).status, 200);
}

#[test]
fn connections_beyond_the_cap_wait_in_the_backlog_until_a_slot_frees() {
    let server = TestServer::start(ServeOptions {
        max_connections: 2,
        ..options()
    });
    let mut first = server.connect();
    assert_eq!(exchange(&mut first, &get("/")).status, 200);
    let mut second = server.connect();
    assert_eq!(exchange(&mut second, &get("/")).status, 200);
    // The third connects (the kernel queues it) but is not served while both slots are held.
    let mut third = server.connect();
    third.write_all(get("/").as_bytes()).unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0_u8; 1];
    let early = third.read(&mut byte);
    assert!(
        matches!(&early, Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "{early:?}"
    );
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let answer = read_answer(&mut third).expect("served once a slot freed");
    assert_eq!(answer.status, 200);
    println!(
        "a queued connection was served {:?} after a slot freed",
        started.elapsed()
    );
}

#[test]
fn each_request_carries_its_peer() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("peer.sock");
    let server = TestServer::start_with(options(), Some(&socket));
    let over_tcp = exchange(&mut server.connect(), &get("/peer"));
    assert!(over_tcp.body.starts_with("tcp 127.0.0.1:"), "{over_tcp:?}");

    let mut unix = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    unix.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    unix.write_all(get("/peer").as_bytes()).unwrap();
    let answer = read_answer(&mut unix).unwrap();
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    assert_eq!(answer.body, format!("unix {uid} {gid}\n"));
}

#[test]
fn serve_connection_runs_the_same_rules_over_any_stream() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(http_server::serve_connection(
            server,
            Peer::Unix(None),
            |_request: Request<Incoming>| async { Response::new(Full::new(Bytes::from("ok"))) },
            options(),
        ));
        let (mut read, mut write) = tokio::io::split(client);
        write
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
            .await
            .unwrap();
        let mut answer = Vec::new();
        read.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        serving.await.unwrap().unwrap();
    });
}
