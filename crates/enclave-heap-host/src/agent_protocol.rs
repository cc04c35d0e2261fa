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

/// Whether `name` is a valid enclave name: 1-64 characters of `A-Z a-z 0-9 _ - . :`, neither `.`
/// nor `..`, so it is safe in a URL path and as a metric label value.
pub fn valid_enclave_name(name: &str) -> bool {
    // `.` and `..` would be resolved away by URL clients, so such an enclave could not be asked for.
    name != "."
        && name != ".."
        && !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
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

impl MemoryReport {
    /// The snapshot this report describes, dated `age_seconds` ago (now when absent, negative,
    /// not finite, or over a day: nothing about a heap figure is worth trusting that far back).
    pub fn to_snapshot(&self) -> crate::HeapSnapshot {
        let now = std::time::Instant::now();
        let age = self
            .age_seconds
            .filter(|age| age.is_finite() && *age >= 0.0 && *age <= 86_400.0)
            .map(std::time::Duration::from_secs_f64)
            .unwrap_or_default();
        crate::HeapSnapshot {
            max_total_heap_size: self.max_total_heap_size,
            current_allocated_heap_size: self.current_allocated_heap_size,
            peak_allocated_heap_size: self.peak_allocated_heap_size,
            origin: match self.origin {
                Some(ReportOrigin::OcallPush) => crate::SnapshotOrigin::OcallPush,
                Some(ReportOrigin::Ecall) | None => crate::SnapshotOrigin::Ecall,
            },
            taken_at: now.checked_sub(age).unwrap_or(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ccf_json_parses_and_extra_fields_are_ignored() {
        let report: MemoryReport = serde_json::from_str(
            r#"{"max_total_heap_size":1073741824,"current_allocated_heap_size":4096,"peak_allocated_heap_size":8192,"other":true}"#,
        )
        .unwrap();
        let snapshot = report.to_snapshot();
        assert_eq!(snapshot.max_total_heap_size, 1 << 30);
        assert_eq!(snapshot.current_allocated_heap_size, 4096);
        assert_eq!(snapshot.peak_allocated_heap_size, 8192);
        assert_eq!(snapshot.origin, crate::SnapshotOrigin::Ecall);
    }

    #[test]
    fn age_and_origin_carry_over_and_bad_ages_are_ignored() {
        let mut report: MemoryReport = serde_json::from_str(
            r#"{"max_total_heap_size":1,"current_allocated_heap_size":1,"peak_allocated_heap_size":1,"origin":"ocall_push","age_seconds":2.5}"#,
        )
        .unwrap();
        let snapshot = report.to_snapshot();
        assert_eq!(snapshot.origin, crate::SnapshotOrigin::OcallPush);
        assert!(snapshot.taken_at.elapsed() >= std::time::Duration::from_millis(2500));
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e12] {
            report.age_seconds = Some(bad);
            assert!(report.to_snapshot().taken_at.elapsed() < std::time::Duration::from_secs(1));
        }
    }

    #[test]
    fn wrong_types_negative_and_missing_numbers_are_rejected() {
        for bad in [
            r#"{"max_total_heap_size":-1,"current_allocated_heap_size":1,"peak_allocated_heap_size":1}"#,
            r#"{"max_total_heap_size":"1","current_allocated_heap_size":1,"peak_allocated_heap_size":1}"#,
            r#"{"max_total_heap_size":1.5,"current_allocated_heap_size":1,"peak_allocated_heap_size":1}"#,
            r#"{"current_allocated_heap_size":1,"peak_allocated_heap_size":1}"#,
        ] {
            assert!(serde_json::from_str::<MemoryReport>(bad).is_err(), "{bad}");
        }
    }
}
