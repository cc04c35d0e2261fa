//! [`SimulatedEnclave`]: a heap, a workload thread and the ECALL that reads the heap, with the
//! faults a real enclave can show.

use std::mem::size_of;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

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
    pusher: Option<PushThread>,
}

/// Where a simulated enclave's pushes go: the host's OCALL implementation. Returns the OCALL's
/// result (`OE_OK` when the host took the snapshot).
pub type PushTarget = Arc<dyn Fn(&oe_mallinfo_t) -> oe_result_t + Send + Sync>;

impl SimulatedEnclave {
    /// Validates `config` (see [`SimConfig::validate`]), reserves the heap and starts the
    /// workload thread (none for [`Profile::Idle`](crate::Profile::Idle)).
    ///
    /// A configuration with [`push`](SimConfig::push) needs a target: use
    /// [`with_push_target`](Self::with_push_target).
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        Self::start(config, None)
    }

    /// Like [`new`](Self::new), and when [`push`](SimConfig::push) is set, a thread publishes a
    /// snapshot to `target` at that interval through the trusted crate's `publish_with`.
    pub fn with_push_target(config: SimConfig, target: PushTarget) -> Result<Self, SimError> {
        Self::start(config, Some(target))
    }

    fn start(config: SimConfig, target: Option<PushTarget>) -> Result<Self, SimError> {
        config.validate()?;
        let heap = Arc::new(SimHeap::new(config.heap_pages)?);
        let pusher = match (config.push, target) {
            (Some(interval), Some(target)) => {
                Some(PushThread::start(Arc::clone(&heap), interval, target)?)
            }
            (Some(_), None) => return Err(SimError::NoPushTarget),
            (None, _) => None,
        };
        let workload = WorkloadThread::start(Arc::clone(&heap), &config)?;
        Ok(Self {
            config,
            heap,
            workload,
            pusher,
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
        if let Some(pusher) = self.pusher.take() {
            pusher.stop();
        }
        if let Some(workload) = self.workload.take() {
            workload.stop();
        }
    }
}

/// The thread that plays an enclave thread calling `publish()` every `interval`.
#[derive(Debug)]
struct PushThread {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl PushThread {
    fn start(heap: Arc<SimHeap>, interval: Duration, target: PushTarget) -> Result<Self, SimError> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("enclave-heap-sim-push".to_owned())
            .spawn(move || {
                while !thread_stop.load(Ordering::Acquire) {
                    // A refused push is the host's business; the enclave carries on, as a real
                    // enclave thread would after a failed OCALL.
                    let _ = publish_with(&*heap, |info| target(info));
                    let wake_at = Instant::now() + interval;
                    // park_timeout may wake early (spuriously or from `stop`): re-check both.
                    while !thread_stop.load(Ordering::Acquire) {
                        let now = Instant::now();
                        if now >= wake_at {
                            break;
                        }
                        thread::park_timeout(wake_at - now);
                    }
                }
            })
            .map_err(SimError::SpawnPush)?;
        Ok(Self { stop, handle })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.handle.thread().unpark();
        let _ = self.handle.join();
    }
}
