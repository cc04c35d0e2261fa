//! `enclave-heap-exporter`: the binary's edge. Parses flags, sets up logging, opens sources,
//! binds, serves until SIGINT/SIGTERM, and turns every failure into one line on stderr and a
//! non-zero exit (2 for bad flags, 1 for anything else).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use enclave_heap_exporter::cli::Cli;
use enclave_heap_exporter::config::Config;
use enclave_heap_exporter::{Exporter, bind, logging, server};

/// How long blocking reads (an ECALL that never returns) may hold up exit.
const BLOCKING_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                let _ = error.print();
                return ExitCode::SUCCESS;
            }
            // clap's first line says what is wrong; the usage block after it is noise here.
            let rendered = error.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("enclave-heap-exporter: {first} (see --help)");
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_cli(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("enclave-heap-exporter: error: {error}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = logging::init(config.log_level, config.log_format) {
        eprintln!("enclave-heap-exporter: error: cannot set up logging: {error}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("enclave-heap-exporter: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config));
    // A read stuck in an ECALL cannot be cancelled; do not let it hold the process hostage.
    runtime.shutdown_timeout(BLOCKING_SHUTDOWN_TIMEOUT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line for the operator; the log would only repeat it.
            eprintln!("enclave-heap-exporter: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let exporter = Exporter::open(&config).context("starting sources")?;
    if config.default_simulated_source {
        tracing::warn!(
            enclave = enclave_heap_exporter::config::DEFAULT_SOURCE_NAME,
            "no --source given: exporting a SIMULATED enclave, not a real one (enclave_heap_info{{source=\"simulated\"}})"
        );
    }
    if let Some(path) = &config.web_config_file {
        config.web.log_summary(path);
    }
    let listeners = bind(&config.listen_addresses).await?;
    for listener in &listeners {
        let address = listener.local_addr().context("reading the bound address")?;
        tracing::info!(%address, telemetry_path = %config.telemetry_path, "listening");
    }
    for definition in &config.sources {
        tracing::info!(enclave = %definition.name, url = %definition.spec.url(), "source");
    }
    server::serve_with_web_config(
        Arc::new(exporter),
        listeners,
        config.web.clone(),
        server::ServerLimits {
            max_connections: config.web_max_connections,
            max_requests: config.web_max_requests,
        },
        shutdown_signal(),
    )
    .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the exporter");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "received"),
        _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "received"),
    }
}
