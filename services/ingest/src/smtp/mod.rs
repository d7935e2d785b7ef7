//! The SMTP receiver: accepts connections, runs one [`session::Session`] per connection and
//! upgrades to TLS on STARTTLS when a certificate is configured (rustls, aws-lc-rs provider).
//!
//! Shutdown: on SIGTERM the listener closes at once; sessions waiting for a command are told
//! `421 4.3.2` and closed; sessions in the middle of DATA (or of the durable write) finish,
//! within `shutdown_grace_secs`, after which they are dropped (their clients retry).

mod session;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mailstream_runtime::Shutdown;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::IngestSettings;
use crate::error::IngestError;
use crate::events;
use crate::publisher::Publisher;
use session::{Next, Session};

/// Connections served at once; more get `421` and are closed.
const MAX_SESSIONS: usize = 1000;

/// Everything a session needs, shared by all sessions.
pub(crate) struct SmtpContext {
    pub publisher: Arc<Publisher>,
    /// Accepted recipient domains, lowercased.
    pub domains: Vec<String>,
    pub hostname: String,
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    pub timeout: Duration,
    pub tls: Option<TlsAcceptor>,
}

impl SmtpContext {
    pub(crate) fn new(
        settings: &IngestSettings,
        publisher: Arc<Publisher>,
    ) -> Result<Self, IngestError> {
        let tls = match (&settings.tls_cert_path, &settings.tls_key_path) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        Ok(Self {
            publisher,
            domains: settings.domains(),
            hostname: settings.hostname.clone(),
            max_message_bytes: usize::try_from(settings.max_message_bytes).unwrap_or(usize::MAX),
            max_recipients: settings.max_recipients as usize,
            timeout: Duration::from_secs(settings.smtp_timeout_secs),
            tls,
        })
    }
}

/// Loads a PEM certificate chain and private key into a TLS acceptor.
fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, IngestError> {
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

/// Serves SMTP on `listener` until `shutdown`, then lets open sessions finish within `grace`.
pub(crate) async fn serve(
    listener: TcpListener,
    ctx: Arc<SmtpContext>,
    shutdown: Shutdown,
    grace: Duration,
) {
    let mut sessions = JoinSet::new();
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            _ = stop.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok((mut stream, peer)) => {
                    if sessions.len() >= MAX_SESSIONS {
                        let _ = stream
                            .write_all(b"421 4.3.2 Too many connections, try again later\r\n")
                            .await;
                        continue;
                    }
                    sessions.spawn(handle(stream, peer, ctx.clone(), shutdown.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an SMTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    drop(listener);
    let open = sessions.len();
    if open > 0 {
        tracing::info!(open, "SMTP listener closed; waiting for open sessions");
    }
    let drained = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = sessions.len(),
            "SMTP sessions still open after the grace period; closing them"
        );
        sessions.abort_all();
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, ctx: Arc<SmtpContext>, shutdown: Shutdown) {
    let _ = stream.set_nodelay(true);
    let mut session = Session::new(ctx.clone(), peer);
    let plain = match session.run(stream, shutdown.clone(), true).await {
        Ok(Next::Close) => return,
        Ok(Next::StartTls(stream)) => stream,
        Err(e) => return events::session_error(&peer, &e.to_string()),
    };
    let Some(acceptor) = ctx.tls.clone() else {
        return;
    };
    let tls = match tokio::time::timeout(ctx.timeout, acceptor.accept(plain)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return events::session_error(&peer, &format!("TLS handshake: {e}")),
        Err(_) => return events::session_error(&peer, "TLS handshake timed out"),
    };
    session.tls_started();
    if let Err(e) = session.run(tls, shutdown, false).await {
        events::session_error(&peer, &e.to_string());
    }
}
