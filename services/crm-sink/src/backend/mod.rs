//! What the sink writes, and the backends that write it.
//!
//! A [`WritePlan`] is derived from one `ScoredLead` by a pure function: the account, the contact
//! (a known one, or a new one with a deterministic id), the deal, the email activity, its
//! attachments and the lead. The record's `visibility` (the rules file's) leaves out the text
//! and the attachments (`subject`), and the subject too (`metadata`). A [`CrmBackend`] writes a plan idempotently on `message_id` and
//! returns only once the write is durable, so the runtime commits the input offset after it.
//!
//! | backend | module | idempotency |
//! |---|---|---|
//! | PostgreSQL (default, tested) | [`postgres`] | unique keys, `ON CONFLICT ... WHERE ... IS DISTINCT FROM` |
//! | generic REST CRM | [`rest`] | `Idempotency-Key: <message_id>:<operation>` on every write |
//! | HubSpot CRM v3 | [`hubspot`] | upsert by email; a unique message-id property on emails |
//! | Tryton 8.x (REST API) | [`tryton`] | search before create: parties by email, opportunities by reference, notes by a message-id line |
//!
//! Each backend also deletes what it wrote for a person (`mailstream erase`, [`erase`]):
//! `postgres_purge`, `rest_erase`, `hubspot_erase` and `tryton_erase` beside the backends.

pub mod erase;
pub mod hubspot;
mod hubspot_erase;
pub mod keys;
pub mod links;
pub mod migrate;
#[cfg(test)]
mod plan_tests;
pub mod postgres;
#[cfg(test)]
mod postgres_bench;
pub mod postgres_purge;
mod postgres_sql;
pub mod postgres_tls;
mod postgres_write;
pub mod rest;
mod rest_erase;
pub mod signals;
pub mod tryton;

use std::future::Future;
use std::time::Instant;

use chrono::{DateTime, Utc};
use mailstream_runtime::records::{ContactDetails, Disposition, ScoredLead};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::Failure;
use keys::fit_id;

/// Namespace of the deterministic ids of contacts the sink creates (UUIDv5 of `mailto:<email>`).
pub const CONTACT_NAMESPACE: uuid::Uuid = uuid::Uuid::NAMESPACE_URL;

/// The deterministic id of a contact created for `email`: a replay creates the same id.
pub fn new_contact_id(email: &str) -> String {
    let email = email.trim().to_lowercase();
    uuid::Uuid::new_v5(&CONTACT_NAMESPACE, format!("mailto:{email}").as_bytes()).to_string()
}

/// Bytes percent-encoded in an idempotency key: what may not appear in an HTTP header value
/// (controls, space, non-ASCII) and `%` itself.
const HEADER_UNSAFE: &AsciiSet = &CONTROLS.add(b' ').add(b'%');

/// `Idempotency-Key` of one write: `<message_id>:<operation>`, with bytes that may not appear in
/// an HTTP header value (and `%`) percent-encoded.
pub fn idempotency_key(message_id: &str, operation: &str) -> String {
    utf8_percent_encode(&format!("{message_id}:{operation}"), HEADER_UNSAFE).to_string()
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccountPlan {
    pub account_id: String,
    pub name: Option<String>,
    pub domain: Option<String>,
    /// `None` when the record only carries the id (the row keeps what it has).
    pub target_account: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContactPlan {
    /// The known contact's id, or the deterministic id of a new one.
    pub contact_id: String,
    /// Lower-cased.
    pub email: String,
    pub name: Option<String>,
    pub account_id: Option<String>,
    /// The resolver proposed it (an unknown sender): the sink creates it.
    pub create: bool,
    /// What the lead's signature or form says of them, for the contact's empty fields.
    pub details: ContactFields,
}

/// A contact's fields the sink only fills, never overwrites (`parsed.contact_details`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContactFields {
    pub title: Option<String>,
    pub company: Option<String>,
    /// The first phone number, E.164.
    pub phone: Option<String>,
    pub website: Option<String>,
}

impl From<&ContactDetails> for ContactFields {
    fn from(d: &ContactDetails) -> Self {
        Self {
            title: d.title.clone(),
            company: d.company.clone(),
            phone: d.phones.first().cloned(),
            website: d.website.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DealPlan {
    pub deal_id: String,
    pub account_id: Option<String>,
    /// `recipient` or `thread`.
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActivityPlan {
    pub subject: Option<String>,
    pub sender_email: Option<String>,
    pub sender_name: Option<String>,
    /// Our addresses it was sent to.
    pub recipients: Vec<String>,
    /// The reply-stripped text, else the full text.
    pub text: Option<String>,
    pub thread_id: String,
    pub thread_parent: Option<String>,
    /// `{"spf": .., "dkim": .., "dmarc": ..}`.
    pub auth: Value,
    pub tags: Vec<String>,
    /// The calendar invitation or answer the email carries (`parsed.meeting` as JSON), shown
    /// like the subject.
    pub meeting: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttachmentPlan {
    /// `""` when the part had none (so `(message_id, sha256, filename)` stays a usable key).
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub blob_uri: Option<String>,
    pub inline: bool,
    /// Short stable id of the part within its message (for idempotency keys and follow-ups).
    pub part: String,
}

impl AttachmentPlan {
    /// Why the CRM tables cannot hold this attachment (the `attachments` table's constraints,
    /// and text PostgreSQL refuses), if they cannot. Such an attachment becomes a follow-up
    /// without a statement that would fail and abort the batch's transaction.
    pub fn problem(&self) -> Option<String> {
        let hex = |s: &str| {
            s.len() == 64
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(&self.sha256) {
            Some("sha256 is not 64 lower-case hex digits".into())
        } else if self.size < 0 {
            Some(format!("negative size {}", self.size))
        } else if [
            Some(&self.filename),
            Some(&self.content_type),
            self.blob_uri.as_ref(),
        ]
        .into_iter()
        .flatten()
        .any(|text| text.contains('\0'))
        {
            Some("a NUL byte in the filename, content type or blob URI".into())
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LeadPlan {
    pub lead_key: String,
    pub sender_email: String,
    pub sender_name: Option<String>,
    pub subject: Option<String>,
    pub score: i32,
    pub status: String,
    /// `[{"rule_id", "points", "evidence"}]`.
    pub breakdown: Value,
    pub rules_version: String,
    /// The scorer's routing: intent, language, team, owner (`None`: not routed).
    pub intent: Option<String>,
    pub language: Option<String>,
    pub team: Option<String>,
    pub owner: Option<String>,
    /// The address of ours the email came in through (`ResolvedEmail::source_alias`).
    pub source_alias: Option<String>,
}

/// Named ids of one operation, as a dry run logs them.
pub type Ids<'a> = Vec<(&'static str, Option<&'a str>)>;

/// Everything the sink writes for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct WritePlan {
    pub message_id: String,
    pub received_at: DateTime<Utc>,
    /// Position of the record in its input partition: the version of what it writes, so a replay
    /// (same or older position) changes nothing.
    pub source_offset: i64,
    /// `qualified`, `review`, `nurture` or `excluded`.
    pub status: String,
    /// The sender was already a known contact when the email was resolved.
    pub known_contact: bool,
    pub account: Option<AccountPlan>,
    pub contact: Option<ContactPlan>,
    pub deal: Option<DealPlan>,
    pub activity: ActivityPlan,
    pub attachments: Vec<AttachmentPlan>,
    pub lead: Option<LeadPlan>,
    /// The resolver's second record of this email (`thread_relinked`): its parent arrived
    /// after the first, so the thread, parent and deal it carries replace what the first one
    /// wrote. The HTTP backends, which answer a repeated write with the first write's result,
    /// update the activity's link instead (PostgreSQL's upsert takes it as any newer record).
    pub relinked: bool,
    /// A reply whose parent was not known when it was resolved: a relinked record may follow
    /// it (and, on a replay, may already have moved its activity).
    pub parent_unknown: bool,
}

impl WritePlan {
    /// Derives the plan from a scored lead read at `source_offset`. Account, contact and deal
    /// ids are bounded ([`fit_id`]).
    pub fn from_scored(lead: &ScoredLead, source_offset: i64) -> Self {
        let resolved = &lead.resolved;
        let email = &resolved.email;
        let sender_email = lead.sender_email.as_ref().map(|e| e.trim().to_lowercase());
        let sender_name = email.lead_sender().and_then(|a| a.name.clone());
        let account_id = lead.account_id.as_deref().map(fit_id);
        let account = lead.account_id.as_ref().map(|id| {
            let account_id = fit_id(id);
            match resolved.account.as_ref().filter(|a| &a.account_id == id) {
                Some(a) => AccountPlan {
                    account_id,
                    name: a.name.clone(),
                    domain: a.domain.clone(),
                    target_account: Some(a.target_account),
                },
                None => AccountPlan {
                    account_id,
                    name: None,
                    domain: None,
                    target_account: None,
                },
            }
        });
        // What the lead wrote about themselves is the body's: hidden with it.
        let details = email.contact_details.as_ref().filter(|_| lead.shows_body());
        let details_name = details.and_then(|d| d.name.clone());
        let fields = details.map(ContactFields::from).unwrap_or_default();
        let contact = match (&lead.contact_id, &resolved.new_contact, &sender_email) {
            (Some(id), _, Some(sender)) => Some(ContactPlan {
                contact_id: fit_id(id),
                email: sender.clone(),
                name: resolved
                    .contact
                    .as_ref()
                    .and_then(|c| c.name.clone())
                    .or_else(|| sender_name.clone())
                    .or(details_name),
                account_id: account_id.clone(),
                create: false,
                details: fields,
            }),
            (None, Some(proposal), _) => {
                let email = proposal.email.trim().to_lowercase();
                Some(ContactPlan {
                    contact_id: new_contact_id(&email),
                    email,
                    name: proposal.name.clone().or(details_name),
                    account_id: proposal
                        .account_id
                        .as_deref()
                        .map(fit_id)
                        .or(account_id.clone()),
                    create: true,
                    details: fields,
                })
            }
            _ => None,
        };
        let mut attachments: Vec<AttachmentPlan> = Vec::new();
        // The rules' visibility keeps the subject, the text and the attachments out of the CRM.
        let subject = lead.subject.clone().filter(|_| lead.shows_subject());
        let shown = if lead.shows_body() {
            email.attachments.as_slice()
        } else {
            &[]
        };
        // An attachment clamd found malware in was not stored and is not linked; the lead's
        // `malware` tag and the scored record name it.
        for a in shown.iter().filter(|a| a.malware.is_none()) {
            let filename = a.filename.clone().unwrap_or_default();
            if attachments
                .iter()
                .any(|p| p.sha256 == a.sha256 && p.filename == filename)
            {
                continue;
            }
            let digest = Sha256::digest(format!("{}\0{filename}", a.sha256).as_bytes());
            attachments.push(AttachmentPlan {
                part: hex::encode(&digest[..8]),
                filename,
                content_type: a.content_type.clone(),
                size: a.size,
                sha256: a.sha256.clone(),
                blob_uri: a.blob_uri.clone(),
                inline: a.disposition == Disposition::Inline,
            });
        }
        let breakdown = Value::Array(
            lead.breakdown
                .iter()
                .map(|h| json!({"rule_id": h.rule_id, "points": h.points, "evidence": h.evidence}))
                .collect(),
        );
        Self {
            message_id: lead.message_id.clone(),
            received_at: DateTime::from_timestamp_millis(lead.received_at).unwrap_or_default(),
            source_offset,
            status: lead.status.clone(),
            known_contact: lead.contact_id.is_some(),
            account,
            deal: lead.deal_id.as_deref().map(|id| DealPlan {
                deal_id: fit_id(id),
                account_id: account_id.clone(),
                source: resolved.deal_source.clone(),
            }),
            activity: ActivityPlan {
                subject: subject.clone(),
                sender_email: sender_email.clone(),
                sender_name: sender_name.clone(),
                recipients: resolved.recipients.clone(),
                text: email
                    .activity_text()
                    .filter(|_| lead.shows_body())
                    .map(str::to_string),
                thread_id: lead.thread_id.clone(),
                thread_parent: resolved.thread_parent.clone(),
                auth: json!({"spf": email.auth.spf, "dkim": email.auth.dkim, "dmarc": email.auth.dmarc}),
                tags: lead.tags.clone(),
                meeting: email
                    .meeting
                    .as_ref()
                    .filter(|_| lead.shows_subject())
                    .and_then(|m| serde_json::to_value(m).ok()),
            },
            attachments,
            lead: sender_email.map(|sender| LeadPlan {
                lead_key: lead.lead_key.clone(),
                sender_email: sender,
                sender_name,
                subject,
                score: lead.score,
                status: lead.status.clone(),
                breakdown,
                rules_version: lead.rules_version.clone(),
                intent: lead.routing.as_ref().map(|r| r.intent.clone()),
                language: lead.routing.as_ref().and_then(|r| r.language.clone()),
                team: lead.routing.as_ref().and_then(|r| r.team.clone()),
                owner: lead.routing.as_ref().and_then(|r| r.owner.clone()),
                source_alias: resolved.source_alias().map(str::to_string),
            }),
            contact,
            relinked: resolved.thread_relinked,
            parent_unknown: resolved.thread_parent.is_none()
                && (email.in_reply_to.is_some() || !email.references.is_empty()),
        }
    }

    /// The writes this plan makes, as (operation, ids) pairs with no personal data: what a dry
    /// run logs.
    pub fn operations(&self) -> Vec<(String, Ids<'_>)> {
        let mut ops = Vec::new();
        if let Some(a) = &self.account {
            ops.push((
                "upsert-account".into(),
                vec![("account_id", Some(a.account_id.as_str()))],
            ));
        }
        if let Some(c) = &self.contact {
            let op = if c.create {
                "create-contact"
            } else {
                "upsert-contact"
            };
            ops.push((op.into(), vec![("contact_id", Some(c.contact_id.as_str()))]));
        }
        if let Some(d) = &self.deal {
            ops.push((
                "upsert-deal".into(),
                vec![("deal_id", Some(d.deal_id.as_str()))],
            ));
        }
        let contact_id = self.contact.as_ref().map(|c| c.contact_id.as_str());
        let deal_id = self.deal.as_ref().map(|d| d.deal_id.as_str());
        ops.push((
            "insert-activity".into(),
            vec![("contact_id", contact_id), ("deal_id", deal_id)],
        ));
        for a in &self.attachments {
            ops.push((
                "insert-attachment".into(),
                vec![("part", Some(a.part.as_str()))],
            ));
        }
        if self.lead.is_some() {
            ops.push((
                "upsert-lead".into(),
                vec![("status", Some(self.status.as_str()))],
            ));
        }
        ops
    }
}

/// What a backend wrote for one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Something changed (`written`); otherwise every part was already there (`unchanged`).
    pub changed: bool,
    /// The CRM's id of the contact.
    pub contact_id: Option<String>,
    /// The contact was created for this message (an unknown sender).
    pub contact_created: bool,
    pub account_id: Option<String>,
    pub deal_id: Option<String>,
    pub activity_id: Option<String>,
    /// The activity was newly created by this write (not a replay).
    pub activity_created: bool,
    pub attachments_written: u32,
    pub attachments_failed: u32,
    pub follow_ups: Vec<String>,
    /// Calls made, retries included.
    pub attempts: u32,
    /// The activity was created already answered (an email of ours in its thread was recorded
    /// first): the milliseconds from it to that answer.
    pub first_response_ms: Option<i64>,
}

/// An email of ours (`resolved.outbound`): the answer to the inbound emails of its thread
/// received before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub message_id: String,
    pub thread_id: String,
    pub received_at: DateTime<Utc>,
}

impl Response {
    /// The response `lead` is, if it is an email of ours.
    pub fn of(lead: &ScoredLead) -> Option<Self> {
        lead.resolved.outbound.then(|| Self {
            message_id: lead.message_id.clone(),
            thread_id: lead.resolved.thread_id.clone(),
            received_at: DateTime::from_timestamp_millis(lead.received_at).unwrap_or_default(),
        })
    }
}

/// A CRM the sink writes to. `write` returns once the write is durable, and writing the same
/// plan again changes nothing.
pub trait CrmBackend: Send + 'static {
    /// `postgres`, `rest`, `hubspot` or `tryton` (the crm-result's `backend`).
    fn name(&self) -> &'static str;

    /// Writes `plan`; no retry waits past `deadline`. A backend may hold the write back until
    /// [`CrmBackend::commit`] (PostgreSQL writes a batch in one transaction).
    fn write(
        &mut self,
        plan: &WritePlan,
        deadline: Instant,
    ) -> impl Future<Output = Result<WriteReport, Failure>> + Send;

    /// Makes every write since the last commit durable; called before the Kafka transaction
    /// holding their offsets commits. Backends whose writes are durable when `write` returns
    /// have nothing to do.
    fn commit(&mut self, deadline: Instant) -> impl Future<Output = Result<(), Failure>> + Send {
        let _ = deadline;
        async { Ok(()) }
    }

    /// The Kafka transaction aborted: drop the writes held back since the last commit.
    fn rollback(&mut self) {}

    /// Records what an email says about contacts (a hard bounce, an opt-out, a departure:
    /// [`signals`]) and returns the names of the signals that changed a contact. Idempotent:
    /// the same signals again change nothing. A backend without these fields records nothing.
    fn record_signals(
        &mut self,
        signals: &signals::Signals,
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<&'static str>, Failure>> + Send {
        let _ = (signals, deadline);
        async { Ok(Vec::new()) }
    }

    /// Records an email of ours as the first response to the inbound emails of its thread
    /// that had none, and returns the milliseconds each waited for it. Idempotent: the same
    /// response again answers nothing. Like [`CrmBackend::write`], it may be held back until
    /// [`CrmBackend::commit`]. A backend that does not keep the time answers none (the HTTP
    /// CRMs: their own reports time responses).
    fn record_response(
        &mut self,
        response: &Response,
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<i64>, Failure>> + Send {
        let _ = (response, deadline);
        async { Ok(Vec::new()) }
    }
}

/// The backend chosen by the `backend` setting.
pub enum AnyBackend {
    Postgres(Box<postgres::PostgresBackend>),
    Rest(rest::RestBackend),
    Hubspot(hubspot::HubspotBackend),
    Tryton(tryton::TrytonBackend),
}

impl CrmBackend for AnyBackend {
    fn name(&self) -> &'static str {
        match self {
            Self::Postgres(b) => b.name(),
            Self::Rest(b) => b.name(),
            Self::Hubspot(b) => b.name(),
            Self::Tryton(b) => b.name(),
        }
    }

    async fn write(&mut self, plan: &WritePlan, deadline: Instant) -> Result<WriteReport, Failure> {
        match self {
            Self::Postgres(b) => b.write(plan, deadline).await,
            Self::Rest(b) => b.write(plan, deadline).await,
            Self::Hubspot(b) => b.write(plan, deadline).await,
            Self::Tryton(b) => b.write(plan, deadline).await,
        }
    }

    async fn commit(&mut self, deadline: Instant) -> Result<(), Failure> {
        match self {
            Self::Postgres(b) => b.commit(deadline).await,
            Self::Rest(b) => b.commit(deadline).await,
            Self::Hubspot(b) => b.commit(deadline).await,
            Self::Tryton(b) => b.commit(deadline).await,
        }
    }

    fn rollback(&mut self) {
        match self {
            Self::Postgres(b) => b.rollback(),
            Self::Rest(b) => b.rollback(),
            Self::Hubspot(b) => b.rollback(),
            Self::Tryton(b) => b.rollback(),
        }
    }

    async fn record_signals(
        &mut self,
        signals: &signals::Signals,
        deadline: Instant,
    ) -> Result<Vec<&'static str>, Failure> {
        match self {
            Self::Postgres(b) => b.record_signals(signals, deadline).await,
            Self::Rest(b) => b.record_signals(signals, deadline).await,
            Self::Hubspot(b) => b.record_signals(signals, deadline).await,
            Self::Tryton(b) => b.record_signals(signals, deadline).await,
        }
    }

    async fn record_response(
        &mut self,
        response: &Response,
        deadline: Instant,
    ) -> Result<Vec<i64>, Failure> {
        match self {
            Self::Postgres(b) => b.record_response(response, deadline).await,
            Self::Rest(b) => b.record_response(response, deadline).await,
            Self::Hubspot(b) => b.record_response(response, deadline).await,
            Self::Tryton(b) => b.record_response(response, deadline).await,
        }
    }
}
