//! Named ingest events: every accepted or refused email is counted and logged here, once, so
//! logs and metrics agree. Events carry ids, sizes and reasons, never addresses or bodies (PII).
//!
//! Metrics (in the runtime's registry, so served on `/metrics` with the `mailstream_` prefix):
//! - `ingest_accepted_total{channel}`: emails durably written to `raw-email`;
//! - `ingest_refused_total{channel,reason}`: emails, commands and connections refused, by
//!   reason slug (refused SMTP recipients are counted here too, and logged once per session, not
//!   once per refusal; connections cut for a timeout or over the connection limit are counted,
//!   logged at debug level only: an attacker must not be able to flood the log);
//! - `ingest_inflight_bytes`: bytes of messages being received or written now (the budget
//!   `max_inflight_bytes` is shared by SMTP and HTTP);
//! - `ingest_bytes_total{channel}`: raw bytes accepted;
//! - `ingest_blobs_total{channel}`: emails stored by claim check;
//! - `ingest_durable_write_seconds{channel}`: from the start of the write (blob + Kafka) to
//!   the broker's acknowledgement.
//!
//! Every series of a served channel exists from the moment ingest is ready, at zero
//! ([`series_initialised`]): the refusal reasons of [`SMTP_REFUSALS`] and [`HTTP_REFUSALS`]
//! (a reason slug added without being listed there still counts; its series appears on first
//! use).

use std::time::Duration;

use mailstream_runtime::RuntimeError;
use mailstream_runtime::metrics::register;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// The reason slugs SMTP refusals are counted under.
pub const SMTP_REFUSALS: [&str; 10] = [
    "too-large",
    "too-many-recipients",
    "bad-recipient",
    "domain-not-accepted",
    "over-budget",
    "write-failed",
    "unstorable",
    "too-many-connections",
    "write-timeout",
    "idle-timeout",
];

/// The reason slugs HTTP refusals are counted under (the provider webhooks' too, under their
/// own channel: `mailgun`, `sendgrid`, `postmark`).
pub const HTTP_REFUSALS: [&str; 23] = [
    "bad-envelope",
    "unsupported-media-type",
    "missing-signature",
    "bad-timestamp",
    "stale-timestamp",
    "bad-signature",
    "too-many-recipients",
    "body-timeout",
    "aborted",
    "empty-body",
    "too-large",
    "over-budget",
    "spool-failed",
    "unstorable",
    "write-failed",
    "too-many-connections",
    "header-timeout",
    "bad-auth",
    "replayed-token",
    "replay-cache-full",
    "bad-payload",
    "wrong-topic",
    "object-unavailable",
];

/// The ingest metrics, registered once in a registry.
#[derive(Clone)]
pub struct IngestMetrics {
    accepted: IntCounterVec,
    refused: IntCounterVec,
    bytes: IntCounterVec,
    blobs: IntCounterVec,
    durable_write: HistogramVec,
    inflight: IntGauge,
}

impl IngestMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, RuntimeError> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let durable_write = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "ingest_durable_write_seconds",
                    "Time from the start of an email's write to the broker's acknowledgement.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ]),
                &["channel"],
            ),
        )?;
        let inflight = register(
            registry,
            IntGauge::new(
                "ingest_inflight_bytes",
                "Bytes of messages being received or written now (SMTP and HTTP).",
            ),
        )?;
        Ok(Self {
            accepted: counter(
                "ingest_accepted_total",
                "Emails durably written to raw-email.",
                &["channel"],
            )?,
            refused: counter(
                "ingest_refused_total",
                "Emails or commands refused, by reason.",
                &["channel", "reason"],
            )?,
            bytes: counter(
                "ingest_bytes_total",
                "Raw bytes of accepted emails.",
                &["channel"],
            )?,
            blobs: counter(
                "ingest_blobs_total",
                "Emails stored in the blob store (claim check).",
                &["channel"],
            )?,
            durable_write,
            inflight,
        })
    }

    /// The gauge the in-flight budget reports to.
    pub fn inflight_gauge(&self) -> IntGauge {
        self.inflight.clone()
    }

    /// Metrics in a private registry (for the backfill, which serves no `/metrics`).
    pub fn detached() -> Result<Self, RuntimeError> {
        Self::register(&Registry::new())
    }
}

/// `channel` (`smtp`, `http` or a provider webhook) is served: its series exist from now on, at zero.
pub fn series_initialised(m: &IngestMetrics, channel: &str) {
    let refusals: &[&str] = match channel {
        "smtp" => &SMTP_REFUSALS,
        "http" | "mailgun" | "sendgrid" | "postmark" | "ses" => &HTTP_REFUSALS,
        _ => &[],
    };
    m.accepted.with_label_values(&[channel]);
    m.bytes.with_label_values(&[channel]);
    m.blobs.with_label_values(&[channel]);
    m.durable_write.with_label_values(&[channel]);
    for reason in refusals {
        m.refused.with_label_values(&[channel, reason]);
    }
    tracing::debug!(channel, "metric series initialised");
}

/// An email was durably written to `raw-email`.
pub fn accepted(
    m: &IngestMetrics,
    channel: &str,
    ingest_id: &str,
    size: usize,
    blob: bool,
    elapsed: Duration,
) {
    m.accepted.with_label_values(&[channel]).inc();
    m.bytes.with_label_values(&[channel]).inc_by(size as u64);
    if blob {
        m.blobs.with_label_values(&[channel]).inc();
    }
    m.durable_write
        .with_label_values(&[channel])
        .observe(elapsed.as_secs_f64());
    if channel == "backfill" {
        tracing::debug!(channel, ingest_id, size, blob, "email ingested");
    } else {
        tracing::info!(
            channel,
            ingest_id,
            size,
            blob,
            write_ms = elapsed.as_millis() as u64,
            "email ingested"
        );
    }
}

/// An email (or a command of its transaction) was refused; `reason` is a short slug.
pub fn refused(m: &IngestMetrics, channel: &str, reason: &str, detail: &str) {
    m.refused.with_label_values(&[channel, reason]).inc();
    tracing::info!(channel, reason, detail, "email refused");
}

/// An SMTP recipient was refused: counted, logged at debug level only (the session logs a
/// summary, [`session_ended`]).
pub fn recipient_refused(m: &IngestMetrics, channel: &str, reason: &str) {
    m.refused.with_label_values(&[channel, reason]).inc();
    tracing::debug!(channel, reason, "recipient refused");
}

/// An SMTP session that refused recipients ended: one line for all of them.
pub fn session_ended(peer: &std::net::SocketAddr, recipients_refused: u32) {
    if recipients_refused > 0 {
        tracing::info!(%peer, recipients_refused, "SMTP session ended; recipients were refused");
    }
}

/// A connection was refused or cut (over the connection limit, a timeout): counted, logged
/// at debug level only.
pub fn connection_cut(m: &IngestMetrics, channel: &str, reason: &str, peer: &std::net::SocketAddr) {
    m.refused.with_label_values(&[channel, reason]).inc();
    tracing::debug!(channel, reason, %peer, "connection refused or closed");
}

/// Writing an email failed; the client is told to retry.
pub fn write_failed(m: &IngestMetrics, channel: &str, error: &str) {
    m.refused
        .with_label_values(&[channel, "write-failed"])
        .inc();
    tracing::warn!(
        channel,
        error,
        "durable write failed; the sender will retry"
    );
}

/// A provider asked for a subscription to be confirmed (an SNS `SubscriptionConfirmation`):
/// the operator opens `url` once (ingest makes no outbound call). Logged at warn level, since
/// nothing arrives until it is done.
pub fn subscription_pending(channel: &str, topic: &str, url: &str) {
    tracing::warn!(
        channel,
        topic,
        subscribe_url = url,
        "subscription to confirm: open SubscribeURL once"
    );
}

/// A listener is up.
pub fn listening(what: &str, addr: &std::net::SocketAddr) {
    tracing::info!(what, %addr, "listening");
}

/// A session or connection ended abnormally (I/O error, TLS failure, client gone).
pub fn session_error(channel: &str, peer: &std::net::SocketAddr, error: &str) {
    tracing::debug!(channel, %peer, error, "session ended with an error");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_served_channel_has_every_series_at_zero() {
        let registry = Registry::new();
        let m = IngestMetrics::register(&registry).expect("metrics");
        series_initialised(&m, "smtp");
        series_initialised(&m, "http");
        let families = registry.gather();
        let series = |name: &str| {
            families
                .iter()
                .filter(|f| f.name() == name)
                .flat_map(|f| f.get_metric())
                .count()
        };
        for name in [
            "ingest_accepted_total",
            "ingest_bytes_total",
            "ingest_blobs_total",
            "ingest_durable_write_seconds",
        ] {
            assert_eq!(series(name), 2, "{name}");
        }
        assert_eq!(
            series("ingest_refused_total"),
            SMTP_REFUSALS.len() + HTTP_REFUSALS.len()
        );
        assert!(
            families
                .iter()
                .flat_map(|f| f.get_metric())
                .all(|s| s.get_counter().get_value() == 0.0
                    && s.get_gauge().get_value() == 0.0
                    && s.get_histogram().get_sample_count() == 0)
        );
    }
}
