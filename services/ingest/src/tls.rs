//! The TLS server configuration shared by SMTP (STARTTLS) and the HTTP intake (`http_tls`):
//! one certificate chain and key (`tls_cert_path`, `tls_key_path`), rustls with the aws-lc-rs
//! provider and its safe default protocol versions. Errors name the key.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::error::IngestError;

/// Loads a PEM certificate chain and private key into a TLS acceptor.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, IngestError> {
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
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| IngestError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| IngestError::Tls(format!("certificate and key do not fit: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
