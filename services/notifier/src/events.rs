//! The notifier's named events: each is logged and counted here, once, so logs and metrics
//! agree. Logs carry ids, channels and classes, never addresses, names or subjects (the
//! notification itself carries those, to the channel only), and never a webhook URL (Slack's
//! carries its credential).
//!
//! | metric | meaning |
//! |---|---|
//! | `notifications_total{channel,outcome}` | `sent`, `already-sent` (a replay, a retried batch or a new owner found the record), `dry-run`, `dead-lettered` |
//! | `notifications_skipped_total{reason}` | qualified leads not notified: `stale` (older than `max_age_secs`), `erased`, `opted-out` (the sender asked to be removed) |
//! | `notification_failures_total{channel,class}` | failed requests: `unavailable`, `refused`, `rejected` |
//! | `notification_latency_seconds` | from `received_at` to the channel's acceptance |
//! | `notifier_blocked{channel}` | 1 while a channel refuses our credentials or no longer exists (fix the key the ERROR log names) |

use mailstream_runtime::RuntimeError;
use mailstream_runtime::metrics::register;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::deliver::{Kind, SendError};

pub const OUTCOMES: [&str; 4] = ["sent", "already-sent", "dry-run", "dead-lettered"];
pub const SKIPS: [&str; 2] = ["stale", "erased"];
const CLASSES: [&str; 3] = ["unavailable", "refused", "rejected"];
const CHANNELS: [&str; 2] = ["slack", "webhook"];

#[derive(Clone)]
pub struct NotifierMetrics {
    notifications: IntCounterVec,
    skipped: IntCounterVec,
    failures: IntCounterVec,
    latency: Histogram,
    blocked: IntGaugeVec,
}

impl NotifierMetrics {
    pub fn new(registry: &Registry) -> Result<Self, RuntimeError> {
        let notifications = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "notifications_total",
                    "Hot-lead notifications by channel and outcome.",
                ),
                &["channel", "outcome"],
            ),
        )?;
        let skipped = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "notifications_skipped_total",
                    "Leads of a notifying status not notified, by reason.",
                ),
                &["reason"],
            ),
        )?;
        let failures = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "notification_failures_total",
                    "Failed notification requests by channel and class.",
                ),
                &["channel", "class"],
            ),
        )?;
        let latency = register(
            registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "notification_latency_seconds",
                    "Time from received_at to the channel accepting the notification.",
                )
                .buckets(vec![
                    0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                ]),
            ),
        )?;
        let blocked = register(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    "notifier_blocked",
                    "1 while a channel refuses the notifier's requests (credentials, a deleted webhook).",
                ),
                &["channel"],
            ),
        )?;
        for channel in CHANNELS {
            for outcome in OUTCOMES {
                notifications.with_label_values(&[channel, outcome]);
            }
            for class in CLASSES {
                failures.with_label_values(&[channel, class]);
            }
            blocked.with_label_values(&[channel]);
        }
        for reason in SKIPS {
            skipped.with_label_values(&[reason]);
        }
        Ok(Self {
            notifications,
            skipped,
            failures,
            latency,
            blocked,
        })
    }
}

pub fn sent(m: &NotifierMetrics, kind: Kind, message_id: &str, attempts: u32, age_ms: i64) {
    tracing::info!(channel = kind.name(), %message_id, attempts, "notification sent");
    m.notifications
        .with_label_values(&[kind.name(), "sent"])
        .inc();
    m.latency.observe(age_ms.max(0) as f64 / 1000.0);
    m.blocked.with_label_values(&[kind.name()]).set(0);
}

pub fn already_sent(m: &NotifierMetrics, kind: Kind, message_id: &str) {
    tracing::debug!(channel = kind.name(), %message_id, "already notified: not sent again");
    m.notifications
        .with_label_values(&[kind.name(), "already-sent"])
        .inc();
}

pub fn would_send(m: &NotifierMetrics, kind: Kind, message_id: &str, bytes: usize) {
    tracing::info!(channel = kind.name(), %message_id, bytes, "dry run: would notify");
    m.notifications
        .with_label_values(&[kind.name(), "dry-run"])
        .inc();
}

pub fn skipped(m: &NotifierMetrics, message_id: &str, reason: &str) {
    tracing::info!(%message_id, reason, "not notified");
    m.skipped.with_label_values(&[reason]).inc();
}

pub fn failed(m: &NotifierMetrics, kind: Kind, error: &SendError, attempt: u32, retrying: bool) {
    m.failures
        .with_label_values(&[kind.name(), error.class()])
        .inc();
    match error {
        SendError::Refused(reason) => {
            m.blocked.with_label_values(&[kind.name()]).set(1);
            tracing::error!(channel = kind.name(), attempt, %reason, "the channel refused the notifier: fix its URL or secret");
        }
        SendError::Rejected(reason) => {
            m.notifications
                .with_label_values(&[kind.name(), "dead-lettered"])
                .inc();
            tracing::warn!(channel = kind.name(), attempt, %reason, "the channel refused this notification");
        }
        SendError::Unavailable(reason) => {
            tracing::warn!(channel = kind.name(), attempt, retrying, %reason, "notification failed");
        }
    }
}
