//! `POST /v1/providers/mailgun`: Mailgun Routes with a `forward()` action to a URL ending in
//! `mime` (Mailgun then posts the raw MIME message, field `body-mime`, as it was received).
//!
//! Fields used (`multipart/form-data`, or `application/x-www-form-urlencoded`): `body-mime` (the message, kept byte for byte),
//! `recipient` (RCPT TO; comma separated when several), `sender` (MAIL FROM; empty for the
//! null sender), `timestamp`, `token`, `signature`.
//!
//! Authentication, as Mailgun documents it ("Securing Webhooks"): `signature` is the hex
//! HMAC-SHA256 of `timestamp` immediately followed by `token`, keyed with the HTTP webhook
//! signing key (`mailgun_signing_key`), compared in constant time. The signature does not
//! cover the message, so two more checks keep a captured request from being used again:
//! `timestamp` must be within `replay_window_secs` of the server's clock, and each `token`
//! is accepted once ([`Tokens`]). A write that fails forgets its token, so Mailgun's retry is
//! not refused as a replay. A multipart body is streamed ([`Form::stream`]): `body-mime` goes
//! to a spool, so an unsigned message is never held in memory.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::form::Form;
use super::replay::{MAX_SEEN, Seen, Tokens};
use super::{Delivered, publish, receive_body, refused_auth, split_addresses};
use crate::config::Secret;
use crate::http::HttpContext;
use crate::http::intake::{self, Refusal, respond};

const CHANNEL: &str = "mailgun";

/// Mailgun's signing key and the tokens seen within the replay window.
pub struct Mailgun {
    key: Secret,
    tokens: Mutex<Tokens>,
}

impl Mailgun {
    pub fn new(key: Secret) -> Self {
        Self {
            key,
            tokens: Mutex::new(Tokens::new(MAX_SEEN)),
        }
    }

    /// Whether `signature` (hex) is the HMAC-SHA256 of `timestamp` + `token`.
    fn signed(&self, timestamp: &str, token: &str, signature: &str) -> bool {
        let Ok(expected) = hex::decode(signature) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.key.expose().as_bytes()) else {
            return false;
        };
        mac.update(timestamp.as_bytes());
        mac.update(token.as_bytes());
        mac.verify_slice(&expected).is_ok()
    }
}

/// The form fields used.
const FIELDS: [&str; 6] = [
    "body-mime",
    "recipient",
    "sender",
    "timestamp",
    "token",
    "signature",
];

fn is_urlencoded(headers: &HeaderMap) -> bool {
    intake::header_str(headers, axum::http::header::CONTENT_TYPE.as_str())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(super::form::URLENCODED))
}

pub(super) async fn receive(
    State(ctx): State<Arc<HttpContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = handle(&ctx, peer, &headers, body).await;
    respond(&ctx, CHANNEL, result)
}

async fn handle(
    ctx: &HttpContext,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let Some(mailgun) = &ctx.providers.mailgun else {
        return Err(refused_auth("bad-signature", "Mailgun intake is off"));
    };
    let client = intake::client(ctx, peer, headers)?;
    let limit = super::request_limit(ctx);
    // A multipart body is streamed: the message is spooled, never in memory before the
    // signature (in the same form) is checked. A URL-encoded one is read whole.
    let (form, spool, held) = if is_urlencoded(headers) {
        let types = [super::form::URLENCODED];
        let received = receive_body(ctx, peer, headers, body, &types, limit).await?;
        let form = Form::read(headers, received.body, &FIELDS).await?;
        (form, None, Some(received.held))
    } else {
        super::require_content_type(headers, &["multipart/form-data"])?;
        let (form, spool) = Form::stream(ctx, headers, body, &FIELDS, "body-mime", limit).await?;
        (form, spool, None)
    };
    let (Some(timestamp), Some(token), Some(signature)) = (
        form.text("timestamp")?,
        form.text("token")?,
        form.text("signature")?,
    ) else {
        return Err(refused_auth(
            "missing-signature",
            "the form fields timestamp, token and signature are required",
        ));
    };
    if !mailgun.signed(timestamp, token, signature) {
        return Err(refused_auth(
            "bad-signature",
            "signature is not the hex HMAC-SHA256 of timestamp + token with the Mailgun webhook signing key",
        ));
    }
    let Ok(ts) = timestamp.parse::<i64>() else {
        return Err(refused_auth(
            "bad-timestamp",
            "timestamp must be unix seconds",
        ));
    };
    let now = intake::fresh(ctx, ts)?;
    let (raw, held) = match (spool, held, form.bytes("body-mime")) {
        (Some(spool), _, _) => spool.into_bytes().await.map_err(intake::spool_refusal)?,
        (None, Some(held), Some(raw)) => (raw.to_vec(), held),
        _ => {
            return Err(super::bad_payload(
                "form field `body-mime` is missing: the route's forward() URL must end in `mime`",
            ));
        }
    };
    let delivered = Delivered {
        provider: CHANNEL,
        raw,
        mail_from: form
            .text("sender")?
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        rcpt_to: split_addresses(form.required("recipient")?),
        remote_addr: intake::remote_addr(client, peer),
    };
    let window = i64::try_from(ctx.replay_window_secs).unwrap_or(i64::MAX);
    let taken = lock(mailgun).take(token, now, ts.saturating_add(window));
    match taken {
        Ok(()) => {}
        Err(Seen::Replayed) => {
            return Err(refused_auth(
                "replayed-token",
                "this token was already used: a request is accepted once",
            ));
        }
        Err(Seen::Full) => {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "replay-cache-full",
                "too many Mailgun requests within the replay window; retry later",
            ));
        }
    }
    let response = publish(ctx, delivered, held).await;
    let stored = response
        .as_ref()
        .is_ok_and(|r| r.status() == StatusCode::ACCEPTED);
    if !stored {
        lock(mailgun).forget(token);
    }
    response
}

fn lock(mailgun: &Mailgun) -> std::sync::MutexGuard<'_, Tokens> {
    super::replay::lock(&mailgun.tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_timestamp_then_token() {
        let m = Mailgun::new(Secret::new("key-0123456789abcdef"));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key-0123456789abcdef").expect("key");
        mac.update(b"1700000000tok");
        let sig = hex::encode(mac.finalize().into_bytes());
        assert!(m.signed("1700000000", "tok", &sig));
        assert!(!m.signed("1700000001", "tok", &sig));
        assert!(!m.signed("1700000000", "tok", "zz"));
    }
}
