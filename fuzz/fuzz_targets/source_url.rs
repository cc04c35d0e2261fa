//! `--source NAME=URL`: any string parses or fails with an error naming it, never a panic.
#![no_main]

use enclave_heap_host::SourceSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|url: &str| {
    match url.parse::<SourceSpec>() {
        Ok(spec) => assert_eq!(spec.url(), url),
        Err(error) => assert!(error.to_string().contains(&format!("{url:?}"))),
    }
});
