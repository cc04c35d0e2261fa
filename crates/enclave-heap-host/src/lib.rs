//! The host side of enclave-heap-exporter: where heap figures are read from.
//!
//! This crate owns the [`HeapSource`] interface that every way of reading an enclave's heap
//! implements, its implementations, and the source URLs that name them:
//!
//! - [`SimulatedSource`]: the simulated enclave of `enclave-heap-sim`, answered through the
//!   trusted crate's ECALL code path, so everything runs without SGX;
//! - `OeEnclaveSource` (feature `openenclave`): a real Open Enclave enclave created through the
//!   SDK and read with our ECALL;
//! - agents on Unix sockets and HTTP(S) come with the sidecar work and are rejected for now.
//!
//! One type carries the numbers everywhere: [`HeapSnapshot`], the three `oe_mallinfo_t` fields
//! plus where they came from and when. The C result codes become Rust errors in one place,
//! [`OeResult::check`].
#![deny(missing_docs)]

pub mod agent;
pub mod agent_client;
pub mod agent_protocol;
pub mod coalesce;
mod duration;
mod error;
pub mod http_server;
#[cfg(feature = "openenclave")]
mod openenclave;
mod push;
mod simulated;
mod snapshot;
mod source;
mod source_url;

pub use duration::{DurationParseError, PromDuration};
pub use error::{OeResult, OpenError, ReadError, ReadFailure};
#[cfg(feature = "openenclave")]
pub use openenclave::OeEnclaveSource;
pub use push::{DEFAULT_PUSH_MAX_AGE, PushFallback, PushSlot};
pub use simulated::SimulatedSource;
pub use snapshot::{HeapSnapshot, SnapshotOrigin};
pub use source::{HeapSource, SourceKind, SourceOptions, open_source, open_source_with};
pub use source_url::{OeEnclaveConfig, SourceSpec, SourceUrlError};

/// Re-exported so users of this crate name the simulated enclave's types without a second import.
pub use enclave_heap_sim as sim;
