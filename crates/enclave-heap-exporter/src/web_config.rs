//! `--web.config.file`: TLS, basic auth, extra response headers and a request rate limit, in
//! [exporter-toolkit's YAML format], the file node_exporter users already have.
//!
//! [`WebConfig::load`] judges the whole file at start: an unknown key, an unreadable file, a
//! password that is not a bcrypt hash or a TLS setting rustls cannot honour stops the exporter
//! with one line naming the key. Nothing is silently ignored: a setting this exporter does not
//! implement (`client_allowed_sans`) is an error too, because ignoring a security setting would
//! leave the port more open than its operator believes.
//!
//! Per request, in this order: `rate_limit` (a token bucket over all requests, as Go's
//! `rate.Limiter` in exporter-toolkit; `429` when empty), then basic auth (`401` with
//! `WWW-Authenticate: Basic`, see [`crate::auth`]), then routing; `http_server_config.headers`
//! go on every response, refusals included.
//!
//! Once loaded the settings are fixed for the life of the process, with one exception: the
//! certificate and key files are re-read when they change on disk ([`crate::tls`]), so a
//! certificate rotated by cert-manager needs no restart.
//!
//! Where this differs from exporter-toolkit, on purpose:
//! - `/-/healthy` and `/-/ready` answer without basic auth and outside the rate limit: they
//!   reveal nothing but "up", and Kubernetes probes cannot easily send credentials. TLS (and a
//!   required client certificate) still applies to them.
//! - Only HTTP/1.1 is served; `http_server_config.http2` is accepted either way.
//! - Settings that exporter-toolkit quietly ignores without a certificate (`min_version` alone)
//!   are an error here, and verifying client certificates needs `client_ca_file` (Go would fall
//!   back to the system roots, which would let anyone with a public certificate in).
//!
//! [exporter-toolkit's YAML format]: https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use enclave_heap_host::PromDuration;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde::Deserialize;

use crate::auth::BasicAuth;
use crate::tls::TlsServer;

/// Paths that answer without credentials and outside the rate limit: liveness and readiness
/// probes, which reveal nothing but "the exporter is up".
pub const UNAUTHENTICATED_PATHS: [&str; 2] = ["/-/healthy", "/-/ready"];

/// The validated `--web.config.file`: what every connection and request must pass.
///
/// The default is plain HTTP with no authentication, as without the flag.
#[derive(Clone, Default)]
pub struct WebConfig {
    tls: Option<TlsServer>,
    basic_auth: Option<Arc<BasicAuth>>,
    headers: Vec<(HeaderName, HeaderValue)>,
    rate_limit: Option<Arc<RateLimiter>>,
}

/// Why a web config file cannot be used. Every message names the key at fault and never
/// repeats a secret (a password hash, an inline private key).
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// The file itself cannot be read.
    #[error("cannot read the file: {0}")]
    Read(#[source] std::io::Error),
    /// The YAML is malformed, a value has the wrong type, or a key is not one exporter-toolkit
    /// defines. serde names the key.
    #[error("{0}")]
    Syntax(#[from] serde_norway::Error),
    /// A file named by a key cannot be read.
    #[error("{key}: cannot read {}: {source}", .path.display())]
    File {
        /// The key that names the file, e.g. `tls_server_config.cert_file`.
        key: &'static str,
        /// The file, relative paths resolved against the config file's directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A value cannot be used.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key, e.g. `basic_auth_users.alice`.
        key: String,
        /// Why, and what would be accepted.
        reason: String,
    },
    /// A setting exporter-toolkit defines that rustls or this exporter cannot honour.
    #[error("{key}: {value} is not supported: {reason}")]
    Unsupported {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// Why, and what to use instead.
        reason: String,
    },
}

impl WebConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(
        key: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Unsupported {
            key: key.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}

// The file as exporter-toolkit defines it. No `Debug`: these hold secrets (hashes, inline keys).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTlsServerConfig>,
    http_server_config: Option<RawHttpServerConfig>,
    // Values as raw YAML: a wrong type must not be echoed by serde's message (it may be a
    // password where a hash belongs).
    basic_auth_users: Option<BTreeMap<String, serde_norway::Value>>,
    rate_limit: Option<RawRateLimit>,
}

/// `tls_server_config`, as written; [`crate::tls`] judges it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTlsServerConfig {
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) client_ca: Option<String>,
    pub(crate) cert_file: Option<String>,
    pub(crate) key_file: Option<String>,
    pub(crate) client_auth_type: Option<String>,
    pub(crate) client_ca_file: Option<String>,
    pub(crate) client_allowed_sans: Option<Vec<String>>,
    pub(crate) min_version: Option<String>,
    pub(crate) max_version: Option<String>,
    pub(crate) cipher_suites: Option<Vec<String>>,
    pub(crate) prefer_server_cipher_suites: Option<bool>,
    pub(crate) curve_preferences: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttpServerConfig {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    interval: Option<RawInterval>,
    burst: Option<u32>,
}

// Go's YAML decodes a time.Duration from "1s" or from an integer of nanoseconds (only 0 is
// sensible, meaning "off").
#[derive(Deserialize)]
#[serde(untagged)]
enum RawInterval {
    Text(String),
    Nanoseconds(u64),
}

/// The headers exporter-toolkit lets a web config add, and the values it accepts where the
/// header is an enumeration (kept identical so one file means the same in every exporter).
const EXTRA_HEADERS: [(&str, &[&str]); 5] = [
    ("Content-Security-Policy", &[]),
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
];

impl WebConfig {
    /// Reads and checks `path`. Relative file names inside it are relative to its directory,
    /// as in exporter-toolkit.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(WebConfigError::Read)?;
        let base = path.parent().unwrap_or_else(|| Path::new(""));
        Self::parse(&text, base)
    }

    /// Checks a web config given as YAML text; relative file names are resolved against
    /// `base_dir`.
    pub fn parse(yaml: &str, base_dir: &Path) -> Result<Self, WebConfigError> {
        // An empty file (or one of comments only) configures nothing, as in exporter-toolkit.
        let raw: RawWebConfig =
            serde_norway::from_str::<Option<RawWebConfig>>(yaml)?.unwrap_or_default();
        let tls = match &raw.tls_server_config {
            Some(tls) => TlsServer::from_raw(tls, base_dir)?,
            None => None,
        };
        let http = raw.http_server_config.unwrap_or_default();
        // http2 is accepted either way: this server speaks HTTP/1.1 only (ALPN offers http/1.1).
        let _ = http.http2;
        let headers = parse_headers(http.headers.unwrap_or_default())?;
        let basic_auth = match raw.basic_auth_users {
            Some(users) if !users.is_empty() => Some(Arc::new(BasicAuth::new(hashes(users)?)?)),
            _ => None,
        };
        let rate_limit = match raw.rate_limit {
            Some(limit) => RateLimiter::from_raw(limit)?.map(Arc::new),
            None => None,
        };
        Ok(Self {
            tls,
            basic_auth,
            headers,
            rate_limit,
        })
    }

    /// The TLS side, when `tls_server_config` configures a certificate.
    pub fn tls(&self) -> Option<&TlsServer> {
        self.tls.as_ref()
    }

    /// True when `basic_auth_users` names at least one user.
    pub fn requires_basic_auth(&self) -> bool {
        self.basic_auth.is_some()
    }

    /// What a request must pass before it is routed: the rate limit, then basic auth (except
    /// on [`UNAUTHENTICATED_PATHS`]). Returns the response that ends the request here (429, or
    /// 401 with `WWW-Authenticate`), or `None` to route it.
    pub async fn refusal<B>(&self, request: &Request<B>) -> Option<Response<Full<Bytes>>> {
        if UNAUTHENTICATED_PATHS.contains(&request.uri().path()) {
            return None;
        }
        if self.rate_limit.as_ref().is_some_and(|limit| !limit.allow()) {
            return Some(plain(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests: rate_limit in the web config.\n",
            ));
        }
        let authorized = match &self.basic_auth {
            Some(auth) => {
                auth.verify(request.headers().get(header::AUTHORIZATION))
                    .await
            }
            None => true,
        };
        if !authorized {
            let mut response = plain(StatusCode::UNAUTHORIZED, "Unauthorized.\n");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"enclave-heap-exporter\""),
            );
            return Some(response);
        }
        None
    }

    /// Logs what the web config switches on (once, at start; no secrets).
    pub fn log_summary(&self, file: &Path) {
        let file = file.display().to_string();
        match &self.tls {
            Some(tls) => {
                tracing::info!(
                    web_config_file = %file,
                    versions = tls.versions(),
                    client_auth = tls.client_auth(),
                    certificate = tls.certificate_source(),
                    "TLS is enabled"
                );
                if tls.accepts_unverified_client_certs() {
                    tracing::warn!(
                        client_auth = tls.client_auth(),
                        "client certificates are requested but not verified: they authenticate nobody; use RequireAndVerifyClientCert with client_ca_file"
                    );
                }
            }
            None => tracing::info!(web_config_file = %file, "TLS is disabled"),
        }
        match &self.basic_auth {
            Some(auth) => tracing::info!(
                users = auth.user_count(),
                unauthenticated_paths = %UNAUTHENTICATED_PATHS.join(","),
                "basic auth is required"
            ),
            None if self.tls.is_none() => tracing::warn!(
                "the web config enables neither TLS nor basic auth: anyone who reaches the port reads the heap figures"
            ),
            None => {}
        }
        if let Some(limit) = &self.rate_limit {
            tracing::info!(
                interval = ?limit.interval,
                burst = limit.burst,
                "rate limit is enabled"
            );
        }
    }

    /// Adds `http_server_config.headers` to a response (every response, 401s included).
    pub fn decorate<B>(&self, response: &mut Response<B>) {
        for (name, value) in &self.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
}

impl fmt::Debug for WebConfig {
    // Never the users' hashes or the key: only what is switched on.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls)
            .field(
                "basic_auth_users",
                &self.basic_auth.as_ref().map_or(0, |auth| auth.user_count()),
            )
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

fn hashes(
    users: BTreeMap<String, serde_norway::Value>,
) -> Result<BTreeMap<String, String>, WebConfigError> {
    users
        .into_iter()
        .map(|(user, value)| match value {
            serde_norway::Value::String(hash) => Ok((user, hash)),
            _ => Err(WebConfigError::invalid(
                format!("basic_auth_users.{user}"),
                "must be a bcrypt hash, written as a string",
            )),
        })
        .collect()
}

fn parse_headers(
    headers: BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, WebConfigError> {
    let mut parsed = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let key = format!("http_server_config.headers.{name}");
        let Some((canonical, allowed)) = EXTRA_HEADERS.iter().find(|(known, _)| *known == name)
        else {
            let known: Vec<_> = EXTRA_HEADERS.iter().map(|(known, _)| *known).collect();
            return Err(WebConfigError::invalid(
                key,
                format!(
                    "this header cannot be configured; allowed: {}",
                    known.join(", ")
                ),
            ));
        };
        // "Unset if blank", as exporter-toolkit documents.
        if value.is_empty() {
            continue;
        }
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(WebConfigError::invalid(
                key,
                format!("{value:?} is not allowed; expected one of {allowed:?}"),
            ));
        }
        let header_value = HeaderValue::from_str(&value).map_err(|_| {
            WebConfigError::invalid(&key, "not a valid header value (control characters?)")
        })?;
        let header_name = HeaderName::from_bytes(canonical.as_bytes())
            .map_err(|_| WebConfigError::invalid(key, "not a valid header name"))?;
        parsed.push((header_name, header_value));
    }
    Ok(parsed)
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `rate_limit`: a token bucket over every request (except the probes), as Go's
/// `rate.NewLimiter(rate.Every(interval), burst)` in exporter-toolkit: one token every
/// `interval`, at most `burst` saved up; a request without a token gets 429.
pub struct RateLimiter {
    interval: Duration,
    burst: u32,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    fn from_raw(raw: RawRateLimit) -> Result<Option<Self>, WebConfigError> {
        let interval = match raw.interval {
            None => Duration::ZERO,
            Some(RawInterval::Nanoseconds(0)) => Duration::ZERO,
            Some(RawInterval::Nanoseconds(_)) => {
                return Err(WebConfigError::invalid(
                    "rate_limit.interval",
                    "write the interval as a duration, e.g. 1s or 200ms",
                ));
            }
            Some(RawInterval::Text(text)) => text
                .parse::<PromDuration>()
                .map(Duration::from)
                .map_err(|error| {
                    WebConfigError::invalid("rate_limit.interval", error.to_string())
                })?,
        };
        // An interval of 0 switches the limiter off (exporter-toolkit's rule).
        if interval.is_zero() {
            return Ok(None);
        }
        let burst = raw.burst.unwrap_or(0);
        if burst == 0 {
            return Err(WebConfigError::invalid(
                "rate_limit.burst",
                "must be at least 1 when rate_limit.interval is set (0 would refuse every request)",
            ));
        }
        Ok(Some(Self {
            interval,
            burst,
            bucket: Mutex::new(Bucket {
                tokens: f64::from(burst),
                refilled: Instant::now(),
            }),
        }))
    }

    /// Takes a token if one is left.
    pub fn allow(&self) -> bool {
        let Ok(mut bucket) = self.bucket.lock() else {
            // A panic while holding this lock cannot leave the bucket inconsistent in a way
            // that matters more than refusing service; let requests through.
            return true;
        };
        let now = Instant::now();
        let earned =
            now.duration_since(bucket.refilled).as_secs_f64() / self.interval.as_secs_f64();
        bucket.tokens = (bucket.tokens + earned).min(f64::from(self.burst));
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("interval", &self.interval)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_header_names_are_valid() {
        for (name, _) in EXTRA_HEADERS {
            assert!(HeaderName::from_bytes(name.as_bytes()).is_ok(), "{name}");
        }
    }

    #[test]
    fn blank_files_configure_nothing() {
        for yaml in ["", "\n", "# nothing\n", "---\n", "{}"] {
            let config = WebConfig::parse(yaml, Path::new("")).unwrap();
            assert!(config.tls().is_none(), "{yaml:?}");
            assert!(!config.requires_basic_auth(), "{yaml:?}");
        }
    }

    #[test]
    fn rate_limiter_refills_one_token_per_interval() {
        let limiter = RateLimiter::from_raw(RawRateLimit {
            interval: Some(RawInterval::Text("1h".into())),
            burst: Some(2),
        })
        .unwrap()
        .unwrap();
        assert!(limiter.allow());
        assert!(limiter.allow());
        assert!(!limiter.allow());
    }
}
