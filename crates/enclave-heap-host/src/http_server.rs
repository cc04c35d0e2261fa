//! The HTTP/1.1 serving loop shared by the agent (Unix socket, TCP) and the exporter (TCP):
//! accepting on several listeners, a cap on open connections, a header read timeout, and a
//! bounded graceful drain on shutdown.
//!
//! It takes its listeners and its shutdown signal as arguments, so tests bind port 0 or a
//! temporary socket and stop it at will. Routing is the caller's: a handler turns each request
//! into a response.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

/// Limits of the serving loop.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Most connections served at once; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may take to finish after the shutdown signal.
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
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
}

enum Accepted {
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
    Unix(tokio::net::UnixStream),
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
    let connections = Arc::new(Semaphore::new(options.max_connections));
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
        let service = service_fn(move |request| {
            let response = handler(request);
            async move { Ok::<_, Infallible>(response.await) }
        });
        match accepted {
            Ok(Accepted::Tcp(stream, peer)) => {
                spawn_connection(
                    &graceful,
                    stream,
                    service,
                    options,
                    permit,
                    peer.to_string(),
                );
            }
            Ok(Accepted::Unix(stream)) => {
                spawn_connection(
                    &graceful,
                    stream,
                    service,
                    options,
                    permit,
                    "unix".to_owned(),
                );
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

fn spawn_connection<S, Svc>(
    graceful: &GracefulShutdown,
    stream: S,
    service: Svc,
    options: ServeOptions,
    permit: tokio::sync::OwnedSemaphorePermit,
    peer: String,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
        > + Send
        + 'static,
    Svc::Future: Send + 'static,
{
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .serve_connection(TokioIo::new(stream), service);
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
        drop(permit);
    });
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
            };
            if ready.is_ready() {
                return ready;
            }
        }
        Poll::Pending
    })
    .await
}
