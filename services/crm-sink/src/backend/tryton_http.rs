//! Tryton's REST API on the wire, for the [`super::TrytonBackend`]: requests with the bearer
//! key through the sink's one [`HttpClient`] (and its [`Retrier`]), search domains as Tryton takes them, and answers
//! classified as the table in `tryton.rs` says.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use reqwest::Method;
use serde_json::Value;

use super::TrytonServer;
use crate::backend::WriteReport;
use crate::backend::rest::{Call, HttpClient, encode_segment, status_failure};
use crate::error::{Failure, FailureClass};
use crate::events::redact;
use crate::retry::Retrier;

/// A Tryton server's REST API: `<base_url>/<database>/rest/model/...`, through the sink's one
/// HTTP client with Tryton's own classification of failed answers ([`classify`]).
pub struct Api {
    /// Based at `<base_url>/<database>/rest/model`, with the key as bearer token.
    http: HttpClient,
}

/// Escapes Tryton's `like` wildcards (`%`, `_`) and its escape character (`\`).
pub fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A search domain as the REST API takes it in `?d=`: URL-safe base64 of its JSON.
pub fn encode_domain(domain: &Value) -> String {
    URL_SAFE.encode(domain.to_string())
}

/// The message of an HTML error page (Werkzeug's, as Tryton answers a 500): the text of its
/// last paragraph (the page's title and heading only repeat the status), tags dropped, the
/// entities it escapes decoded, white space collapsed.
pub fn page_text(html: &str) -> String {
    let body = html.rsplit_once("<p>").map_or(html, |(_, last)| last);
    // Each piece after a `<` starts with the rest of a tag, up to its `>`.
    let pieces = body
        .split('<')
        .map(|p| p.split_once('>').map_or(p, |(_, text)| text));
    let text = pieces.collect::<Vec<_>>().join(" ");
    let entities = [
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&quot;", "\""),
        ("&#39;", "'"),
        ("&amp;", "&"),
    ];
    let text = entities.iter().fold(text, |t, (e, c)| t.replace(e, c));
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How an answer that is not a success is treated (the table in `tryton.rs`'s module doc).
pub fn classify(op: &str, status: u16, body: &str, retry_after: Option<Duration>) -> Failure {
    let text = match serde_json::from_str::<Value>(body) {
        Ok(json) => json
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| body.to_string(), str::to_string),
        Err(_) => page_text(body),
    };
    let reason = format!("{op} answered {status}: {}", redact(&text, 160));
    match status {
        500 => Failure::Poison {
            class: FailureClass::Server,
            reason,
        },
        _ => status_failure(op, status, &text, retry_after),
    }
}

/// The numeric `id` of a record in an answer, or the answer breaks the API's contract.
pub fn record_id(record: &Value, op: &str) -> Result<i64, Failure> {
    record
        .get("id")
        .and_then(Value::as_i64)
        .ok_or_else(|| Failure::Poison {
            class: FailureClass::Client,
            reason: format!("{op}: Tryton answered without a record id"),
        })
}

/// The id of a many-to-one field as read (`5`, or `{"id": 5, ...}` when read with subfields).
pub fn many2one(record: &Value, field: &str) -> Option<i64> {
    let value = record.get(field)?;
    value
        .as_i64()
        .or_else(|| value.get("id").and_then(Value::as_i64))
}

impl Api {
    pub fn new(server: TrytonServer, retrier: Retrier) -> Result<Self, Failure> {
        let models = format!(
            "{}/{}/rest/model",
            server.base_url.trim_end_matches('/'),
            encode_segment(&server.database)
        );
        let http = HttpClient::new(models, Some(server.key.expose().to_string()), retrier)
            .map_err(|reason| Failure::Broken {
                class: FailureClass::Connection,
                reason,
            })?
            .classifying(classify);
        Ok(Self { http })
    }

    /// One logical call (retried as the policy allows), its attempts counted in `report`.
    async fn call(
        &self,
        report: &mut WriteReport,
        (op, method, path): (&str, Method, &str),
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<Value, Failure> {
        let call = Call {
            op,
            method,
            path: format!("/{path}"),
            idempotency_key: None,
            body,
            accept_conflict: false,
            accept_missing: false,
        };
        let (answer, n) = self.http.call(&call, deadline).await?;
        report.attempts += n;
        Ok(answer.body)
    }

    /// Deletes the record at `path` (`<model>/<id>`): `true` when Tryton deleted it (204),
    /// `false` when it was already gone (404). The delete marks `report` changed.
    pub async fn delete(
        &self,
        report: &mut WriteReport,
        op: &str,
        path: &str,
        deadline: Instant,
    ) -> Result<bool, Failure> {
        let call = Call {
            op,
            method: Method::DELETE,
            path: format!("/{path}"),
            idempotency_key: None,
            body: None,
            accept_conflict: false,
            accept_missing: true,
        };
        let (answer, n) = self.http.call(&call, deadline).await?;
        report.attempts += n;
        report.changed = true;
        Ok(answer.status != 404)
    }

    /// Runs the model's button or RPC method `action` on the record at `path` (`POST
    /// <model>/<id>/<action>` with an empty JSON object: no arguments).
    pub async fn action(
        &self,
        report: &mut WriteReport,
        op: &str,
        path: &str,
        deadline: Instant,
    ) -> Result<(), Failure> {
        let method = (op, Method::POST, path);
        self.call(
            report,
            method,
            Some(&Value::Object(Default::default())),
            deadline,
        )
        .await?;
        report.changed = true;
        Ok(())
    }

    /// The records of `model` matching `domain`, with `fields`.
    pub async fn search(
        &self,
        report: &mut WriteReport,
        (op, model): (&str, &str),
        domain: &Value,
        fields: &[&str],
        deadline: Instant,
    ) -> Result<Vec<Value>, Failure> {
        let mut path = format!("{model}?d={}", encode_segment(&encode_domain(domain)));
        for field in fields {
            path.push_str(&format!("&f={}", encode_segment(field)));
        }
        match self
            .call(report, (op, Method::GET, &path), None, deadline)
            .await?
        {
            Value::Array(records) => Ok(records),
            _ => Err(Failure::Poison {
                class: FailureClass::Client,
                reason: format!("{op}: Tryton answered a search with something else than a list"),
            }),
        }
    }

    /// Creates (`POST <model>`) or updates (`PUT <model>/<id>`) a record: its id. The write
    /// marks `report` changed.
    pub async fn save(
        &self,
        report: &mut WriteReport,
        (op, method, path): (&str, Method, &str),
        body: &Value,
        deadline: Instant,
    ) -> Result<i64, Failure> {
        let answer = self
            .call(report, (op, method, path), Some(body), deadline)
            .await?;
        report.changed = true;
        record_id(&answer, op)
    }
}
