//! HTTP intake: `POST /v1/messages` with the raw MIME message as the body
//! (`Content-Type: message/rfc822`), signed with HMAC-SHA256.
//!
//! Signature: `hex(HMAC-SHA256(secret, "{timestamp}.{body}"))` in `X-Mailstream-Signature`
//! (optionally prefixed `sha256=`), with the unix time in seconds in `X-Mailstream-Timestamp`.
//! A timestamp further than `replay_window_secs` from now is refused, so a captured request
//! cannot be replayed later; the signature is checked in constant time (`verify_slice`).
//! Optional envelope headers: `X-Mailstream-Rcpt-To` (comma separated) and
//! `X-Mailstream-Mail-From`. Recipients are not checked against `accepted_domains`: the caller
//! is authenticated.
//!
//! Checks run cheapest first (content type, headers, timestamp, size, then the signature over
//! the body), so unauthenticated clients cannot make the server buffer more than
//! `max_message_bytes`.
//!
//! | status | when |
//! |---|---|
//! | 202 `{"ingest_id", "sha256", "size"}` | the email is durably in `raw-email` |
//! | 401 `missing-signature` / `bad-signature` / `bad-timestamp` / `stale-timestamp` | authentication failed |
//! | 413 `too-large` | body over `max_message_bytes` |
//! | 415 `unsupported-media-type` | not `message/rfc822` |
//! | 400 `empty-body` | no message |
//! | 422 `unstorable` / 503 `unavailable` | the write failed for good / for now (retry) |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use mailstream_runtime::records::{Envelope, IngestSource};
use serde_json::json;
use sha2::Sha256;

use crate::config::Secret;
use crate::error::PublishError;
use crate::events;
use crate::publisher::{Intake, Publisher};

const CHANNEL: &str = "http";
pub const TIMESTAMP_HEADER: &str = "x-mailstream-timestamp";
pub const SIGNATURE_HEADER: &str = "x-mailstream-signature";
pub const RCPT_TO_HEADER: &str = "x-mailstream-rcpt-to";
pub const MAIL_FROM_HEADER: &str = "x-mailstream-mail-from";

/// Shared state of the HTTP intake.
pub(crate) struct HttpContext {
    pub publisher: Arc<Publisher>,
    pub secret: Secret,
    pub replay_window_secs: u64,
    pub max_message_bytes: usize,
}

/// The intake router (serve it with connect info: `into_make_service_with_connect_info`).
pub(crate) fn router(ctx: Arc<HttpContext>) -> Router {
    Router::new()
        .route("/v1/messages", post(ingest))
        .with_state(ctx)
}

/// A refusal: status, slug and message, as JSON.
struct Refusal {
    status: StatusCode,
    error: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
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
        (self.status, body).into_response()
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

async fn ingest(
    State(ctx): State<Arc<HttpContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(&ctx, peer, &headers, body).await {
        Ok(response) => response,
        Err(refusal) => {
            events::refused(
                ctx.publisher.metrics(),
                CHANNEL,
                refusal.error,
                &refusal.message,
            );
            refusal.into_response()
        }
    }
}

async fn handle(
    ctx: &HttpContext,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
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
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "missing-signature",
            "X-Mailstream-Timestamp and X-Mailstream-Signature are required",
        ));
    };
    let Ok(ts) = timestamp.parse::<i64>() else {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "bad-timestamp",
            "X-Mailstream-Timestamp must be unix seconds",
        ));
    };
    let age = now_secs().abs_diff(ts);
    if age > ctx.replay_window_secs {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "stale-timestamp",
            format!(
                "timestamp is {age} s away from the server's clock; the replay window is {} s",
                ctx.replay_window_secs
            ),
        ));
    }
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the message is over {} bytes", ctx.max_message_bytes),
        )
    };
    let declared =
        header_str(headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > ctx.max_message_bytes as u64) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(body, ctx.max_message_bytes)
        .await
        .map_err(|_| too_large())?;
    if !signature_valid(&ctx.secret, timestamp, &body, signature) {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "bad-signature",
            "signature does not match (HMAC-SHA256 over \"{timestamp}.{body}\", hex)",
        ));
    }
    if body.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "empty-body",
            "the body must be a MIME message",
        ));
    }
    let rcpt_to = header_str(headers, RCPT_TO_HEADER)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let intake = Intake {
        source: IngestSource::Http,
        envelope: Envelope {
            mail_from: header_str(headers, MAIL_FROM_HEADER)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            rcpt_to,
            remote_addr: Some(peer.to_string()),
            helo: None,
        },
        raw: body.to_vec(),
        origin: None,
        ingest_id: None,
    };
    match ctx.publisher.publish(intake, CHANNEL).await {
        Ok(p) => Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({"ingest_id": p.ingest_id, "sha256": p.sha256, "size": p.size})),
        )
            .into_response()),
        Err(PublishError::Transient(e)) => {
            events::write_failed(ctx.publisher.metrics(), CHANNEL, &e);
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

/// Whether `signature` (hex, optionally `sha256=`-prefixed) is the HMAC of `"{timestamp}.{body}"`.
/// The comparison is constant-time.
pub fn signature_valid(secret: &Secret, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let hex_part = signature.strip_prefix("sha256=").unwrap_or(signature);
    let Ok(expected) = hex::decode(hex_part) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose()) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
