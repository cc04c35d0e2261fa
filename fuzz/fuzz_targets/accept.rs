//! The scraper's `Accept` header: any value picks a format, deterministically.
#![no_main]

use enclave_heap_exporter::exposition::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|accept: &str| {
    let format = Format::negotiate(Some(accept));
    assert_eq!(format, Format::negotiate(Some(accept)));
    if !accept
        .to_ascii_lowercase()
        .contains("application/openmetrics-text")
    {
        assert_eq!(format, Format::Text);
    }
});
