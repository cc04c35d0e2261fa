//! `--web.config.file` (exporter-toolkit's YAML): any text is a config or an error, never a
//! panic. File names in it resolve under a directory that does not exist.
#![no_main]

use std::path::Path;

use enclave_heap_exporter::web_config::WebConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|yaml: &str| {
    if let Err(error) = WebConfig::parse(yaml, Path::new("/nonexistent/enclave-heap-fuzz")) {
        assert!(!error.to_string().is_empty());
    }
});
