//! An agent's (or CCF node's) answer body, as the exporter's agent client parses it: a memory
//! report, an enclave list, and the snapshot a report becomes. Errors stay short (clipped).
#![no_main]

use enclave_heap_host::agent_client::{AgentReadError, parse_enclave_list, parse_memory_report};
use enclave_heap_host::agent_protocol::{EnclaveEntry, MemoryReport};
use libfuzzer_sys::fuzz_target;

fn check_error(error: AgentReadError) {
    match error {
        AgentReadError::InvalidResponse(message) => assert!(message.chars().count() <= 301),
        other => panic!("a body can only be an invalid response, not {other:?}"),
    }
}

fuzz_target!(|body: &[u8]| {
    match parse_memory_report(body) {
        Ok(report) => {
            let snapshot = report.to_snapshot();
            assert_eq!(snapshot.max_total_heap_size, report.max_total_heap_size);
            assert!(snapshot.taken_at <= std::time::Instant::now());
        }
        Err(error) => check_error(error),
    }
    match parse_enclave_list(body) {
        Ok(list) => {
            for entry in list.enclaves {
                if let EnclaveEntry::Memory(report) = entry {
                    let _ = report.to_snapshot();
                }
            }
        }
        Err(error) => check_error(error),
    }
    // The derived deserializer alone, as other readers of the protocol types would use it.
    if let Ok(report) = serde_json::from_slice::<MemoryReport>(body) {
        let _ = report.to_snapshot();
    }
});
