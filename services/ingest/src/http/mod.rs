//! HTTP intake: `POST /v1/messages` with the raw MIME message as the body
//! (`Content-Type: message/rfc822`), signed with HMAC-SHA256 ([`signature`]: the v2 payload
//! `v2 LF {timestamp} LF {rcpt_to} LF {mail_from} LF {body}` covers the envelope headers; the
//! v1 payload `{timestamp}.{body}` is accepted only without envelope headers).
//!
//! Headers: `X-Mailstream-Timestamp` (unix seconds; further than `replay_window_secs` from now
//! is refused, so a captured request cannot be replayed later), `X-Mailstream-Signature`
//! (hex, optionally `sha256=`), and the optional envelope `X-Mailstream-Rcpt-To` (comma
//! separated, at most `max_recipients`) and `X-Mailstream-Mail-From`, UTF-8, each sent at most
//! once. Recipients are not checked against `accepted_domains`: the caller is authenticated.
//!
//! Resource bounds (each a setting, see `config.rs`):
//! - at most `http_max_connections` connections at once: one more is answered `503` (plain
//!   text listener) and closed at once;
//! - hyper's `header_read_timeout` (`http_header_timeout_secs`) runs from the moment the
//!   connection waits for a request (after accept and after each response), so a slow header
//!   sender and an idle keep-alive connection are both cut;
//! - the body must arrive within `http_body_timeout_secs` (408);
//! - the body streams through the MAC into a spool (memory up to `spool_threshold_bytes`, then
//!   a file), every byte counted against `max_inflight_bytes`, shared with SMTP (503 with
//!   `Retry-After` when exceeded); the message is read into memory only once its signature
//!   is good, for the durable write.
//! - optional TLS (`http_tls`) with the SMTP certificate (`tls_cert_path`, `tls_key_path`),
//!   and mutual TLS: a client certificate signed by a CA of `http_client_ca_path` required;
//! - optional allowlist of client networks (`http_allowed_networks`), the client address read
//!   from `X-Forwarded-For` behind `http_trusted_proxy_hops` proxies ([`allow`]).
//!
//! | status | when |
//! |---|---|
//! | 202 `{"ingest_id", "sha256", "size"}` | the email is durably in `raw-email` |
//! | 403 `forbidden-address` | the client is not on `http_allowed_networks`, or did not come through the trusted proxies |
//! | 401 `missing-signature` / `bad-signature` / `bad-timestamp` / `stale-timestamp` | authentication failed |
//! | 400 `bad-envelope` / `too-many-recipients` / `empty-body` / `aborted` | an envelope header repeated or not UTF-8; over `max_recipients`; no message; the body ended early |
//! | 408 `body-timeout` | the body took longer than `http_body_timeout_secs` |
//! | 413 `too-large` | body over `max_message_bytes` |
//! | 415 `unsupported-media-type` | not `message/rfc822` |
//! | 422 `unstorable` | the write failed for good |
//! | 503 `over-budget` / `spool-failed` / `unavailable` + `Retry-After` | retry later |
//!
//! Connections refused over the limit and cut for a header timeout are counted in
//! `ingest_refused_total{channel="http"}` as `too-many-connections` and `header-timeout`.
//!
//! `/v1/messages` is served when `hmac_secret` is set. The same listener serves the inbound
//! webhooks of email providers (`/v1/providers/{mailgun,sendgrid,postmark}`, each when its
//! settings enable it: [`providers`]), within the same bounds and through the same durable
//! write. A plain raw-MIME POST (a Cloudflare Email Worker, say) is `/v1/messages` itself.

mod allow;
mod intake;
pub mod providers;
pub mod signature;

pub use allow::Allowlist;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::post;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use mailstream_runtime::Shutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::config::Secret;
use crate::events::{self, IngestMetrics};
use crate::publisher::Publisher;
use crate::spool::Spooler;

const CHANNEL: &str = "http";
pub use mailstream_runtime::signing::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
pub const RCPT_TO_HEADER: &str = "x-mailstream-rcpt-to";
pub const MAIL_FROM_HEADER: &str = "x-mailstream-mail-from";

/// The answer to a connection over `http_max_connections` (plain-text listener only).
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n\
Connection: close\r\nContent-Type: application/json\r\nContent-Length: 73\r\n\r\n\
{\"error\":\"too-many-connections\",\"message\":\"too many connections, retry\"}\n";

/// Shared state of the request handler.
pub(crate) struct HttpContext {
    pub publisher: Arc<Publisher>,
    /// `hmac_secret`: `/v1/messages` is served only with it.
    pub secret: Option<Secret>,
    /// The provider webhooks the settings enable.
    pub providers: providers::Providers,
    pub replay_window_secs: u64,
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    pub body_timeout: Duration,
    pub spooler: Spooler,
    /// Who may call (`http_allowed_networks`, `http_trusted_proxy_hops`).
    pub allowlist: Allowlist,
}

/// How connections are served.
pub(crate) struct Listener {
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub tls: Option<TlsAcceptor>,
    pub grace: Duration,
}

/// The intake router; it expects `ConnectInfo<SocketAddr>` in the request extensions.
fn router(ctx: Arc<HttpContext>) -> Router {
    let mut router = Router::new();
    if ctx.secret.is_some() {
        router = router.route("/v1/messages", post(intake::ingest));
    }
    providers::routes(router, &ctx.providers).with_state(ctx)
}

/// Serves the intake on `listener` until `shutdown`, then lets open requests finish within
/// the grace period.
pub(crate) async fn serve(
    listener: TcpListener,
    ctx: Arc<HttpContext>,
    options: Listener,
    shutdown: Shutdown,
) {
    let metrics = ctx.publisher.metrics().clone();
    let router = router(ctx);
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let graceful = GracefulShutdown::new();
    let options = Arc::new(options);
    let mut stop = shutdown.clone();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if options.tls.is_none() {
                // Never wait on this client: what does not fit the socket buffer is dropped.
                let _ = stream.try_write(TOO_MANY_CONNECTIONS);
            }
            events::connection_cut(&metrics, CHANNEL, "too-many-connections", &peer);
            continue;
        };
        let connection = Connection {
            peer,
            router: router.clone(),
            options: options.clone(),
            metrics: metrics.clone(),
            watcher: graceful.watcher(),
        };
        tokio::spawn(async move {
            connection.run(stream).await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(options.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still open after the grace period; closing them");
    }
}

/// One accepted connection.
struct Connection {
    peer: SocketAddr,
    router: Router,
    options: Arc<Listener>,
    metrics: IngestMetrics,
    watcher: Watcher,
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = self.options.tls.clone() else {
            return self.serve(stream).await;
        };
        match tokio::time::timeout(self.options.header_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => self.serve(tls).await,
            Ok(Err(e)) => {
                events::session_error(CHANNEL, &self.peer, &format!("TLS handshake: {e}"))
            }
            Err(_) => events::connection_cut(&self.metrics, CHANNEL, "header-timeout", &self.peer),
        }
    }

    async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        let router = self.router;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.options.header_timeout);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        if let Err(e) = self.watcher.watch(connection).await {
            if e.is_timeout() {
                events::connection_cut(&self.metrics, CHANNEL, "header-timeout", &peer);
            } else {
                events::session_error(CHANNEL, &peer, &e.to_string());
            }
        }
    }
}
