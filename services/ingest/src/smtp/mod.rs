//! The SMTP receiver: accepts connections, runs one [`session::Session`] per connection and
//! upgrades to TLS on STARTTLS when a certificate is configured (rustls, aws-lc-rs provider).
//!
//! Shutdown: on SIGTERM the listener closes at once; sessions waiting for a command are told
//! `421 4.3.2` and closed; sessions in the middle of DATA (or of the durable write) finish,
//! within `shutdown_grace_secs`, after which they are dropped (their clients retry).

mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mailstream_runtime::Shutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::IngestSettings;
use crate::error::IngestError;
use crate::events;
use crate::publisher::Publisher;
use crate::spool::Spooler;
use session::{Next, Session};

const CHANNEL: &str = "smtp";

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
    /// Idle (read) and write timeout of a session.
    pub timeout: Duration,
    pub tls: Option<TlsAcceptor>,
    pub spooler: Spooler,
}

impl SmtpContext {
    pub(crate) fn new(
        settings: &IngestSettings,
        publisher: Arc<Publisher>,
        spooler: Spooler,
    ) -> Result<Self, IngestError> {
        let tls = match (&settings.tls_cert_path, &settings.tls_key_path) {
            (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key, None)?),
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
            spooler,
        })
    }
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
                Ok((stream, peer)) => {
                    if sessions.len() >= MAX_SESSIONS {
                        // Never wait on this client: the accept loop serves everyone.
                        let _ = stream.try_write(b"421 4.3.2 Too many connections, try again later\r\n");
                        events::connection_cut(ctx.publisher.metrics(), CHANNEL, "too-many-connections", &peer);
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
    if let Err(e) = converse(&mut session, stream, &ctx, shutdown).await {
        events::session_error(CHANNEL, &peer, &e);
    }
    session.finish();
}

/// The session in plain text, then (after STARTTLS) over TLS.
async fn converse(
    session: &mut Session,
    stream: TcpStream,
    ctx: &SmtpContext,
    shutdown: Shutdown,
) -> Result<(), String> {
    let plain = match session.run(stream, shutdown.clone(), true).await {
        Ok(Next::Close) => return Ok(()),
        Ok(Next::StartTls(stream)) => stream,
        Err(e) => return Err(e.to_string()),
    };
    let Some(acceptor) = ctx.tls.clone() else {
        return Ok(());
    };
    let tls = match tokio::time::timeout(ctx.timeout, acceptor.accept(plain)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(format!("TLS handshake: {e}")),
        Err(_) => return Err("TLS handshake timed out".into()),
    };
    session.tls_started();
    session
        .run(tls, shutdown, false)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
