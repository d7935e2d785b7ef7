//! `POST /v1/messages`: the checks, cheapest first, then the body streamed through the MAC into
//! a spool (memory up to `spool_threshold_bytes`, then a file; every byte counted against the
//! in-flight budget), then the signature, then the durable write.
//!
//! Nothing is buffered before the headers passed their checks (content type, timestamp,
//! envelope syntax, recipient count, declared length), and the body is never held in memory
//! beyond the spool threshold until its signature is known good.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use mailstream_runtime::records::{Envelope, IngestSource};
use serde_json::json;

use super::signature::{SignedEnvelope, Verifier};
use super::{
    CHANNEL, HttpContext, MAIL_FROM_HEADER, RCPT_TO_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use crate::error::PublishError;
use crate::events;
use crate::publisher::Intake;
use crate::spool::{Spool, SpoolError};

/// The header proxies append the address they received a request from to.
const FORWARDED_FOR_HEADER: &str = "x-forwarded-for";

/// Seconds a client is asked to wait after a 503.
const RETRY_AFTER_SECS: &str = "5";

/// A refusal: status, slug and message, as JSON.
#[derive(Debug)]
pub(super) struct Refusal {
    status: StatusCode,
    error: &'static str,
    message: String,
}

impl Refusal {
    pub(super) fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = axum::Json(json!({"error": self.error, "message": self.message}));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            (self.status, [(header::RETRY_AFTER, RETRY_AFTER_SECS)], body).into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}

pub(super) async fn ingest(
    State(ctx): State<Arc<HttpContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = handle(&ctx, peer, &headers, body).await;
    respond(&ctx, CHANNEL, result)
}

/// The response to a request of `channel`: a refusal is counted and logged once, here.
pub(super) fn respond(
    ctx: &HttpContext,
    channel: &str,
    result: Result<Response, Refusal>,
) -> Response {
    match result {
        Ok(response) => response,
        Err(refusal) => {
            events::refused(
                ctx.publisher.metrics(),
                channel,
                refusal.error,
                &refusal.message,
            );
            refusal.into_response()
        }
    }
}

pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// An envelope header's value as sent (trimmed), refusing repeats and non-UTF-8 bytes.
fn envelope_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Refusal> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = |why: &str| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad-envelope",
            format!("{name}: {why}"),
        )
    };
    if values.next().is_some() {
        return Err(bad("sent more than once"));
    }
    let text = std::str::from_utf8(value.as_bytes().trim_ascii()).map_err(|_| bad("not UTF-8"))?;
    Ok(Some(text))
}

pub(super) fn unauthorized(error: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::UNAUTHORIZED, error, message)
}

/// Refuses a request signed at `ts` (unix seconds) further from the server's clock than the
/// replay window (401 `stale-timestamp`): the intake's and the providers' one check. Returns
/// the server's clock it compared with.
pub(super) fn fresh(ctx: &HttpContext, ts: i64) -> Result<i64, Refusal> {
    let now = now_secs();
    let age = now.abs_diff(ts);
    if age > ctx.replay_window_secs {
        return Err(unauthorized(
            "stale-timestamp",
            format!(
                "timestamp is {age} s away from the server's clock; the replay window is {} s",
                ctx.replay_window_secs
            ),
        ));
    }
    Ok(now)
}

async fn handle(
    ctx: &HttpContext,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let client = client(ctx, peer, headers)?;
    let content_type = header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("message/rfc822") {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!("Content-Type must be message/rfc822, got `{content_type}`"),
        ));
    }
    let (Some(timestamp), Some(signature)) = (
        header_str(headers, TIMESTAMP_HEADER),
        header_str(headers, SIGNATURE_HEADER),
    ) else {
        return Err(unauthorized(
            "missing-signature",
            "X-Mailstream-Timestamp and X-Mailstream-Signature are required",
        ));
    };
    let Ok(ts) = timestamp.parse::<i64>() else {
        return Err(unauthorized(
            "bad-timestamp",
            "X-Mailstream-Timestamp must be unix seconds",
        ));
    };
    fresh(ctx, ts)?;
    let rcpt_header = envelope_header(headers, RCPT_TO_HEADER)?;
    let from_header = envelope_header(headers, MAIL_FROM_HEADER)?;
    let rcpt_to: Vec<String> = rcpt_header
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if rcpt_to.len() > ctx.max_recipients {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "too-many-recipients",
            format!(
                "{} recipients; at most {} (max_recipients)",
                rcpt_to.len(),
                ctx.max_recipients
            ),
        ));
    }
    let envelope = SignedEnvelope {
        rcpt_to: rcpt_header.map(str::as_bytes),
        mail_from: from_header.map(str::as_bytes),
    };
    let Some(secret) = &ctx.secret else {
        return Err(unauthorized(
            "missing-signature",
            "this intake has no hmac_secret: /v1/messages is off",
        ));
    };
    let Some(mut verifier) = Verifier::new(secret, timestamp, envelope, signature) else {
        return Err(bad_signature());
    };
    let declared =
        header_str(headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > ctx.max_message_bytes as u64) {
        return Err(too_large(ctx.max_message_bytes));
    }
    let spool = receive(ctx, body, ctx.max_message_bytes, |chunk| {
        verifier.update(chunk)
    })
    .await?;
    if verifier.verify().is_none() {
        return Err(bad_signature());
    }
    if spool.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "empty-body",
            "the body must be a MIME message",
        ));
    }
    let (raw, _held) = spool.into_bytes().await.map_err(spool_refusal)?;
    let intake = Intake {
        source: IngestSource::Http,
        envelope: Envelope {
            mail_from: from_header.filter(|s| !s.is_empty()).map(str::to_string),
            rcpt_to,
            remote_addr: Some(remote_addr(client, peer)),
            helo: None,
        },
        raw,
        origin: None,
        ingest_id: None,
    };
    publish(ctx, intake, CHANNEL).await
}

/// The client behind the trusted proxies, refused (403) when not on the allowed networks.
pub(super) fn client(
    ctx: &HttpContext,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<IpAddr, Refusal> {
    ctx.allowlist
        .client(
            peer.ip(),
            headers
                .get_all(FORWARDED_FOR_HEADER)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
        .and_then(|client| {
            if ctx.allowlist.allows(client) {
                Ok(client)
            } else {
                Err(format!("{client} is not on the allowed networks"))
            }
        })
        .map_err(|why| Refusal::new(StatusCode::FORBIDDEN, "forbidden-address", why))
}

/// The envelope's remote address of an HTTP request: the client behind the proxies, else the
/// peer with its port.
pub(super) fn remote_addr(client: IpAddr, peer: SocketAddr) -> String {
    if client == peer.ip() {
        peer.to_string()
    } else {
        client.to_string()
    }
}

/// The durable write every HTTP route ends in: 202 with the ingest id once the email is in
/// `raw-email`, 503 (retry) on a transient failure, 422 when it can never be stored.
pub(super) async fn publish(
    ctx: &HttpContext,
    intake: Intake,
    channel: &str,
) -> Result<Response, Refusal> {
    match ctx.publisher.publish(intake, channel).await {
        Ok(p) => Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({"ingest_id": p.ingest_id, "sha256": p.sha256, "size": p.size})),
        )
            .into_response()),
        Err(PublishError::Transient(e)) => {
            events::write_failed(ctx.publisher.metrics(), channel, &e);
            Ok(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the message could not be stored now; retry later",
            )
            .into_response())
        }
        Err(PublishError::Permanent(e)) => Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unstorable",
            format!("the message cannot be stored: {e}"),
        )),
    }
}

/// Receives a request body within `http_body_timeout_secs` (408) into a spool (memory up to
/// `spool_threshold_bytes`, then a file; every byte counted against the in-flight budget,
/// 503 past it), at most `limit` bytes (413), showing each chunk to `observe` (a MAC).
pub(super) async fn receive(
    ctx: &HttpContext,
    body: Body,
    limit: usize,
    observe: impl FnMut(&[u8]),
) -> Result<Spool, Refusal> {
    tokio::time::timeout(ctx.body_timeout, receive_all(ctx, body, limit, observe))
        .await
        .map_err(|_| body_timeout(ctx))?
}

/// 408: the body did not arrive within `http_body_timeout_secs`.
pub(super) fn body_timeout(ctx: &HttpContext) -> Refusal {
    Refusal::new(
        StatusCode::REQUEST_TIMEOUT,
        "body-timeout",
        format!(
            "the body did not arrive within {} s",
            ctx.body_timeout.as_secs()
        ),
    )
}

async fn receive_all(
    ctx: &HttpContext,
    body: Body,
    limit: usize,
    mut observe: impl FnMut(&[u8]),
) -> Result<Spool, Refusal> {
    let mut spool = ctx.spooler.spool();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "aborted",
                format!("the body ended early: {e}"),
            )
        })?;
        if spool.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        spool.push(&chunk).await.map_err(spool_refusal)?;
        observe(&chunk);
    }
    Ok(spool)
}

fn bad_signature() -> Refusal {
    unauthorized(
        "bad-signature",
        "signature does not match (hex HMAC-SHA256 over \"v2\\n{timestamp}\\n{rcpt_to}\\n{mail_from}\\n{body}\", or over \"{timestamp}.{body}\" without envelope headers)",
    )
}

/// 413: the body (or the message it carries) is over `limit` bytes.
pub(super) fn too_large(limit: usize) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        format!("the message is over {limit} bytes"),
    )
}

pub(super) fn spool_refusal(e: SpoolError) -> Refusal {
    match e {
        SpoolError::OverBudget => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "over-budget",
            "too many bytes in flight on this server; retry later",
        ),
        SpoolError::Io(e) => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "spool-failed",
            format!("the message could not be spooled: {e}"),
        ),
    }
}

pub(super) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
