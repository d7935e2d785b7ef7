//! The TLS server configuration shared by SMTP (STARTTLS) and the HTTP intake (`http_tls`):
//! one certificate chain and key (`tls_cert_path`, `tls_key_path`), rustls with the aws-lc-rs
//! provider and its safe default protocol versions. The HTTP intake may also require client
//! certificates signed by a CA of `http_client_ca_path` (mutual TLS; SMTP never does: senders
//! have none). Errors name the key.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::error::IngestError;

/// Loads a PEM certificate chain and private key into a TLS acceptor; with `client_ca`, one
/// that requires a client certificate signed by a CA of that PEM bundle.
pub fn acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<TlsAcceptor, IngestError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            IngestError::Tls(format!(
                "key `ingest.tls_cert_path`: reading {}: {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(IngestError::Tls(format!(
            "key `ingest.tls_cert_path`: no certificate in {}",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        IngestError::Tls(format!(
            "key `ingest.tls_key_path`: reading {}: {e}",
            key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| IngestError::Tls(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| IngestError::Tls(format!("certificate and key do not fit: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Verifies client certificates against the CAs of the PEM bundle at `path`.
fn client_verifier(
    path: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, IngestError> {
    let failed = |what: String| {
        IngestError::Tls(format!(
            "key `ingest.http_client_ca_path`: {}: {what}",
            path.display()
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| failed(e.to_string()))? {
        let cert = cert.map_err(|e| failed(e.to_string()))?;
        roots.add(cert).map_err(|e| failed(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(failed("no CA certificate in it".into()));
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| failed(e.to_string()))
}
