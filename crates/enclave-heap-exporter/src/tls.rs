//! TLS for the exporter's listeners: `tls_server_config` from the web config turned into a
//! rustls `ServerConfig` (ring provider), and the certificate resolver that picks up rotated
//! certificate files without a restart.
//!
//! How exporter-toolkit's settings map onto rustls:
//! - `min_version`/`max_version`: `TLS12` and `TLS13`. rustls implements neither TLS 1.0 nor
//!   1.1, so `TLS10`/`TLS11` are refused at start.
//! - `cipher_suites` (Go's names): as in Go, they restrict TLS 1.2 only; the three TLS 1.3
//!   suites are always on, and naming them is accepted. rustls has no CBC suites and no RSA key
//!   exchange: naming one of those is refused at start.
//! - `prefer_server_cipher_suites` (default true): rustls' `ignore_client_order`.
//! - `curve_preferences`: `X25519`, `CurveP256`, `CurveP384`, in the order given. The ring
//!   provider has no P-521, so `CurveP521` is refused.
//! - `client_auth_type`: all five Go policies are honoured exactly. The two that verify
//!   (`VerifyClientCertIfGiven`, `RequireAndVerifyClientCert`) use rustls' WebPKI verifier
//!   and need `client_ca_file`/`client_ca`; the two that do not (`RequestClientCert`,
//!   `RequireAnyClientCert`) still check that the client holds the certificate's key, as Go
//!   does, but accept any certificate: they authenticate nobody.
//! - `client_allowed_sans` is refused (not implemented; use a client CA that signs only the
//!   allowed clients).
//! - ALPN offers `http/1.1` only: this server does not speak HTTP/2.
//!
//! Rotation: the resolver looks at the certificate and key files' metadata (device, inode,
//! size, modification and change times) on a handshake, at most once per
//! [`CERT_CHECK_INTERVAL`]; when they changed it re-reads both, and a pair that does not load
//! or does not match leaves the old certificate in place and is logged once. There is no
//! timer: an idle exporter does nothing. A Kubernetes Secret volume swaps a symlink, which
//! changes the inode, so cert-manager's rotation is seen on the next connection. The client CA
//! and the rest of the web config are read once, at start.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use enclave_heap_host::http_server::Listener;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CipherSuite, DigitallySignedStruct, DistinguishedName, NamedGroup, RootCertStore, ServerConfig,
    SignatureScheme, SupportedCipherSuite, SupportedProtocolVersion,
};
use tokio::net::TcpListener;

use crate::web_config::{RawTlsServerConfig, WebConfigError};

/// How often, at most, a handshake checks whether the certificate files changed.
pub const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a client may take to complete the TLS handshake (the header read timeout starts
/// after it), so a client that never finishes cannot hold a connection.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS side of the web config: the rustls configuration every listener shares.
#[derive(Clone)]
pub struct TlsServer {
    config: Arc<ServerConfig>,
    summary: Arc<TlsSummary>,
}

/// What is switched on, for the start-up log and `Debug` (never a key).
#[derive(Debug)]
struct TlsSummary {
    versions: &'static str,
    client_auth: String,
    certificate: String,
}

impl TlsServer {
    /// Judges `tls_server_config`; `Ok(None)` when it configures no certificate (plain HTTP).
    pub(crate) fn from_raw(
        raw: &RawTlsServerConfig,
        base_dir: &Path,
    ) -> Result<Option<Self>, WebConfigError> {
        let enabling = [
            &raw.cert,
            &raw.key,
            &raw.client_ca,
            &raw.cert_file,
            &raw.key_file,
            &raw.client_ca_file,
            &raw.client_auth_type,
        ];
        if !enabling.iter().any(|value| set(value).is_some()) {
            // exporter-toolkit would quietly serve plain HTTP; a TLS setting without a
            // certificate is more likely a mistake than a wish.
            let stray = [
                ("min_version", set(&raw.min_version).is_some()),
                ("max_version", set(&raw.max_version).is_some()),
                ("cipher_suites", listed(&raw.cipher_suites)),
                ("curve_preferences", listed(&raw.curve_preferences)),
                (
                    "prefer_server_cipher_suites",
                    raw.prefer_server_cipher_suites.is_some(),
                ),
                ("client_allowed_sans", listed(&raw.client_allowed_sans)),
            ];
            if let Some((key, _)) = stray.iter().find(|(_, given)| *given) {
                return Err(WebConfigError::invalid(
                    format!("tls_server_config.{key}"),
                    "set, but no certificate is configured: add cert_file and key_file to serve \
                     TLS, or remove it",
                ));
            }
            return Ok(None);
        }
        if raw
            .client_allowed_sans
            .as_ref()
            .is_some_and(|sans| !sans.is_empty())
        {
            return Err(WebConfigError::unsupported(
                "tls_server_config.client_allowed_sans",
                "a SAN list",
                "this exporter does not implement SAN matching; sign the allowed clients' \
                 certificates with a dedicated CA and set it as client_ca_file",
            ));
        }

        let cert = PemSource::pick(
            ("tls_server_config.cert", &raw.cert),
            ("tls_server_config.cert_file", &raw.cert_file),
            base_dir,
            "TLS needs a certificate",
        )?;
        let key = PemSource::pick(
            ("tls_server_config.key", &raw.key),
            ("tls_server_config.key_file", &raw.key_file),
            base_dir,
            "TLS needs the certificate's private key",
        )?;

        let min = tls_version("tls_server_config.min_version", &raw.min_version, 12)?;
        let max = tls_version("tls_server_config.max_version", &raw.max_version, 13)?;
        if min > max {
            return Err(WebConfigError::invalid(
                "tls_server_config.min_version",
                format!("TLS1{} is above max_version TLS1{}", min - 10, max - 10),
            ));
        }
        let versions: Vec<&'static SupportedProtocolVersion> =
            [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
                .into_iter()
                .filter(|(number, _)| (min..=max).contains(number))
                .map(|(_, version)| version)
                .collect();

        let mut provider = rustls::crypto::ring::default_provider();
        // An empty list means the defaults, as in Go.
        if let Some(names) = raw.cipher_suites.as_ref().filter(|n| !n.is_empty()) {
            provider.cipher_suites = cipher_suites(names, &provider.cipher_suites, min)?;
        }
        if let Some(names) = raw.curve_preferences.as_ref().filter(|n| !n.is_empty()) {
            provider.kx_groups = kx_groups(names, &provider.kx_groups)?;
        }
        let provider = Arc::new(provider);

        let (verifier, client_auth) = client_verifier(raw, base_dir, &provider)?;

        let resolver = ReloadingCertResolver::new(cert, key, Arc::clone(&provider))?;
        let certificate = resolver.describe();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&versions)
            .map_err(|error| {
                WebConfigError::invalid(
                    "tls_server_config.cipher_suites",
                    format!("no cipher suite is left for the allowed TLS versions: {error}"),
                )
            })?;
        let builder = match verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.ignore_client_order = raw.prefer_server_cipher_suites.unwrap_or(true);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Self {
            config: Arc::new(config),
            summary: Arc::new(TlsSummary {
                versions: match (min, max) {
                    (12, 12) => "TLS1.2",
                    (13, 13) => "TLS1.3",
                    _ => "TLS1.2-TLS1.3",
                },
                client_auth,
                certificate,
            }),
        }))
    }

    /// The rustls configuration (shared by every listener).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// Wraps a TCP listener so every connection completes a TLS handshake (within
    /// [`HANDSHAKE_TIMEOUT`]) before HTTP is spoken on it.
    pub fn listener(&self, listener: TcpListener) -> Listener {
        Listener::Tls {
            listener,
            config: self.server_config(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }

    /// The allowed TLS versions, e.g. `TLS1.2-TLS1.3`.
    pub fn versions(&self) -> &'static str {
        self.summary.versions
    }

    /// The client certificate policy, as exporter-toolkit names it.
    pub fn client_auth(&self) -> &str {
        &self.summary.client_auth
    }

    /// True when clients may connect with a certificate nobody verified
    /// (`RequestClientCert`, `RequireAnyClientCert`): worth a warning in the log.
    pub fn accepts_unverified_client_certs(&self) -> bool {
        matches!(
            self.client_auth(),
            "RequestClientCert" | "RequireAnyClientCert"
        )
    }

    /// Where the certificate comes from: the files (re-read on change) or inline.
    pub fn certificate_source(&self) -> &str {
        &self.summary.certificate
    }
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("versions", &self.summary.versions)
            .field("client_auth", &self.summary.client_auth)
            .field("certificate", &self.summary.certificate)
            .finish_non_exhaustive()
    }
}

/// `Some` for a value that is set and not empty (exporter-toolkit treats `""` as unset).
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|value| !value.is_empty())
}

/// True for a list that is given and not empty.
fn listed(list: &Option<Vec<String>>) -> bool {
    list.as_ref().is_some_and(|list| !list.is_empty())
}

fn tls_version(
    key: &'static str,
    value: &Option<String>,
    default: u8,
) -> Result<u8, WebConfigError> {
    match set(value) {
        None => Ok(default),
        Some("TLS12") => Ok(12),
        Some("TLS13") => Ok(13),
        Some(old @ ("TLS10" | "TLS11")) => Err(WebConfigError::unsupported(
            key,
            old,
            "rustls implements only TLS 1.2 and TLS 1.3; use TLS12 or TLS13",
        )),
        Some(other) => Err(WebConfigError::invalid(
            key,
            format!("unknown TLS version {other:?}; expected TLS12 or TLS13"),
        )),
    }
}

/// Go's cipher suite names (`tls.CipherSuites()` and `tls.InsecureCipherSuites()`) and the
/// rustls suite each is, where rustls has it.
const GO_CIPHER_SUITES: [(&str, Option<CipherSuite>); 25] = [
    (
        "TLS_AES_128_GCM_SHA256",
        Some(CipherSuite::TLS13_AES_128_GCM_SHA256),
    ),
    (
        "TLS_AES_256_GCM_SHA384",
        Some(CipherSuite::TLS13_AES_256_GCM_SHA384),
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        Some(CipherSuite::TLS13_CHACHA20_POLY1305_SHA256),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        Some(CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        Some(CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        Some(CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
    ),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", None),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", None),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", None),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", None),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", None),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", None),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", None),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", None),
    ("TLS_RSA_WITH_RC4_128_SHA", None),
    ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", None),
    ("TLS_RSA_WITH_AES_128_CBC_SHA256", None),
    ("TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", None),
    ("TLS_ECDHE_RSA_WITH_RC4_128_SHA", None),
    ("TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", None),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", None),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", None),
];

/// The provider's suites restricted as Go restricts them: the listed TLS 1.2 suites in the
/// order given (the server's preference), every TLS 1.3 suite.
fn cipher_suites(
    names: &[String],
    available: &[SupportedCipherSuite],
    min_version: u8,
) -> Result<Vec<SupportedCipherSuite>, WebConfigError> {
    const KEY: &str = "tls_server_config.cipher_suites";
    let mut chosen: Vec<SupportedCipherSuite> = available
        .iter()
        .filter(|suite| suite.tls13().is_some())
        .copied()
        .collect();
    let mut tls12 = 0;
    for name in names {
        let Some((_, mapped)) = GO_CIPHER_SUITES.iter().find(|(go, _)| go == name) else {
            return Err(WebConfigError::invalid(
                KEY,
                format!(
                    "unknown cipher suite {name:?}; write Go's names, e.g. \
                     TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
                ),
            ));
        };
        let supported = mapped.and_then(|id| available.iter().find(|suite| suite.suite() == id));
        let Some(suite) = supported else {
            return Err(WebConfigError::unsupported(
                KEY,
                name.as_str(),
                format!(
                    "rustls implements no CBC, RC4, 3DES or RSA-key-exchange suites; it offers {}",
                    supported_names(available).join(", ")
                ),
            ));
        };
        if suite.tls13().is_some() {
            // Go ignores TLS 1.3 names here (TLS 1.3 suites are not configurable); so do we.
            continue;
        }
        if !chosen.contains(suite) {
            chosen.push(*suite);
            tls12 += 1;
        }
    }
    if tls12 == 0 && min_version <= 12 {
        return Err(WebConfigError::invalid(
            KEY,
            "lists no TLS 1.2 suite, so no TLS 1.2 client could connect (cipher_suites applies \
             to TLS 1.2 only); list one, or set min_version: TLS13",
        ));
    }
    Ok(chosen)
}

fn supported_names(available: &[SupportedCipherSuite]) -> Vec<&'static str> {
    GO_CIPHER_SUITES
        .iter()
        .filter(|(_, mapped)| {
            mapped.is_some_and(|id| available.iter().any(|suite| suite.suite() == id))
        })
        .map(|(name, _)| *name)
        .collect()
}

fn kx_groups(
    names: &[String],
    available: &[&'static dyn SupportedKxGroup],
) -> Result<Vec<&'static dyn SupportedKxGroup>, WebConfigError> {
    const KEY: &str = "tls_server_config.curve_preferences";
    let mut chosen: Vec<&'static dyn SupportedKxGroup> = Vec::with_capacity(names.len());
    for name in names {
        let group = match name.as_str() {
            "X25519" => NamedGroup::X25519,
            "CurveP256" => NamedGroup::secp256r1,
            "CurveP384" => NamedGroup::secp384r1,
            "CurveP521" | "X25519MLKEM768" => {
                return Err(WebConfigError::unsupported(
                    KEY,
                    name.as_str(),
                    "the rustls ring provider offers X25519, CurveP256 and CurveP384 only",
                ));
            }
            _ => {
                return Err(WebConfigError::invalid(
                    KEY,
                    format!("unknown curve {name:?}; expected X25519, CurveP256 or CurveP384"),
                ));
            }
        };
        let Some(found) = available.iter().find(|kx| kx.name() == group) else {
            return Err(WebConfigError::unsupported(
                KEY,
                name.as_str(),
                "the rustls provider in this build does not offer it",
            ));
        };
        if !chosen.iter().any(|kx| kx.name() == group) {
            chosen.push(*found);
        }
    }
    Ok(chosen)
}

type Verifier = Option<Arc<dyn ClientCertVerifier>>;

fn client_verifier(
    raw: &RawTlsServerConfig,
    base_dir: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<(Verifier, String), WebConfigError> {
    let roots = match (set(&raw.client_ca_file), set(&raw.client_ca)) {
        (Some(_), Some(_)) => {
            return Err(WebConfigError::invalid(
                "tls_server_config.client_ca",
                "set client_ca or client_ca_file, not both",
            ));
        }
        (Some(file), None) => {
            let source = PemSource::File {
                key: "tls_server_config.client_ca_file",
                path: resolve(base_dir, file),
            };
            Some(root_store(&source)?)
        }
        (None, Some(text)) => Some(root_store(&PemSource::Inline {
            key: "tls_server_config.client_ca",
            text: text.to_owned(),
        })?),
        (None, None) => None,
    };
    let ca_key = if set(&raw.client_ca).is_some() {
        "tls_server_config.client_ca"
    } else {
        "tls_server_config.client_ca_file"
    };
    let policy = set(&raw.client_auth_type).unwrap_or("NoClientCert");
    let verified = |allow_unauthenticated: bool| -> Result<Verifier, WebConfigError> {
        let Some(roots) = roots.clone() else {
            return Err(WebConfigError::invalid(
                "tls_server_config.client_ca_file",
                format!(
                    "client_auth_type {policy} verifies client certificates and needs the CA \
                     that signs them (client_ca_file or client_ca)"
                ),
            ));
        };
        let mut builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
        if allow_unauthenticated {
            builder = builder.allow_unauthenticated();
        }
        builder
            .build()
            .map(Some)
            .map_err(|error| WebConfigError::invalid(ca_key, error.to_string()))
    };
    let unverified = |mandatory: bool| -> Verifier {
        let hints = roots
            .as_ref()
            .map(RootCertStore::subjects)
            .unwrap_or_default();
        Some(Arc::new(AnyClientCert {
            mandatory,
            hints,
            provider: Arc::clone(provider),
        }))
    };
    let verifier = match policy {
        "NoClientCert" => {
            if roots.is_some() {
                return Err(WebConfigError::invalid(
                    ca_key,
                    "a client CA is set but client_auth_type is NoClientCert; set \
                     client_auth_type: RequireAndVerifyClientCert, or remove the CA",
                ));
            }
            None
        }
        "RequestClientCert" => unverified(false),
        // RequireClientCert is the old name exporter-toolkit still accepts.
        "RequireAnyClientCert" | "RequireClientCert" => unverified(true),
        "VerifyClientCertIfGiven" => verified(true)?,
        "RequireAndVerifyClientCert" => verified(false)?,
        other => {
            return Err(WebConfigError::invalid(
                "tls_server_config.client_auth_type",
                format!(
                    "unknown policy {other:?}; expected NoClientCert, RequestClientCert, \
                     RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
                ),
            ));
        }
    };
    let name = if policy == "RequireClientCert" {
        "RequireAnyClientCert"
    } else {
        policy
    };
    Ok((verifier, name.to_owned()))
}

fn root_store(source: &PemSource) -> Result<RootCertStore, WebConfigError> {
    let pem = source.read()?;
    let mut roots = RootCertStore::empty();
    for (index, certificate) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let certificate = certificate.map_err(|error| {
            WebConfigError::invalid(source.key(), format!("{}: not PEM: {error}", source.name()))
        })?;
        roots.add(certificate).map_err(|error| {
            WebConfigError::invalid(
                source.key(),
                format!(
                    "{}: certificate {} cannot be a trust anchor: {error}",
                    source.name(),
                    index + 1
                ),
            )
        })?;
    }
    if roots.is_empty() {
        return Err(WebConfigError::invalid(
            source.key(),
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                source.name()
            ),
        ));
    }
    Ok(roots)
}

/// `RequestClientCert` and `RequireAnyClientCert`: ask for a certificate (optionally or
/// always) and check the client holds its key, but trust any certificate, as Go does.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn resolve(base_dir: &Path, file: &str) -> PathBuf {
    let path = Path::new(file);
    if path.is_absolute() {
        path.to_owned()
    } else {
        base_dir.join(path)
    }
}

/// Where a PEM blob comes from: a file (watched for rotation) or the web config itself.
#[derive(Clone)]
enum PemSource {
    File { key: &'static str, path: PathBuf },
    Inline { key: &'static str, text: String },
}

impl PemSource {
    /// The one of `inline` and `file` that is set.
    fn pick(
        inline: (&'static str, &Option<String>),
        file: (&'static str, &Option<String>),
        base_dir: &Path,
        purpose: &str,
    ) -> Result<Self, WebConfigError> {
        match (set(inline.1), set(file.1)) {
            (Some(_), Some(_)) => Err(WebConfigError::invalid(
                inline.0,
                format!("set {} or {}, not both", inline.0, file.0),
            )),
            (Some(text), None) => Ok(Self::Inline {
                key: inline.0,
                text: text.to_owned(),
            }),
            (None, Some(path)) => Ok(Self::File {
                key: file.0,
                path: resolve(base_dir, path),
            }),
            (None, None) => Err(WebConfigError::invalid(
                file.0,
                format!("missing: {purpose} (set {} or {})", file.0, inline.0),
            )),
        }
    }

    fn key(&self) -> &'static str {
        match self {
            Self::File { key, .. } | Self::Inline { key, .. } => key,
        }
    }

    /// How the source is named in messages: its path, or "the inline value".
    fn name(&self) -> String {
        match self {
            Self::File { path, .. } => path.display().to_string(),
            Self::Inline { .. } => "the inline value".to_owned(),
        }
    }

    fn read(&self) -> Result<Vec<u8>, WebConfigError> {
        match self {
            Self::File { key, path } => {
                std::fs::read(path).map_err(|source| WebConfigError::File {
                    key,
                    path: path.clone(),
                    source,
                })
            }
            Self::Inline { text, .. } => Ok(text.as_bytes().to_vec()),
        }
    }

    /// The file's identity and version; `None` for an inline value, which never changes.
    fn stamp(&self) -> std::io::Result<Option<FileStamp>> {
        use std::os::unix::fs::MetadataExt as _;
        match self {
            Self::File { path, .. } => {
                // metadata() follows symlinks: a Kubernetes Secret volume's swap of its
                // `..data` link shows up as a new inode.
                let meta = std::fs::metadata(path)?;
                Ok(Some(FileStamp {
                    device: meta.dev(),
                    inode: meta.ino(),
                    len: meta.size(),
                    modified: (meta.mtime(), meta.mtime_nsec()),
                    changed: (meta.ctime(), meta.ctime_nsec()),
                }))
            }
            Self::Inline { .. } => Ok(None),
        }
    }
}

impl fmt::Debug for PemSource {
    // The inline text may be a private key: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { key, path } => write!(f, "{key}={}", path.display()),
            Self::Inline { key, .. } => write!(f, "{key}=<inline>"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    device: u64,
    inode: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

type Stamps = (Option<FileStamp>, Option<FileStamp>);

/// Serves the certificate from its files, re-reading them when they change (checked lazily on
/// handshakes, at most once per `check_interval`).
struct ReloadingCertResolver {
    cert: PemSource,
    key: PemSource,
    provider: Arc<CryptoProvider>,
    check_interval: Duration,
    state: Mutex<ResolverState>,
}

struct ResolverState {
    current: Arc<CertifiedKey>,
    /// The stamps of the files `current` was read from.
    loaded: Stamps,
    checked: Instant,
    /// Stamps of a changed pair that did not load: logged once, not retried until they change.
    rejected: Option<Stamps>,
    /// The files could not even be looked at last time (logged once until that changes).
    unreadable: bool,
}

impl ReloadingCertResolver {
    fn new(
        cert: PemSource,
        key: PemSource,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, WebConfigError> {
        let loaded = stamps(&cert, &key).map_err(|(source, error)| WebConfigError::File {
            key: source.key(),
            path: PathBuf::from(source.name()),
            source: error,
        })?;
        let current = Arc::new(load_certified_key(&cert, &key, &provider)?);
        Ok(Self {
            cert,
            key,
            provider,
            check_interval: CERT_CHECK_INTERVAL,
            state: Mutex::new(ResolverState {
                current,
                loaded,
                checked: Instant::now(),
                rejected: None,
                unreadable: false,
            }),
        })
    }

    fn watches_files(&self) -> bool {
        matches!(self.cert, PemSource::File { .. }) || matches!(self.key, PemSource::File { .. })
    }

    fn describe(&self) -> String {
        if self.watches_files() {
            format!(
                "{} and {}, re-read when they change",
                self.cert.name(),
                self.key.name()
            )
        } else {
            "inline".to_owned()
        }
    }

    /// Looks at the files and swaps in a changed pair if it loads.
    fn check(&self, state: &mut ResolverState) {
        let now = match stamps(&self.cert, &self.key) {
            Ok(now) => now,
            Err((source, error)) => {
                if !state.unreadable {
                    tracing::warn!(
                        key = source.key(),
                        file = %source.name(),
                        %error,
                        "cannot look at the TLS certificate files; still serving the certificate loaded before"
                    );
                    state.unreadable = true;
                }
                return;
            }
        };
        state.unreadable = false;
        if now == state.loaded || state.rejected == Some(now) {
            return;
        }
        match load_certified_key(&self.cert, &self.key, &self.provider) {
            Ok(key) => {
                state.current = Arc::new(key);
                state.loaded = now;
                state.rejected = None;
                tracing::info!(
                    cert_file = %self.cert.name(),
                    "TLS certificate changed on disk; new connections use the new one"
                );
            }
            Err(error) => {
                state.rejected = Some(now);
                tracing::warn!(
                    %error,
                    "the changed TLS certificate or key cannot be used; still serving the certificate loaded before"
                );
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A panic elsewhere cannot leave the state half-updated (every field is replaced
        // whole), so a poisoned lock is still usable.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if self.watches_files() && state.checked.elapsed() >= self.check_interval {
            state.checked = Instant::now();
            self.check(&mut state);
        }
        Some(Arc::clone(&state.current))
    }
}

impl fmt::Debug for ReloadingCertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCertResolver")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("check_interval", &self.check_interval)
            .finish_non_exhaustive()
    }
}

fn stamps<'a>(
    cert: &'a PemSource,
    key: &'a PemSource,
) -> Result<Stamps, (&'a PemSource, std::io::Error)> {
    let cert_stamp = cert.stamp().map_err(|error| (cert, error))?;
    let key_stamp = key.stamp().map_err(|error| (key, error))?;
    Ok((cert_stamp, key_stamp))
}

/// Reads and checks a certificate chain and its key. Messages name the key and the file,
/// never the key material.
fn load_certified_key(
    cert: &PemSource,
    key: &PemSource,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, WebConfigError> {
    let cert_pem = cert.read()?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            WebConfigError::invalid(cert.key(), format!("{}: not PEM: {error}", cert.name()))
        })?;
    if chain.is_empty() {
        return Err(WebConfigError::invalid(
            cert.key(),
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                cert.name()
            ),
        ));
    }
    // PEM that decodes to garbage must not be served: parse the end-entity certificate.
    rustls::server::ParsedCertificate::try_from(&chain[0]).map_err(|error| {
        WebConfigError::invalid(
            cert.key(),
            format!("{}: not a usable certificate: {error}", cert.name()),
        )
    })?;
    let key_pem = key.read()?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        WebConfigError::invalid(
            key.key(),
            format!(
                "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                key.name()
            ),
        )
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(|error| {
            WebConfigError::invalid(
                key.key(),
                format!("{}: unusable private key: {error}", key.name()),
            )
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(WebConfigError::invalid(
                key.key(),
                format!(
                    "{} does not belong to the certificate in {}",
                    key.name(),
                    cert.name()
                ),
            ))
        }
        // Unknown: this key type cannot tell; the handshake will.
        _ => Ok(certified),
    }
}
