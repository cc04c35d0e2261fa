//! The exporter's HTTP endpoints: routing and responses. The serving loop itself (listeners,
//! connection cap, header timeout, graceful drain) is `enclave_heap_host::http_server`, shared
//! with the agent.
//!
//! `serve` takes its listeners and its shutdown signal as arguments, so tests bind
//! `127.0.0.1:0` and stop it at will. On shutdown the listeners close at once and in-flight
//! requests get [`DRAIN_TIMEOUT`] to finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use enclave_heap_host::http_server::{self, Listener, ServeOptions};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::Exporter;
use crate::exposition::Format;
use crate::web_config::WebConfig;

/// Default `--web.max-connections`: most connections open at once; further clients wait in the
/// kernel's accept queue until one closes.
pub const MAX_CONNECTIONS: usize = http_server::DEFAULT_MAX_CONNECTIONS;
/// Default `--web.max-requests`: most requests handled at once (0: no limit); more get 503.
/// `/-/healthy` and `/-/ready` are not counted.
pub const MAX_REQUESTS: usize = http_server::DEFAULT_MAX_REQUESTS;
/// How long a client may take to send a request head (from connecting, or from the first byte
/// of its next request on a kept-alive connection).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a kept-alive connection may stay idle between requests (see
/// `enclave_heap_host::http_server::DEFAULT_IDLE_TIMEOUT` for the choice).
pub const IDLE_TIMEOUT: Duration = http_server::DEFAULT_IDLE_TIMEOUT;
/// How long in-flight requests may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `exporter` on `listeners` until `shutdown` completes, then drains. Plain HTTP, no
/// authentication: [`serve_with_web_config`] adds TLS and basic auth.
pub async fn serve(
    exporter: Arc<Exporter>,
    listeners: Vec<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with_web_config(
        exporter,
        listeners,
        WebConfig::default(),
        ServerLimits::default(),
        shutdown,
    )
    .await
}

/// `--web.max-connections` and `--web.max-requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Most connections open at once (at least 1).
    pub max_connections: usize,
    /// Most requests handled at once, 0 for no limit.
    pub max_requests: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            max_requests: MAX_REQUESTS,
        }
    }
}

/// [`serve`] behind a `--web.config.file`: TLS on every listener when it configures a
/// certificate, then per request its rate limit and basic auth (not on `/-/healthy` and
/// `/-/ready`), and its extra headers on every response.
pub async fn serve_with_web_config(
    exporter: Arc<Exporter>,
    listeners: Vec<TcpListener>,
    web: WebConfig,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let listeners = listeners
        .into_iter()
        .map(|listener| match web.tls() {
            Some(tls) => tls.listener(listener),
            None => Listener::Tcp(listener),
        })
        .collect();
    let web = Arc::new(web);
    let handler = move |request: Request<Incoming>| {
        let exporter = Arc::clone(&exporter);
        let web = Arc::clone(&web);
        async move {
            let mut response = match web.refusal(&request).await {
                None => route(&exporter, request).await,
                Some(refusal) => refusal,
            };
            web.decorate(&mut response);
            response
        }
    };
    let options = ServeOptions {
        max_connections: limits.max_connections,
        max_requests: limits.max_requests,
        header_read_timeout: HEADER_READ_TIMEOUT,
        idle_timeout: IDLE_TIMEOUT,
        drain_timeout: DRAIN_TIMEOUT,
        ..ServeOptions::default()
    };
    http_server::serve(listeners, handler, options, shutdown).await;
    Ok(())
}

async fn route(exporter: &Exporter, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "Only GET and HEAD are supported.\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let head = method == Method::HEAD;
    let path = request.uri().path();
    let response = if path == exporter.telemetry_path() {
        let accept = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok());
        let format = Format::negotiate(accept);
        match exporter.render(format).await {
            Ok(body) => {
                let mut response = Response::new(Full::new(body));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(format.content_type()),
                );
                response
            }
            Err(error) => {
                tracing::error!(%error, "encoding metrics failed");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Encoding metrics failed; see the exporter's log.\n",
                )
            }
        }
    } else {
        match path {
            "/" => html(exporter.landing_page().await),
            "/-/healthy" => text(StatusCode::OK, "Healthy.\n"),
            "/-/ready" => text(StatusCode::OK, "Ready.\n"),
            _ => text(StatusCode::NOT_FOUND, "Not found.\n"),
        }
    };
    if head {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Full::new(Bytes::new()));
    }
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn html(body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}
