//! The agent's wire format, shared by the agent server and the exporter's agent client.
//!
//! The body is CCF's `GET /node/memory` JSON, so a CCF node and our agent read the same way:
//! `{"max_total_heap_size": N, "current_allocated_heap_size": N, "peak_allocated_heap_size": N}`
//! (integers, bytes). Our agent adds optional fields that a reader may ignore: `enclave`,
//! `origin` (`ecall` or `ocall_push`) and `age_seconds` (how old the snapshot is).
//!
//! | request | answer |
//! |---|---|
//! | `GET /node/memory` | the host's default (first registered) enclave: [`MemoryReport`] |
//! | `GET /enclaves/{name}/memory` | enclave `name`: [`MemoryReport`] |
//! | `GET /enclaves` | every enclave: [`EnclaveList`] |
//!
//! A failed read answers `503 Service Unavailable` (`504 Gateway Timeout` when the read timed
//! out) with an [`ErrorReport`] whose `error` is the OE result name (`OE_OUT_OF_THREADS`, ...)
//! or `timeout`; an unknown enclave answers `404` with `error: "not_found"`.

use serde::{Deserialize, Serialize};

/// Path of the default enclave's report (CCF's path).
pub const NODE_MEMORY_PATH: &str = "/node/memory";
/// Path of the list of every enclave's report.
pub const ENCLAVES_PATH: &str = "/enclaves";

/// The path of one enclave's report: `/enclaves/{name}/memory`.
pub fn enclave_memory_path(name: &str) -> String {
    format!("{ENCLAVES_PATH}/{name}/memory")
}

/// One enclave's heap figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryReport {
    /// `oe_mallinfo_t.max_total_heap_size`, bytes.
    pub max_total_heap_size: u64,
    /// `oe_mallinfo_t.current_allocated_heap_size`, bytes.
    pub current_allocated_heap_size: u64,
    /// `oe_mallinfo_t.peak_allocated_heap_size`, bytes.
    pub peak_allocated_heap_size: u64,
    /// The enclave's name in the host (our agent only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enclave: Option<String>,
    /// How the snapshot reached the host (our agent only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<ReportOrigin>,
    /// Age of the snapshot in seconds when the answer was sent (our agent only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<f64>,
}

/// How a snapshot reached the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportOrigin {
    /// Read by ECALL when asked.
    Ecall,
    /// Pushed by the enclave through our OCALL (served when an ECALL could not run).
    OcallPush,
}

/// A failed read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// The OE result name (`OE_OUT_OF_THREADS`, ...), `timeout`, or `not_found`.
    pub error: String,
    /// The enclave's name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enclave: Option<String>,
    /// A sentence for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `GET /enclaves`: every enclave the host serves, each with its figures or its error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnclaveList {
    /// One entry per enclave, in registration order.
    pub enclaves: Vec<EnclaveEntry>,
}

/// One enclave in [`EnclaveList`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnclaveEntry {
    /// The read succeeded (`enclave` is always set in a list).
    Memory(MemoryReport),
    /// The read failed (`enclave` is always set in a list).
    Error(ErrorReport),
}
