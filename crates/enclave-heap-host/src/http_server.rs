//! The HTTP/1.1 serving loop shared by the agent (Unix socket, TCP) and the exporter (TCP), and
//! the limits that keep hostile or broken clients from exhausting it. A TCP listener may require
//! TLS ([`Listener::Tls`]): the handshake runs in the connection's own task, holding its
//! connection slot, within a timeout.
//!
//! It takes its listeners and its shutdown signal as arguments, so tests bind port 0 or a
//! temporary socket and stop it at will. Routing is the caller's: a handler turns each request
//! into a response. Every request carries the [`Peer`] that sent it in its extensions (for a Unix
//! socket, the credentials the kernel recorded at `connect`), so a handler can check who asks.
//!
//! # Limits ([`ServeOptions`])
//! - **Connections**: at most `max_connections` open at once. At the cap the loop stops
//!   accepting, so further clients wait in the kernel's accept queue instead of being refused:
//!   each is served as soon as a slot frees, and a slot held by a client that sends nothing frees
//!   within `header_read_timeout` (Go's `netutil.LimitListener` and mini-redis do the same).
//! - **Requests**: at most `max_requests` handled at once (0: no limit); more get `503` at once,
//!   as `--web.max-requests` does in exporter-toolkit. Paths under `/-/` (health, readiness) are
//!   not counted, so a probe is never refused because scrapes pile up behind a slow source.
//! - **Header read timeout**: a new connection must deliver a complete request head within
//!   `header_read_timeout` of being accepted (of the end of the TLS handshake on a TLS listener),
//!   and a kept-alive connection within `header_read_timeout` of the first byte of its next
//!   request, however slowly it trickles bytes in.
//! - **Idle timeout**: a kept-alive connection that sends nothing for `idle_timeout` after its
//!   last answer is closed. hyper's own header read timer starts whenever it waits for a request
//!   head, idle keep-alive time included, so it would close a scraper's kept-alive connection
//!   after `header_read_timeout`; it is therefore off, and both deadlines are kept by a wrapper
//!   around the connection's IO that the request path tells when a request starts and ends.
//! - **Request size**: request heads of at most `max_header_bytes` (larger: `431`, from hyper);
//!   no request body: we serve GET and HEAD only, so a GET or HEAD that declares a body
//!   (`Content-Length` > 0 or `Transfer-Encoding`) gets `413`, any other method gets the
//!   handler's answer (`405`), and either way the connection is closed after the answer, so the
//!   body is never read or buffered.
//! - **Drain**: on shutdown the listeners close at once and in-flight requests get
//!   `drain_timeout` to finish.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Default [`ServeOptions::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default [`ServeOptions::max_requests`] (exporter-toolkit's `--web.max-requests` default).
pub const DEFAULT_MAX_REQUESTS: usize = 40;
/// Default [`ServeOptions::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ServeOptions::idle_timeout`]: longer than the scrape intervals in use (15 s to 1 m),
/// so Prometheus, which keeps its connection alive for up to 5 minutes between scrapes, reuses
/// it. With a longer scrape interval each scrape opens a new connection (one TCP, and TLS,
/// handshake; Go's HTTP client retries a GET whose kept-alive connection the server closed).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default [`ServeOptions::max_header_bytes`]: a Prometheus scrape's head is about 300 bytes,
/// with basic auth or a bearer token well under 4 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default [`ServeOptions::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// hyper refuses a read buffer smaller than this (`max_buf_size` panics below it).
const MIN_READ_BUFFER_BYTES: usize = 8192;

/// Limits of the serving loop; see the module documentation for how each is enforced.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Most connections open at once (at least 1); further clients wait in the kernel's accept
    /// queue until one closes.
    pub max_connections: usize,
    /// Most requests handled at once, not counting paths under `/-/`; more get `503`. 0: no limit.
    pub max_requests: usize,
    /// How long a client may take to send a complete request head, from the accept (or the end
    /// of the TLS handshake) or from the first byte of a kept-alive connection's next request.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may stay silent after an answer before it is closed.
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; a larger one gets `431`.
    pub max_header_bytes: usize,
    /// How long in-flight requests may take to finish after the shutdown signal.
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_requests: DEFAULT_MAX_REQUESTS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// Who sent a request; [`serve`] puts one in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP client (with or without TLS) at this address.
    Tcp(SocketAddr),
    /// A client on a Unix socket, with the credentials the kernel recorded when it connected
    /// (`SO_PEERCRED`), or `None` if they could not be read.
    Unix(Option<UnixPeer>),
}

/// The credentials of a Unix socket peer, as of its `connect` (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnixPeer {
    /// Its effective user id.
    pub uid: u32,
    /// Its effective (primary) group id. Supplementary groups are not reported.
    pub gid: u32,
    /// Its process id, when the kernel can express it in our PID namespace.
    pub pid: Option<i32>,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(address) => write!(f, "{address}"),
            Peer::Unix(None) => f.write_str("unix"),
            Peer::Unix(Some(peer)) => write!(f, "unix uid={} gid={}", peer.uid, peer.gid),
        }
    }
}

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix stream socket.
    Unix(UnixListener),
    /// TCP where every connection must complete a TLS handshake within `handshake_timeout`
    /// before HTTP is spoken on it (the header read timeout starts after the handshake).
    Tls {
        /// The TCP listener.
        listener: TcpListener,
        /// Certificates, client auth, versions: everything about the handshake.
        config: Arc<rustls::ServerConfig>,
        /// How long a client may take to complete the handshake.
        handshake_timeout: Duration,
    },
}

enum Accepted {
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
    Unix(tokio::net::UnixStream),
    Tls(
        tokio::net::TcpStream,
        std::net::SocketAddr,
        tokio_rustls::TlsAcceptor,
        Duration,
    ),
}

/// Serves `handler` on `listeners` until `shutdown` completes, then stops accepting and gives
/// in-flight requests `drain_timeout` to finish.
pub async fn serve<H, Fut>(
    listeners: Vec<Listener>,
    handler: H,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let requests = RequestGate::new(options.max_requests);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept_any(&listeners) => accepted,
        };
        let handler = handler.clone();
        let requests = requests.clone();
        match accepted {
            Ok(Accepted::Tcp(stream, peer)) => {
                spawn_connection(
                    graceful.watcher(),
                    stream,
                    Peer::Tcp(peer),
                    handler,
                    options,
                    requests,
                    permit,
                );
            }
            Ok(Accepted::Unix(stream)) => {
                let peer = Peer::Unix(stream.peer_cred().ok().map(|credentials| UnixPeer {
                    uid: credentials.uid(),
                    gid: credentials.gid(),
                    pid: credentials.pid(),
                }));
                spawn_connection(
                    graceful.watcher(),
                    stream,
                    peer,
                    handler,
                    options,
                    requests,
                    permit,
                );
            }
            Ok(Accepted::Tls(stream, peer, acceptor, handshake_timeout)) => {
                // The handshake runs in its own task (a slow client must not stall accepts);
                // the watcher makes the drain wait for it too.
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    match tls_handshake(stream, &acceptor, handshake_timeout).await {
                        Ok(stream) => {
                            spawn_connection(
                                watcher,
                                stream,
                                Peer::Tcp(peer),
                                handler,
                                options,
                                requests,
                                permit,
                            );
                        }
                        Err(error) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                        }
                    }
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                drop(permit);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listeners);
    tracing::debug!("stopped accepting; draining in-flight requests");
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_ms = options.drain_timeout.as_millis() as u64,
            "some connections did not finish in time; closing them"
        );
    }
}

/// Serves HTTP/1.1 on one accepted `stream` from `peer`, with every per-connection limit of
/// `options` and a request limit of its own, until the client closes it or a deadline passes.
/// [`serve`] does the same for each connection it accepts; this entry point lets tests and fuzz
/// targets drive the request path over any stream (e.g. `tokio::io::duplex`).
pub async fn serve_connection<S, H, Fut>(
    stream: S,
    peer: Peer,
    handler: H,
    options: ServeOptions,
) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    connection(
        stream,
        peer,
        handler,
        options,
        RequestGate::new(options.max_requests),
    )
    .await
}

fn spawn_connection<S, H, Fut>(
    watcher: Watcher,
    stream: S,
    peer: Peer,
    handler: H,
    options: ServeOptions,
    requests: RequestGate,
    permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let connection = watcher.watch(connection(stream, peer, handler, options, requests));
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
        drop(permit);
    });
}

/// One connection: its IO behind the deadlines, its requests behind the limits.
fn connection<S, H, Fut>(
    stream: S,
    peer: Peer,
    handler: H,
    options: ServeOptions,
    requests: RequestGate,
) -> http1::Connection<TokioIo<TimedIo<S>>, GuardedService<H>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let clock = Arc::new(ConnectionClock::new(&options));
    let io = TimedIo::new(stream, Arc::clone(&clock));
    let service = GuardedService {
        handler,
        peer,
        clock,
        requests,
    };
    http1::Builder::new()
        .timer(TokioTimer::new())
        // Off: hyper's timer also runs while a kept-alive connection waits for its next request.
        // TimedIo keeps the header and the idle deadline apart.
        .header_read_timeout(None)
        .max_header_size(options.max_header_bytes)
        // The read buffer holds at most a head and a little of what follows (bodies are never
        // read), so per-connection memory stays small; hyper's default is about 400 KiB.
        .max_buf_size(
            options
                .max_header_bytes
                .saturating_mul(2)
                .max(MIN_READ_BUFFER_BYTES),
        )
        .serve_connection(TokioIo::new(io), service)
}

/// Accepts from whichever listener is ready first.
async fn accept_any(listeners: &[Listener]) -> std::io::Result<Accepted> {
    std::future::poll_fn(|cx| {
        for listener in listeners {
            let ready = match listener {
                Listener::Tcp(tcp) => tcp
                    .poll_accept(cx)
                    .map(|result| result.map(|(stream, peer)| Accepted::Tcp(stream, peer))),
                Listener::Unix(unix) => unix
                    .poll_accept(cx)
                    .map(|result| result.map(|(stream, _)| Accepted::Unix(stream))),
                Listener::Tls {
                    listener,
                    config,
                    handshake_timeout,
                } => listener.poll_accept(cx).map(|result| {
                    result.map(|(stream, peer)| {
                        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
                        Accepted::Tls(stream, peer, acceptor, *handshake_timeout)
                    })
                }),
            };
            if ready.is_ready() {
                return ready;
            }
        }
        Poll::Pending
    })
    .await
}

/// Completes a TLS handshake within `timeout`. A client that speaks plain HTTP to the TLS port
/// gets a one-line 400 saying so (as Go's servers answer) instead of a bare reset.
async fn tls_handshake(
    stream: tokio::net::TcpStream,
    acceptor: &tokio_rustls::TlsAcceptor,
    timeout: Duration,
) -> std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const TLS_HANDSHAKE_RECORD: u8 = 0x16;
    let handshake = async {
        let mut first = [0_u8; 1];
        let mut stream = stream;
        if stream.peek(&mut first).await? == 1
            && first[0] != TLS_HANDSHAKE_RECORD
            && first[0].is_ascii_uppercase()
        {
            let _ = stream
                .write_all(
                    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
                      Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
                )
                .await;
            let _ = stream.shutdown().await;
            // Read what the client sent (bounded) so closing does not reset the connection
            // before it has read the answer.
            let mut sink = [0_u8; 4096];
            for _ in 0..16 {
                if matches!(stream.read(&mut sink).await, Ok(0) | Err(_)) {
                    break;
                }
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "plain HTTP sent to the TLS port",
            ));
        }
        acceptor.accept(stream).await
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// The shared count of requests being handled, or no limit.
#[derive(Clone)]
struct RequestGate {
    slots: Option<Arc<Semaphore>>,
    limit: usize,
}

impl RequestGate {
    fn new(limit: usize) -> Self {
        Self {
            slots: (limit > 0).then(|| Arc::new(Semaphore::new(limit))),
            limit,
        }
    }

    /// A slot for one request, `Ok(None)` without a limit, `Err(())` when every slot is taken.
    fn try_enter(&self) -> Result<Option<OwnedSemaphorePermit>, ()> {
        match &self.slots {
            None => Ok(None),
            Some(slots) => Arc::clone(slots)
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| ()),
        }
    }
}

/// Where a connection is between requests, and so which deadline applies to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a complete request head: the header read deadline.
    Head,
    /// A request is being handled: no deadline (the handler bounds itself).
    Busy,
    /// Answered; waiting for the next request's first byte: the idle deadline.
    Idle,
}

/// A connection's deadline, moved by its IO (bytes arrive) and its requests (start, end).
struct ConnectionClock {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    state: Mutex<ClockState>,
}

struct ClockState {
    phase: Phase,
    deadline: Instant,
    in_flight: usize,
    /// The connection's task, parked on its IO while a request was busy. hyper does not poll a
    /// read again that it saw pending until something wakes it, so the end of a request must,
    /// for the idle deadline to be armed.
    parked: Option<Waker>,
}

impl ConnectionClock {
    fn new(options: &ServeOptions) -> Self {
        Self {
            header_read_timeout: options.header_read_timeout,
            idle_timeout: options.idle_timeout,
            state: Mutex::new(ClockState {
                phase: Phase::Head,
                deadline: Instant::now() + options.header_read_timeout,
                in_flight: 0,
                parked: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived: on an idle connection they begin the next request head.
    fn bytes_received(&self) {
        let mut state = self.state();
        if state.phase == Phase::Idle {
            state.phase = Phase::Head;
            state.deadline = Instant::now() + self.header_read_timeout;
        }
    }

    fn request_started(&self) {
        let mut state = self.state();
        state.in_flight += 1;
        state.phase = Phase::Busy;
    }

    fn request_finished(&self) {
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.phase = Phase::Idle;
            state.deadline = Instant::now() + self.idle_timeout;
            let parked = state.parked.take();
            drop(state);
            if let Some(task) = parked {
                task.wake();
            }
        }
    }

    /// The deadline in force and what it is for, if any. Without one (a request is busy),
    /// `waker` is kept to be woken when the request ends.
    fn deadline(&self, waker: Option<&Waker>) -> Option<(Instant, Phase)> {
        let mut state = self.state();
        match state.phase {
            Phase::Busy => {
                if let Some(waker) = waker {
                    match &mut state.parked {
                        Some(parked) => parked.clone_from(waker),
                        None => state.parked = Some(waker.clone()),
                    }
                }
                None
            }
            phase => Some((state.deadline, phase)),
        }
    }

    fn expired_message(&self, phase: Phase) -> String {
        match phase {
            Phase::Idle => format!(
                "closed after {} ms idle between requests",
                self.idle_timeout.as_millis()
            ),
            _ => format!(
                "no complete request head within {} ms",
                self.header_read_timeout.as_millis()
            ),
        }
    }
}

/// Marks a request finished when dropped: when its answer is ready, or when hyper drops it
/// because the client went away.
struct RequestInFlight(Arc<ConnectionClock>);

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// The connection's IO, failing with `TimedOut` once the clock's deadline passes while hyper
/// waits on it (reading a head, idling between requests, or writing to a client that does not
/// read).
struct TimedIo<S> {
    inner: S,
    clock: Arc<ConnectionClock>,
    sleep: Pin<Box<Sleep>>,
    armed_for: Option<Instant>,
}

impl<S> TimedIo<S> {
    fn new(inner: S, clock: Arc<ConnectionClock>) -> Self {
        let first = clock.deadline(None).map_or_else(Instant::now, |(at, _)| at);
        Self {
            inner,
            clock,
            sleep: Box::pin(tokio::time::sleep_until(first)),
            armed_for: Some(first),
        }
    }

    /// Called when the inner IO is not ready: ready with an error once the deadline has passed,
    /// otherwise pending with the timer registered to wake the connection at the deadline.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some((deadline, phase)) = self.clock.deadline(Some(cx.waker())) else {
            return Poll::Pending;
        };
        if self.armed_for != Some(deadline) {
            self.sleep.as_mut().reset(deadline);
            self.armed_for = Some(deadline);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                self.clock.expired_message(phase),
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.clock.bytes_received();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => this.poll_deadline(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.poll_deadline(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.poll_deadline(cx).map(Err),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.poll_deadline(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.poll_deadline(cx).map(Err),
            ready => ready,
        }
    }
}

/// The caller's handler behind the per-request rules: peer in the extensions, no bodies, the
/// request limit, and the connection clock told when each request starts and ends.
struct GuardedService<H> {
    handler: H,
    peer: Peer,
    clock: Arc<ConnectionClock>,
    requests: RequestGate,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

impl<H, Fut> hyper::service::Service<Request<Incoming>> for GuardedService<H>
where
    H: Fn(Request<Incoming>) -> Fut,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        self.clock.request_started();
        let in_flight = RequestInFlight(Arc::clone(&self.clock));
        request.extensions_mut().insert(self.peer);
        // A body is declared by a non-zero Content-Length or any Transfer-Encoding; it is never
        // read, so the connection must close after the answer.
        let has_body = !request.body().is_end_stream();
        if has_body && matches!(*request.method(), Method::GET | Method::HEAD) {
            tracing::debug!(peer = %self.peer, "refused a GET or HEAD with a body");
            drop(in_flight);
            return Box::pin(std::future::ready(Ok(closing(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request bodies are not accepted: this server answers GET and HEAD only.\n"
                    .to_owned(),
            )))));
        }
        let slot = if request.uri().path().starts_with("/-/") {
            None
        } else {
            match self.requests.try_enter() {
                Ok(slot) => slot,
                Err(()) => {
                    tracing::debug!(peer = %self.peer, limit = self.requests.limit, "too many requests in progress; answered 503");
                    drop(in_flight);
                    let response = plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "Too many requests in progress (limit {}); try again later.\n",
                            self.requests.limit
                        ),
                    );
                    return Box::pin(std::future::ready(Ok(if has_body {
                        closing(response)
                    } else {
                        response
                    })));
                }
            }
        };
        let response = (self.handler)(request);
        Box::pin(async move {
            let response = response.await;
            drop(slot);
            drop(in_flight);
            Ok(if has_body {
                closing(response)
            } else {
                response
            })
        })
    }
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Asks hyper to close the connection after this answer.
fn closing(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
