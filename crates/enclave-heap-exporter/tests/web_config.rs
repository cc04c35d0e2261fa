//! `--web.config.file` is judged at start: every key exporter-toolkit defines is accepted or
//! refused with a message naming it, and the binary turns a bad file into exit code 2 and one
//! line on stderr.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
mod tls_support;

use std::io::Read as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use enclave_heap_exporter::web_config::{WebConfig, WebConfigError};
use tls_support::{Pki, bcrypt_hash, tls_yaml};

/// A PKI with `server.pem`/`server.key` and `client-ca.pem` written.
fn pki() -> Pki {
    let pki = Pki::new("web-config");
    pki.install_server(&pki.server("exporter", 1));
    pki.write("client-ca.pem", &Pki::new("clients").ca_pem);
    pki
}

fn parse(pki: &Pki, yaml: &str) -> Result<WebConfig, WebConfigError> {
    WebConfig::parse(yaml, pki.dir.path())
}

fn error(pki: &Pki, yaml: &str) -> String {
    match parse(pki, yaml) {
        Ok(config) => panic!("accepted:\n{yaml}\nas {config:?}"),
        Err(error) => error.to_string(),
    }
}

fn tls(pki: &Pki, extra: &str) -> String {
    tls_yaml(pki.dir.path(), extra, "")
}

#[test]
fn every_key_exporter_toolkit_defines() {
    let pki = pki();
    let hash = bcrypt_hash("secret");
    let yaml = tls_yaml(
        pki.dir.path(),
        "client_auth_type: RequireAndVerifyClientCert
         client_ca_file: client-ca.pem
         min_version: TLS12
         max_version: TLS13
         cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, TLS_AES_128_GCM_SHA256]
         prefer_server_cipher_suites: false
         curve_preferences: [X25519, CurveP256, CurveP384]
         client_allowed_sans: []",
        &format!(
            "http_server_config:
  http2: false
  headers:
    Content-Security-Policy: default-src 'self'
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
    X-XSS-Protection: 1; mode=block
    Strict-Transport-Security: max-age=31536000
basic_auth_users:
  prometheus: {hash}
  grafana: '{hash}'
rate_limit:
  interval: 100ms
  burst: 10
"
        ),
    );
    let config = parse(&pki, &yaml).unwrap();
    let tls = config.tls().expect("TLS on");
    assert_eq!(tls.versions(), "TLS1.2-TLS1.3");
    assert_eq!(tls.client_auth(), "RequireAndVerifyClientCert");
    assert!(
        tls.certificate_source()
            .contains("re-read when they change")
    );
    assert!(config.requires_basic_auth());
    let server = tls.server_config();
    assert!(!server.ignore_client_order, "prefer_server_cipher_suites");
    assert_eq!(server.alpn_protocols, vec![b"http/1.1".to_vec()]);
    // Debug shows what is on, never a hash.
    let debug = format!("{config:?}");
    assert!(!debug.contains(&hash), "{debug}");
    assert!(debug.contains("basic_auth_users: 2"), "{debug}");
}

#[test]
fn relative_paths_are_relative_to_the_config_file() {
    let pki = pki();
    let path = pki.web_config(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  min_version: TLS13\n",
    );
    let config = WebConfig::load(&path).unwrap();
    assert_eq!(config.tls().unwrap().versions(), "TLS1.3");
}

#[test]
fn inline_certificate_and_key() {
    let pki = pki();
    let issued = pki.server("inline", 2);
    let indent = |pem: &str| {
        pem.lines()
            .map(|line| format!("    {line}\n"))
            .collect::<String>()
    };
    let yaml = format!(
        "tls_server_config:\n  cert: |\n{}  key: |\n{}  client_auth_type: RequestClientCert\n",
        indent(&issued.cert_pem),
        indent(&issued.key_pem)
    );
    let config = parse(&pki, &yaml).unwrap();
    let tls = config.tls().unwrap();
    assert_eq!(tls.certificate_source(), "inline");
    assert!(tls.accepts_unverified_client_certs());
    let debug = format!("{config:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
}

#[test]
fn empty_or_absent_sections_serve_plain_http() {
    let pki = pki();
    for yaml in [
        "",
        "# comments only\n",
        "tls_server_config:\n",
        "tls_server_config: {}\nbasic_auth_users: {}\n",
        "http_server_config:\n  http2: true\n",
        "rate_limit:\n  interval: 0\n",
        "tls_server_config:\n  cert_file: ''\n  key_file: ''\n  cipher_suites: []\n",
    ] {
        let config = parse(&pki, yaml).unwrap_or_else(|error| panic!("{yaml:?}: {error}"));
        assert!(config.tls().is_none(), "{yaml:?}");
        assert!(!config.requires_basic_auth(), "{yaml:?}");
    }
}

#[test]
fn unknown_keys_are_named() {
    let pki = pki();
    for (yaml, key) in [
        ("tls_config:\n  cert_file: x\n", "tls_config"),
        ("basic_auth:\n  user: x\n", "basic_auth"),
        (
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  ca_file: x\n",
            "ca_file",
        ),
        (
            "http_server_config:\n  header:\n    X-Frame-Options: deny\n",
            "header",
        ),
        ("rate_limit:\n  every: 1s\n", "every"),
    ] {
        let message = error(&pki, yaml);
        assert!(
            message.contains(&format!("unknown field `{key}`")),
            "{message}"
        );
    }
}

#[test]
fn wrong_types_and_malformed_yaml() {
    let pki = pki();
    assert!(error(&pki, "tls_server_config: [1, 2]\n").contains("tls_server_config"));
    assert!(error(&pki, "http_server_config:\n  http2: sometimes\n").contains("http2"));
    assert!(error(&pki, "basic_auth_users:\n  - alice\n").contains("basic_auth_users"));
    let message = error(&pki, "tls_server_config:\n  cert_file: [\n");
    assert!(message.contains("line"), "{message}");
}

#[test]
fn bad_password_hashes_name_the_user_and_hide_the_hash() {
    let pki = pki();
    for bad in ["hunter2", "$2y$10$tooshort", "$1$salt$md5cryptvalue"] {
        let message = error(&pki, &format!("basic_auth_users:\n  alice: '{bad}'\n"));
        assert!(
            message.starts_with("basic_auth_users.alice: not a bcrypt hash"),
            "{message}"
        );
        assert!(!message.contains(bad), "{message}");
    }
    let message = error(&pki, "basic_auth_users:\n  alice: 123456\n");
    assert!(
        message.starts_with("basic_auth_users.alice: must be a bcrypt hash"),
        "{message}"
    );
    assert!(!message.contains("123456"), "{message}");
    let message = error(
        &pki,
        &format!("basic_auth_users:\n  'a:b': '{}'\n", bcrypt_hash("x")),
    );
    assert!(message.contains("cannot contain ':'"), "{message}");
}

#[test]
fn missing_and_unusable_files_name_the_key() {
    let pki = pki();
    let message = error(
        &pki,
        "tls_server_config:\n  cert_file: nowhere.pem\n  key_file: server.key\n",
    );
    assert!(
        message.starts_with("tls_server_config.cert_file: cannot read ")
            && message.contains("nowhere.pem"),
        "{message}"
    );
    let message = error(
        &pki,
        "tls_server_config:\n  cert_file: server.pem\n  key_file: nowhere.key\n",
    );
    assert!(
        message.starts_with("tls_server_config.key_file: cannot read "),
        "{message}"
    );
    let message = error(
        &pki,
        &tls(
            &pki,
            "client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: nowhere.pem",
        ),
    );
    assert!(
        message.starts_with("tls_server_config.client_ca_file: cannot read "),
        "{message}"
    );

    // Not PEM, a key for another certificate, a certificate where a key should be.
    pki.write("garbage.pem", "hello\n");
    let message = error(
        &pki,
        "tls_server_config:\n  cert_file: garbage.pem\n  key_file: server.key\n",
    );
    assert!(
        message.contains("tls_server_config.cert_file") && message.contains("no PEM certificate"),
        "{message}"
    );
    pki.write("other.key", &pki.server("other", 9).key_pem);
    let message = error(
        &pki,
        "tls_server_config:\n  cert_file: server.pem\n  key_file: other.key\n",
    );
    assert!(
        message.starts_with("tls_server_config.key_file") && message.contains("does not belong"),
        "{message}"
    );
    let message = error(
        &pki,
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.pem\n",
    );
    assert!(
        message.starts_with("tls_server_config.key_file") && message.contains("no PEM private key"),
        "{message}"
    );
    assert!(!message.contains("BEGIN"), "{message}");

    pki.write(
        "garbage-der.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let message = error(
        &pki,
        "tls_server_config:\n  cert_file: garbage-der.pem\n  key_file: server.key\n",
    );
    assert!(
        message.starts_with("tls_server_config.cert_file")
            && message.contains("not a usable certificate"),
        "{message}"
    );

    // Half a pair, or both spellings of one.
    let message = error(&pki, "tls_server_config:\n  cert_file: server.pem\n");
    assert!(
        message.starts_with("tls_server_config.key_file: missing"),
        "{message}"
    );
    let message = error(&pki, "tls_server_config:\n  key_file: server.key\n");
    assert!(
        message.starts_with("tls_server_config.cert_file: missing"),
        "{message}"
    );
    let message = error(&pki, &tls(&pki, "cert: inline"));
    assert!(
        message.starts_with("tls_server_config.cert: set tls_server_config.cert or"),
        "{message}"
    );

    // The file itself.
    let message = WebConfig::load(&pki.path("absent.yml"))
        .unwrap_err()
        .to_string();
    assert!(message.starts_with("cannot read the file"), "{message}");
}

#[test]
fn tls_versions() {
    let pki = pki();
    for (extra, expected) in [
        ("min_version: TLS13", "TLS1.3"),
        ("max_version: TLS12", "TLS1.2"),
        ("min_version: TLS12\nmax_version: TLS12", "TLS1.2"),
    ] {
        let config = parse(&pki, &tls(&pki, extra)).unwrap();
        assert_eq!(config.tls().unwrap().versions(), expected, "{extra}");
    }
    for (extra, key) in [
        (
            "min_version: TLS10",
            "min_version: TLS10 is not supported: rustls implements only TLS 1.2 and TLS 1.3",
        ),
        ("min_version: TLS11", "min_version: TLS11 is not supported"),
        ("max_version: TLS11", "max_version: TLS11 is not supported"),
        (
            "min_version: SSL3",
            "min_version: unknown TLS version \"SSL3\"",
        ),
        (
            "min_version: TLS13\nmax_version: TLS12",
            "min_version: TLS13 is above max_version TLS12",
        ),
    ] {
        let message = error(&pki, &tls(&pki, extra));
        assert!(
            message.starts_with(&format!("tls_server_config.{key}")),
            "{message}"
        );
    }
}

#[test]
fn cipher_suites_and_curves() {
    let pki = pki();
    // TLS 1.3 names are accepted and, as in Go, change nothing.
    let config = parse(
        &pki,
        &tls(
            &pki,
            "min_version: TLS13\ncipher_suites: [TLS_AES_256_GCM_SHA384]",
        ),
    );
    assert!(config.is_ok());
    for (extra, expected) in [
        (
            "cipher_suites: [TLS_RSA_WITH_AES_128_GCM_SHA256]",
            "tls_server_config.cipher_suites: TLS_RSA_WITH_AES_128_GCM_SHA256 is not supported: rustls implements no CBC",
        ),
        (
            "cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]",
            "tls_server_config.cipher_suites: TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA is not supported",
        ),
        (
            "cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM]",
            "tls_server_config.cipher_suites: unknown cipher suite \"TLS_ECDHE_RSA_WITH_AES_128_GCM\"",
        ),
        (
            "cipher_suites: [TLS_AES_128_GCM_SHA256]",
            "tls_server_config.cipher_suites: lists no TLS 1.2 suite",
        ),
        (
            "curve_preferences: [CurveP521]",
            "tls_server_config.curve_preferences: CurveP521 is not supported",
        ),
        (
            "curve_preferences: [P256]",
            "tls_server_config.curve_preferences: unknown curve \"P256\"",
        ),
    ] {
        let message = error(&pki, &tls(&pki, extra));
        assert!(message.starts_with(expected), "{message}");
    }
    let message = error(
        &pki,
        &tls(&pki, "cipher_suites: [TLS_RSA_WITH_AES_128_GCM_SHA256]"),
    );
    assert!(
        message.contains("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
        "lists what works: {message}"
    );
}

#[test]
fn client_auth_types() {
    let pki = pki();
    for (policy, ca, expected) in [
        ("NoClientCert", false, "NoClientCert"),
        ("RequestClientCert", false, "RequestClientCert"),
        ("RequireAnyClientCert", true, "RequireAnyClientCert"),
        ("RequireClientCert", false, "RequireAnyClientCert"),
        ("VerifyClientCertIfGiven", true, "VerifyClientCertIfGiven"),
        (
            "RequireAndVerifyClientCert",
            true,
            "RequireAndVerifyClientCert",
        ),
    ] {
        let extra = if ca {
            format!("client_auth_type: {policy}\nclient_ca_file: client-ca.pem")
        } else {
            format!("client_auth_type: {policy}")
        };
        let config = parse(&pki, &tls(&pki, &extra)).unwrap_or_else(|e| panic!("{policy}: {e}"));
        assert_eq!(config.tls().unwrap().client_auth(), expected);
    }
    for (extra, expected) in [
        (
            "client_auth_type: RequireAndVerifyClientCert",
            "tls_server_config.client_ca_file: client_auth_type RequireAndVerifyClientCert verifies client certificates and needs the CA",
        ),
        (
            "client_auth_type: VerifyClientCertIfGiven",
            "tls_server_config.client_ca_file: client_auth_type VerifyClientCertIfGiven",
        ),
        (
            "client_ca_file: client-ca.pem",
            "tls_server_config.client_ca_file: a client CA is set but client_auth_type is NoClientCert",
        ),
        (
            "client_auth_type: VerifyClientCert",
            "tls_server_config.client_auth_type: unknown policy \"VerifyClientCert\"",
        ),
        (
            "client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: client-ca.pem\nclient_allowed_sans: [prometheus]",
            "tls_server_config.client_allowed_sans: a SAN list is not supported",
        ),
        (
            "client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: server.key",
            "tls_server_config.client_ca_file: ",
        ),
    ] {
        let message = error(&pki, &tls(&pki, extra));
        assert!(message.starts_with(expected), "{message}");
    }
}

#[test]
fn tls_settings_without_a_certificate_are_refused() {
    let pki = pki();
    for key in [
        "min_version: TLS13",
        "cipher_suites: [TLS_AES_128_GCM_SHA256]",
        "prefer_server_cipher_suites: true",
    ] {
        let message = error(&pki, &format!("tls_server_config:\n  {key}\n"));
        let name = key.split(':').next().unwrap();
        assert!(
            message.starts_with(&format!(
                "tls_server_config.{name}: set, but no certificate"
            )),
            "{message}"
        );
    }
}

#[test]
fn headers_exporter_toolkit_allows() {
    let pki = pki();
    let message = error(
        &pki,
        "http_server_config:\n  headers:\n    X-Powered-By: rust\n",
    );
    assert!(
        message.starts_with(
            "http_server_config.headers.X-Powered-By: this header cannot be configured"
        ),
        "{message}"
    );
    let message = error(
        &pki,
        "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
    );
    assert!(
        message.starts_with("http_server_config.headers.X-Frame-Options: \"allow\" is not allowed"),
        "{message}"
    );
    let message = error(
        &pki,
        "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
    );
    assert!(
        message.starts_with("http_server_config.headers.X-Content-Type-Options"),
        "{message}"
    );
    // Blank means unset.
    assert!(
        parse(
            &pki,
            "http_server_config:\n  headers:\n    X-Frame-Options: ''\n"
        )
        .is_ok()
    );
}

#[test]
fn rate_limit() {
    let pki = pki();
    assert!(parse(&pki, "rate_limit:\n  interval: 1s\n  burst: 5\n").is_ok());
    let message = error(&pki, "rate_limit:\n  interval: 1s\n");
    assert!(
        message.starts_with("rate_limit.burst: must be at least 1"),
        "{message}"
    );
    let message = error(&pki, "rate_limit:\n  interval: soon\n  burst: 1\n");
    assert!(
        message.starts_with("rate_limit.interval: invalid duration"),
        "{message}"
    );
}

/// Runs the binary with `--web.config.file=PATH`; returns (exit code, the error lines).
fn run_with(path: &Path) -> (i32, Vec<String>) {
    let mut child = support::binary()
        .arg("--web.listen-address=127.0.0.1:0")
        .arg(format!("--web.config.file={}", path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status =
        support::wait_with_timeout(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the exporter kept running with a bad web config");
        });
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        status.code().unwrap(),
        stderr.lines().map(str::to_owned).collect(),
    )
}

#[test]
fn the_binary_exits_2_with_one_line_naming_the_key() {
    let pki = pki();
    for (yaml, expected) in [
        (
            tls(&pki, "min_version: TLS10"),
            "tls_server_config.min_version: TLS10 is not supported",
        ),
        (tls(&pki, "colour: blue"), "unknown field `colour`"),
        (
            "basic_auth_users:\n  alice: hunter2\n".to_owned(),
            "basic_auth_users.alice: not a bcrypt hash",
        ),
        (
            "tls_server_config:\n  cert_file: nowhere.pem\n  key_file: server.key\n".to_owned(),
            "tls_server_config.cert_file: cannot read",
        ),
    ] {
        let path = pki.web_config(&yaml);
        let (code, lines) = run_with(&path);
        assert_eq!(code, 2, "{lines:?}");
        assert_eq!(lines.len(), 1, "one line only: {lines:?}");
        assert!(
            lines[0].starts_with(&format!(
                "enclave-heap-exporter: error: --web.config.file={}: ",
                path.display()
            )) && lines[0].contains(expected),
            "{lines:?}"
        );
        assert!(!lines[0].contains("hunter2"), "{lines:?}");
    }
    let (code, lines) = run_with(&pki.path("absent.yml"));
    assert_eq!(code, 2);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("cannot read the file"), "{lines:?}");
}
