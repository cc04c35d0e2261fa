//! The C-level contract of the bindings: struct layout and the numeric values of the SDK's
//! constants, checked against the SDK headers as recorded in `shared/oe-facts.md`
//! (`openenclave/advanced/mallinfo.h`, `openenclave/bits/result.h`, `openenclave/bits/types.h`,
//! `openenclave/host.h`). These need no SDK: a wrong value here would silently misread every
//! result the SDK returns.

use core::mem::{align_of, offset_of, size_of};

use openenclave_sys::*;

#[cfg(target_pointer_width = "64")]
#[test]
fn mallinfo_is_three_size_t_fields_24_bytes() {
    assert_eq!(size_of::<oe_mallinfo_t>(), 24);
    assert_eq!(align_of::<oe_mallinfo_t>(), 8);
    assert_eq!(offset_of!(oe_mallinfo_t, max_total_heap_size), 0);
    assert_eq!(offset_of!(oe_mallinfo_t, current_allocated_heap_size), 8);
    assert_eq!(offset_of!(oe_mallinfo_t, peak_allocated_heap_size), 16);
}

#[test]
fn mallinfo_fields_are_size_t_wide_on_every_target() {
    let word = size_of::<usize>();
    assert_eq!(size_of::<oe_mallinfo_t>(), 3 * word);
    assert_eq!(offset_of!(oe_mallinfo_t, current_allocated_heap_size), word);
    assert_eq!(
        offset_of!(oe_mallinfo_t, peak_allocated_heap_size),
        2 * word
    );
}

#[test]
fn c_enums_are_four_bytes() {
    assert_eq!(size_of::<oe_result_t>(), 4);
    assert_eq!(size_of::<oe_enclave_type_t>(), 4);
}

/// Every `oe_result_t` of `openenclave/bits/result.h`, written out by hand rather than derived
/// from `OE_RESULT_NAMES`, so that a shifted or misspelt entry fails here.
const EXPECTED_RESULTS: [(&str, oe_result_t, u32); 33] = [
    ("OE_OK", OE_OK, 0),
    ("OE_FAILURE", OE_FAILURE, 1),
    ("OE_BUFFER_TOO_SMALL", OE_BUFFER_TOO_SMALL, 2),
    ("OE_INVALID_PARAMETER", OE_INVALID_PARAMETER, 3),
    ("OE_REENTRANT_ECALL", OE_REENTRANT_ECALL, 4),
    ("OE_OUT_OF_MEMORY", OE_OUT_OF_MEMORY, 5),
    ("OE_OUT_OF_THREADS", OE_OUT_OF_THREADS, 6),
    ("OE_UNEXPECTED", OE_UNEXPECTED, 7),
    ("OE_VERIFY_FAILED", OE_VERIFY_FAILED, 8),
    ("OE_NOT_FOUND", OE_NOT_FOUND, 9),
    ("OE_INTEGER_OVERFLOW", OE_INTEGER_OVERFLOW, 10),
    ("OE_PUBLIC_KEY_NOT_FOUND", OE_PUBLIC_KEY_NOT_FOUND, 11),
    ("OE_OUT_OF_BOUNDS", OE_OUT_OF_BOUNDS, 12),
    ("OE_OVERLAPPED_COPY", OE_OVERLAPPED_COPY, 13),
    ("OE_CONSTRAINT_FAILED", OE_CONSTRAINT_FAILED, 14),
    ("OE_IOCTL_FAILED", OE_IOCTL_FAILED, 15),
    ("OE_UNSUPPORTED", OE_UNSUPPORTED, 16),
    ("OE_READ_FAILED", OE_READ_FAILED, 17),
    ("OE_SERVICE_UNAVAILABLE", OE_SERVICE_UNAVAILABLE, 18),
    ("OE_ENCLAVE_ABORTING", OE_ENCLAVE_ABORTING, 19),
    ("OE_ENCLAVE_ABORTED", OE_ENCLAVE_ABORTED, 20),
    ("OE_PLATFORM_ERROR", OE_PLATFORM_ERROR, 21),
    ("OE_INVALID_CPUSVN", OE_INVALID_CPUSVN, 22),
    ("OE_INVALID_ISVSVN", OE_INVALID_ISVSVN, 23),
    ("OE_INVALID_KEYNAME", OE_INVALID_KEYNAME, 24),
    ("OE_DEBUG_DOWNGRADE", OE_DEBUG_DOWNGRADE, 25),
    ("OE_REPORT_PARSE_ERROR", OE_REPORT_PARSE_ERROR, 26),
    (
        "OE_MISSING_CERTIFICATE_CHAIN",
        OE_MISSING_CERTIFICATE_CHAIN,
        27,
    ),
    ("OE_BUSY", OE_BUSY, 28),
    ("OE_NOT_OWNER", OE_NOT_OWNER, 29),
    (
        "OE_INVALID_SGX_CERTIFICATE_EXTENSIONS",
        OE_INVALID_SGX_CERTIFICATE_EXTENSIONS,
        30,
    ),
    ("OE_MEMORY_LEAK", OE_MEMORY_LEAK, 31),
    ("OE_BAD_ALIGNMENT", OE_BAD_ALIGNMENT, 32),
];

#[test]
fn result_constants_have_the_sdk_values() {
    for (name, constant, sdk_value) in EXPECTED_RESULTS {
        assert_eq!(constant, sdk_value, "{name}");
    }
}

#[test]
fn result_names_table_matches_the_constants() {
    assert_eq!(OE_RESULT_NAMES.len(), EXPECTED_RESULTS.len());
    for (index, (name, constant, _)) in EXPECTED_RESULTS.into_iter().enumerate() {
        assert_eq!(OE_RESULT_NAMES[index], name, "OE_RESULT_NAMES[{index}]");
        assert_eq!(constant as usize, index, "{name} is not at its own index");
    }
}

#[test]
fn result_name_and_from_name_round_trip() {
    for (name, constant, _) in EXPECTED_RESULTS {
        assert_eq!(oe_result_name(constant), Some(name));
        assert_eq!(oe_result_from_name(name), Some(constant));
    }
}

#[test]
fn unknown_results_have_no_name() {
    // Newer SDKs may add codes; `oe_result_str` calls those "UNKNOWN".
    assert_eq!(oe_result_name(33), None);
    assert_eq!(oe_result_name(1000), None);
    assert_eq!(oe_result_name(u32::MAX), None);
}

#[test]
fn unknown_names_have_no_result() {
    assert_eq!(oe_result_from_name("UNKNOWN"), None);
    assert_eq!(oe_result_from_name(""), None);
    // Names are the SDK's exact spelling, not case-folded or abbreviated.
    assert_eq!(oe_result_from_name("oe_ok"), None);
    assert_eq!(oe_result_from_name("OUT_OF_THREADS"), None);
    assert_eq!(oe_result_from_name("OE_OK "), None);
}

#[test]
fn enclave_types_have_the_sdk_values() {
    assert_eq!(OE_ENCLAVE_TYPE_AUTO, 1);
    assert_eq!(OE_ENCLAVE_TYPE_SGX, 2);
    assert_eq!(OE_ENCLAVE_TYPE_OPTEE, 3);
}

#[test]
fn enclave_flags_have_the_sdk_values() {
    assert_eq!(OE_ENCLAVE_FLAG_DEBUG, 0x1);
    assert_eq!(OE_ENCLAVE_FLAG_SIMULATE, 0x2);
    assert_eq!(OE_ENCLAVE_FLAG_DEBUG_AUTO, 0x10);
    // Distinct single bits, so they can be or-ed together.
    assert_eq!(
        (OE_ENCLAVE_FLAG_DEBUG | OE_ENCLAVE_FLAG_SIMULATE | OE_ENCLAVE_FLAG_DEBUG_AUTO)
            .count_ones(),
        3
    );
}

#[test]
fn ecall_info_is_one_pointer() {
    // oeedger8r emits `{ const char* name; }` entries for oe_create_enclave's name table.
    assert_eq!(size_of::<oe_ecall_info_t>(), size_of::<*const u8>());
    // The OCALL table entry is a nullable function pointer, one word.
    assert_eq!(size_of::<oe_ocall_func_t>(), size_of::<usize>());
}
