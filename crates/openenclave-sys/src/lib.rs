//! Raw FFI for the small part of the Open Enclave SDK that enclave-heap-exporter uses.
//!
//! This crate owns the C-level view of the SDK and nothing else: the `oe_result_t` codes (a `u32`
//! with named constants, never a Rust enum, because an SDK newer than these bindings may return a
//! code we do not know), the `oe_mallinfo_t` struct of `openenclave/advanced/mallinfo.h`, the host
//! entry points that create, terminate and describe enclaves, and the enclave-side functions
//! `oe_allocator_mallinfo` and `oe_abort`. Names are kept exactly as the SDK spells them.
//!
//! Declaring the functions costs nothing at link time until they are called. The host library
//! `oehost` is linked only when the `link` feature asks for it (see `build.rs`); the enclave-side
//! functions are resolved by the enclave's own link against `oeenclave`/`oecore`.
#![cfg_attr(not(test), no_std)]
#![allow(non_camel_case_types)]
#![deny(missing_docs)]

use core::ffi::c_char;
use core::marker::{PhantomData, PhantomPinned};

/// `oe_result_t` from `openenclave/bits/result.h`: a 4-byte C enum.
///
/// Modelled as `u32` so that any value the SDK returns, including ones added after these bindings
/// were written, is representable.
pub type oe_result_t = u32;

macro_rules! oe_results {
    ($($(#[$doc:meta])* $name:ident = $value:expr,)*) => {
        $( $(#[$doc])* pub const $name: oe_result_t = $value; )*

        /// Every named `oe_result_t`, indexed by its value (the SDK numbers them 0 to 32 without gaps).
        pub const OE_RESULT_NAMES: [&str; 33] = [$(stringify!($name),)*];
    };
}

oe_results! {
    /// The function succeeded.
    OE_OK = 0,
    /// The function failed without a more specific reason.
    OE_FAILURE = 1,
    /// A caller-supplied buffer is too small.
    OE_BUFFER_TOO_SMALL = 2,
    /// A parameter is invalid (for example a NULL pointer where one is not allowed).
    OE_INVALID_PARAMETER = 3,
    /// An ECALL was made while the calling thread was already inside the enclave.
    OE_REENTRANT_ECALL = 4,
    /// Memory could not be allocated.
    OE_OUT_OF_MEMORY = 5,
    /// No enclave thread (TCS) is free: all `NumTCS` are busy.
    OE_OUT_OF_THREADS = 6,
    /// An unexpected failure occurred.
    OE_UNEXPECTED = 7,
    /// A cryptographic verification failed.
    OE_VERIFY_FAILED = 8,
    /// The requested item was not found.
    OE_NOT_FOUND = 9,
    /// An integer overflowed.
    OE_INTEGER_OVERFLOW = 10,
    /// A public key was not found.
    OE_PUBLIC_KEY_NOT_FOUND = 11,
    /// An index or offset is out of bounds.
    OE_OUT_OF_BOUNDS = 12,
    /// Source and destination of a copy overlap.
    OE_OVERLAPPED_COPY = 13,
    /// A constraint check failed.
    OE_CONSTRAINT_FAILED = 14,
    /// An ioctl failed.
    OE_IOCTL_FAILED = 15,
    /// The operation is not supported.
    OE_UNSUPPORTED = 16,
    /// A read failed.
    OE_READ_FAILED = 17,
    /// A required service is unavailable.
    OE_SERVICE_UNAVAILABLE = 18,
    /// The enclave is aborting; further calls fail.
    OE_ENCLAVE_ABORTING = 19,
    /// The enclave has aborted and been torn down.
    OE_ENCLAVE_ABORTED = 20,
    /// The platform (driver, firmware) reported an error.
    OE_PLATFORM_ERROR = 21,
    /// The CPU security version is invalid.
    OE_INVALID_CPUSVN = 22,
    /// The ISV security version is invalid.
    OE_INVALID_ISVSVN = 23,
    /// The key name is invalid.
    OE_INVALID_KEYNAME = 24,
    /// A debug enclave attempted an operation reserved to production enclaves.
    OE_DEBUG_DOWNGRADE = 25,
    /// An attestation report could not be parsed.
    OE_REPORT_PARSE_ERROR = 26,
    /// A certificate chain is missing.
    OE_MISSING_CERTIFICATE_CHAIN = 27,
    /// The resource is busy.
    OE_BUSY = 28,
    /// The caller does not own the resource.
    OE_NOT_OWNER = 29,
    /// SGX certificate extensions are invalid.
    OE_INVALID_SGX_CERTIFICATE_EXTENSIONS = 30,
    /// A memory leak was detected.
    OE_MEMORY_LEAK = 31,
    /// A pointer is not suitably aligned.
    OE_BAD_ALIGNMENT = 32,
}

/// The SDK's own name for `result` (what `oe_result_str` returns), or `None` for a value these
/// bindings do not know. Usable without the SDK.
pub const fn oe_result_name(result: oe_result_t) -> Option<&'static str> {
    if (result as usize) < OE_RESULT_NAMES.len() {
        Some(OE_RESULT_NAMES[result as usize])
    } else {
        None
    }
}

/// The `oe_result_t` whose SDK name is `name` (for example `"OE_OUT_OF_THREADS"`).
pub fn oe_result_from_name(name: &str) -> Option<oe_result_t> {
    OE_RESULT_NAMES
        .iter()
        .position(|known| *known == name)
        .map(|index| index as oe_result_t)
}

/// `oe_mallinfo_t` from `openenclave/advanced/mallinfo.h` (struct tag `_oe_mallinfo`).
///
/// Three `size_t` fields, in this order; 24 bytes on x86_64.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct oe_mallinfo_t {
    /// Size of the enclave heap in bytes (`NumHeapPages` × 4096 with OE's dlmalloc).
    pub max_total_heap_size: usize,
    /// Bytes currently allocated (dlmalloc counts chunk headers too).
    pub current_allocated_heap_size: usize,
    /// Peak bytes allocated (dlmalloc reports its maximum footprint, free chunks included).
    pub peak_allocated_heap_size: usize,
}

/// Opaque enclave handle (`oe_enclave_t`).
#[repr(C)]
pub struct oe_enclave_t {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

impl core::fmt::Debug for oe_enclave_t {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("oe_enclave_t")
    }
}

/// Opaque enclave setting (`oe_enclave_setting_t`); these bindings only ever pass NULL.
#[repr(C)]
pub struct oe_enclave_setting_t {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

impl core::fmt::Debug for oe_enclave_setting_t {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("oe_enclave_setting_t")
    }
}

/// `oe_enclave_type_t`: a 4-byte C enum.
pub type oe_enclave_type_t = u32;
/// Let the SDK pick the enclave type for this platform.
pub const OE_ENCLAVE_TYPE_AUTO: oe_enclave_type_t = 1;
/// An Intel SGX enclave.
pub const OE_ENCLAVE_TYPE_SGX: oe_enclave_type_t = 2;
/// An OP-TEE trusted application.
pub const OE_ENCLAVE_TYPE_OPTEE: oe_enclave_type_t = 3;

/// Create a debug enclave.
pub const OE_ENCLAVE_FLAG_DEBUG: u32 = 0x1;
/// Run the enclave in simulation mode (no SGX driver needed, the SDK still is).
pub const OE_ENCLAVE_FLAG_SIMULATE: u32 = 0x2;
/// Create a debug enclave if the image allows it, a release one otherwise.
pub const OE_ENCLAVE_FLAG_DEBUG_AUTO: u32 = 0x10;

/// An OCALL dispatch function in the table that oeedger8r generates (`oe_ocall_func_t`).
pub type oe_ocall_func_t = Option<
    unsafe extern "C" fn(
        input_buffer: *const u8,
        input_buffer_size: usize,
        output_buffer: *mut u8,
        output_buffer_size: usize,
        output_bytes_written: *mut usize,
    ),
>;

/// One entry of the ECALL name table that oeedger8r generates (`oe_ecall_info_t`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct oe_ecall_info_t {
    /// The ECALL's name, NUL-terminated.
    pub name: *const c_char,
}

unsafe extern "C" {
    /// Creates an enclave from a signed image (host side, `openenclave/host.h`).
    ///
    /// Normally called through the `oe_create_<edl>_enclave` wrapper that oeedger8r generates,
    /// which passes the generated OCALL and ECALL tables.
    pub fn oe_create_enclave(
        path: *const c_char,
        enclave_type: oe_enclave_type_t,
        flags: u32,
        settings: *const oe_enclave_setting_t,
        setting_count: u32,
        ocall_table: *const oe_ocall_func_t,
        ocall_count: u32,
        ecall_name_table: *const oe_ecall_info_t,
        ecall_count: u32,
        enclave: *mut *mut oe_enclave_t,
    ) -> oe_result_t;

    /// Terminates an enclave and frees its resources (host side).
    pub fn oe_terminate_enclave(enclave: *mut oe_enclave_t) -> oe_result_t;

    /// The SDK's name for a result code, or `"UNKNOWN"` (host and enclave libraries).
    pub fn oe_result_str(result: oe_result_t) -> *const c_char;

    /// Fills `info` with the enclave allocator's heap figures (enclave side, since OE 0.12).
    ///
    /// Neither of the SDK's allocators checks `info` for NULL.
    pub fn oe_allocator_mallinfo(info: *mut oe_mallinfo_t) -> oe_result_t;

    /// Aborts the enclave (enclave side); never returns.
    pub fn oe_abort() -> !;
}
