//! The Tryton backend: Tryton 8.x's REST API (`trytond` with the `party`, `company` and
//! `sale_opportunity` modules) at `<base_url>/<tryton_database>/rest/model/<model>[/<id>]`,
//! authenticated with a REST user-application key (`Authorization: Bearer <token>`, never
//! logged). Every call goes through the sink's [`Retrier`] (backoff, `Retry-After`, rate limit,
//! concurrency cap) inside the record's call budget.
//!
//! Tryton has no idempotency keys, so every write is preceded by a search and a replay finds
//! what the first write made. Per message:
//! 1. the sender's party: its email contact mechanism is searched (`party.contact_mechanism`,
//!    `value` ilike the address with Tryton's wildcards escaped: case-insensitive equality);
//!    else a party is created with the sender's name (else the address), an email contact
//!    mechanism and the lead's phone and website when known. A party found without a name gets
//!    the sender's; nothing else of it is changed.
//! 2. the deal's opportunity (`sale.opportunity`), searched by `reference` = the deal id; else
//!    created as a lead for the party, with the subject as description, the email's date as
//!    start date, in the server's first company and its currency. One found without a party gets
//!    the sender's.
//! 3. the email: these modules have no activity model (Tryton's is the separate `activity`
//!    module), so the email is recorded as a note (`ir.note`, shown on the record in Tryton's
//!    clients) on the opportunity, else on the party. Its first line, [`NOTE_MARKER`] and the
//!    message id, is what a replay searches; then From, Subject, Received, the lead's score and
//!    status, a blank line and the text (at most [`NOTE_MAX_TEXT_BYTES`]). A message with
//!    neither a sender nor a deal has nothing to hang a note on and writes nothing. A relinked
//!    record (the resolver's second record of a reply whose parent came later, now with the
//!    parent's deal) looks for its note on any record and moves it to the deal's opportunity.
//!
//! A party created gets an email contact mechanism, and a phone and a website one when the
//! lead's signature or form gave them (`parsed.contact_details`); a party found is not changed
//! beyond a missing name. Title and company have no field on a Tryton party.
//! Attachments are not uploaded (counted neither written nor failed); accounts travel as ids
//! in the crm-result only.
//!
//! | answer | treated as |
//! |---|---|
//! | 2xx | success |
//! | 500, an HTML page: an exception Tryton did not map (a value a field cannot take, an unknown field) | `Poison`: dead-lettered with the page's text as the reason, never retried (Tryton answers its database's operational errors, e.g. SQLite busy, with 503) |
//! | 400: Tryton's `UserError`s (JSON with a `message`), a body it cannot decode (HTML) | `Poison` |
//! | anything else | as the REST backend ([`status_failure`](super::rest::status_failure)): 401/403 `Auth` naming `token`; 408, 425, 429, 502, 503, 504 and refused or reset connections, timeouts `Retry`, then an outage; other 4xx `Poison` |
//!
//! Start-up ([`TrytonBackend::connect`]) reads the first company and its currency and checks
//! that every model used exists: a wrong URL, database, key or a module not activated stops
//! start-up, so a 500 at run time is the record's doing.
//!
//! Erasure (`mailstream erase`): the person's parties, the notes of their emails and the
//! opportunities only they are on are deleted (`tryton_erase.rs`).
//!
//! Effectively once: a replay, or a retry after a timeout whose write went through, finds what
//! the first attempt made. Tryton has no unique key on contact values: two sink instances
//! meeting the same new sender at the same instant (two messages in different partitions)
//! could each create a party.

use std::time::{Duration, Instant};

use chrono::{Datelike, SecondsFormat};
use mailstream_runtime::config::Secret;
use reqwest::Method;
use serde_json::{Value, json};

use super::{CrmBackend, WritePlan, WriteReport};
use crate::error::{Failure, FailureClass};
use crate::retry::Retrier;
use http::{Api, like_literal, many2one, record_id};

#[path = "tryton_erase.rs"]
mod erase;
#[path = "tryton_http.rs"]
mod http;

/// The first line of a note holding an email, before its message id.
pub const NOTE_MARKER: &str = "mailstream email ";

/// The most bytes of an email's text kept in its note (Tryton's requests are at most 2 MiB by
/// default).
pub const NOTE_MAX_TEXT_BYTES: usize = 64 * 1024;

/// How long start-up may spend reaching the server.
const CONNECT_BUDGET: Duration = Duration::from_secs(30);

/// Where the Tryton server is and how to authenticate (`base_url`, `tryton_database`, `token`).
#[derive(Debug, Clone)]
pub struct TrytonServer {
    pub base_url: String,
    pub database: String,
    pub key: Secret,
}

/// A Tryton server's REST API, and the company opportunities are created in.
pub struct TrytonBackend {
    api: Api,
    company: i64,
    currency: i64,
}

/// The body of the note that records `plan`'s email.
pub fn note_message(plan: &WritePlan) -> String {
    let a = &plan.activity;
    let mut lines = vec![format!("{NOTE_MARKER}{}", plan.message_id)];
    if let Some(email) = &a.sender_email {
        lines.push(match &a.sender_name {
            Some(name) => format!("From: {name} <{email}>"),
            None => format!("From: {email}"),
        });
    }
    if let Some(subject) = &a.subject {
        lines.push(format!("Subject: {subject}"));
    }
    lines.push(format!(
        "Received: {}",
        plan.received_at.to_rfc3339_opts(SecondsFormat::Secs, true)
    ));
    if let Some(lead) = &plan.lead {
        lines.push(format!("Lead: score {} ({})", lead.score, lead.status));
    }
    if let Some(meeting) = &a.meeting {
        let field = |name: &str| meeting[name].as_str().unwrap_or_default().to_string();
        lines.push(format!(
            "Meeting: {} {} at {}",
            field("method"),
            field("summary"),
            field("start")
        ));
    }
    lines.push(String::new());
    let text = a.text.as_deref().unwrap_or_default();
    let mut end = text.len().min(NOTE_MAX_TEXT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    lines.push(text[..end].to_string());
    lines.join("\n")
}

impl TrytonBackend {
    /// Connects to `server`: reads its first company and that company's currency, and checks
    /// that the models this backend writes exist.
    pub async fn connect(server: TrytonServer, retrier: Retrier) -> Result<Self, Failure> {
        let mut backend = Self {
            api: Api::new(server, retrier)?,
            company: 0,
            currency: 0,
        };
        let deadline = Instant::now() + CONNECT_BUDGET;
        let calls = &mut WriteReport::default();
        let op = ("company-lookup", "company.company");
        let companies = backend
            .api
            .search(calls, op, &json!([]), &["currency"], deadline)
            .await?;
        let company = companies.first().ok_or_else(|| Failure::Broken {
            class: FailureClass::Client,
            reason: "the Tryton database has no company (sale opportunities need one)".into(),
        })?;
        backend.company = record_id(company, "company-lookup")?;
        backend.currency = many2one(company, "currency").ok_or_else(|| Failure::Broken {
            class: FailureClass::Client,
            reason: "the Tryton company has no currency".into(),
        })?;
        for model in ["party.contact_mechanism", "sale.opportunity", "ir.note"] {
            let domain = json!([["id", "=", 0]]);
            let op = ("model-check", model);
            backend
                .api
                .search(calls, op, &domain, &["id"], deadline)
                .await?;
        }
        Ok(backend)
    }

    /// The id of the company opportunities are created in.
    pub fn company_id(&self) -> i64 {
        self.company
    }

    /// The sender's party (found or created) into `report`.
    async fn party(
        &self,
        plan: &WritePlan,
        report: &mut WriteReport,
        deadline: Instant,
    ) -> Result<Option<i64>, Failure> {
        let Some(k) = &plan.contact else {
            return Ok(None);
        };
        let domain = json!([
            ["type", "=", "email"],
            ["value", "ilike", like_literal(&k.email)]
        ]);
        let op = ("party-search", "party.contact_mechanism");
        let found = self
            .api
            .search(report, op, &domain, &["party.name"], deadline)
            .await?;
        let existing = found
            .iter()
            .filter_map(|m| Some((many2one(m, "party")?, m.get("party")?)))
            .min_by_key(|(id, _)| *id);
        let id = match existing {
            Some((id, party)) => {
                let unnamed = party
                    .get("name")
                    .and_then(Value::as_str)
                    .is_none_or(|n| n.trim().is_empty());
                if let (true, Some(name)) = (unnamed, &k.name) {
                    let path = format!("party.party/{id}");
                    let op = ("party-name", Method::PUT, path.as_str());
                    self.api
                        .save(report, op, &json!({"name": name}), deadline)
                        .await?;
                }
                id
            }
            None => {
                // A new party gets the phone and website the lead gave too; a party found is
                // left as the CRM's users keep it.
                let mut mechanisms = vec![json!({"type": "email", "value": k.email})];
                if let Some(phone) = &k.details.phone {
                    mechanisms.push(json!({"type": "phone", "value": phone}));
                }
                if let Some(website) = &k.details.website {
                    mechanisms.push(json!({"type": "website", "value": website}));
                }
                let body = json!({
                    "name": k.name.as_deref().unwrap_or(&k.email),
                    "contact_mechanisms": [["create", mechanisms]],
                });
                let op = ("party-create", Method::POST, "party.party");
                let id = self.api.save(report, op, &body, deadline).await?;
                report.contact_created = k.create;
                id
            }
        };
        report.contact_id = Some(id.to_string());
        Ok(Some(id))
    }

    /// The deal's opportunity (found or created) into `report`.
    async fn opportunity(
        &self,
        plan: &WritePlan,
        party: Option<i64>,
        report: &mut WriteReport,
        deadline: Instant,
    ) -> Result<Option<i64>, Failure> {
        let Some(d) = &plan.deal else {
            return Ok(None);
        };
        let domain = json!([["reference", "=", d.deal_id]]);
        let op = ("opportunity-search", "sale.opportunity");
        let found = self
            .api
            .search(report, op, &domain, &["party"], deadline)
            .await?;
        let existing = found
            .iter()
            .filter_map(|o| Some((record_id(o, "opportunity-search").ok()?, o)))
            .min_by_key(|(id, _)| *id);
        let id = match existing {
            Some((id, found)) => {
                if let (None, Some(party)) = (many2one(found, "party"), party) {
                    let path = format!("sale.opportunity/{id}");
                    let op = ("opportunity-party", Method::PUT, path.as_str());
                    self.api
                        .save(report, op, &json!({"party": party}), deadline)
                        .await?;
                }
                id
            }
            None => {
                let date = plan.received_at.date_naive();
                let body = json!({
                    "reference": d.deal_id,
                    "party": party,
                    "description": plan.activity.subject,
                    "company": self.company,
                    "currency": self.currency,
                    "start_date": {"__class__": "date", "year": date.year(),
                        "month": date.month(), "day": date.day()},
                });
                let op = ("opportunity-create", Method::POST, "sale.opportunity");
                self.api.save(report, op, &body, deadline).await?
            }
        };
        report.deal_id = Some(id.to_string());
        Ok(Some(id))
    }
}

impl CrmBackend for TrytonBackend {
    fn name(&self) -> &'static str {
        "tryton"
    }

    async fn write(&mut self, plan: &WritePlan, deadline: Instant) -> Result<WriteReport, Failure> {
        let mut report = WriteReport {
            account_id: plan.account.as_ref().map(|a| a.account_id.clone()),
            ..WriteReport::default()
        };
        let party = self.party(plan, &mut report, deadline).await?;
        let opportunity = self.opportunity(plan, party, &mut report, deadline).await?;
        let resource = match (opportunity, party) {
            (Some(id), _) => format!("sale.opportunity,{id}"),
            (None, Some(id)) => format!("party.party,{id}"),
            (None, None) => return Ok(report),
        };
        let first_line = format!("{NOTE_MARKER}{}\n", plan.message_id);
        let by_message = json!(["message", "like", format!("{}%", like_literal(&first_line))]);
        let op = ("note-search", "ir.note");
        let mut found = Vec::new();
        if !plan.relinked {
            let domain = json!([["resource", "=", resource], by_message]);
            found = self
                .api
                .search(&mut report, op, &domain, &["resource"], deadline)
                .await?;
        }
        // A reply's note may hang elsewhere: on the party, when its relinked record is written;
        // on the opportunity the relink moved it to, when its first record is replayed.
        if found.is_empty() && (plan.relinked || plan.parent_unknown) {
            let domain = json!([by_message]);
            found = self
                .api
                .search(&mut report, op, &domain, &["resource"], deadline)
                .await?;
        }
        let existing = found
            .iter()
            .filter_map(|note| Some((record_id(note, "note-search").ok()?, note)))
            .min_by_key(|(id, _)| *id);
        let id = match existing {
            Some((id, note)) => {
                let elsewhere =
                    note.get("resource").and_then(Value::as_str) != Some(resource.as_str());
                if plan.relinked && elsewhere {
                    let path = format!("ir.note/{id}");
                    let op = ("note-relink", Method::PUT, path.as_str());
                    self.api
                        .save(&mut report, op, &json!({"resource": resource}), deadline)
                        .await?;
                }
                id
            }
            None => {
                let body = json!({"resource": resource, "message": note_message(plan)});
                let op = ("note-create", Method::POST, "ir.note");
                let id = self.api.save(&mut report, op, &body, deadline).await?;
                report.activity_created = true;
                id
            }
        };
        report.activity_id = Some(id.to_string());
        Ok(report)
    }
}

#[cfg(test)]
#[path = "tryton_tests.rs"]
mod tests;
