//! TLS, client certificates, basic auth and extra headers on the real binary, over loopback,
//! with certificates made at test time; and certificate rotation without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
mod tls_support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use enclave_heap_exporter::tls::CERT_CHECK_INTERVAL;
use support::Exporter;
use tls_support::{Pki, TlsClient, bcrypt_hash, tls_yaml};

/// Starts the exporter with `yaml` as its web config (in `pki`'s directory).
fn start(pki: &Pki, yaml: &str) -> Exporter {
    let path = pki.web_config(yaml);
    Exporter::start(&[&format!("--web.config.file={}", path.display())])
}

fn tls_only(pki: &Pki) -> Exporter {
    pki.install_server(&pki.server("exporter", 1));
    start(pki, &tls_yaml(pki.dir.path(), "", ""))
}

#[test]
fn https_scrape_with_the_right_ca() {
    let pki = Pki::new("server");
    let exporter = tls_only(&pki);
    assert!(
        exporter
            .startup_log
            .iter()
            .any(|line| line.contains("TLS is enabled")),
        "{:?}",
        exporter.startup_log
    );
    let response = pki
        .client_config()
        .get(exporter.address, "/metrics", None)
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(response.body.contains("enclave_heap_up{enclave=\"sim\"} 1"));
    assert_eq!(response.version, Some(rustls::ProtocolVersion::TLSv1_3));
    // The client offered h2 and http/1.1; this server speaks HTTP/1.1 only.
    assert_eq!(response.alpn.as_deref(), Some(&b"http/1.1"[..]));

    // TLS 1.2 works too (the default minimum), and a client that trusts another CA refuses.
    let tls12 = TlsClient::new(&[&pki], None, Some(&[&rustls::version::TLS12]));
    let response = tls12.get(exporter.address, "/-/healthy", None).unwrap();
    assert_eq!(response.version, Some(rustls::ProtocolVersion::TLSv1_2));
    let stranger = Pki::new("stranger");
    let error = stranger
        .client_config()
        .get(exporter.address, "/metrics", None)
        .unwrap_err();
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
}

#[test]
fn min_version_tls13_refuses_tls12_clients() {
    let pki = Pki::new("server");
    pki.install_server(&pki.server("exporter", 1));
    let exporter = start(&pki, &tls_yaml(pki.dir.path(), "min_version: TLS13", ""));
    let tls12 = TlsClient::new(&[&pki], None, Some(&[&rustls::version::TLS12]));
    assert!(tls12.get(exporter.address, "/metrics", None).is_err());
    let response = pki
        .client_config()
        .get(exporter.address, "/metrics", None)
        .unwrap();
    assert_eq!(response.status, 200);
}

#[test]
fn plain_http_to_the_tls_port_fails_cleanly() {
    let pki = Pki::new("server");
    let exporter = tls_only(&pki);
    let response = support::request(exporter.address, "GET", "/metrics", &[]);
    assert_eq!(response.status, 400);
    assert_eq!(
        response.body,
        "Client sent an HTTP request to an HTTPS server.\n"
    );
    // Garbage that is not HTTP either: the connection just closes.
    let mut stream = TcpStream::connect(exporter.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"\x00\x01\x02 not tls\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty() || !rest.starts_with(b"HTTP"), "{rest:?}");
    // And TLS still works afterwards.
    let response = pki
        .client_config()
        .get(exporter.address, "/metrics", None)
        .unwrap();
    assert_eq!(response.status, 200);
}

#[test]
fn require_and_verify_client_cert() {
    let pki = Pki::new("server");
    let clients = Pki::new("clients");
    let strangers = Pki::new("strangers");
    pki.install_server(&pki.server("exporter", 1));
    let client_ca = pki.write("client-ca.pem", &clients.ca_pem);
    let exporter = start(
        &pki,
        &tls_yaml(
            pki.dir.path(),
            &format!(
                "client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: {}",
                client_ca.display()
            ),
            "",
        ),
    );
    let prometheus = clients.client("prometheus");
    let with_cert = TlsClient::new(&[&pki], Some(&prometheus), None);
    let response = with_cert.get(exporter.address, "/metrics", None).unwrap();
    assert_eq!(response.status, 200, "{}", response.body);

    let without = pki.client_config().get(exporter.address, "/metrics", None);
    let error = without.unwrap_err().to_string();
    assert!(error.contains("CertificateRequired"), "{error}");

    let impostor = strangers.client("prometheus");
    let wrong_ca = TlsClient::new(&[&pki], Some(&impostor), None);
    let error = wrong_ca
        .get(exporter.address, "/metrics", None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("UnknownCA") || error.contains("BadCertificate"),
        "{error}"
    );
}

#[test]
fn verify_client_cert_if_given_and_require_any() {
    let pki = Pki::new("server");
    let clients = Pki::new("clients");
    let strangers = Pki::new("strangers");
    pki.install_server(&pki.server("exporter", 1));
    let client_ca = pki.write("client-ca.pem", &clients.ca_pem);

    let exporter = start(
        &pki,
        &tls_yaml(
            pki.dir.path(),
            &format!(
                "client_auth_type: VerifyClientCertIfGiven\nclient_ca_file: {}",
                client_ca.display()
            ),
            "",
        ),
    );
    // No certificate: fine. A verified one: fine. One nobody vouches for: refused.
    let none = pki.client_config().get(exporter.address, "/metrics", None);
    assert_eq!(none.unwrap().status, 200);
    let good = TlsClient::new(&[&pki], Some(&clients.client("a")), None);
    assert_eq!(
        good.get(exporter.address, "/metrics", None).unwrap().status,
        200
    );
    let bad = TlsClient::new(&[&pki], Some(&strangers.client("b")), None);
    assert!(bad.get(exporter.address, "/metrics", None).is_err());
    drop(exporter);

    // RequireAnyClientCert: some certificate is required, any will do (it authenticates nobody).
    let exporter = start(
        &pki,
        &tls_yaml(pki.dir.path(), "client_auth_type: RequireAnyClientCert", ""),
    );
    assert!(
        exporter
            .startup_log
            .iter()
            .any(|line| line.contains("authenticate nobody")),
        "{:?}",
        exporter.startup_log
    );
    assert!(
        pki.client_config()
            .get(exporter.address, "/metrics", None)
            .is_err()
    );
    let any = TlsClient::new(&[&pki], Some(&strangers.client("anyone")), None);
    assert_eq!(
        any.get(exporter.address, "/metrics", None).unwrap().status,
        200
    );
}

#[test]
fn basic_auth_over_tls_with_extra_headers() {
    let pki = Pki::new("server");
    pki.install_server(&pki.server("exporter", 1));
    let yaml = tls_yaml(
        pki.dir.path(),
        "",
        &format!(
            "basic_auth_users:\n  prometheus: {}\n  grafana: {}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n    Content-Security-Policy: default-src 'none'\n    Strict-Transport-Security: max-age=63072000\n",
            bcrypt_hash("scrape me"),
            bcrypt_hash("other")
        ),
    );
    let exporter = start(&pki, &yaml);
    let client = pki.client_config();
    let get = |path, credentials| client.get(exporter.address, path, credentials).unwrap();

    let denied = get("/metrics", None);
    assert_eq!(denied.status, 401);
    assert!(
        denied
            .header("WWW-Authenticate")
            .unwrap()
            .starts_with("Basic"),
        "{denied:?}"
    );
    assert!(!denied.body.contains("enclave_heap"));
    assert_eq!(denied.header("X-Frame-Options"), Some("deny"));
    for credentials in [
        ("prometheus", "wrong"),
        ("prometheus", ""),
        ("nobody", "scrape me"),
        ("grafana", "scrape me"),
    ] {
        let response = get("/metrics", Some(credentials));
        assert_eq!(response.status, 401, "{credentials:?}");
        assert!(response.header("WWW-Authenticate").is_some());
    }
    // The landing page shows the heap figures too: protected.
    assert_eq!(get("/", None).status, 401);

    let started = Instant::now();
    let allowed = get("/metrics", Some(("prometheus", "scrape me")));
    let first = started.elapsed();
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert!(allowed.body.contains("enclave_heap_up{enclave=\"sim\"} 1"));
    assert_eq!(allowed.header("X-Frame-Options"), Some("deny"));
    assert_eq!(
        allowed.header("Content-Security-Policy"),
        Some("default-src 'none'")
    );
    assert_eq!(
        allowed.header("Strict-Transport-Security"),
        Some("max-age=63072000")
    );
    assert!(allowed.header("X-XSS-Protection").is_none());
    // Scrape again: answered from the verified-credentials cache.
    for _ in 0..5 {
        assert_eq!(
            get("/metrics", Some(("prometheus", "scrape me"))).status,
            200
        );
    }
    assert_eq!(get("/", Some(("grafana", "other"))).status, 200);
    eprintln!("first authenticated scrape over TLS: {first:?}");

    // Probes answer without credentials (and still carry the headers).
    for probe in ["/-/healthy", "/-/ready"] {
        let response = get(probe, None);
        assert_eq!(response.status, 200, "{probe}");
        assert_eq!(response.header("X-Frame-Options"), Some("deny"));
    }
    // Nothing secret reaches the log.
    drop(client);
    let log: Vec<String> = exporter.stderr_lines.try_iter().collect();
    let log = [exporter.startup_log.clone(), log].concat().join("\n");
    assert!(!log.contains("scrape me") && !log.contains("$2"), "{log}");
}

#[test]
fn basic_auth_without_tls() {
    let pki = Pki::new("unused");
    let exporter = start(
        &pki,
        &format!("basic_auth_users:\n  prometheus: {}\n", bcrypt_hash("pw")),
    );
    assert_eq!(exporter.get("/metrics").status, 401);
    let encoded = "cHJvbWV0aGV1czpwdw=="; // prometheus:pw
    let response = support::request(
        exporter.address,
        "GET",
        "/metrics",
        &[("Authorization", &format!("Basic {encoded}"))],
    );
    assert_eq!(response.status, 200);
    assert_eq!(exporter.get("/-/ready").status, 200);
}

#[test]
fn certificate_rotation_without_a_restart() {
    let pki = Pki::new("server");
    let first = pki.server("exporter-before", 1);
    pki.install_server(&first);
    let exporter = start(&pki, &tls_yaml(pki.dir.path(), "", ""));
    // A new client each time: a resumed TLS session would not show the certificate again.
    let presented = || {
        pki.client_config()
            .get(exporter.address, "/-/healthy", None)
            .unwrap()
            .server_certificate
            .unwrap()
    };
    assert_eq!(presented(), first.der);

    // cert-manager writes a new pair (new key, serial and CN).
    let second = pki.server("exporter-after", 2);
    pki.install_server(&second);
    std::thread::sleep(CERT_CHECK_INTERVAL + Duration::from_millis(200));
    assert_eq!(presented(), second.der, "new connections get the new cert");

    // A broken replacement keeps the current certificate, and is logged once.
    pki.write(
        "server.pem",
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    );
    for _ in 0..3 {
        std::thread::sleep(CERT_CHECK_INTERVAL + Duration::from_millis(100));
        assert_eq!(presented(), second.der);
    }
    // A half-rotated pair (new certificate, old key) is refused the same way.
    let third = pki.server("exporter-third", 3);
    pki.write("server.pem", &third.cert_pem);
    std::thread::sleep(CERT_CHECK_INTERVAL + Duration::from_millis(200));
    assert_eq!(presented(), second.der);
    // ... until the key arrives.
    pki.write("server.key", &third.key_pem);
    std::thread::sleep(CERT_CHECK_INTERVAL + Duration::from_millis(200));
    assert_eq!(presented(), third.der);

    std::thread::sleep(Duration::from_millis(200));
    let log: Vec<String> = exporter.stderr_lines.try_iter().collect();
    let refused: Vec<_> = log
        .iter()
        .filter(|line| line.contains("cannot be used"))
        .collect();
    assert_eq!(
        refused.len(),
        2,
        "one line per broken state:\n{}",
        log.join("\n")
    );
    assert!(
        refused[0].contains("tls_server_config.cert_file"),
        "{}",
        refused[0]
    );
    assert!(refused[1].contains("does not belong"), "{}", refused[1]);
    let reloaded = log
        .iter()
        .filter(|line| line.contains("TLS certificate changed on disk"))
        .count();
    assert_eq!(reloaded, 2, "{}", log.join("\n"));
}

/// A client that never completes the handshake loses its connection after the handshake
/// timeout, and the connection slot it held is free again.
#[tokio::test]
async fn a_stalled_handshake_is_closed() {
    use enclave_heap_host::http_server::{self, Listener, ServeOptions};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let pki = Pki::new("server");
    pki.install_server(&pki.server("exporter", 1));
    let web = enclave_heap_exporter::web_config::WebConfig::parse(
        &tls_yaml(pki.dir.path(), "", ""),
        pki.dir.path(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let listeners = vec![Listener::Tls {
        listener,
        config: web.tls().unwrap().server_config(),
        handshake_timeout: Duration::from_millis(300),
    }];
    let handler = |_request| async {
        http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
            b"ok\n",
        )))
    };
    // One connection slot: the stalled client holds it until the timeout frees it.
    let options = ServeOptions {
        max_connections: 1,
        ..ServeOptions::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http_server::serve(listeners, handler, options, async {
        let _ = stopped.await;
    }));

    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut stalled = tokio::net::TcpStream::connect(address).await.unwrap();
    // The first bytes of a TLS record header, then nothing.
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut buffer = [0_u8; 64];
    for stream in [&mut silent, &mut stalled] {
        let read = tokio::time::timeout(Duration::from_secs(8), stream.read(&mut buffer)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the server should close a stalled handshake: {read:?}"
        );
    }
    eprintln!(
        "both stalled handshakes closed after {:?}",
        started.elapsed()
    );

    // The slot is free: a real client gets through.
    let client = pki.client_config();
    let response = tokio::task::spawn_blocking(move || client.get(address, "/", None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status, 200);
    let _ = stop.send(());
    server.await.unwrap();
}
