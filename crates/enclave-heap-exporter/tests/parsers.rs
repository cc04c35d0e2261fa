//! Property tests of the exporter's inputs from outside: the scraper's `Accept` header, the
//! `--web.config.file` YAML, and whole HTTP requests (arbitrary bytes, and well-formed requests
//! with arbitrary methods, paths and headers) against an in-process server. Nothing may panic,
//! hang or take the server down. The same inputs have cargo-fuzz targets in `fuzz/` (nightly
//! only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use enclave_heap_exporter::collector::{CollectorOptions, CollectorSource};
use enclave_heap_exporter::exposition::Format;
use enclave_heap_exporter::metrics::ProcessMetrics;
use enclave_heap_exporter::web_config::WebConfig;
use enclave_heap_exporter::{Exporter, server};
use enclave_heap_host::{SourceSpec, open_source};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn q_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (0_u32..=1000).prop_map(|q| format!("{}.{:03}", q / 1000, q % 1000)),
        Just("1".to_owned()),
        Just("NaN".to_owned()),
        Just("-1".to_owned()),
        Just("inf".to_owned()),
        "[ -~]{0,6}",
    ]
}

fn media_range() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "application/openmetrics-text",
            "APPLICATION/OpenMetrics-Text",
            "text/plain",
            "text/*",
            "*/*",
            "application/json",
            "",
        ]),
        prop::option::of(prop::sample::select(vec![
            "1.0.0", "0.0.1", "0.0.4", "2.0.0", "",
        ])),
        prop::option::of(q_value()),
    )
        .prop_map(|(media, version, q)| {
            let mut range = media.to_owned();
            if let Some(version) = version {
                range.push_str(&format!(";version={version}"));
            }
            if let Some(q) = q {
                range.push_str(&format!(";q={q}"));
            }
            range
        })
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn accept_negotiation_never_panics(accept in prop_oneof![
        any::<String>(),
        prop::collection::vec(media_range(), 0..5).prop_map(|ranges| ranges.join(", ")),
    ]) {
        let format = Format::negotiate(Some(&accept));
        // Deterministic, and OpenMetrics only when it was asked for.
        prop_assert_eq!(format, Format::negotiate(Some(&accept)));
        if !accept.to_ascii_lowercase().contains("application/openmetrics-text") {
            prop_assert_eq!(format, Format::Text);
        }
    }

    #[test]
    fn the_higher_q_value_wins(om in 0_u32..=1000, text in 0_u32..=1000) {
        let accept = format!(
            "application/openmetrics-text;version=1.0.0;q={}.{:03},text/plain;version=0.0.4;q={}.{:03}",
            om / 1000, om % 1000, text / 1000, text % 1000
        );
        let expected = if om > 0 && om > text { Format::OpenMetrics } else { Format::Text };
        prop_assert_eq!(Format::negotiate(Some(&accept)), expected, "{}", accept);
    }
}

/// YAML documents built from the web config's own keys with values of every shape, so that the
/// parser gets past the YAML layer into the checks.
fn web_config_yaml() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        "[a-zA-Z0-9_./$-]{0,16}",
        Just("\"\"".to_owned()),
        Just("null".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("$2y$10$abcdefghijklmnopqrstuuJ3k5b7Ywz5Rq5lVq6aK8J2m1yYV6aAa".to_owned()),
        Just("VersionTLS13".to_owned()),
        Just("RequireAndVerifyClientCert".to_owned()),
    ];
    let key = prop::sample::select(vec![
        "cert_file",
        "key_file",
        "client_auth_type",
        "client_ca_file",
        "min_version",
        "max_version",
        "cipher_suites",
        "prefer_server_cipher_suites",
        "headers",
        "http2",
        "alice",
        "X-Frame-Options",
        "interval",
        "burst",
        "unknown_key",
    ]);
    let section = prop::sample::select(vec![
        "tls_server_config",
        "http_server_config",
        "basic_auth_users",
        "rate_limit",
        "unknown_section",
    ]);
    prop::collection::vec((section, prop::collection::vec((key, scalar), 0..4)), 0..4).prop_map(
        |sections| {
            let mut yaml = String::new();
            for (section, fields) in sections {
                yaml.push_str(&format!("{section}:\n"));
                for (key, value) in fields {
                    yaml.push_str(&format!("  {key}: {value}\n"));
                }
            }
            yaml
        },
    )
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn web_configs_never_panic_and_errors_say_something(
        yaml in prop_oneof![any::<String>(), web_config_yaml()],
    ) {
        let dir = std::env::temp_dir();
        if let Err(error) = WebConfig::parse(&yaml, &dir) {
            prop_assert!(!error.to_string().is_empty());
        }
    }
}

/// One in-process exporter for every HTTP case, on its own runtime.
fn server() -> SocketAddr {
    static ADDRESS: OnceLock<SocketAddr> = OnceLock::new();
    *ADDRESS.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let spec: SourceSpec = "sim:idle?heap_pages=16".parse().unwrap();
                let exporter = Exporter::new(
                    vec![CollectorSource::blocking(
                        "app",
                        open_source(&spec).unwrap(),
                    )],
                    CollectorOptions {
                        timeout: Duration::from_secs(2),
                        min_interval: Duration::from_secs(1),
                    },
                    "/metrics",
                    ProcessMetrics::Exclude,
                )
                .unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                sender.send(listener.local_addr().unwrap()).unwrap();
                server::serve(Arc::new(exporter), vec![listener], std::future::pending())
                    .await
                    .unwrap();
            });
        });
        receiver.recv_timeout(Duration::from_secs(10)).unwrap()
    })
}

/// Sends `bytes`, half-closes, and reads whatever comes back until the server closes (bounded:
/// a server that neither answers nor closes after the client's end of input fails the case).
fn send(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(server()).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => Ok(answer),
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => Ok(answer),
        Err(error) => Err(format!("no end after the request: {error}")),
    }
}

/// A health check that waits for its answer (without a half-close, which hyper takes for a
/// client that went away).
fn healthy() -> bool {
    let Ok(mut stream) = TcpStream::connect(server()) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut answer = Vec::new();
    stream
        .write_all(b"GET /-/healthy HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .and_then(|()| stream.read_to_end(&mut answer))
        .is_ok()
        && answer.starts_with(b"HTTP/1.1 200")
}

fn request_text() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        prop::sample::select(vec![
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "get"
        ])
        .prop_map(str::to_owned),
        "[A-Z]{1,10}",
    ];
    let path = prop_oneof![
        prop::sample::select(vec![
            "/",
            "/metrics",
            "/-/healthy",
            "/-/ready",
            "*",
            "//",
            "/metrics?x=1",
            "http://h/metrics"
        ])
        .prop_map(str::to_owned),
        "/[ -~]{0,40}",
    ];
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9", ""]);
    let header = (
        prop_oneof![
            prop::sample::select(vec![
                "Accept",
                "Content-Length",
                "Transfer-Encoding",
                "Authorization",
                "Connection",
                "Expect",
                "Host"
            ])
            .prop_map(str::to_owned),
            "[!-9;-~]{1,12}",
        ],
        prop_oneof![
            prop::sample::select(vec![
                "0",
                "5",
                "-1",
                "18446744073709551616",
                "chunked",
                "close",
                "100-continue",
                "Basic Zm9vOmJhcg==",
                "application/openmetrics-text;version=1.0.0"
            ])
            .prop_map(str::to_owned),
            "[ -~]{0,30}",
        ],
    );
    (
        method,
        path,
        version,
        prop::collection::vec(header, 0..5),
        prop::collection::vec(any::<u8>(), 0..32),
    )
        .prop_map(|(method, path, version, headers, body)| {
            let mut request = format!("{method} {path} {version}\r\n").into_bytes();
            for (name, value) in headers {
                request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            request.extend_from_slice(b"\r\n");
            request.extend_from_slice(&body);
            request
        })
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn any_request_gets_an_answer_or_a_close_and_the_server_stays_up(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..512), request_text()],
    ) {
        let answer = send(&bytes).map_err(TestCaseError::fail)?;
        if !answer.is_empty() {
            prop_assert!(answer.starts_with(b"HTTP/1."), "{:?}", String::from_utf8_lossy(&answer));
        }
        prop_assert!(healthy(), "the server stopped answering after {:?}", String::from_utf8_lossy(&bytes));
    }
}
