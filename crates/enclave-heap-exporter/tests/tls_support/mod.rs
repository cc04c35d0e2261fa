//! For the web config tests: a throw-away PKI made with rcgen at test time (a CA, server and
//! client certificates, written to a temporary directory), bcrypt hashes, and a blocking HTTPS
//! client on rustls that reports what the server presented.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tempfile::TempDir;

/// bcrypt's lowest cost: these tests check behaviour, not hashing strength, and run unoptimised.
pub const TEST_BCRYPT_COST: u32 = 4;

pub fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, TEST_BCRYPT_COST).unwrap()
}

/// A private CA, and a directory to write certificates and configs into.
pub struct Pki {
    pub dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    pub ca_pem: String,
}

/// A certificate signed by a [`Pki`], with its key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca_pem = ca.pem();
        let pki = Self {
            dir: tempfile::tempdir().unwrap(),
            ca,
            ca_pem,
        };
        pki.write("ca.pem", &pki.ca_pem);
        pki
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self, common_name: &str, serial: u64) -> Issued {
        self.issue(
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            common_name,
            serial,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate.
    pub fn client(&self, common_name: &str) -> Issued {
        self.issue(
            vec![format!("{common_name}.clients.test")],
            common_name,
            7,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn issue(
        &self,
        names: Vec<String>,
        common_name: &str,
        serial: u64,
        usage: ExtendedKeyUsagePurpose,
    ) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `contents` to `name` atomically (a temporary file renamed over it, as Kubernetes
    /// and cert-manager replace files).
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        let temporary = self.path(&format!(".{name}.tmp"));
        std::fs::write(&temporary, contents).unwrap();
        std::fs::rename(&temporary, &path).unwrap();
        path
    }

    /// Writes a server certificate as `server.pem`/`server.key`.
    pub fn install_server(&self, issued: &Issued) {
        self.write("server.pem", &issued.cert_pem);
        self.write("server.key", &issued.key_pem);
    }

    /// Writes `web.yml` and returns its path.
    pub fn web_config(&self, yaml: &str) -> PathBuf {
        self.write("web.yml", yaml)
    }

    /// A client trusting this CA.
    pub fn client_config(&self) -> TlsClient {
        TlsClient::new(&[self], None, None)
    }
}

/// How a test client connects.
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl TlsClient {
    /// Trusts the CAs of `trusted`; presents `identity` when given; limits TLS versions when
    /// `versions` is given.
    pub fn new(
        trusted: &[&Pki],
        identity: Option<&Issued>,
        versions: Option<&[&'static rustls::SupportedProtocolVersion]>,
    ) -> Self {
        let mut roots = RootCertStore::empty();
        for pki in trusted {
            for cert in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions.unwrap_or(rustls::DEFAULT_VERSIONS))
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            Some(issued) => builder
                .with_client_auth_cert(
                    vec![issued.der.clone()],
                    PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self {
            config: Arc::new(config),
        }
    }

    /// One `GET path` with `Connection: close` over a new TLS connection.
    pub fn get(
        &self,
        address: SocketAddr,
        path: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<HttpsResponse, std::io::Error> {
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let connection = rustls::ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut tls = rustls::StreamOwned::new(connection, tcp);
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
        if let Some((user, password)) = credentials {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            head.push_str(&format!("Authorization: Basic {encoded}\r\n"));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes())?;
        let mut raw = Vec::new();
        match tls.read_to_end(&mut raw) {
            Ok(_) => {}
            // A peer that closes without close_notify: keep what arrived.
            Err(error) if error.kind() == ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(error) => return Err(error),
        }
        if raw.is_empty() {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "the server closed the connection without an answer",
            ));
        }
        let server_certificate = tls
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.clone().into_owned());
        let version = tls.conn.protocol_version();
        let alpn = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
        let mut response = parse_response(&raw);
        response.server_certificate = server_certificate;
        response.version = version;
        response.alpn = alpn;
        Ok(response)
    }
}

#[derive(Debug)]
pub struct HttpsResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub server_certificate: Option<CertificateDer<'static>>,
    pub version: Option<rustls::ProtocolVersion>,
    pub alpn: Option<Vec<u8>>,
}

impl HttpsResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

fn parse_response(raw: &[u8]) -> HttpsResponse {
    let crate::support::HttpResponse {
        status,
        headers,
        body,
    } = crate::support::parse_response(raw);
    HttpsResponse {
        status,
        headers,
        body,
        server_certificate: None,
        version: None,
        alpn: None,
    }
}

/// YAML for a TLS web config over `server.pem`/`server.key` in `dir`, plus `extra` lines
/// indented under `tls_server_config` and `rest` at the top level.
pub fn tls_yaml(dir: &Path, extra: &str, rest: &str) -> String {
    let mut yaml = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
        dir.join("server.pem").display(),
        dir.join("server.key").display()
    );
    for line in extra.lines().filter(|line| !line.trim().is_empty()) {
        yaml.push_str("  ");
        yaml.push_str(line.trim_start());
        yaml.push('\n');
    }
    yaml.push_str(rest);
    yaml
}
