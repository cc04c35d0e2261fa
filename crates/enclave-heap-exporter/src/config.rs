//! The validated configuration: every flag checked and turned into the type the daemon uses.
//!
//! Raw flags come from [`crate::cli::Cli`]; [`Config::from_cli`] is the only place that judges
//! them, so each error message can name the flag and the value.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use enclave_heap_host::{PromDuration, SourceSpec};

use crate::cli::Cli;
use crate::logging::{LogFormat, LogLevel};
use crate::web_config::{WebConfig, WebConfigError};

/// The name given to the simulated enclave that runs when no `--source` is given.
pub const DEFAULT_SOURCE_NAME: &str = "sim";
/// The URL of that simulated enclave.
pub const DEFAULT_SOURCE_URL: &str = "sim:";

/// Everything the daemon needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on.
    pub listen_addresses: Vec<SocketAddr>,
    /// Path of the metrics endpoint.
    pub telemetry_path: String,
    /// `--web.config.file`, if given.
    pub web_config_file: Option<std::path::PathBuf>,
    /// TLS, basic auth and headers from that file (the default when none is given).
    pub web: WebConfig,
    /// Most requests handled at once, 0 for no limit.
    pub web_max_requests: usize,
    /// Most connections open at once.
    pub web_max_connections: usize,
    /// The enclaves to read, in the order given.
    pub sources: Vec<SourceDefinition>,
    /// True when no `--source` was given and the default simulated enclave stands in.
    pub default_simulated_source: bool,
    /// How long one read may take.
    pub source_timeout: Duration,
    /// Minimum time between two reads of one source.
    pub source_min_interval: Duration,
    /// How old a pushed snapshot may be to stand in for a failed ECALL.
    pub source_push_max_age: Duration,
    /// CA certificates for https sources.
    pub source_ca_file: Option<std::path::PathBuf>,
    /// Log threshold.
    pub log_level: LogLevel,
    /// Log format.
    pub log_format: LogFormat,
}

/// One `--source NAME=URL`.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceDefinition {
    /// The `enclave` label.
    pub name: String,
    /// What to read.
    pub spec: SourceSpec,
}

/// A flag value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--web.listen-address` is not an address this host can listen on.
    #[error("--web.listen-address={value:?}: {reason}")]
    ListenAddress {
        /// The value given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// `--web.telemetry-path` is not a usable path.
    #[error("--web.telemetry-path={0:?}: must start with '/', must not be '/' or under '/-/'")]
    TelemetryPath(String),
    /// `--web.max-connections` is 0.
    #[error("--web.max-connections must be at least 1")]
    ZeroMaxConnections,
    /// The `--web.config.file` cannot be read or holds a setting that cannot be used.
    #[error("--web.config.file={}: {source}", .path.display())]
    WebConfig {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong, naming the key.
        source: WebConfigError,
    },
    /// A duration flag is malformed.
    #[error("--{flag}: {source}")]
    Duration {
        /// The flag.
        flag: &'static str,
        /// The parse error, which names the value.
        source: enclave_heap_host::DurationParseError,
    },
    /// `--source.timeout` is zero.
    #[error("--source.timeout must be greater than 0s")]
    ZeroTimeout,
    /// `--source` is not NAME=URL.
    #[error("--source={0:?}: expected NAME=URL, e.g. --source app=sim:leak")]
    SourceSyntax(String),
    /// A source name is not a usable label value.
    #[error("--source={value:?}: name {name:?} must be 1-64 characters of A-Z a-z 0-9 _ - . :")]
    SourceName {
        /// The whole flag value.
        value: String,
        /// The name part.
        name: String,
    },
    /// Two sources share a name.
    #[error("--source: the name {0:?} is used twice; every enclave needs its own name")]
    DuplicateSource(String),
    /// A source URL is malformed.
    #[error("--source: {0}")]
    SourceUrl(#[from] enclave_heap_host::SourceUrlError),
    /// `--log.level` is unknown.
    #[error("--log.level={0:?}: expected debug, info, warn or error")]
    LogLevel(String),
    /// `--log.format` is unknown.
    #[error("--log.format={0:?}: expected logfmt or json")]
    LogFormat(String),
}

impl Config {
    /// Validates raw flags.
    pub fn from_cli(cli: &Cli) -> Result<Self, ConfigError> {
        let listen_addresses = cli
            .web_listen_address
            .iter()
            .map(|value| parse_listen_address(value))
            .collect::<Result<_, _>>()?;
        let telemetry_path = cli.web_telemetry_path.clone();
        if !telemetry_path.starts_with('/')
            || telemetry_path == "/"
            || telemetry_path.starts_with("/-/")
        {
            return Err(ConfigError::TelemetryPath(telemetry_path));
        }
        let web = match &cli.web_config_file {
            Some(path) => WebConfig::load(path).map_err(|source| ConfigError::WebConfig {
                path: path.clone(),
                source,
            })?,
            None => WebConfig::default(),
        };
        if cli.web_max_connections == 0 {
            return Err(ConfigError::ZeroMaxConnections);
        }
        let source_timeout = duration("source.timeout", &cli.source_timeout)?;
        if source_timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        let source_min_interval = duration("source.min-interval", &cli.source_min_interval)?;
        let source_push_max_age = duration("source.push-max-age", &cli.source_push_max_age)?;
        let default_simulated_source = cli.source.is_empty();
        let sources = if default_simulated_source {
            vec![SourceDefinition {
                name: DEFAULT_SOURCE_NAME.to_owned(),
                spec: DEFAULT_SOURCE_URL.parse()?,
            }]
        } else {
            parse_sources(&cli.source)?
        };
        let log_level = cli
            .log_level
            .parse()
            .map_err(|()| ConfigError::LogLevel(cli.log_level.clone()))?;
        let log_format = cli
            .log_format
            .parse()
            .map_err(|()| ConfigError::LogFormat(cli.log_format.clone()))?;
        Ok(Self {
            listen_addresses,
            telemetry_path,
            web_config_file: cli.web_config_file.clone(),
            web,
            web_max_requests: cli.web_max_requests,
            web_max_connections: cli.web_max_connections,
            sources,
            default_simulated_source,
            source_timeout,
            source_min_interval,
            source_push_max_age,
            source_ca_file: cli.source_ca_file.clone(),
            log_level,
            log_format,
        })
    }
}

fn parse_sources(values: &[String]) -> Result<Vec<SourceDefinition>, ConfigError> {
    let mut sources: Vec<SourceDefinition> = Vec::with_capacity(values.len());
    for value in values {
        let (name, url) = value
            .split_once('=')
            .ok_or_else(|| ConfigError::SourceSyntax(value.clone()))?;
        if !enclave_heap_host::agent_protocol::valid_enclave_name(name) {
            return Err(ConfigError::SourceName {
                value: value.clone(),
                name: name.to_owned(),
            });
        }
        if sources.iter().any(|source| source.name == name) {
            return Err(ConfigError::DuplicateSource(name.to_owned()));
        }
        sources.push(SourceDefinition {
            name: name.to_owned(),
            spec: url.parse()?,
        });
    }
    Ok(sources)
}

fn duration(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    value
        .parse::<PromDuration>()
        .map(Duration::from)
        .map_err(|source| ConfigError::Duration { flag, source })
}

/// `:PORT` (every IPv4 interface, as Go's net.Listen reads it), `HOST:PORT` or `[V6]:PORT`.
fn parse_listen_address(value: &str) -> Result<SocketAddr, ConfigError> {
    let fail = |reason: String| ConfigError::ListenAddress {
        value: value.to_owned(),
        reason,
    };
    let with_host = match value.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => value.to_owned(),
    };
    if let Ok(address) = with_host.parse::<SocketAddr>() {
        return Ok(address);
    }
    let (_, port) = with_host
        .rsplit_once(':')
        .ok_or_else(|| fail("expected HOST:PORT or :PORT".into()))?;
    port.parse::<u16>()
        .map_err(|_| fail(format!("port {port:?} is not a number from 0 to 65535")))?;
    with_host
        .to_socket_addrs()
        .map_err(|err| fail(format!("cannot resolve the host: {err}")))?
        .next()
        .ok_or_else(|| fail("the host resolves to no address".into()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(
            std::iter::once("enclave-heap-exporter").chain(args.iter().copied()),
        )
        .expect("flags parse");
        Config::from_cli(&cli)
    }

    fn error(args: &[&str]) -> String {
        config(args).unwrap_err().to_string()
    }

    #[test]
    fn defaults_run_one_simulated_enclave() {
        let config = config(&[]).unwrap();
        assert_eq!(
            config.listen_addresses,
            vec!["0.0.0.0:9745".parse().unwrap()]
        );
        assert_eq!(config.telemetry_path, "/metrics");
        assert!(config.default_simulated_source);
        assert_eq!(config.sources.len(), 1);
        assert_eq!(config.sources[0].name, "sim");
        assert!(matches!(
            config.sources[0].spec,
            SourceSpec::Simulated { .. }
        ));
        assert_eq!(config.source_timeout, Duration::from_secs(2));
        assert_eq!(config.source_min_interval, Duration::from_secs(1));
        assert_eq!(config.source_push_max_age, Duration::from_secs(30));
        assert_eq!(config.source_ca_file, None);
        assert_eq!(config.log_level, LogLevel::Info);
        assert_eq!(config.log_format, LogFormat::Logfmt);
    }

    #[test]
    fn web_listen_address() {
        let config = config(&[
            "--web.listen-address=127.0.0.1:0",
            "--web.listen-address",
            "[::1]:9000",
            "--web.listen-address=localhost:9001",
        ])
        .unwrap();
        assert_eq!(config.listen_addresses[0], "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.listen_addresses[1], "[::1]:9000".parse().unwrap());
        assert_eq!(config.listen_addresses[2].port(), 9001);
        assert!(error(&["--web.listen-address=nowhere"]).contains("expected HOST:PORT"));
        assert!(error(&["--web.listen-address=:99999"]).contains("port \"99999\""));
    }

    #[test]
    fn web_telemetry_path() {
        assert_eq!(
            config(&["--web.telemetry-path=/heap"])
                .unwrap()
                .telemetry_path,
            "/heap"
        );
        for bad in ["metrics", "/", "/-/healthy"] {
            assert!(error(&["--web.telemetry-path", bad]).contains("--web.telemetry-path"));
        }
    }

    #[test]
    fn source_flags() {
        let config =
            config(&["--source", "a=sim:", "--source", "b=sim:leak?heap_pages=64"]).unwrap();
        assert!(!config.default_simulated_source);
        let names: Vec<_> = config.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(error(&["--source", "sim:"]).contains("expected NAME=URL"));
        assert!(error(&["--source", "a b=sim:"]).contains("name \"a b\""));
        assert!(error(&["--source", "a=sim:", "--source", "a=sim:leak"]).contains("used twice"));
        assert!(error(&["--source", "a=sim:lek"]).contains("unknown profile \"lek\""));
    }

    #[test]
    fn source_durations() {
        let config = config(&[
            "--source.timeout=200ms",
            "--source.min-interval=0s",
            "--source.push-max-age=1m",
            "--source.ca-file=/etc/ccf/service.pem",
        ])
        .unwrap();
        assert_eq!(config.source_push_max_age, Duration::from_secs(60));
        assert_eq!(
            config.source_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ccf/service.pem"))
        );
        assert!(error(&["--source.push-max-age=soon"]).contains("--source.push-max-age"));
        assert_eq!(config.source_timeout, Duration::from_millis(200));
        assert_eq!(config.source_min_interval, Duration::ZERO);
        assert!(
            error(&["--source.timeout=5"]).contains("--source.timeout: invalid duration \"5\"")
        );
        assert!(error(&["--source.timeout=0s"]).contains("greater than 0s"));
        assert!(error(&["--source.min-interval=1x"]).contains("--source.min-interval"));
    }

    #[test]
    fn log_flags() {
        let config = config(&["--log.level=debug", "--log.format=json"]).unwrap();
        assert_eq!(config.log_level, LogLevel::Debug);
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(error(&["--log.level=loud"]).contains("--log.level=\"loud\""));
        assert!(error(&["--log.format=xml"]).contains("--log.format=\"xml\""));
    }

    #[test]
    fn web_limits() {
        let defaults = config(&[]).unwrap();
        assert_eq!(defaults.web_max_requests, 40);
        assert_eq!(defaults.web_max_connections, 512);
        let config = config(&["--web.max-requests=0", "--web.max-connections=8"]).unwrap();
        assert_eq!(config.web_max_requests, 0);
        assert_eq!(config.web_max_connections, 8);
        assert!(error(&["--web.max-connections=0"]).contains("--web.max-connections"));
        let cli = Cli::try_parse_from(["enclave-heap-exporter", "--web.max-requests=-1"]);
        assert!(cli.is_err());
    }
}
