//! The sidecar path's cost: one agent round trip over a Unix socket (a kept-alive HTTP/1.1
//! request, JSON both ways, a coalesced read) against the in-process read it wraps.
//!
//! Run: `cargo bench -p enclave-heap-host --bench agent` (about 20 s).

// Setup that cannot proceed should stop the benchmark loudly.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use enclave_heap_host::agent::{AgentConfig, AgentEnclave, AgentServer, AgentSocket};
use enclave_heap_host::agent_client::{AgentClient, AgentClientOptions, AgentEndpoint};
use enclave_heap_host::coalesce::ReadPolicy;
use enclave_heap_host::{SourceSpec, open_source};

fn agent_round_trip(c: &mut Criterion) {
    let spec: SourceSpec = "sim:idle?heap_pages=64".parse().unwrap();
    let source = open_source(&spec).unwrap();
    c.bench_function("in-process read (sim ECALL path)", |b| {
        b.iter(|| black_box(source.read().unwrap()))
    });

    let dir = std::env::temp_dir().join(format!("ehe-agent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("heap.sock");
    let agent = AgentServer::start(
        AgentConfig {
            socket: Some(AgentSocket {
                path: socket.clone(),
                group: None,
            }),
            tcp: None,
            // Every request reads the enclave, as a scrape with min-interval 0 would.
            policy: ReadPolicy {
                timeout: Duration::from_secs(2),
                min_interval: Duration::ZERO,
            },
            ..AgentConfig::default()
        },
        vec![AgentEnclave {
            name: "app".to_owned(),
            source: open_source(&spec).unwrap(),
        }],
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client =
        AgentClient::new(AgentEndpoint::unix(&socket), AgentClientOptions::default()).unwrap();
    c.bench_function("agent round trip over a Unix socket", |b| {
        b.iter(|| black_box(runtime.block_on(client.get_memory()).unwrap()))
    });
    agent.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = agent_round_trip
}
criterion_main!(benches);
