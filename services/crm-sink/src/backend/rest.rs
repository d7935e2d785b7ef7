//! The generic REST CRM backend, and the HTTP client it shares with HubSpot.
//!
//! [`HttpClient`] makes one JSON call under the retry policy and the backend's limiter: bearer
//! token (never logged), `Idempotency-Key: <message_id>:<operation>` on every write, a request
//! timeout, and the status classified:
//!
//! | answer | treated as |
//! |---|---|
//! | 2xx | success; `Idempotent-Replayed: true` marks the server's replay of an earlier call |
//! | 409 with an `id` (where the call accepts conflicts) | success: the object is already there (a 409 without one is rejected) |
//! | 404 (where the call accepts it: an erase's lookups and deletes) | answered: the object is not there |
//! | 408, 425, 429, 5xx (but 501, 505), timeouts, connection failures (refused, reset) | `Retry`: retried in place (honouring `Retry-After`, or on a 429 without it HubSpot's `X-HubSpot-RateLimit-Interval-Milliseconds`), then an outage: the batch is retried by the runtime, nothing dead-lettered |
//! | 401, 403 | `Auth`: the token (`token`) is refused; the sink is blocked until it is fixed, nothing dead-lettered |
//! | other 4xx (400, 413, 414, 422, 431: a field or key the CRM will not take), 501, 505 | `Poison`: dead-lettered at once (`crm-rejected`); for an attachment, a follow-up |
//!
//! Accounts travel as `account_id` on the contact, deal and activity bodies (no endpoint of
//! their own).
//!
//! [`RestBackend`] writes a plan as: contact upsert (by email), deal upsert, the email activity
//! (with the lead's score, status and breakdown), then the attachments in parallel (up to
//! `max_concurrency`). A relinked record (the resolver's second record of a reply whose parent
//! came later) meets its first activity by the idempotency key, and then moves it:
//! `PATCH <activities_path>/<activity_id>` with the new `thread_id`, `thread_parent` and
//! `deal_id` (key `<message_id>:activity-link`). An attachment the CRM rejects is a follow-up in the result, not a failure
//! of the message; one the CRM cannot take now (an outage) fails the message like any other call,
//! and the batch is retried (the calls already answered replay by their idempotency keys).
//! An attachment's `url` is its blob URI, or a presigned URL the CRM can fetch
//! (`attachment_url_expiry_secs`, [`AttachmentLinks`]).

use std::time::{Duration, Instant};

use std::time::SystemTime;

use chrono::SecondsFormat;
use futures::future::join_all;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use reqwest::header::{HeaderValue, RETRY_AFTER};
use serde_json::{Value, json};

use super::links::AttachmentLinks;
use super::{CrmBackend, WritePlan, WriteReport, idempotency_key};
use crate::error::{Failure, FailureClass};
use crate::events::redact;
use crate::retry::{Retrier, parse_retry_after};

/// One HTTP call to make.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// Names the call in logs and metrics (`contact-upsert`, `activity-create`, ...).
    pub op: &'a str,
    pub method: Method,
    /// Appended to the base URL; already percent-encoded.
    pub path: String,
    pub idempotency_key: Option<String>,
    pub body: Option<&'a Value>,
    /// A 409 answer means "already there" for this call (returned, not an error).
    pub accept_conflict: bool,
    /// A 404 answer means "not there" for this call (a lookup, or a delete of something already
    /// gone): returned with its status, not an error.
    pub accept_missing: bool,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// The server replayed an earlier call with the same idempotency key, or the object
    /// already existed (409): nothing new was written.
    pub replayed: bool,
}

impl Answer {
    /// The `id` field (string or number) of the answer, or of `results[0]` (batch APIs).
    pub fn id(&self) -> Option<String> {
        let id = |v: &Value| match v.get("id") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        id(&self.body).or_else(|| self.body.get("results")?.get(0).and_then(id))
    }
}

/// A JSON-over-HTTP client with retries, rate limit and concurrency cap.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    base_url: String,
    token: Option<String>,
    retrier: Retrier,
    /// How an answer that is not a success is classified ([`status_failure`] unless a CRM's
    /// backend knows its own error shapes).
    classify: Classify,
}

/// Classifies a failed answer: operation, status, body text, `Retry-After`.
pub type Classify = fn(&str, u16, &str, Option<Duration>) -> Failure;

impl HttpClient {
    pub fn new(base_url: String, token: Option<String>, retrier: Retrier) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(retrier.request_timeout)
            .connect_timeout(retrier.request_timeout)
            .user_agent("mailstream-crm-sink")
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            retrier,
            classify: status_failure,
        })
    }

    /// The same client, classifying failed answers with `classify`.
    pub fn classifying(self, classify: Classify) -> Self {
        Self { classify, ..self }
    }

    /// Makes `call`, retrying as the policy allows. Returns the answer and the attempts made.
    pub async fn call(&self, call: &Call<'_>, deadline: Instant) -> Result<(Answer, u32), Failure> {
        self.retrier
            .run(call.op, deadline, || self.attempt(call))
            .await
    }

    async fn attempt(&self, call: &Call<'_>) -> Result<Answer, Failure> {
        let mut request = self.client.request(
            call.method.clone(),
            format!("{}{}", self.base_url, call.path),
        );
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = &call.idempotency_key
            && let Ok(value) = HeaderValue::from_str(key)
        {
            request = request.header("Idempotency-Key", value);
        }
        if let Some(body) = call.body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(transport_failure)?;
        let status = response.status().as_u16();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        // HubSpot answers the 429s of its rolling windows without `Retry-After` but names the
        // window's length: waiting it out clears the window.
        let retry_after = header(RETRY_AFTER.as_str())
            .and_then(|v| parse_retry_after(&v, SystemTime::now()))
            .or_else(|| {
                header(HUBSPOT_RATE_LIMIT_INTERVAL)
                    .filter(|_| status == 429)
                    .and_then(|v| v.trim().parse().ok())
                    .map(Duration::from_millis)
            });
        let replayed =
            header("idempotent-replayed").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let text = response.text().await.map_err(transport_failure)?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        match status {
            200..=299 => Ok(Answer {
                status,
                body,
                replayed,
            }),
            409 if call.accept_conflict => Ok(Answer {
                status,
                body,
                replayed: true,
            }),
            404 if call.accept_missing => Ok(Answer {
                status,
                body,
                replayed: false,
            }),
            _ => Err((self.classify)(call.op, status, &text, retry_after)),
        }
    }
}

/// The length of the rate-limit window a HubSpot 429 refers to, in milliseconds.
const HUBSPOT_RATE_LIMIT_INTERVAL: &str = "x-hubspot-ratelimit-interval-milliseconds";

/// How an answer that is not a success is treated (the table in the module doc). Whatever the
/// record makes the CRM refuse (400, 413 for a body too large, 414 and 431 for a key too long
/// for a URL or a header, 422 for a field the CRM will not hold) is poison at once: another
/// attempt would get the same answer.
pub fn status_failure(op: &str, status: u16, body: &str, retry_after: Option<Duration>) -> Failure {
    let reason = || format!("{op} answered {status}: {}", redact(body, 160));
    match status {
        401 | 403 => Failure::Auth {
            setting: "token",
            reason: format!("{op} answered {status}"),
        },
        408 | 425 | 429 => Failure::Retry {
            class: FailureClass::Client,
            reason: reason(),
            retry_after,
        },
        500..=599 if status != 501 && status != 505 => Failure::Retry {
            class: FailureClass::Server,
            reason: reason(),
            retry_after,
        },
        _ => Failure::Poison {
            class: if status >= 500 {
                FailureClass::Server
            } else {
                FailureClass::Client
            },
            reason: reason(),
        },
    }
}

/// A request that got no answer: a timeout or a connection failure, retried.
pub fn transport_failure(e: reqwest::Error) -> Failure {
    Failure::Retry {
        class: if e.is_timeout() {
            FailureClass::Timeout
        } else {
            FailureClass::Connection
        },
        reason: redact(&format!("{e}"), 200),
        retry_after: None,
    }
}

/// Bytes percent-encoded in a path segment: all but RFC 3986's unreserved ones.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `s` as one URL path segment (everything but RFC 3986 unreserved bytes).
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Paths of the generic REST CRM's endpoints.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub contacts: String,
    pub deals: String,
    pub activities: String,
    /// May hold `{activity_id}`.
    pub attachments: String,
}

/// A generic REST CRM.
pub struct RestBackend {
    pub http: HttpClient,
    pub endpoints: Endpoints,
    /// What the attachments' `url` is: the blob URI, or a presigned URL ([`AttachmentLinks`]).
    pub links: AttachmentLinks,
}

/// A POST of `body` with the idempotency key of `message_id` and `key`.
fn post<'a>(op: &'a str, path: &str, message_id: &str, key: &str, body: &'a Value) -> Call<'a> {
    Call {
        op,
        method: Method::POST,
        path: path.to_string(),
        idempotency_key: Some(idempotency_key(message_id, key)),
        body: Some(body),
        accept_conflict: true,
        accept_missing: false,
    }
}

/// The id in `answer`, or the record is poison (a 2xx without an id breaks the contract).
pub fn require_id(answer: &Answer, op: &str) -> Result<String, Failure> {
    answer.id().ok_or_else(|| Failure::Poison {
        class: FailureClass::Client,
        reason: format!("{op} answered {} without an id", answer.status),
    })
}

impl CrmBackend for RestBackend {
    fn name(&self) -> &'static str {
        "rest"
    }

    async fn write(&mut self, plan: &WritePlan, deadline: Instant) -> Result<WriteReport, Failure> {
        let mut report = WriteReport::default();
        let id = plan.message_id.as_str();
        if let Some(k) = &plan.contact {
            let body = json!({"email": k.email, "name": k.name, "account_id": k.account_id,
                "external_id": k.contact_id, "create": k.create});
            let (answer, n) = self
                .http
                .call(
                    &post(
                        "contact-upsert",
                        &self.endpoints.contacts,
                        id,
                        "contact",
                        &body,
                    ),
                    deadline,
                )
                .await?;
            report.attempts += n;
            report.changed |= !answer.replayed;
            report.contact_id = Some(require_id(&answer, "contact-upsert")?);
            report.contact_created = k.create
                && (answer.status == 201 || answer.body.get("created") == Some(&Value::Bool(true)));
        }
        report.account_id = plan.account.as_ref().map(|a| a.account_id.clone());
        if let Some(d) = &plan.deal {
            let body = json!({"id": d.deal_id, "account_id": d.account_id,
                "contact_id": report.contact_id, "source": d.source});
            let (answer, n) = self
                .http
                .call(
                    &post("deal-upsert", &self.endpoints.deals, id, "deal", &body),
                    deadline,
                )
                .await?;
            report.attempts += n;
            report.changed |= !answer.replayed;
            report.deal_id = Some(answer.id().unwrap_or_else(|| d.deal_id.clone()));
        }
        let a = &plan.activity;
        let lead = plan.lead.as_ref().map(|l| {
            json!({"lead_key": l.lead_key, "score": l.score, "status": l.status,
                "breakdown": l.breakdown, "rules_version": l.rules_version})
        });
        let body = json!({
            "message_id": plan.message_id, "type": "email", "direction": "inbound",
            "received_at": plan.received_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "subject": a.subject, "text": a.text, "sender_email": a.sender_email,
            "sender_name": a.sender_name, "recipients": a.recipients, "thread_id": a.thread_id,
            "thread_parent": a.thread_parent, "contact_id": report.contact_id,
            "account_id": report.account_id, "deal_id": report.deal_id, "auth": a.auth,
            "tags": a.tags, "status": plan.status, "lead": lead, "meeting": a.meeting,
        });
        let (answer, n) = self
            .http
            .call(
                &post(
                    "activity-create",
                    &self.endpoints.activities,
                    id,
                    "activity",
                    &body,
                ),
                deadline,
            )
            .await?;
        report.attempts += n;
        report.changed |= !answer.replayed;
        report.activity_created = !answer.replayed;
        let activity_id = require_id(&answer, "activity-create")?;
        if plan.relinked && answer.replayed {
            // The create answered with the first record's activity: move it to the thread,
            // parent and deal its parent's arrival gave it.
            let body = json!({"thread_id": a.thread_id, "thread_parent": a.thread_parent,
                "deal_id": report.deal_id});
            let call = Call {
                op: "activity-link",
                method: Method::PATCH,
                path: format!(
                    "{}/{}",
                    self.endpoints.activities.trim_end_matches('/'),
                    encode_segment(&activity_id)
                ),
                idempotency_key: Some(idempotency_key(id, "activity-link")),
                body: Some(&body),
                accept_conflict: false,
                accept_missing: false,
            };
            let (answer, n) = self.http.call(&call, deadline).await?;
            report.attempts += n;
            report.changed |= !answer.replayed;
        }
        let path = self
            .endpoints
            .attachments
            .replace("{activity_id}", &encode_segment(&activity_id));
        report.activity_id = Some(activity_id);
        let mut bodies: Vec<(String, Value)> = Vec::new();
        for p in &plan.attachments {
            let url = match &p.blob_uri {
                Some(uri) => match self.links.link(uri).await {
                    Ok(url) => Some(url),
                    Err(Failure::Poison { reason, .. }) => {
                        report.attachments_failed += 1;
                        let follow_up = format!("attachment {}: {reason}", p.part);
                        report.follow_ups.push(follow_up);
                        continue;
                    }
                    Err(other) => return Err(other),
                },
                None => None,
            };
            let body = json!({"filename": p.filename, "content_type": p.content_type,
                "size": p.size, "sha256": p.sha256, "url": url, "inline": p.inline});
            bodies.push((p.part.clone(), body));
        }
        let http = &self.http;
        let calls = bodies.iter().map(|(part, body)| {
            let call = post(
                "attachment-create",
                &path,
                id,
                &format!("attachment:{part}"),
                body,
            );
            async move { (part, http.call(&call, deadline).await) }
        });
        for (part, result) in join_all(calls).await {
            match result {
                Ok((answer, n)) => {
                    report.attempts += n;
                    report.changed |= !answer.replayed;
                    report.attachments_written += 1;
                }
                Err(Failure::Poison { reason, .. }) => {
                    report.attempts += 1;
                    report.attachments_failed += 1;
                    report
                        .follow_ups
                        .push(format!("attachment {part}: {reason}"));
                }
                // The CRM went away or time ran out: try the whole message again later.
                Err(other) => return Err(other),
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_a_record_caused_are_poison_and_outages_and_credentials_are_not() {
        let verdict = |status| match status_failure("activity-create", status, "too big", None) {
            Failure::Poison { .. } => "rejected",
            Failure::Retry { .. } => "retried",
            Failure::Outage { .. } => "outage",
            Failure::Auth { .. } => "auth",
            Failure::Tls { .. } => "tls",
            Failure::Broken { .. } => "broken",
        };
        for status in [400, 404, 409, 413, 414, 422, 431, 501, 505] {
            assert_eq!(verdict(status), "rejected", "{status}");
        }
        for status in [408, 425, 429, 500, 502, 503, 504] {
            assert_eq!(verdict(status), "retried", "{status}");
        }
        assert_eq!(verdict(401), "auth");
        assert_eq!(verdict(403), "auth");
        assert_eq!(encode_segment("a b/ü~x"), "a%20b%2F%C3%BC~x");
    }
}
