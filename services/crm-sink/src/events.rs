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
//! | `crm_first_response_seconds` | time to first response: from an inbound email's `received_at` to the first email of ours in its thread (a journal or BCC copy, `resolved.outbound`), once per inbound email (PostgreSQL backend) |
//! | `crm_tickets_total{outcome}` | helpdesk tickets of low-qualified support leads: `opened`, `existing` (a replay met the ticket), `refused` (a follow-up) |
//! | `crm_contact_signals_total{signal}` | contacts changed by what an email said: `bouncing` (a hard bounce), `opted-out` (unsubscribe, complaint), `left` (left the company) |
//! | `crm_sink_blocked{cause}` | 1 while the sink makes no progress because of the CRM: `unavailable` (down, failing, asking us to wait), `auth` (credentials refused: fix the setting the ERROR log names) or `tls` (PostgreSQL's TLS handshake refused: fix `database_ca_file` or the `sslmode` of `database_url`, as the ERROR log says) |
//!
//! Activities and failures count when they happen (a duplicate created by a retry is a duplicate
//! even if its batch aborts). The per-message figures count when the message's result commits,
//! so an aborted batch that is processed again is counted once: a message counts as unique (with
//! its latency, coverage and attachments) when its activity was created by this write, or by an
//! earlier attempt of it whose transaction aborted. A backend that duplicated activities shows
//! `crm_activities_total` above `crm_unique_messages_total`. Logs at info and above carry ids and
//! classes only, never addresses, names, subjects or bodies.

use std::time::Duration;

use mailstream_runtime::RuntimeError;
use mailstream_runtime::metrics::register;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use crate::error::{BlockCause, Failure, FailureClass};
use crate::settings;

/// What a message's result amounted to (`crm_writes_total{outcome}`, [`MessageOutcome`]).
pub const OUTCOMES: [&str; 5] = [
    "written",
    "unchanged",
    "skipped",
    "dry-run",
    "dead-lettered",
];

/// The sink's metrics, registered next to the runtime's. Every series exists from the start,
/// at zero: each outcome, failure class, contact coverage and attachment outcome.
#[derive(Clone)]
pub struct SinkMetrics {
    latency: Histogram,
    first_response: Histogram,
    writes: IntCounterVec,
    failures: IntCounterVec,
    coverage: IntCounterVec,
    attachments: IntCounterVec,
    activities: IntCounter,
    unique_messages: IntCounter,
    signals: IntCounterVec,
    tickets: IntCounterVec,
    blocked: IntGaugeVec,
}

impl SinkMetrics {
    pub fn new(registry: &Registry) -> Result<Self, RuntimeError> {
        let latency = register(
            registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "crm_write_latency_seconds",
                    "Time from received_at to the durable CRM write of a message.",
                )
                .buckets(vec![
                    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 45.0, 60.0, 90.0, 120.0,
                    180.0, 300.0, 600.0, 1800.0, 3600.0,
                ]),
            ),
        )?;
        let first_response = register(
            registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "crm_first_response_seconds",
                    "Time from an inbound email's received_at to the first email of ours in its thread.",
                )
                .buckets(vec![
                    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0,
                    172800.0, 604800.0,
                ]),
            ),
        )?;
        let counter = |name: &str, help: &str, label: &str| {
            register(
                registry,
                IntCounterVec::new(Opts::new(name, help), &[label]),
            )
        };
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
        let activities = register(
            registry,
            IntCounter::new(
                "crm_activities_total",
                "Email activities the CRM reported as newly created by our calls.",
            ),
        )?;
        let unique_messages = register(
            registry,
            IntCounter::new(
                "crm_unique_messages_total",
                "Distinct messages written, counted once when their result commits.",
            ),
        )?;
        let signals = counter(
            "crm_contact_signals_total",
            "Contacts changed by what an email said about them, by signal: bouncing, opted-out, left.",
            "signal",
        )?;
        let tickets = counter(
            "crm_tickets_total",
            "Helpdesk tickets of leads whose intent opens one, by outcome: opened, existing, refused.",
            "outcome",
        )?;
        for outcome in TICKET_OUTCOMES {
            tickets.with_label_values(&[outcome]);
        }
        for signal in crate::backend::signals::SIGNALS {
            signals.with_label_values(&[signal]);
        }
        for class in ["4xx", "5xx", "timeout", "connection"] {
            failures.with_label_values(&[class]);
        }
        for outcome in OUTCOMES {
            writes.with_label_values(&[outcome]);
        }
        for known in ["true", "false"] {
            coverage.with_label_values(&[known]);
        }
        for outcome in ["ok", "failed"] {
            attachments.with_label_values(&[outcome]);
        }
        let blocked = register(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    "crm_sink_blocked",
                    "1 while the sink makes no progress because of the CRM, by cause: unavailable, auth, tls.",
                ),
                &["cause"],
            ),
        )?;
        for cause in BlockCause::ALL {
            blocked.with_label_values(&[cause.label()]).set(0);
        }
        Ok(Self {
            latency,
            first_response,
            writes,
            failures,
            coverage,
            attachments,
            activities,
            unique_messages,
            signals,
            tickets,
            blocked,
        })
    }
}

/// What one message amounted to, recorded when its transaction commits.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageOutcome {
    pub message_id: String,
    /// One of [`OUTCOMES`].
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

/// The sink cannot make progress because of `failure` (not the record's fault): the batch is
/// handed back to the runtime, which retries it after its backoff (and turns `/readyz`
/// not-ready past `stall_timeout_ms`). Logged when the cause begins: refused credentials and a
/// refused TLS handshake at ERROR, naming the setting to fix.
pub fn blocked(m: &SinkMetrics, failure: &Failure) {
    let Some(cause) = failure.block_cause() else {
        return;
    };
    let gauge = m.blocked.with_label_values(&[cause.label()]);
    let began = gauge.get() == 0;
    for other in BlockCause::ALL {
        m.blocked
            .with_label_values(&[other.label()])
            .set(i64::from(other == cause));
    }
    if !began {
        return;
    }
    match failure {
        Failure::Auth { setting, reason } => tracing::error!(
            cause = cause.label(),
            setting = %settings::key(setting),
            reason = %reason,
            "the CRM refused the sink's credentials: nothing is written (and nothing \
             dead-lettered) until the setting is fixed"
        ),
        Failure::Tls { reason } => tracing::error!(
            cause = cause.label(),
            reason = %reason,
            remedy = %crate::error::tls_remedy(),
            "PostgreSQL's TLS handshake was refused: nothing is written (and nothing \
             dead-lettered) until the CA file, the sslmode or the server's certificate is fixed"
        ),
        other => tracing::warn!(
            cause = cause.label(),
            reason = other.reason(),
            "the CRM is unavailable: the batch is retried after a backoff, nothing dead-lettered"
        ),
    }
}

/// A write succeeded: whatever blocked the sink is over.
pub fn unblocked(m: &SinkMetrics) {
    for cause in BlockCause::ALL {
        let gauge = m.blocked.with_label_values(&[cause.label()]);
        if gauge.get() != 0 {
            gauge.set(0);
            tracing::info!(cause = cause.label(), "the CRM accepts writes again");
        }
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

/// What became of a ticket (`crm_tickets_total{outcome}`).
pub const TICKET_OUTCOMES: [&str; 3] = ["opened", "existing", "refused"];

/// A lead's helpdesk ticket was opened (`new`), or found opened by an earlier attempt.
pub fn ticket(m: &SinkMetrics, message_id: &str, ticket_id: &str, new: bool) {
    let outcome = if new { "opened" } else { "existing" };
    m.tickets.with_label_values(&[outcome]).inc();
    tracing::info!(message_id, ticket_id, outcome, "helpdesk ticket");
}

/// The helpdesk refused a lead's ticket: a follow-up, the CRM write stands.
pub fn ticket_refused(m: &SinkMetrics, message_id: &str, reason: &str) {
    m.tickets.with_label_values(&["refused"]).inc();
    tracing::warn!(
        message_id,
        reason,
        "the helpdesk refused the ticket; recorded for a follow-up"
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

/// An email was not written to the CRM, for `reason`: `excluded` (its lead status is an
/// auto-reply, bounce or list mail) or `never-log` (a participant is on the list). Message id
/// only: no address is logged.
pub fn skipped(message_id: &str, reason: &str, status: &str) {
    tracing::debug!(message_id, reason, status, "email not written to the CRM");
}

/// HubSpot object ids are numeric: a deal id that is not (a `deal-Q3_acme@` address) is not
/// associated with the email, which HubSpot would refuse whole.
pub fn deal_not_associated(message_id: &str, deal_id: &str) {
    tracing::warn!(
        message_id,
        deal_id,
        "not a HubSpot deal id (HubSpot ids are numeric): the email is not associated with it"
    );
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

/// Inbound emails answered first by what a batch committed: the milliseconds each waited.
pub fn first_responses(m: &SinkMetrics, waits: &[i64]) {
    for wait in waits {
        m.first_response.observe((*wait).max(0) as f64 / 1000.0);
    }
}

/// What email `message_id` said about contacts changed them (`changed`: the signals that did;
/// repeats of a replay change nothing and are not counted).
pub fn contact_signals(m: &SinkMetrics, message_id: &str, changed: &[&'static str]) {
    for signal in changed {
        m.signals.with_label_values(&[signal]).inc();
    }
    if !changed.is_empty() {
        tracing::info!(message_id, signals = ?changed, "contacts updated from the email's signals");
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
            "mailstream_crm_sink_blocked",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
        }
    }

    #[test]
    fn blocked_names_its_cause_until_a_write_succeeds() {
        let registry = Registry::new();
        let m = SinkMetrics::new(&registry).expect("metrics");
        let value = |cause| m.blocked.with_label_values(&[cause]).get();
        blocked(
            &m,
            &Failure::Auth {
                setting: "token",
                reason: "401".into(),
            },
        );
        assert_eq!((value("auth"), value("unavailable")), (1, 0));
        blocked(&m, &Failure::outage(FailureClass::Connection, "refused"));
        assert_eq!((value("auth"), value("unavailable")), (0, 1));
        blocked(
            &m,
            &Failure::Poison {
                class: FailureClass::Client,
                reason: "400".into(),
            },
        );
        assert_eq!(value("unavailable"), 1, "a poison record changes nothing");
        unblocked(&m);
        assert_eq!((value("auth"), value("unavailable")), (0, 0));
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
