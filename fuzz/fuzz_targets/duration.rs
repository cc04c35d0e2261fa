//! Prometheus durations (flags, `sim:` parameters): errors name the input, and whatever parses
//! round-trips through its Prometheus rendering.
#![no_main]

use enclave_heap_host::PromDuration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    match input.parse::<PromDuration>() {
        Ok(duration) => {
            let shown = duration.to_string();
            assert_eq!(
                shown.parse::<PromDuration>(),
                Ok(duration),
                "{input:?} shown as {shown:?}"
            );
        }
        Err(error) => assert!(error.to_string().contains(&format!("{input:?}"))),
    }
});
