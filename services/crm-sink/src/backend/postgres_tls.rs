//! How the PostgreSQL backend secures its connections: TLS with rustls, chosen by libpq's
//! `sslmode` in `database_url` (`?sslmode=verify-full`), trusting `database_ca_file` (or
//! `sslrootcert=FILE` in the URL, libpq's name for it; one of the two).
//!
//! | `sslmode` | TLS | the server's certificate chain is checked against | host name checked |
//! |---|---|---|---|
//! | `disable` | never | - | - |
//! | `prefer` (the default) | whenever the server offers it; plain only from a server without TLS | nothing: encryption against eavesdropping, not against an impostor | no |
//! | `require` | always: a server without TLS is refused | the CA file when one is set (libpq's rule), else nothing | no |
//! | `verify-ca` | always | the CA file, else the system's trusted roots | no |
//! | `verify-full` | always | the CA file, else the system's trusted roots | yes: the URL's host, a DNS name or an IP address, must be in the certificate's subject alternative names |
//!
//! So the password never travels in cleartext to a server that offers TLS, and `verify-full`
//! with the CRM database's CA is the setting for production. The key exchange's signatures are
//! verified in every mode (rustls, aws-lc-rs provider, TLS 1.2 and 1.3). tokio-postgres does not
//! know `verify-ca`, `verify-full` or `sslrootcert`: [`Target::parse`] takes them out of the URL
//! and hands it the rest. Client certificates (`sslcert`, `sslkey`) are not supported.
//!
//! What a failure to connect means ([`is_tls_fault`]; `postgres_sql::classify` turns it into a
//! [`Failure`](crate::error::Failure)):
//!
//! | failure | example | kind |
//! |---|---|---|
//! | the TLS handshake refused by either side | unknown issuer (a wrong CA file), an expired certificate, a certificate for another host, no common protocol version, an alert from the server | `Tls`: a configuration fault. At start-up, start-up fails; later, the sink is blocked (`crm_sink_blocked{cause="tls"}`, an ERROR naming `database_ca_file` and `database_url`); never retried in place, never dead-lettered |
//! | tokio-postgres refuses to go on without TLS | `server does not support TLS` under `require` or `verify-*` | `Tls`, as above |
//! | the network fails during the handshake | a reset, an early end of stream | outage: the batch is retried after the runtime's backoff |
//!
//! Every error keeps its causes: [`error_chain`] writes the whole `source()` chain into the
//! reason (tokio-postgres alone says only "error performing TLS handshake").

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mailstream_runtime::config::Secret;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The sink's default `application_name` (a URL's own `application_name` wins).
pub const APPLICATION_NAME: &str = "mailstream-crm-sink";

/// tokio-postgres's text for every TLS failure (its `Kind::Tls`); the cause says which.
const TLS_KIND: &str = "error performing TLS handshake";

/// A problem with a setting: the key (of the sink's settings) and what is wrong.
pub type SettingError = (&'static str, String);

/// libpq's `sslmode` (see the module doc's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub const NAMES: &'static str = "disable, prefer, require, verify-ca, verify-full";

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether TLS may be skipped (it verifies nothing itself).
    fn wire(self) -> tokio_postgres::config::SslMode {
        match self {
            Self::Disable => tokio_postgres::config::SslMode::Disable,
            Self::Prefer => tokio_postgres::config::SslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// Where the sink connects and how: the URL without the parameters read here, the mode and
/// the CA file. Its `Debug` does not show the URL (it may hold a password).
#[derive(Debug, Clone)]
pub struct Target {
    url: Secret,
    pub mode: SslMode,
    pub ca_file: Option<PathBuf>,
    /// The key the CA file came from (`database_ca_file`, or `database_url` for `sslrootcert`).
    pub ca_key: &'static str,
}

impl Target {
    /// Reads `sslmode` and `sslrootcert` out of `url` (a `postgres://` URL) and takes the CA
    /// file from `ca_file` (the `database_ca_file` setting). Errors never quote the URL.
    pub fn parse(url: &str, ca_file: Option<&str>) -> Result<Self, SettingError> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut mode = None;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = || {
                percent_encoding::percent_decode_str(value)
                    .decode_utf8()
                    .map(|v| v.into_owned())
                    .map_err(|e| {
                        (
                            "database_url",
                            format!("the value of `{key}` is not UTF-8 once decoded: {e}"),
                        )
                    })
            };
            match key {
                "sslmode" => {
                    let value = decoded()?;
                    mode = Some(SslMode::parse(&value).ok_or_else(|| {
                        (
                            "database_url",
                            format!("sslmode `{value}` is not one of {}", SslMode::NAMES),
                        )
                    })?);
                }
                "sslrootcert" => root_cert = Some(decoded()?),
                _ => kept.push(pair),
            }
        }
        let setting = ca_file.map(str::trim).filter(|f| !f.is_empty());
        let (ca_file, ca_key) = match (setting, root_cert) {
            (Some(_), Some(_)) => {
                return Err((
                    "database_ca_file",
                    "is set and database_url has an sslrootcert too: keep one of them".into(),
                ));
            }
            (Some(file), None) => (Some(PathBuf::from(file)), "database_ca_file"),
            (None, Some(file)) => (Some(PathBuf::from(file)), "database_url"),
            (None, None) => (None, "database_ca_file"),
        };
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok(Self {
            url: Secret::new(url),
            mode: mode.unwrap_or_default(),
            ca_file,
            ca_key,
        })
    }

    /// tokio-postgres's configuration: the URL's, with the TLS mode set and our
    /// `application_name` unless the URL names one.
    pub fn config(&self) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
        let mut config: tokio_postgres::Config = self.url.expose().parse()?;
        config.ssl_mode(self.mode.wire());
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        Ok(config)
    }
}

/// The PEM certificates of a CA file (one or more `-----BEGIN CERTIFICATE-----` blocks).
pub fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{}` is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "`{}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// How connections are made: plain (`sslmode=disable`) or with rustls.
#[derive(Clone)]
pub enum Connector {
    Plain,
    Tls(MakeRustlsConnect),
}

impl Connector {
    /// The connector `target` asks for; loads the CA file (or the system's roots for
    /// `verify-*` without one). Every error names its key.
    pub fn new(target: &Target) -> Result<Self, SettingError> {
        if target.mode == SslMode::Disable {
            return Ok(Self::Plain);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let verifier: Arc<dyn ServerCertVerifier> = match (target.mode, &target.ca_file) {
            (SslMode::Prefer, _) | (SslMode::Require, None) => Arc::new(EncryptOnly(algorithms)),
            (mode, ca_file) => {
                let roots = roots(ca_file.as_deref(), target.ca_key, mode)?;
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| {
                            (target.ca_key, format!("cannot verify with these CAs: {e}"))
                        })?;
                if mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ("database_url", format!("no TLS protocol version: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self::Tls(MakeRustlsConnect::new(config)))
    }
}

/// The trust anchors: the CA file's certificates, else the system's.
fn roots(
    ca_file: Option<&Path>,
    key: &'static str,
    mode: SslMode,
) -> Result<RootCertStore, SettingError> {
    let mut roots = RootCertStore::empty();
    let (certs, from) = match ca_file {
        Some(path) => (
            load_ca(path).map_err(|e| (key, e))?,
            format!("`{}`", path.display()),
        ),
        None => {
            let found = rustls_native_certs::load_native_certs();
            (found.certs, "the system's trusted roots".to_string())
        }
    };
    let total = certs.len();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err((
            key,
            format!(
                "sslmode {} needs a CA to verify the server against, and none of the {total} \
                 certificates in {from} is usable: set key database_ca_file to the CA's PEM file",
                mode.name()
            ),
        ));
    }
    Ok(roots)
}

/// `prefer`, and `require` without a CA file: any certificate, but the handshake's signatures
/// are checked (the session is encrypted to whoever holds the certificate's key).
#[derive(Debug)]
struct EncryptOnly(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca` (and `require` with a CA file): the chain must lead to a trusted CA, for any
/// host name. WebPKI checks the chain before the name, so a name error means the chain passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// An error and its causes, `: `-separated (a cause whose text its parent already shows is
/// not repeated).
pub fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let part = e.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = e.source();
    }
    text
}

/// True when `e` is a TLS failure no retry can change (see the module doc's table): the
/// handshake was refused by rustls or the server, or tokio-postgres would not go on without
/// TLS. An I/O error during the handshake is not one (the network failed).
pub fn is_tls_fault(e: &tokio_postgres::Error) -> bool {
    if e.to_string() != TLS_KIND {
        return false;
    }
    match e.source() {
        Some(cause) => match cause.downcast_ref::<std::io::Error>() {
            // tokio-rustls wraps rustls's verdict in an io::Error (InvalidData).
            Some(io) => io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>()),
            // tokio-postgres's own refusals ("server does not support TLS", no host name).
            None => true,
        },
        None => true,
    }
}

#[cfg(test)]
#[path = "postgres_tls_tests.rs"]
mod tests;
