//! Support tickets: a lead whose intent is one of `ticket_intents` (the rules file's intents;
//! `support` by default) and whose status is below `qualified` opens one ticket in a helpdesk,
//! besides its CRM write (the seeds: "if qualification is low but intent is support, open a
//! ticket"). Its id lands in the crm-result's `ticket_id`.
//!
//! The helpdesk is a generic REST API (`helpdesk_url`, `helpdesk_token`, `helpdesk_tickets_path`
//! `/tickets`): `POST` of
//!
//! ```json
//! {"external_id": "<message_id>", "subject": "...", "description": "...",
//!  "requester": {"email": "...", "name": "..."}, "tags": ["mailstream", "support"],
//!  "intent": "support", "team": "...", "owner": "...", "received_at": "2026-12-07T09:00:00.000Z"}
//! ```
//!
//! with `Idempotency-Key: <message_id>:ticket`, answered with the ticket's `id`; a replay meets
//! the key and opens nothing new. Subject and description follow the lead's visibility (the
//! rules file's). Answers are classified like the REST CRM's
//! ([`status_failure`](crate::backend::rest::status_failure)), the credentials naming
//! `helpdesk_token`: an outage is retried with the batch, never dead-lettered; a ticket the
//! helpdesk refuses (4xx) is a follow-up in the crm-result, not a failure of the email, whose
//! CRM write stands.

use std::time::Instant;

use chrono::{DateTime, SecondsFormat};
use mailstream_runtime::records::ScoredLead;
use reqwest::Method;
use serde_json::json;

use crate::backend::idempotency_key;
use crate::backend::rest::{Call, HttpClient, require_id, status_failure};
use crate::error::Failure;

/// The statuses that never open a ticket: a qualified lead goes to sales, an excluded email is
/// no request.
const NO_TICKET: [&str; 2] = ["qualified", "excluded"];

/// Opens tickets in the configured helpdesk.
pub struct Helpdesk {
    pub http: HttpClient,
    pub tickets_path: String,
    /// The intents that open a ticket.
    pub intents: Vec<String>,
}

/// A ticket opened (or found by its key, `new` false).
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    pub id: String,
    pub new: bool,
    pub attempts: u32,
}

/// Classifies a helpdesk answer as the REST CRM's are, credentials naming `helpdesk_token`.
pub fn helpdesk_failure(
    op: &str,
    status: u16,
    body: &str,
    retry_after: Option<std::time::Duration>,
) -> Failure {
    match status_failure(op, status, body, retry_after) {
        Failure::Auth { reason, .. } => Failure::Auth {
            setting: "helpdesk_token",
            reason,
        },
        other => other,
    }
}

impl Helpdesk {
    /// Whether `lead` opens a ticket.
    pub fn wants(&self, lead: &ScoredLead) -> bool {
        !NO_TICKET.contains(&lead.status.as_str())
            && lead
                .routing
                .as_ref()
                .is_some_and(|r| self.intents.contains(&r.intent))
    }

    /// Opens `lead`'s ticket, or finds it opened by an earlier attempt.
    pub async fn open(&self, lead: &ScoredLead, deadline: Instant) -> Result<Ticket, Failure> {
        let email = &lead.resolved.email;
        let requester = email.lead_sender();
        let routing = lead.routing.as_ref();
        let received = DateTime::from_timestamp_millis(lead.received_at).unwrap_or_default();
        let body = json!({
            "external_id": lead.message_id,
            "subject": lead.subject.as_ref().filter(|_| lead.shows_subject()),
            "description": email.activity_text().filter(|_| lead.shows_body()),
            "requester": requester.map(|a| json!({"email": a.email, "name": a.name})),
            "tags": ["mailstream", routing.map(|r| r.intent.as_str()).unwrap_or_default()],
            "intent": routing.map(|r| &r.intent),
            "team": routing.and_then(|r| r.team.as_ref()),
            "owner": routing.and_then(|r| r.owner.as_ref()),
            "received_at": received.to_rfc3339_opts(SecondsFormat::Millis, true),
        });
        let call = Call {
            op: "ticket-create",
            method: Method::POST,
            path: self.tickets_path.clone(),
            idempotency_key: Some(idempotency_key(&lead.message_id, "ticket")),
            body: Some(&body),
            accept_conflict: true,
            accept_missing: false,
        };
        let (answer, attempts) = self.http.call(&call, deadline).await?;
        Ok(Ticket {
            id: require_id(&answer, "ticket-create")?,
            new: !answer.replayed,
            attempts,
        })
    }
}
