//! The pieces that only make sense linked into a real Open Enclave enclave: the SDK allocator,
//! the C symbols the oeedger8r-generated trusted code (`enclave_heap_t.c`) calls and provides,
//! and a C entry point for publishing.
//!
//! Everything here resolves against the SDK at the enclave's final link (`oe_allocator_mallinfo`
//! from oecore or oesnmalloc; `enclave_heap_ocall_push_mallinfo` from the generated `_t.c`), so
//! it is behind the `enclave-api` feature: a host binary never has those symbols.

use openenclave_sys::{oe_mallinfo_t, oe_result_t};

use crate::{EnclaveAllocator, ecall_read_mallinfo, publish_with};

/// The SDK's allocator (dlmalloc, or snmalloc when the enclave links `oesnmalloc`), read through
/// `oe_allocator_mallinfo`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OeAllocator;

impl EnclaveAllocator for OeAllocator {
    fn mallinfo(&self, info: &mut oe_mallinfo_t) -> oe_result_t {
        // SAFETY: `info` is an exclusive reference to a whole `oe_mallinfo_t`, which is all
        // `oe_allocator_mallinfo` writes to; it keeps no pointer after returning.
        unsafe { openenclave_sys::oe_allocator_mallinfo(info) }
    }
}

unsafe extern "C" {
    /// The enclave-side OCALL stub oeedger8r generates for the EDL's untrusted
    /// `void enclave_heap_ocall_push_mallinfo([in] const oe_mallinfo_t* info)`: it copies
    /// `*info` into the OCALL buffer, calls the host, and returns the transport result
    /// (`OE_OK`, or why the call did not happen).
    fn enclave_heap_ocall_push_mallinfo(info: *const oe_mallinfo_t) -> oe_result_t;
}

/// The ECALL: the function the oeedger8r-generated trusted stub calls for the EDL's
/// `public oe_result_t enclave_heap_ecall_mallinfo([out] oe_mallinfo_t* info)`.
///
/// Reads the SDK allocator through [`ecall_read_mallinfo`]: NULL gives `OE_INVALID_PARAMETER`,
/// calls are serialised, and `*info` is written only on `OE_OK`.
///
/// # Safety
///
/// `info` must be NULL or valid for writes of one `oe_mallinfo_t`. The generated stub passes a
/// pointer into its own enclave-side copy of the output buffer, which is.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn enclave_heap_ecall_mallinfo(info: *mut oe_mallinfo_t) -> oe_result_t {
    // SAFETY: our caller's contract on `info` is exactly `ecall_read_mallinfo`'s.
    unsafe { ecall_read_mallinfo(&OeAllocator, info) }
}

/// Reads the SDK allocator and pushes the snapshot to the host through the OCALL
/// `enclave_heap_ocall_push_mallinfo`.
///
/// Returns the allocator's failure, or the OCALL's transport result (`OE_OK` once the host's
/// handler has run). Call it from any enclave thread, for example after a burst of allocations,
/// or periodically from a thread the enclave keeps in an ECALL.
pub fn publish() -> oe_result_t {
    publish_with(&OeAllocator, |info| {
        // SAFETY: `info` is a valid `oe_mallinfo_t` for the duration of the call; the stub only
        // reads `size_of::<oe_mallinfo_t>()` bytes from it (edger8r sizes a `[in]` pointer to a
        // foreign type as `sizeof(*info)`) and keeps no pointer afterwards.
        unsafe { enclave_heap_ocall_push_mallinfo(info) }
    })
}

/// [`publish`] for C and C++ enclaves: `oe_result_t enclave_heap_publish(void);`
/// (declared in `include/enclave_heap_trusted.h`).
#[unsafe(no_mangle)]
pub extern "C" fn enclave_heap_publish() -> oe_result_t {
    publish()
}
