//! The raw command line, as clap parses it. [`crate::config`] turns it into a validated
//! [`crate::config::Config`]; nothing here is trusted yet.

use clap::Parser;

/// The default `--web.listen-address`: all IPv4 interfaces, port 9745.
pub const DEFAULT_LISTEN_ADDRESS: &str = ":9745";

/// Raw flags of `enclave-heap-exporter`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "enclave-heap-exporter",
    version = crate::build_info::VERSION,
    long_version = crate::build_info::LONG_VERSION,
    about = "Prometheus exporter for Open Enclave enclave heaps (oe_allocator_mallinfo).",
    long_about = "Prometheus exporter for Open Enclave enclave heaps (oe_allocator_mallinfo).\n\n\
        Reads every --source at scrape time and serves enclave_heap_* gauges on the telemetry path. \
        With no --source it runs one simulated enclave named `sim`."
)]
pub struct Cli {
    /// Address to listen on for the web interface and telemetry (repeatable). `:PORT` means
    /// every IPv4 interface; `HOST:PORT` and `[IPV6]:PORT` are accepted.
    #[arg(long = "web.listen-address", value_name = "ADDRESS", default_value = DEFAULT_LISTEN_ADDRESS)]
    pub web_listen_address: Vec<String>,

    /// Path under which to expose metrics.
    #[arg(
        long = "web.telemetry-path",
        value_name = "PATH",
        default_value = "/metrics"
    )]
    pub web_telemetry_path: String,

    /// Path to a web config file (exporter-toolkit's YAML format, as node_exporter reads it)
    /// that enables TLS, basic auth and extra response headers.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<std::path::PathBuf>,

    /// Most requests handled at once; more get 503 (/-/healthy and /-/ready are not counted).
    /// 0 means no limit.
    #[arg(long = "web.max-requests", value_name = "N", default_value_t = crate::server::MAX_REQUESTS)]
    pub web_max_requests: usize,

    /// Most connections open at once; further clients wait in the kernel's accept queue until
    /// one closes (connections that send no request are closed after 10s, idle kept-alive ones
    /// after 2m).
    #[arg(long = "web.max-connections", value_name = "N", default_value_t = crate::server::MAX_CONNECTIONS)]
    pub web_max_connections: usize,

    /// An enclave to read, as NAME=URL (repeatable). NAME becomes the `enclave` label. URLs:
    /// `sim:[PROFILE][?heap_pages=N&period=D&seed=N&fail=OE_RESULT&delay=D]`,
    /// `oe:///path/enclave.signed[?simulate=1&debug=1]`, `unix:///path/agent.sock[?enclave=NAME|*]`,
    /// `http(s)://host:port/node/memory`.
    #[arg(long = "source", value_name = "NAME=URL")]
    pub source: Vec<String>,

    /// How long one read of a source may take before the scrape reports it as failed
    /// (Prometheus duration: 200ms, 2s, 1m).
    #[arg(long = "source.timeout", value_name = "DURATION", default_value = "2s")]
    pub source_timeout: String,

    /// A source is read at most once per this interval; scrapes in between reuse the last read.
    #[arg(
        long = "source.min-interval",
        value_name = "DURATION",
        default_value = "1s"
    )]
    pub source_min_interval: String,

    /// How old a snapshot the enclave pushed by OCALL may be and still stand in when an ECALL
    /// fails with OE_OUT_OF_THREADS (in-process sources; an agent applies its own setting).
    #[arg(
        long = "source.push-max-age",
        value_name = "DURATION",
        default_value = "30s"
    )]
    pub source_push_max_age: String,

    /// PEM file of CA certificates to trust for https:// sources (default: the Mozilla roots).
    #[arg(long = "source.ca-file", value_name = "FILE")]
    pub source_ca_file: Option<std::path::PathBuf>,

    /// Only log messages with the given severity or above: debug, info, warn, error.
    #[arg(long = "log.level", value_name = "LEVEL", default_value = "info")]
    pub log_level: String,

    /// Output format of log messages: logfmt or json.
    #[arg(long = "log.format", value_name = "FORMAT", default_value = "logfmt")]
    pub log_format: String,
}
