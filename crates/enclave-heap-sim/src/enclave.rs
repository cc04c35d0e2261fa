//! [`SimulatedEnclave`]: a heap, a workload thread and the ECALL that reads the heap, with the
//! faults a real enclave can show.

use std::mem::size_of;
use std::sync::Arc;
use std::thread;

use enclave_heap_trusted::{ecall_read_mallinfo, publish_with};
use openenclave_sys::{OE_OK, oe_mallinfo_t, oe_result_t};

use crate::config::SimConfig;
use crate::error::SimError;
use crate::heap::SimHeap;
use crate::workload::WorkloadThread;

/// A simulated enclave: a [`SimHeap`] of `heap_pages` pages, the configured workload allocating
/// on it from its own thread, and [`ecall_mallinfo`](Self::ecall_mallinfo), our ECALL as the host
/// sees it. Dropping it stops and joins the workload thread.
#[derive(Debug)]
pub struct SimulatedEnclave {
    config: SimConfig,
    heap: Arc<SimHeap>,
    workload: Option<WorkloadThread>,
}

impl SimulatedEnclave {
    /// Validates `config` (see [`SimConfig::validate`]), reserves the heap and starts the
    /// workload thread (none for [`Profile::Idle`](crate::Profile::Idle)).
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        config.validate()?;
        let heap = Arc::new(SimHeap::new(config.heap_pages)?);
        let workload = WorkloadThread::start(Arc::clone(&heap), &config)?;
        Ok(Self {
            config,
            heap,
            workload,
        })
    }

    /// The configuration this enclave was created with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The enclave's heap, to allocate on it directly (tests, demos, embedding).
    pub fn heap(&self) -> &SimHeap {
        &self.heap
    }

    /// Our mallinfo ECALL, as the host sees it: a host-side proxy call into the enclave.
    ///
    /// In order: waits [`delay`](SimConfig::delay) if set; returns [`fail`](SimConfig::fail) if
    /// set, without touching `out` or the heap (a real ECALL that fails for want of a thread never
    /// enters the enclave). Otherwise, like OE's ECALL dispatcher, allocates the call's
    /// marshalling buffer (`size_of::<oe_mallinfo_t>()` bytes) on the enclave heap for the length
    /// of the call, failing with `OE_OUT_OF_MEMORY` if even that does not fit; runs the trusted
    /// crate's ECALL body on that buffer with the heap as the allocator, so a read counts its own
    /// buffer in `current_allocated_heap_size`; and on `OE_OK` copies the buffer to `out`, as the
    /// proxy copies the output back to the host.
    pub fn ecall_mallinfo(&self, out: &mut oe_mallinfo_t) -> oe_result_t {
        if let Some(delay) = self.config.delay {
            thread::sleep(delay);
        }
        if let Some(result) = self.config.fail {
            return result;
        }
        let mut buffer = match self.heap.allocate(size_of::<oe_mallinfo_t>()) {
            Ok(buffer) => buffer,
            Err(out_of_memory) => return out_of_memory.oe_result(),
        };
        let enclave_out = buffer.as_mut_ptr().cast::<oe_mallinfo_t>();
        // SAFETY: `enclave_out` points to a live block of exactly `size_of::<oe_mallinfo_t>()`
        // bytes, aligned to BLOCK_ALIGN (16, above the struct's 8), that nothing else references.
        let result = unsafe { ecall_read_mallinfo(&*self.heap, enclave_out) };
        if result == OE_OK {
            // SAFETY: the same pointer; on OE_OK the ECALL body wrote a whole `oe_mallinfo_t` there
            // (and the block's bytes are always initialised in any case).
            *out = unsafe { enclave_out.read() };
        }
        result
    }

    /// Pushes a snapshot of the heap through the trusted crate's `publish_with`, as an enclave
    /// thread publishing by OCALL would; `push` plays the OCALL and its result is returned.
    /// Fault injection does not apply: it models the host-to-enclave direction.
    pub fn publish(&self, push: impl FnOnce(&oe_mallinfo_t) -> oe_result_t) -> oe_result_t {
        publish_with(&*self.heap, push)
    }
}

impl Drop for SimulatedEnclave {
    fn drop(&mut self) {
        if let Some(workload) = self.workload.take() {
            workload.stop();
        }
    }
}
