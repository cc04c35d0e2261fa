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
    pub async fn render(&self, format: Format) -> Result<Vec<u8>, prometheus::Error> {
        let readings = self.collector.collect().await;
        let families = self.metrics.families(&readings);
        let mut body = Vec::with_capacity(4096);
        exposition::encode(&families, format, &mut body)?;
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
