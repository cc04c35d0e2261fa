//! The host side of enclave-heap-exporter: where heap figures are read from, and how a host
//! process serves them to a sidecar.
//!
//! This crate owns:
//!
//! - the [`HeapSource`] interface that every in-process way of reading an enclave's heap
//!   implements: [`SimulatedSource`] (the simulated enclave of `enclave-heap-sim`, answered
//!   through the trusted crate's ECALL code path) and `OeEnclaveSource` (feature `openenclave`:
//!   a real enclave created through the SDK and read with our ECALL);
//! - the push path: [`PushSlot`] for snapshots the enclave pushes by OCALL and [`PushFallback`],
//!   which serves a recent push when an ECALL fails with `OE_OUT_OF_THREADS`;
//! - [`coalesce`]: single-flight, rate-limited, deadline-bounded reads, used by the agent and the
//!   exporter alike;
//! - the [`agent`] that serves a process's enclaves over HTTP on a Unix socket (or TCP), its wire
//!   format ([`agent_protocol`], CCF's `/node/memory` JSON) and the [`agent_client`] that reads
//!   it (or a CCF node); [`http_server`] is the serving loop the agent and exporter share;
//! - the C ABI for C/C++ hosts (`capi`, header `include/enclave_heap_host.h`);
//! - source URLs ([`SourceSpec`]) and Prometheus-style durations ([`PromDuration`]).
//!
//! One type carries the numbers everywhere: [`HeapSnapshot`], the three `oe_mallinfo_t` fields
//! plus where they came from and when. The C result codes become Rust errors in one place,
//! [`OeResult::check`].
#![deny(missing_docs)]

#[cfg(any(feature = "openenclave", test))]
mod abort_recovery;
pub mod agent;
pub mod agent_client;
pub mod agent_protocol;
pub mod capi;
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
pub use source_url::{AgentSelection, OeEnclaveConfig, SourceSpec, SourceUrlError};

/// Re-exported so users of this crate name the simulated enclave's types without a second import.
pub use enclave_heap_sim as sim;
