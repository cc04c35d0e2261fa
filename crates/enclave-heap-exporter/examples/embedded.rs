//! Embedded mode: a Rust host process serves its own enclaves' heap metrics in-process, with no
//! sidecar and no agent.
//!
//! ```sh
//! cargo run -p enclave-heap-exporter --example embedded -- 127.0.0.1:9745
//! curl -s localhost:9745/metrics | grep ^enclave_heap
//! ```
//!
//! A real host would wrap its enclave in a `HeapSource` (with the `openenclave` feature,
//! `enclave_heap_host::OeEnclaveSource`, or its own type whose `read` performs our ECALL); this
//! example uses a simulated enclave so it runs anywhere.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use enclave_heap_exporter::collector::{CollectorOptions, CollectorSource};
use enclave_heap_exporter::metrics::ProcessMetrics;
use enclave_heap_exporter::{Exporter, bind, server};
use enclave_heap_host::SimulatedSource;
use enclave_heap_host::sim::{Profile, SimConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let address: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9745".to_owned())
        .parse()?;

    // The host's own enclave (simulated here), read through the same ECALL code path.
    let enclave = SimulatedSource::start(SimConfig {
        profile: Profile::Sawtooth,
        heap_pages: 1024,
        ..SimConfig::default()
    })?;

    let exporter = Exporter::new(
        vec![CollectorSource::blocking("app", Arc::new(enclave))],
        CollectorOptions {
            timeout: Duration::from_secs(2),
            min_interval: Duration::from_secs(1),
        },
        "/metrics",
        ProcessMetrics::Include,
    )?;
    let listeners = bind(&[address]).await?;
    println!(
        "serving metrics on http://{}/metrics",
        listeners[0].local_addr()?
    );
    server::serve(Arc::new(exporter), listeners, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
