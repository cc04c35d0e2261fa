//! The client side of the agent protocol: reads [`MemoryReport`]s and [`EnclaveList`]s from an
//! agent (sidecar mode) or a CCF node over HTTP/1.1, on a Unix socket or TCP, with or without TLS.
//!
//! The exporter reads at scrape time, so every read here is bounded in time and in size, and a
//! failure becomes one [`AgentReadError`] with a small, stable [`AgentReadError::result_label`].
//!
//! # Design
//!
//! - **One kept-alive connection per client.** The exporter never has more than one read in
//!   flight per source, so a pool bigger than one connection would only hold idle sockets. The
//!   client keeps at most one idle [`SendRequest`] in a `std::sync::Mutex<Option<_>>`: a read
//!   takes it out, uses it, and puts it back only once the answer was read to its end (a
//!   connection with half an answer in it can never be reused). The lock is never held across an
//!   `await`, so reads stay `Send` and a second, concurrent read simply opens its own connection
//!   instead of queueing behind the first one's timeout. A connection that turns out dead when
//!   reused (the agent restarted, or closed it while idle) is retried **once** on a fresh
//!   connection, which is safe because every request is an idempotent `GET`; a fresh connection
//!   that fails is never retried. hyper-util's legacy `Client` would do the same with more moving
//!   parts (a pool with timers, a connector service per transport) for no gain at one request in
//!   flight.
//! - **Timeouts.** `connect_timeout` bounds name resolution, TCP or Unix connect and the TLS
//!   handshake together; `total_timeout` bounds the whole read, connect and retry included, up to
//!   the last byte of the body. When a timeout fires the in-flight future is dropped, which
//!   closes its connection, so a late answer can never be taken for the next read's.
//! - **Size.** `max_body_bytes` is checked against `Content-Length` before reading and against
//!   every body frame while reading, so at most the limit plus one frame is ever buffered.
//! - **TLS.** rustls with the `ring` provider (no cmake, unlike aws-lc), HTTP/1.1 announced by
//!   ALPN. The trust roots are the `ca_file` PEM bundle when one is given (it *replaces* the
//!   defaults, as Prometheus' `ca_file` and curl's `--cacert` do), else the Mozilla roots compiled
//!   in by `webpki-roots`: the exporter image then needs no CA files and behaves the same
//!   everywhere. A CCF service's certificate is signed by the service's own CA, so CCF nodes are
//!   read with `ca_file` pointing to that CA. No client certificates are sent.
//! - **JSON.** `serde_json` into the protocol types: numbers must be non-negative integers that
//!   fit a `u64`, the three heap fields are required, unknown fields (CCF's, newer agents') are
//!   ignored, and a report must be a JSON object (serde's derive would also take `[1,2,3]` by
//!   position). [`EnclaveEntry`] is `#[serde(untagged)]`, whose error for an entry that is neither
//!   kind is only "data did not match any variant"; the list is therefore parsed entry by entry,
//!   in the same order as the untagged enum (a heap report first, then an error report), so the
//!   message says which entry is wrong and why.
//!
//! Requests carry `Host`, `Accept: application/json` and
//! `User-Agent: enclave-heap-exporter/<version>`. The client must be used inside a Tokio runtime
//! (it spawns one task per connection to drive it).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, HOST, HeaderValue, USER_AGENT};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;

use crate::agent_protocol::{
    ENCLAVES_PATH, EnclaveEntry, EnclaveList, ErrorReport, MemoryReport, NODE_MEMORY_PATH,
};
use crate::duration::PromDuration;

const USER_AGENT_VALUE: &str = concat!("enclave-heap-exporter/", env!("CARGO_PKG_VERSION"));

/// Longest message built from an answer's content: a malformed body can be up to
/// `max_body_bytes` long, and `serde_json` quotes offending strings whole.
const MAX_MESSAGE_CHARS: usize = 300;

/// `sun_path` holds the socket path and its terminating NUL.
#[cfg(target_os = "linux")]
const MAX_SOCKET_PATH_BYTES: usize = 107;
#[cfg(not(target_os = "linux"))]
const MAX_SOCKET_PATH_BYTES: usize = 103;

/// Where an agent answers.
#[derive(Debug, Clone)]
pub enum AgentEndpoint {
    /// HTTP over a Unix socket, our agent's usual place in sidecar mode.
    Unix {
        /// The socket file.
        socket: PathBuf,
        /// The HTTP request path (and query) of the memory report.
        path: String,
    },
    /// An `http://` or `https://` URL of the report, e.g. `https://node:8080/node/memory`.
    Http {
        /// The report's URL; its path and query are the request's, a missing path is `/`.
        url: Uri,
    },
}

impl AgentEndpoint {
    /// Our agent's default enclave on a Unix socket: `GET /node/memory` on `socket`.
    pub fn unix(socket: impl Into<PathBuf>) -> Self {
        AgentEndpoint::Unix {
            socket: socket.into(),
            path: NODE_MEMORY_PATH.to_owned(),
        }
    }
}

impl fmt::Display for AgentEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentEndpoint::Unix { socket, path } => {
                write!(f, "{path} on unix socket {}", socket.display())
            }
            AgentEndpoint::Http { url } => write!(f, "{url}"),
        }
    }
}

/// Limits and trust settings of an [`AgentClient`].
#[derive(Debug, Clone)]
pub struct AgentClientOptions {
    /// Bound on name resolution, connect and TLS handshake. Default 1 s.
    pub connect_timeout: Duration,
    /// Bound on a whole read: connect, request, and the answer to its last byte. Default 2 s.
    pub total_timeout: Duration,
    /// Largest answer body accepted, checked while it streams in. Default 64 KiB.
    pub max_body_bytes: usize,
    /// PEM bundle of the CA certificates trusted for `https` (replacing the default roots, the
    /// Mozilla roots of `webpki-roots`). Unused for `http` and Unix sockets.
    pub ca_file: Option<PathBuf>,
}

impl Default for AgentClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            total_timeout: Duration::from_secs(2),
            max_body_bytes: 64 * 1024,
            ca_file: None,
        }
    }
}

/// An [`AgentClient`] that could not be set up: a configuration mistake, reported at startup.
#[derive(Debug, thiserror::Error)]
pub enum AgentClientError {
    /// The URL's scheme is neither `http` nor `https`.
    #[error(
        "{url}: unsupported scheme {}; write the agent URL as http://host:port/path or https://host:port/path (or unix:///path/to.sock for a Unix socket)",
        scheme_name(.scheme)
    )]
    UnsupportedScheme {
        /// The URL as given.
        url: String,
        /// Its scheme, if it has one.
        scheme: Option<String>,
    },
    /// The URL has no host to connect to.
    #[error(
        "{url}: no host; write the agent URL as http://host:port/path or https://host:port/path"
    )]
    MissingHost {
        /// The URL as given.
        url: String,
    },
    /// The URL's host cannot be sent as an HTTP `Host` or checked as a TLS server name.
    #[error("{url}: invalid host {host:?}: {reason}")]
    InvalidHost {
        /// The URL as given.
        url: String,
        /// The host part.
        host: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP request path of a Unix socket endpoint is not an absolute path.
    #[error("invalid request path {path:?}: {reason}; give an absolute path such as /node/memory")]
    InvalidRequestPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The Unix socket path cannot be connected to, whatever is listening.
    #[error("invalid socket path {}: {reason}", .socket.display())]
    InvalidSocketPath {
        /// The socket path as given.
        socket: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A limit in [`AgentClientOptions`] would make every read fail.
    #[error("invalid agent client option {option}: {reason}")]
    InvalidOption {
        /// The option's field name in [`AgentClientOptions`].
        option: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The CA file could not be read.
    #[error("cannot read the CA file {}: {cause}; check the path and its permissions", .path.display())]
    CaFileRead {
        /// The CA file as given.
        path: PathBuf,
        /// Why it could not be read.
        cause: io::Error,
    },
    /// The CA file holds no PEM certificate.
    #[error(
        "the CA file {} holds no certificate; it must be PEM, with -----BEGIN CERTIFICATE----- sections",
        .path.display()
    )]
    CaFileEmpty {
        /// The CA file as given.
        path: PathBuf,
    },
    /// The CA file is not valid PEM, or holds a certificate that cannot be a trust anchor.
    #[error("the CA file {} is not a usable PEM CA bundle: {reason}", .path.display())]
    CaFileInvalid {
        /// The CA file as given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the TLS configuration (a bug or an unusual build, not a user mistake).
    #[error("cannot set up TLS: {reason}")]
    Tls {
        /// rustls' error.
        reason: String,
    },
}

fn scheme_name(scheme: &Option<String>) -> String {
    match scheme {
        Some(scheme) => format!("`{scheme}`"),
        None => "(none)".to_owned(),
    }
}

/// A failed read from an agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentReadError {
    /// No connection: the socket file is missing, the connection was refused, the name did not
    /// resolve, the TLS handshake failed... The message says which, naming the socket path or
    /// the address.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// No complete answer within `total_timeout`, or no connection within `connect_timeout`;
    /// holds the timeout that ran out.
    #[error("no complete answer within {}", PromDuration(*.0))]
    Timeout(Duration),
    /// An answer other than `200 OK`. Our agent sends `503` with
    /// `{"error": "OE_OUT_OF_THREADS", ...}` when the enclave could not be read.
    #[error("the agent answered HTTP {status}{}", status_detail(.error))]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The answer's body, when it was an [`ErrorReport`].
        error: Option<ErrorReport>,
    },
    /// The body was longer than `max_body_bytes`; it was not read further.
    #[error("the answer is larger than {limit} bytes")]
    TooLarge {
        /// The `max_body_bytes` in force.
        limit: usize,
    },
    /// Not the expected JSON: malformed, not an object, a missing field, a wrong type, a negative
    /// or fractional number, not UTF-8, or not HTTP at all. The message says what.
    #[error("invalid answer: {0}")]
    InvalidResponse(String),
    /// The connection broke before the answer was complete.
    #[error("connection broke: {0}")]
    Io(String),
}

fn status_detail(error: &Option<ErrorReport>) -> String {
    match error {
        None => String::new(),
        Some(report) => {
            let mut detail = format!(": {}", report.error);
            if let Some(message) = &report.message {
                detail.push_str(&format!(" ({message})"));
            }
            clip(detail)
        }
    }
}

impl AgentReadError {
    /// The stable label of this failure for `enclave_heap_read_errors_total{result=...}`.
    ///
    /// A [`Status`](Self::Status) whose [`ErrorReport`] names an OE result (`OE_OUT_OF_THREADS`)
    /// or `timeout` is labelled with that name, so an agent's failures count like the exporter's
    /// own ECALL failures. Everything else is one of `connect`, `timeout`, `http_<status>`,
    /// `too_large`, `invalid_response` and `io`. Free text from the server never becomes a label
    /// (the series count must stay bounded): an `error` that is not shaped like an OE name, that
    /// is `OE_` followed by 1 to 61 upper-case letters, digits or underscores (every
    /// `oe_result_t` name, and `OE_RESULT_<n>` for codes without one), gives `http_<status>`.
    pub fn result_label(&self) -> String {
        match self {
            AgentReadError::Connect(_) => "connect".to_owned(),
            AgentReadError::Timeout(_) => "timeout".to_owned(),
            AgentReadError::Status {
                error: Some(report),
                ..
            } if report.error == "timeout" || is_oe_result_name(&report.error) => {
                report.error.clone()
            }
            AgentReadError::Status { status, .. } => format!("http_{status}"),
            AgentReadError::TooLarge { .. } => "too_large".to_owned(),
            AgentReadError::InvalidResponse(_) => "invalid_response".to_owned(),
            AgentReadError::Io(_) => "io".to_owned(),
        }
    }
}

fn is_oe_result_name(name: &str) -> bool {
    // Only names our bindings know, or the `OE_RESULT_<n>` we give codes without one: a label
    // set an agent cannot grow by inventing names.
    openenclave_sys::oe_result_from_name(name).is_some()
        || name.strip_prefix("OE_RESULT_").is_some_and(|digits| {
            (1..=10).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
        })
}

/// How to reach the server, worked out once from the endpoint.
enum Transport {
    Unix {
        socket: PathBuf,
    },
    Tcp {
        /// Without the brackets of an IPv6 literal: what name resolution and TLS want.
        host: String,
        port: u16,
        tls: Option<TlsTarget>,
    },
}

struct TlsTarget {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

/// A client for one agent endpoint. Cheap to share in an `Arc`; see the module docs for how it
/// keeps its connection.
pub struct AgentClient {
    endpoint: AgentEndpoint,
    options: AgentClientOptions,
    transport: Transport,
    host_header: HeaderValue,
    memory_path: PathAndQuery,
    list_path: PathAndQuery,
    idle: Mutex<Option<SendRequest<Empty<Bytes>>>>,
}

impl fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let has_idle_connection = self.idle.lock().map(|idle| idle.is_some()).unwrap_or(false);
        f.debug_struct("AgentClient")
            .field("endpoint", &self.endpoint)
            .field("options", &self.options)
            .field("has_idle_connection", &has_idle_connection)
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// Checks `endpoint` and `options` and, for `https`, loads the trust roots (reading
    /// `ca_file` now, so a wrong path fails at startup and not at every scrape). Connects lazily,
    /// on the first read.
    pub fn new(
        endpoint: AgentEndpoint,
        options: AgentClientOptions,
    ) -> Result<Self, AgentClientError> {
        check_options(&options)?;
        let list_path = PathAndQuery::from_static(ENCLAVES_PATH);
        let (transport, host_header, memory_path) = match &endpoint {
            AgentEndpoint::Unix { socket, path } => {
                check_socket_path(socket)?;
                let memory_path = parse_request_path(path)?;
                let transport = Transport::Unix {
                    socket: socket.clone(),
                };
                // HTTP/1.1 requires a Host header; a Unix socket has no name, and "localhost"
                // is what curl --unix-socket sends.
                (
                    transport,
                    HeaderValue::from_static("localhost"),
                    memory_path,
                )
            }
            AgentEndpoint::Http { url } => http_target(url, &options)?,
        };
        Ok(Self {
            endpoint,
            options,
            transport,
            host_header,
            memory_path,
            list_path,
            idle: Mutex::new(None),
        })
    }

    /// The endpoint this client reads.
    pub fn endpoint(&self) -> &AgentEndpoint {
        &self.endpoint
    }

    /// The options this client was built with.
    pub fn options(&self) -> &AgentClientOptions {
        &self.options
    }

    /// Reads the endpoint's report: `GET` its path, expecting `200 OK` and a [`MemoryReport`].
    pub async fn get_memory(&self) -> Result<MemoryReport, AgentReadError> {
        let body = self.get(&self.memory_path).await?;
        parse_memory_report(&body)
    }

    /// Reads every enclave the server has: `GET /enclaves` on the same server (for
    /// [`AgentEndpoint::Http`], same scheme and authority, path and query replaced), expecting
    /// `200 OK` and an [`EnclaveList`].
    pub async fn get_list(&self) -> Result<EnclaveList, AgentReadError> {
        let body = self.get(&self.list_path).await?;
        parse_enclave_list(&body)
    }

    /// One bounded `GET`: the body of a 200 answer, or why there is none.
    async fn get(&self, path: &PathAndQuery) -> Result<Vec<u8>, AgentReadError> {
        // Tokio's timers and sockets panic outside a runtime; say so instead.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(AgentReadError::Connect(
                "the agent client was used outside a Tokio runtime".to_owned(),
            ));
        }
        let limit = self.options.total_timeout;
        match tokio::time::timeout(limit, self.exchange(path)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(AgentReadError::Timeout(limit)),
        }
    }

    async fn exchange(&self, path: &PathAndQuery) -> Result<Vec<u8>, AgentReadError> {
        let (response, sender) = self.send(path).await?;
        let status = response.status();
        let body = read_body(response, self.options.max_body_bytes).await;
        if body.is_ok() {
            self.keep_idle(sender);
        }
        if status == StatusCode::OK {
            body
        } else {
            // The status is the news; the body only refines it, so a body that cannot be read
            // or is not an ErrorReport (a proxy's HTML page, say) still gives a Status error.
            let error = body
                .ok()
                .filter(|body| require_object(body, "an error report").is_ok())
                .and_then(|body| serde_json::from_slice::<ErrorReport>(&body).ok());
            Err(AgentReadError::Status {
                status: status.as_u16(),
                error,
            })
        }
    }

    /// Sends the request on the idle connection if there is a live one, else on a new one.
    async fn send(
        &self,
        path: &PathAndQuery,
    ) -> Result<(Response<Incoming>, SendRequest<Empty<Bytes>>), AgentReadError> {
        if let Some(mut sender) = self.take_idle() {
            // `ready` fails once hyper has seen the connection close while idle.
            if sender.ready().await.is_ok() {
                match sender.send_request(self.request(path)).await {
                    Ok(response) => return Ok((response, sender)),
                    Err(error) if is_stale_connection(&error) => {
                        tracing::debug!(
                            endpoint = %self.endpoint,
                            error = %error_chain(&error),
                            "kept-alive agent connection is dead; retrying once on a new one"
                        );
                    }
                    Err(error) => return Err(request_error(&error)),
                }
            }
        }
        let mut sender = self.connect().await?;
        match sender.send_request(self.request(path)).await {
            Ok(response) => Ok((response, sender)),
            Err(error) => Err(request_error(&error)),
        }
    }

    fn request(&self, path: &PathAndQuery) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = Uri::from(path.clone());
        let headers = request.headers_mut();
        headers.insert(HOST, self.host_header.clone());
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        request
    }

    fn take_idle(&self) -> Option<SendRequest<Empty<Bytes>>> {
        // The slot holds no invariant a panic could break, so a poisoned lock is still usable.
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn keep_idle(&self, sender: SendRequest<Empty<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // A concurrent read may have put its connection back first; one idle connection is enough.
        if idle.is_none() {
            *idle = Some(sender);
        }
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, AgentReadError> {
        let limit = self.options.connect_timeout;
        match tokio::time::timeout(limit, self.connect_unbounded()).await {
            Ok(result) => result,
            Err(_elapsed) => Err(AgentReadError::Timeout(limit)),
        }
    }

    async fn connect_unbounded(&self) -> Result<SendRequest<Empty<Bytes>>, AgentReadError> {
        match &self.transport {
            Transport::Unix { socket } => {
                let stream = UnixStream::connect(socket)
                    .await
                    .map_err(|error| unix_connect_error(socket, &error))?;
                handshake(stream, &socket.display().to_string()).await
            }
            Transport::Tcp { host, port, tls } => {
                let stream = connect_tcp(host, *port).await?;
                let peer = format!("{}:{port}", bracketed(host));
                match tls {
                    None => handshake(stream, &peer).await,
                    Some(tls) => {
                        let stream = tls
                            .connector
                            .connect(tls.server_name.clone(), stream)
                            .await
                            .map_err(|error| tls_error(&peer, &error))?;
                        handshake(stream, &peer).await
                    }
                }
            }
        }
    }
}

fn check_options(options: &AgentClientOptions) -> Result<(), AgentClientError> {
    if options.connect_timeout.is_zero() {
        return Err(AgentClientError::InvalidOption {
            option: "connect_timeout",
            reason: "must be more than zero",
        });
    }
    if options.total_timeout.is_zero() {
        return Err(AgentClientError::InvalidOption {
            option: "total_timeout",
            reason: "must be more than zero",
        });
    }
    if options.max_body_bytes == 0 {
        return Err(AgentClientError::InvalidOption {
            option: "max_body_bytes",
            reason: "must be more than zero",
        });
    }
    Ok(())
}

fn check_socket_path(socket: &Path) -> Result<(), AgentClientError> {
    let len = socket.as_os_str().len();
    let reason = if len == 0 {
        "it is empty".to_owned()
    } else if len > MAX_SOCKET_PATH_BYTES {
        format!(
            "it is {len} bytes long and the system allows {MAX_SOCKET_PATH_BYTES}; use a shorter path"
        )
    } else {
        return Ok(());
    };
    Err(AgentClientError::InvalidSocketPath {
        socket: socket.to_owned(),
        reason,
    })
}

fn parse_request_path(path: &str) -> Result<PathAndQuery, AgentClientError> {
    let invalid = |reason: String| AgentClientError::InvalidRequestPath {
        path: path.to_owned(),
        reason,
    };
    if !path.starts_with('/') {
        return Err(invalid("it does not start with /".to_owned()));
    }
    PathAndQuery::try_from(path).map_err(|error| invalid(error.to_string()))
}

/// Works out transport, `Host` header and request path of an `http(s)://` endpoint.
fn http_target(
    url: &Uri,
    options: &AgentClientOptions,
) -> Result<(Transport, HeaderValue, PathAndQuery), AgentClientError> {
    let url_text = url.to_string();
    let tls = match url.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        other => {
            return Err(AgentClientError::UnsupportedScheme {
                url: url_text,
                scheme: other.map(str::to_owned),
            });
        }
    };
    let Some(bracketed_host) = url.host().filter(|host| !host.is_empty()) else {
        return Err(AgentClientError::MissingHost { url: url_text });
    };
    let host = bracketed_host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(bracketed_host)
        .to_owned();
    let port = url.port_u16().unwrap_or(if tls { 443 } else { 80 });
    // Host without any user info, with the port only when the URL spelled one out (RFC 9110 7.2).
    let host_header = match url.port_u16() {
        Some(port) => format!("{bracketed_host}:{port}"),
        None => bracketed_host.to_owned(),
    };
    let host_header =
        HeaderValue::from_str(&host_header).map_err(|error| AgentClientError::InvalidHost {
            url: url_text.clone(),
            host: host.clone(),
            reason: error.to_string(),
        })?;
    let tls = if tls {
        let server_name =
            ServerName::try_from(host.clone()).map_err(|error| AgentClientError::InvalidHost {
                url: url_text.clone(),
                host: host.clone(),
                reason: format!("not a TLS server name: {error}"),
            })?;
        Some(TlsTarget {
            connector: tls_connector(options.ca_file.as_deref())?,
            server_name,
        })
    } else {
        None
    };
    let path = url
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Ok((Transport::Tcp { host, port, tls }, host_header, path))
}

fn tls_connector(ca_file: Option<&Path>) -> Result<TlsConnector, AgentClientError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|cause| AgentClientError::CaFileRead {
                path: path.to_owned(),
                cause,
            })?;
            for (index, certificate) in CertificateDer::pem_slice_iter(&pem).enumerate() {
                let invalid = |reason: String| AgentClientError::CaFileInvalid {
                    path: path.to_owned(),
                    reason: format!("certificate {}: {reason}", index + 1),
                };
                let certificate = certificate.map_err(|error| invalid(error.to_string()))?;
                roots
                    .add(certificate)
                    .map_err(|error| invalid(error.to_string()))?;
            }
            if roots.is_empty() {
                return Err(AgentClientError::CaFileEmpty {
                    path: path.to_owned(),
                });
            }
        }
        None => roots
            .roots
            .extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // An explicit provider: the process-wide default would depend on which rustls features other
    // crates in the build turn on, and panics when it cannot choose.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| AgentClientError::Tls {
            reason: error.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, AgentReadError> {
    let peer = format!("{}:{port}", bracketed(host));
    let addresses: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| AgentReadError::Connect(format!("cannot resolve {host}: {error}")))?
        .collect();
    let mut last_error = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                // Requests are one small write each; don't let Nagle hold them back.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
                }
                return Ok(stream);
            }
            Err(error) => last_error = Some((address, error)),
        }
    }
    Err(AgentReadError::Connect(match last_error {
        None => format!("{host} resolves to no address"),
        Some((address, error)) if error.kind() == io::ErrorKind::ConnectionRefused => {
            format!("{peer} ({address}) refused the connection: nothing listens there")
        }
        Some((address, error)) => format!("cannot connect to {peer} ({address}): {error}"),
    }))
}

fn unix_connect_error(socket: &Path, error: &io::Error) -> AgentReadError {
    let socket = socket.display();
    AgentReadError::Connect(match error.kind() {
        io::ErrorKind::NotFound => format!(
            "socket {socket} does not exist: is the agent running, and the socket's directory shared with the exporter?"
        ),
        io::ErrorKind::ConnectionRefused => {
            format!("socket {socket} refused the connection: no agent listens on it")
        }
        io::ErrorKind::PermissionDenied => format!(
            "no permission to connect to socket {socket}: the exporter's user needs write access to it"
        ),
        _ => format!("cannot connect to socket {socket}: {error}"),
    })
}

fn tls_error(peer: &str, error: &io::Error) -> AgentReadError {
    let mut message = format!("TLS handshake with {peer} failed: {error}");
    let is_certificate_problem = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|inner| {
            matches!(
                inner,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        });
    if is_certificate_problem {
        message.push_str(
            " (the server's certificate is not trusted; give the CA that signed it as the CA file)",
        );
    }
    AgentReadError::Connect(message)
}

async fn handshake<T>(io: T, peer: &str) -> Result<SendRequest<Empty<Bytes>>, AgentReadError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|error| {
            AgentReadError::Connect(format!(
                "HTTP handshake with {peer} failed: {}",
                error_chain(&error)
            ))
        })?;
    let peer = peer.to_owned();
    // The task ends when the connection closes, which dropping its `SendRequest` causes.
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%peer, error = %error_chain(&error), "agent connection ended with an error");
        }
    });
    Ok(sender)
}

/// Whether a request failed on a reused connection because the connection had died, so that the
/// same `GET` on a new connection may well succeed. A parse error is the server's fault and would
/// only repeat.
fn is_stale_connection(error: &hyper::Error) -> bool {
    !(error.is_parse() || error.is_parse_status() || error.is_user() || error.is_timeout())
}

fn request_error(error: &hyper::Error) -> AgentReadError {
    if error.is_parse() || error.is_parse_status() {
        AgentReadError::InvalidResponse(clip(format!(
            "not an HTTP/1.1 answer: {}",
            error_chain(error)
        )))
    } else if error.is_incomplete_message() {
        AgentReadError::Io("the connection closed before an answer arrived".to_owned())
    } else {
        AgentReadError::Io(error_chain(error))
    }
}

async fn read_body(response: Response<Incoming>, limit: usize) -> Result<Vec<u8>, AgentReadError> {
    let mut body = response.into_body();
    let declared = body.size_hint().lower();
    if declared > limit as u64 {
        return Err(AgentReadError::TooLarge { limit });
    }
    let mut buffer = Vec::with_capacity(usize::try_from(declared).unwrap_or(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            AgentReadError::Io(if error.is_incomplete_message() {
                "the connection closed before the whole answer arrived".to_owned()
            } else {
                error_chain(&error)
            })
        })?;
        if let Ok(data) = frame.into_data() {
            if data.len() > limit - buffer.len() {
                return Err(AgentReadError::TooLarge { limit });
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer)
}

/// serde's derived `Deserialize` for a struct also accepts a JSON array, by position
/// (`[1,2,3]` would be a heap report); only an object says which number is which.
fn require_object(body: &[u8], what: &str) -> Result<(), AgentReadError> {
    match body.iter().find(|byte| !byte.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        Some(_) => Err(AgentReadError::InvalidResponse(format!(
            "not {what}: expected a JSON object"
        ))),
        None => Err(AgentReadError::InvalidResponse(format!(
            "not {what}: the body is empty"
        ))),
    }
}

/// Parses an answer body as a [`MemoryReport`], as a read does: a JSON object whose three heap
/// fields are integers that fit a `u64`; anything else is [`AgentReadError::InvalidResponse`]
/// with a clipped message. Public for property tests and fuzz targets.
pub fn parse_memory_report(body: &[u8]) -> Result<MemoryReport, AgentReadError> {
    require_object(body, "a heap report")?;
    serde_json::from_slice(body).map_err(|error| {
        AgentReadError::InvalidResponse(clip(format!("not a heap report: {error}")))
    })
}

/// Parses an answer body as an [`EnclaveList`], entry by entry, as a listing read does; a bad
/// entry is [`AgentReadError::InvalidResponse`] naming its index. Public for property tests and
/// fuzz targets.
pub fn parse_enclave_list(body: &[u8]) -> Result<EnclaveList, AgentReadError> {
    #[derive(Deserialize)]
    struct RawEnclaveList {
        enclaves: Vec<serde_json::Value>,
    }
    require_object(body, "an enclave list")?;
    let raw: RawEnclaveList = serde_json::from_slice(body).map_err(|error| {
        AgentReadError::InvalidResponse(clip(format!("not an enclave list: {error}")))
    })?;
    let enclaves = raw
        .enclaves
        .iter()
        .enumerate()
        .map(|(index, entry)| parse_enclave_entry(index, entry))
        .collect::<Result<_, _>>()?;
    Ok(EnclaveList { enclaves })
}

/// One entry, tried in the order of [`EnclaveEntry`]'s untagged variants.
fn parse_enclave_entry(
    index: usize,
    entry: &serde_json::Value,
) -> Result<EnclaveEntry, AgentReadError> {
    if !entry.is_object() {
        return Err(AgentReadError::InvalidResponse(format!(
            "enclave list entry {index} is not a JSON object"
        )));
    }
    let memory_error = match MemoryReport::deserialize(entry) {
        Ok(report) => return Ok(EnclaveEntry::Memory(report)),
        Err(error) => error,
    };
    let error_error = match ErrorReport::deserialize(entry) {
        Ok(report) => return Ok(EnclaveEntry::Error(report)),
        Err(error) => error,
    };
    let name = match entry.get("enclave").and_then(serde_json::Value::as_str) {
        Some(name) => format!(" ({name:?})"),
        None => String::new(),
    };
    Err(AgentReadError::InvalidResponse(clip(format!(
        "enclave list entry {index}{name} is neither a heap report ({memory_error}) nor an error report ({error_error})"
    ))))
}

/// An error and its sources: hyper's own messages name only the outermost layer.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Shortens a message that quotes an answer, at a character boundary.
fn clip(mut message: String) -> String {
    if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(cut);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn status(status: u16, error: Option<&str>) -> AgentReadError {
        AgentReadError::Status {
            status,
            error: error.map(|error| ErrorReport {
                error: error.to_owned(),
                enclave: None,
                message: None,
            }),
        }
    }

    #[test]
    fn result_labels_are_a_small_fixed_set_plus_oe_names() {
        let cases = [
            (AgentReadError::Connect("x".into()), "connect"),
            (AgentReadError::Timeout(Duration::from_secs(1)), "timeout"),
            (status(503, Some("OE_OUT_OF_THREADS")), "OE_OUT_OF_THREADS"),
            (status(503, Some("OE_RESULT_4242")), "OE_RESULT_4242"),
            (status(504, Some("timeout")), "timeout"),
            (status(404, Some("not_found")), "http_404"),
            (status(503, Some("OE_ but free text")), "http_503"),
            (status(503, Some("OE_")), "http_503"),
            (status(503, Some("OE_MADE_UP_BY_THE_AGENT")), "http_503"),
            (status(503, Some("OE_RESULT_12345678901")), "http_503"),
            (status(503, Some("oe_failure")), "http_503"),
            (
                status(503, Some(&format!("OE_{}", "A".repeat(62)))),
                "http_503",
            ),
            (status(500, None), "http_500"),
            (AgentReadError::TooLarge { limit: 1 }, "too_large"),
            (
                AgentReadError::InvalidResponse("x".into()),
                "invalid_response",
            ),
            (AgentReadError::Io("x".into()), "io"),
        ];
        for (error, label) in cases {
            assert_eq!(error.result_label(), label, "{error:?}");
        }
    }

    #[test]
    fn messages_quoting_the_answer_are_clipped() {
        let long = format!("\"{}\"", "é".repeat(10_000));
        let body = format!(
            r#"{{"max_total_heap_size":{long},"current_allocated_heap_size":1,"peak_allocated_heap_size":1}}"#
        );
        let AgentReadError::InvalidResponse(message) =
            parse_memory_report(body.as_bytes()).unwrap_err()
        else {
            panic!("expected InvalidResponse");
        };
        assert!(
            message.chars().count() <= MAX_MESSAGE_CHARS + 1,
            "{message}"
        );
    }

    #[test]
    fn list_entries_follow_the_untagged_order_and_say_which_is_wrong() {
        let both = br#"{"enclaves":[{"max_total_heap_size":1,"current_allocated_heap_size":2,"peak_allocated_heap_size":3,"error":"OE_FAILURE"}]}"#;
        let list = parse_enclave_list(both).unwrap();
        assert!(matches!(list.enclaves[0], EnclaveEntry::Memory(_)));
        // The derived untagged enum agrees.
        let derived: EnclaveList = serde_json::from_slice(both).unwrap();
        assert_eq!(derived, list);

        let neither =
            br#"{"enclaves":[{"error":"OE_FAILURE"},{"enclave":"b","max_total_heap_size":-1}]}"#;
        let AgentReadError::InvalidResponse(message) = parse_enclave_list(neither).unwrap_err()
        else {
            panic!("expected InvalidResponse");
        };
        assert!(message.contains("entry 1 (\"b\")"), "{message}");
        assert!(message.contains("expected u64"), "{message}");

        for positional in [&br#"{"enclaves":[[1,2,3]]}"#[..], br#" [[[1,2,3]]]"#] {
            let error = parse_enclave_list(positional).unwrap_err();
            assert!(
                matches!(&error, AgentReadError::InvalidResponse(m) if m.contains("JSON object")),
                "{error:?}"
            );
        }
    }

    #[test]
    fn options_that_would_fail_every_read_are_refused() {
        let endpoint = AgentEndpoint::unix("/run/agent.sock");
        let options = AgentClientOptions {
            total_timeout: Duration::ZERO,
            ..AgentClientOptions::default()
        };
        let error = AgentClient::new(endpoint, options).unwrap_err();
        assert!(error.to_string().contains("total_timeout"), "{error}");
    }

    #[test]
    fn client_and_reads_can_cross_threads() {
        fn assert_send_sync<T: Send + Sync>(_: &T) {}
        fn assert_send<T: Send>(_: &T) {}
        let client =
            AgentClient::new(AgentEndpoint::unix("/run/agent.sock"), Default::default()).unwrap();
        assert_send_sync(&client);
        assert_send(&client.get_memory());
        assert_send(&client.get_list());
    }
}
