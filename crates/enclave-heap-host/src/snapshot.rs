//! [`HeapSnapshot`]: the one type that carries an enclave's heap figures.

use std::time::Instant;

use openenclave_sys::oe_mallinfo_t;

/// One reading of an enclave heap: the three `oe_mallinfo_t` fields, in bytes, with their OE
/// names, plus where the reading came from and when it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapSnapshot {
    /// Heap size in bytes (`NumHeapPages` × 4096 with OE's allocators).
    pub max_total_heap_size: u64,
    /// Bytes allocated now (OE's dlmalloc includes chunk headers).
    pub current_allocated_heap_size: u64,
    /// Peak bytes allocated (OE's dlmalloc reports its peak footprint, free chunks included).
    pub peak_allocated_heap_size: u64,
    /// How the reading reached us.
    pub origin: SnapshotOrigin,
    /// When the reading was taken.
    pub taken_at: Instant,
}

/// How a snapshot reached the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotOrigin {
    /// Pulled by our ECALL (or the simulated enclave's equivalent).
    Ecall,
    /// Pushed by the enclave through our OCALL.
    OcallPush,
}

impl HeapSnapshot {
    /// A snapshot of `info`, taken now.
    pub fn from_mallinfo(info: &oe_mallinfo_t, origin: SnapshotOrigin) -> Self {
        Self {
            max_total_heap_size: info.max_total_heap_size as u64,
            current_allocated_heap_size: info.current_allocated_heap_size as u64,
            peak_allocated_heap_size: info.peak_allocated_heap_size as u64,
            origin,
            taken_at: Instant::now(),
        }
    }
}
