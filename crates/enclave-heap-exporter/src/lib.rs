//! enclave-heap-exporter: publishes Open Enclave heap figures to Prometheus.
//!
//! The daemon's parts, in the order data flows through them: [`config`] (flags, validated),
//! sources (from `enclave-heap-host`), the [`collector`] that reads them at scrape time, the
//! [`metrics`] they become, their [`exposition`] on the wire, and the HTTP [`server`], guarded
//! by the [`web_config`] ([`tls`], basic [`auth`], extra headers).
//!
//! A Rust host can run the exporter in-process over its own sources (embedded mode): build an
//! [`Exporter`] with [`Exporter::new`] and pass it to [`server::serve`].
#![deny(missing_docs)]

pub mod auth;
pub mod build_info;
pub mod cli;
pub mod collector;
pub mod config;
pub mod exposition;
pub mod landing;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod sources;
pub mod tls;
pub mod web_config;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use enclave_heap_host::OpenError;
use tokio::net::TcpListener;

use crate::collector::{Collector, CollectorOptions, CollectorSource};
use crate::config::Config;
use crate::exposition::Format;
use crate::metrics::{ExporterMetrics, ProcessMetrics};

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A source could not be opened.
    #[error("source {name:?}: {cause}")]
    OpenSource {
        /// The source's name.
        name: String,
        /// Why.
        cause: OpenError,
    },
    /// A listen address could not be bound.
    #[error(
        "cannot listen on {address}: {cause}; pick another --web.listen-address or stop what uses it"
    )]
    Bind {
        /// The address.
        address: SocketAddr,
        /// What the OS said.
        cause: std::io::Error,
    },
    /// The metrics registry rejected a metric (a bug).
    #[error("registering metrics failed: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The exporter: its sources, collector and metrics. Serve it with [`server::serve`].
#[derive(Debug)]
pub struct Exporter {
    collector: Collector,
    metrics: ExporterMetrics,
    telemetry_path: String,
    bodies: BodyCache,
}

/// The longest an encoded body is reused, so the exporter's own `process_*` figures stay this
/// fresh even with a long `--source.min-interval`.
pub const MAX_BODY_REUSE: Duration = Duration::from_secs(1);

/// The last encoded body per wire format, and until when it may be served again.
#[derive(Debug, Default)]
struct BodyCache {
    entries: std::sync::Mutex<[Option<(Instant, Bytes)>; 2]>,
}

impl BodyCache {
    fn slot(format: Format) -> usize {
        match format {
            Format::Text => 0,
            Format::OpenMetrics => 1,
        }
    }

    fn get(&self, format: Format, now: Instant) -> Option<Bytes> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &entries[Self::slot(format)] {
            Some((until, body)) if now < *until => Some(body.clone()),
            _ => None,
        }
    }

    /// The last body's size, so the next encoding allocates once.
    fn capacity_hint(&self, format: Format) -> usize {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries[Self::slot(format)]
            .as_ref()
            .map_or(4096, |(_, body)| body.len() + 256)
    }

    fn put(&self, format: Format, until: Instant, body: Bytes) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries[Self::slot(format)] = Some((until, body));
    }
}

impl Exporter {
    /// An exporter over already-opened sources (embedded mode).
    pub fn new(
        sources: Vec<CollectorSource>,
        options: CollectorOptions,
        telemetry_path: impl Into<String>,
        process: ProcessMetrics,
    ) -> Result<Self, StartError> {
        let metrics = ExporterMetrics::new(process)?;
        let collector = Collector::new(sources, options, metrics.telemetry());
        Ok(Self {
            collector,
            metrics,
            telemetry_path: telemetry_path.into(),
            bodies: BodyCache::default(),
        })
    }

    /// Opens every source of `config` and builds the exporter over them.
    pub fn open(config: &Config) -> Result<Self, StartError> {
        let mut opened = Vec::with_capacity(config.sources.len());
        for definition in &config.sources {
            let source =
                sources::open(definition, config).map_err(|cause| StartError::OpenSource {
                    name: definition.name.clone(),
                    cause,
                })?;
            opened.push(source);
        }
        Self::new(
            opened,
            CollectorOptions {
                timeout: config.source_timeout,
                min_interval: config.source_min_interval,
            },
            config.telemetry_path.clone(),
            ProcessMetrics::Include,
        )
    }

    /// The path metrics are served on.
    pub fn telemetry_path(&self) -> &str {
        &self.telemetry_path
    }

    /// The collector, e.g. to read sources without HTTP.
    pub fn collector(&self) -> &Collector {
        &self.collector
    }

    /// Reads every source and encodes one scrape in `format`.
    ///
    /// While every source would answer from its last read anyway (within
    /// `--source.min-interval`), the encoded body is reused as is, for at most
    /// [`MAX_BODY_REUSE`]: a scrape storm then costs a reference count per request, not a
    /// collection and an encoding.
    pub async fn render(&self, format: Format) -> Result<Bytes, prometheus::Error> {
        let now = Instant::now();
        if let Some(body) = self.bodies.get(format, now) {
            return Ok(body);
        }
        let readings = self.collector.collect().await;
        let families = self.metrics.families(&readings);
        let mut body = Vec::with_capacity(self.bodies.capacity_hint(format));
        exposition::encode(&families, format, &mut body)?;
        let body = Bytes::from(body);
        if let Some(until) = self.collector.fresh_until() {
            self.bodies.put(
                format,
                until.min(Instant::now() + MAX_BODY_REUSE),
                body.clone(),
            );
        }
        Ok(body)
    }

    /// The HTML landing page: every enclave's heap as bars, read like a scrape.
    pub async fn landing_page(&self) -> String {
        let readings = self.collector.collect().await;
        landing::render(&readings, &self.telemetry_path)
    }
}

/// Binds every address, failing on the first that cannot be bound.
pub async fn bind(addresses: &[SocketAddr]) -> Result<Vec<TcpListener>, StartError> {
    let mut listeners = Vec::with_capacity(addresses.len());
    for &address in addresses {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|cause| StartError::Bind { address, cause })?;
        listeners.push(listener);
    }
    Ok(listeners)
}
