//! mailstream ingest: every way an email enters the topology, each ending in one durable write
//! of a `RawEmail` record to `raw-email` ([`publisher`]).
//!
//! - [`smtp`]: an RFC 5321 receiver (EHLO with PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
//!   ENHANCEDSTATUSCODES and, with a certificate, STARTTLS). Recipients must be in
//!   `accepted_domains` (catch-all per domain, plus-addressing kept). The final dot of DATA is
//!   answered 250 only after the broker acknowledged the record (idempotent producer,
//!   `acks=all`).
//! - [`http`]: `POST /v1/messages`, HMAC-SHA256 signed (the envelope headers too), with a
//!   replay window; 202 after the durable write. On the same listener, the inbound webhooks
//!   of Mailgun, SendGrid and Postmark ([`http::providers`]).
//!
//! Hostile and oversized input is bounded: message bytes being received live in a [`spool`]
//! (memory up to `spool_threshold_bytes`, then an anonymous file) and count against one
//! [`budget`] of in-flight bytes shared by SMTP and HTTP (`max_inflight_bytes`); SMTP sessions
//! and HTTP connections have read and write timeouts and a cap on their number.
//! - [`backfill`]: `mailstream backfill PATH...` for .eml files, mbox files and maildirs. Its
//!   ingest ids are deterministic (a UUIDv5 of the message's SHA-256 and its origin), so
//!   running it twice writes records with the same ids and keys; downstream, the resolver
//!   dedupes on the Message-ID the parser derives.
//!
//! Messages over `inline_limit_bytes` are stored in the blob store and the record carries
//! `blob_uri` + `sha256` instead of the bytes (claim check). SMTP and HTTP ingest ids are
//! random UUIDs.
//!
//! `mailstream run ingest` ([`serve`]) also serves `/metrics`, `/healthz` and `/readyz` on the
//! runtime's `http_addr`, and stops gracefully on SIGTERM: listeners close, in-flight
//! sessions and requests finish (within `shutdown_grace_secs`), the producer is flushed.

pub mod backfill;
pub mod budget;
pub mod config;
pub mod error;
pub mod events;
pub mod http;
pub mod publisher;
pub mod smtp;
pub mod spool;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mailstream_runtime::health::{self, Health};
use mailstream_runtime::metrics::Metrics;
use mailstream_runtime::{ConfigSource, Shutdown, telemetry};
use tokio::net::TcpListener;

pub use config::IngestSettings;
pub use error::{IngestError, PublishError};
pub use publisher::{Intake, Published, Publisher};

/// The processor name: config section `[ingest]`, env `MAILSTREAM_INGEST_*`.
pub const NAME: &str = "ingest";

/// Runs SMTP and HTTP intake (and the health/metrics server) until SIGTERM/SIGINT.
pub async fn serve(source: ConfigSource) -> Result<(), IngestError> {
    let (config, config::ServeSettings(settings)) =
        mailstream_runtime::config::load::<config::ServeSettings>(NAME, &source)?;
    let _telemetry = telemetry::init(&config, NAME)?;
    let metrics = Metrics::new();
    let ingest_metrics = events::IngestMetrics::register(&metrics.registry)?;
    let health = Health::new();
    let health_addr = health::serve(&config.http_addr, health.clone(), metrics.clone()).await?;
    events::listening("metrics and health", &health_addr);

    let spooler = spool::Spooler {
        budget: budget::Budget::new(settings.max_inflight_bytes, ingest_metrics.inflight_gauge()),
        threshold: usize::try_from(settings.spool_threshold_bytes).unwrap_or(usize::MAX),
        dir: settings.spool_dir.clone(),
    };
    let publisher = Arc::new(Publisher::connect(&config, &settings, ingest_metrics).await?);
    let shutdown = Shutdown::on_signals();
    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    let mut tasks = tokio::task::JoinSet::new();

    if settings.smtp_enabled() {
        let ctx = Arc::new(smtp::SmtpContext::new(
            &settings,
            publisher.clone(),
            spooler.clone(),
        )?);
        let listener = bind(&settings.smtp_addr, "smtp_addr").await?;
        events::series_initialised(publisher.metrics(), "smtp");
        events::listening("smtp", &local_addr(&listener)?);
        tasks.spawn(smtp::serve(listener, ctx, shutdown.clone(), grace));
    }
    let providers = http::providers::Providers::from_settings(&settings, &config.blob_options());
    if settings.http_enabled()
        && (settings.hmac_secret.is_some() || !providers.channels().is_empty())
    {
        for channel in providers.channels() {
            events::series_initialised(publisher.metrics(), channel);
        }
        let ctx = Arc::new(http::HttpContext {
            publisher: publisher.clone(),
            secret: settings.hmac_secret.clone(),
            providers,
            replay_window_secs: settings.replay_window_secs,
            max_message_bytes: usize::try_from(settings.max_message_bytes).unwrap_or(usize::MAX),
            max_recipients: settings.max_recipients as usize,
            body_timeout: Duration::from_secs(settings.http_body_timeout_secs),
            spooler: spooler.clone(),
            allowlist: settings.allowlist().map_err(IngestError::Config)?,
        });
        let tls = match (&settings.tls_cert_path, &settings.tls_key_path) {
            (Some(cert), Some(key)) if settings.http_tls => Some(tls::acceptor(
                cert,
                key,
                settings.http_client_ca_path.as_deref(),
            )?),
            _ => None,
        };
        let options = http::Listener {
            header_timeout: Duration::from_secs(settings.http_header_timeout_secs),
            max_connections: settings.http_max_connections as usize,
            tls,
            grace,
        };
        let listener = bind(&settings.http_addr, "http_addr").await?;
        events::series_initialised(publisher.metrics(), "http");
        let what = if settings.http_tls {
            "https intake"
        } else {
            "http intake"
        };
        events::listening(what, &local_addr(&listener)?);
        tasks.spawn(http::serve(listener, ctx, options, shutdown.clone()));
    }

    // Liveness: the runtime's /healthz wants a heartbeat; ingest has no processing loop.
    let beat = health.clone();
    let mut beat_stop = shutdown.clone();
    let heartbeat = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => beat.beat(),
                _ = beat_stop.wait() => break,
            }
        }
    });
    health.set_ready(true);
    tracing::info!("ingest ready");

    let mut stop = shutdown.clone();
    stop.wait().await;
    health.set_ready(false);
    tracing::info!("shutdown requested; closing listeners and finishing in-flight emails");
    // The HTTP server drains its open requests itself; bound it by the grace period too.
    if tokio::time::timeout(grace + Duration::from_secs(1), async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tasks.abort_all();
    }
    heartbeat.abort();
    publisher.flush().await;
    tracing::info!("ingest stopped");
    Ok(())
}

async fn bind(addr: &str, key: &str) -> Result<TcpListener, IngestError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| IngestError::io(format!("binding {addr} (key ingest.{key})"), e))
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, IngestError> {
    listener
        .local_addr()
        .map_err(|e| IngestError::io("reading the bound address", e))
}
