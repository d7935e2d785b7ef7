//! The CRM sink's named events: each thing worth counting or logging happens here, once, so logs
//! and metrics never disagree (as in the runtime's `events.rs`). The metrics carry the KPIs of the
//! CRM integration; the Helm dashboard reads them by these exact names (with the registry's
//! `mailstream_` prefix):
//!
//! | metric | KPI |
//! |---|---|
//! | `crm_write_latency_seconds` | p50/p95 from `received_at` to the durable CRM write |
//! | `crm_writes_total{outcome}` | committed results: written, unchanged, skipped, dry-run, dead-lettered |
//! | `crm_write_failures_total{class}` | failed CRM calls (4xx, 5xx, timeout, connection), per 1,000 records |
//! | `crm_contact_coverage_total{known}` | emails whose sender was already a known contact |
//! | `crm_attachments_total{outcome}` | attachment success (ok, failed) |
//! | `crm_activities_total`, `crm_unique_messages_total` | duplication = activities / unique messages (stays 1.0) |
//!
//! Activities and failures count when they happen (a duplicate created by a retry is a duplicate
//! even if its batch aborts). The per-message figures count when the message's result commits,
//! so an aborted batch that is processed again is counted once: a message counts as unique (with
//! its latency, coverage and attachments) when its activity was created by this write, or by an
//! earlier attempt of it whose transaction aborted. A backend that duplicated activities shows
//! `crm_activities_total` above `crm_unique_messages_total`. Logs at info and above carry ids and
//! classes only, never addresses, names, subjects or bodies.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

use crate::retry::FailureClass;

/// The sink's metrics, registered next to the runtime's.
#[derive(Clone)]
pub struct SinkMetrics {
    latency: Histogram,
    writes: IntCounterVec,
    failures: IntCounterVec,
    coverage: IntCounterVec,
    attachments: IntCounterVec,
    activities: IntCounter,
    unique_messages: IntCounter,
}

impl SinkMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "crm_write_latency_seconds",
                "Time from received_at to the durable CRM write of a message.",
            )
            .buckets(vec![
                0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0,
                300.0, 600.0, 1800.0, 3600.0,
            ]),
        )?;
        let counter = |name: &str, help: &str, label: &str| -> Result<_, prometheus::Error> {
            let metric = IntCounterVec::new(Opts::new(name, help), &[label])?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        registry.register(Box::new(latency.clone()))?;
        let writes = counter(
            "crm_writes_total",
            "Messages whose CRM result committed, by outcome.",
            "outcome",
        )?;
        let failures = counter(
            "crm_write_failures_total",
            "Failed CRM calls (each attempt), by class: 4xx, 5xx, timeout, connection.",
            "class",
        )?;
        let coverage = counter(
            "crm_contact_coverage_total",
            "Messages written, by whether the sender was already a known contact.",
            "known",
        )?;
        let attachments = counter(
            "crm_attachments_total",
            "Attachments of written messages, by outcome: ok, failed.",
            "outcome",
        )?;
        let activities = IntCounter::new(
            "crm_activities_total",
            "Email activities the CRM reported as newly created by our calls.",
        )?;
        registry.register(Box::new(activities.clone()))?;
        let unique_messages = IntCounter::new(
            "crm_unique_messages_total",
            "Distinct messages written, counted once when their result commits.",
        )?;
        registry.register(Box::new(unique_messages.clone()))?;
        for class in ["4xx", "5xx", "timeout", "connection"] {
            failures.with_label_values(&[class]);
        }
        Ok(Self {
            latency,
            writes,
            failures,
            coverage,
            attachments,
            activities,
            unique_messages,
        })
    }
}

/// What one message amounted to, recorded when its transaction commits.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageOutcome {
    pub message_id: String,
    /// `written`, `unchanged`, `skipped`, `dry-run` or `dead-lettered`.
    pub outcome: &'static str,
    /// received_at → durable write.
    pub latency: Option<Duration>,
    /// The sender was a known contact.
    pub known_contact: bool,
    pub attachments_ok: u32,
    pub attachments_failed: u32,
    /// The message's activity was created by this write (or by an attempt of it that an aborted
    /// transaction left behind): its first write. Set at commit.
    pub first_write: bool,
}

impl MessageOutcome {
    /// An outcome that wrote nothing.
    pub fn nothing_written(message_id: &str, outcome: &'static str) -> Self {
        Self {
            message_id: message_id.to_string(),
            outcome,
            latency: None,
            known_contact: false,
            attachments_ok: 0,
            attachments_failed: 0,
            first_write: false,
        }
    }
}

/// `text` made fit for logs and dead-letter headers: words holding an `@` (addresses) replaced
/// by `[email]`, whitespace collapsed, cut to `max` characters.
pub fn redact(text: &str, max: usize) -> String {
    let mut out = String::new();
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(if word.contains('@') { "[email]" } else { word });
        if out.chars().count() > max {
            let cut: String = out.chars().take(max).collect();
            return format!("{cut}...");
        }
    }
    out
}

/// One CRM call failed. `retrying`: another attempt follows.
pub fn write_failed(
    m: &SinkMetrics,
    op: &str,
    class: FailureClass,
    attempt: u32,
    reason: &str,
    retrying: bool,
) {
    m.failures.with_label_values(&[class.label()]).inc();
    if retrying {
        tracing::info!(
            op,
            class = class.label(),
            attempt,
            reason,
            "CRM call failed; retrying"
        );
    } else {
        tracing::warn!(
            op,
            class = class.label(),
            attempt,
            reason,
            "CRM call failed"
        );
    }
}

/// The CRM created an email activity (not a replay of an earlier call).
pub fn activity_created(m: &SinkMetrics, backend: &str, message_id: &str) {
    m.activities.inc();
    tracing::debug!(backend, message_id, "email activity created");
}

/// A part failed after the activity was written; it is recorded for a follow-up.
pub fn follow_up_recorded(backend: &str, message_id: &str, what: &str) {
    tracing::warn!(
        backend,
        message_id,
        what,
        "part of a message failed after its activity was written; recorded for a follow-up"
    );
}

/// Dry run: the write the sink would have made.
pub fn would_write(op: &str, message_id: &str, ids: &[(&str, Option<&str>)]) {
    let ids = ids
        .iter()
        .map(|(k, v)| format!("{k}={}", v.unwrap_or("-")))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::info!(op, message_id, ids = %ids, "dry run: would write");
}

/// An excluded email (auto-reply, bounce, list mail) was not written.
pub fn skipped(message_id: &str, status: &str) {
    tracing::debug!(message_id, status, "excluded email not written to the CRM");
}

/// The message's result committed. Its first write counts as a unique message, with its
/// latency, contact coverage and attachments; replays and re-scores count only by outcome.
pub fn message_committed(m: &SinkMetrics, outcome: &MessageOutcome) {
    m.writes.with_label_values(&[outcome.outcome]).inc();
    if !outcome.first_write {
        return;
    }
    m.unique_messages.inc();
    if let Some(latency) = outcome.latency {
        m.latency.observe(latency.as_secs_f64());
    }
    m.coverage
        .with_label_values(&[if outcome.known_contact {
            "true"
        } else {
            "false"
        }])
        .inc();
    if outcome.attachments_ok > 0 {
        m.attachments
            .with_label_values(&["ok"])
            .inc_by(u64::from(outcome.attachments_ok));
    }
    if outcome.attachments_failed > 0 {
        m.attachments
            .with_label_values(&["failed"])
            .inc_by(u64::from(outcome.attachments_failed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_have_the_dashboard_names() {
        let registry = Registry::new_custom(Some("mailstream".into()), None).expect("registry");
        let m = SinkMetrics::new(&registry).expect("metrics");
        activity_created(&m, "postgres", "m1");
        message_committed(
            &m,
            &MessageOutcome {
                latency: Some(Duration::from_secs(3)),
                known_contact: true,
                attachments_ok: 2,
                attachments_failed: 1,
                first_write: true,
                ..MessageOutcome::nothing_written("m1", "written")
            },
        );
        write_failed(&m, "activity", FailureClass::Server, 1, "503", true);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        for name in [
            "mailstream_crm_write_latency_seconds",
            "mailstream_crm_writes_total",
            "mailstream_crm_write_failures_total",
            "mailstream_crm_contact_coverage_total",
            "mailstream_crm_attachments_total",
            "mailstream_crm_activities_total",
            "mailstream_crm_unique_messages_total",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
        }
    }

    #[test]
    fn redaction_hides_addresses_and_bounds_length() {
        assert_eq!(
            redact("Key (email)=(ali@acme.io)  exists", 100),
            "Key [email] exists"
        );
        assert_eq!(redact("a b c d", 3), "a b...");
    }
}
