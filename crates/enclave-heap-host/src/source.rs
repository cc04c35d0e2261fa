//! The [`HeapSource`] interface and [`open_source`], which turns a [`SourceSpec`] into one.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{OpenError, ReadError};
use crate::push::{DEFAULT_PUSH_MAX_AGE, PushFallback, PushSlot};
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

/// How sources are opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceOptions {
    /// How old a pushed snapshot may be and still stand in for an ECALL that failed with
    /// `OE_OUT_OF_THREADS`.
    pub push_max_age: Duration,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            push_max_age: DEFAULT_PUSH_MAX_AGE,
        }
    }
}

/// Opens the source that `spec` describes with default [`SourceOptions`].
pub fn open_source(spec: &SourceSpec) -> Result<Arc<dyn HeapSource>, OpenError> {
    open_source_with(spec, &SourceOptions::default())
}

/// Opens the source that `spec` describes: starts a simulated enclave, or creates a real one.
/// Enclaves that push snapshots get the push fallback (see [`PushFallback`]).
pub fn open_source_with(
    spec: &SourceSpec,
    options: &SourceOptions,
) -> Result<Arc<dyn HeapSource>, OpenError> {
    match spec {
        SourceSpec::Simulated { config, .. } if config.push.is_some() => {
            let pushes = Arc::new(PushSlot::new());
            let source = SimulatedSource::start_pushing_to(config.clone(), Arc::clone(&pushes))?;
            Ok(Arc::new(PushFallback::new(
                source,
                pushes,
                options.push_max_age,
            )))
        }
        SourceSpec::Simulated { config, .. } => {
            Ok(Arc::new(SimulatedSource::start(config.clone())?))
        }
        SourceSpec::OpenEnclave { url, config } => open_openenclave(url, config, options),
        SourceSpec::UnixAgent { url, .. } | SourceSpec::HttpAgent { url, .. } => {
            Err(OpenError::NotInProcess { url: url.clone() })
        }
    }
}

#[cfg(feature = "openenclave")]
fn open_openenclave(
    _url: &str,
    config: &crate::source_url::OeEnclaveConfig,
    options: &SourceOptions,
) -> Result<Arc<dyn HeapSource>, OpenError> {
    let source = crate::openenclave::OeEnclaveSource::create(config)?;
    Ok(Arc::new(PushFallback::new(
        source,
        crate::openenclave::process_pushes(),
        options.push_max_age,
    )))
}

#[cfg(not(feature = "openenclave"))]
fn open_openenclave(
    url: &str,
    _config: &crate::source_url::OeEnclaveConfig,
    _options: &SourceOptions,
) -> Result<Arc<dyn HeapSource>, OpenError> {
    Err(OpenError::FeatureNotBuilt {
        url: url.to_owned(),
        kind: "Open Enclave (oe://)",
        feature: "openenclave",
    })
}
