//! The [`HeapSource`] interface and [`open_source`], which turns a [`SourceSpec`] into one.

use std::fmt;
use std::sync::Arc;

use crate::error::{OpenError, ReadError};
use crate::simulated::SimulatedSource;
use crate::snapshot::HeapSnapshot;
use crate::source_url::SourceSpec;

/// Something that reads one enclave's heap figures.
///
/// `read` blocks: for a real enclave it is an ECALL, which cannot be cancelled once started.
/// Callers that must stay responsive run it on a blocking thread and never start a second read of
/// the same source while one is in flight.
pub trait HeapSource: Send + Sync + fmt::Debug {
    /// What kind of source this is (the exporter's `enclave_heap_info{source=...}` label).
    fn kind(&self) -> SourceKind;

    /// Reads one snapshot.
    fn read(&self) -> Result<HeapSnapshot, ReadError>;
}

/// The kinds of heap source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// The simulated enclave of `enclave-heap-sim`.
    Simulated,
    /// A real Open Enclave enclave that this process created.
    OpenEnclave,
}

impl SourceKind {
    /// The label value used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            SourceKind::Simulated => "simulated",
            SourceKind::OpenEnclave => "openenclave",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Opens the source that `spec` describes: starts a simulated enclave, or creates a real one.
pub fn open_source(spec: &SourceSpec) -> Result<Arc<dyn HeapSource>, OpenError> {
    match spec {
        SourceSpec::Simulated { config, .. } => {
            Ok(Arc::new(SimulatedSource::start(config.clone())?))
        }
        SourceSpec::OpenEnclave { url, config } => open_openenclave(url, config),
        SourceSpec::UnixAgent { url, .. } => Err(OpenError::NotYetSupported {
            url: url.clone(),
            kind: "unix socket agent",
        }),
        SourceSpec::HttpAgent { url } => Err(OpenError::NotYetSupported {
            url: url.clone(),
            kind: "HTTP agent",
        }),
    }
}

#[cfg(feature = "openenclave")]
fn open_openenclave(
    _url: &str,
    config: &crate::source_url::OeEnclaveConfig,
) -> Result<Arc<dyn HeapSource>, OpenError> {
    Ok(Arc::new(crate::openenclave::OeEnclaveSource::create(
        config,
    )?))
}

#[cfg(not(feature = "openenclave"))]
fn open_openenclave(
    url: &str,
    _config: &crate::source_url::OeEnclaveConfig,
) -> Result<Arc<dyn HeapSource>, OpenError> {
    Err(OpenError::FeatureNotBuilt {
        url: url.to_owned(),
        kind: "Open Enclave (oe://)",
        feature: "openenclave",
    })
}
