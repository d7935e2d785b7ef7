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
//! not refused as a replay.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::form::Form;
use super::{Delivered, publish, receive_body, refused_auth, split_addresses};
use crate::config::Secret;
use crate::http::HttpContext;
use crate::http::intake::{self, Refusal, respond};

const CHANNEL: &str = "mailgun";

/// Tokens remembered at most at once: past it, new requests are answered 503 (Mailgun
/// retries) until older tokens leave the window, so memory stays bounded and no token is
/// forgotten while it could still be replayed.
pub const MAX_TOKENS: usize = 100_000;

/// Mailgun's signing key and the tokens seen within the replay window.
pub struct Mailgun {
    key: Secret,
    tokens: Mutex<Tokens>,
}

impl Mailgun {
    pub fn new(key: Secret) -> Self {
        Self {
            key,
            tokens: Mutex::new(Tokens::new(MAX_TOKENS)),
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

/// Why a token was not taken.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Replayed,
    Full,
}

/// Tokens accepted within the replay window, each with the time it leaves it. Bounded: at
/// most `cap` entries; expired ones are dropped first (they are in time order).
struct Tokens {
    seen: HashSet<String>,
    expiry: VecDeque<(i64, String)>,
    cap: usize,
}

impl Tokens {
    fn new(cap: usize) -> Self {
        Self {
            seen: HashSet::new(),
            expiry: VecDeque::new(),
            cap,
        }
    }

    /// Takes `token` until `expires` (unix seconds), unless it was taken or there is no room.
    fn take(&mut self, token: &str, now: i64, expires: i64) -> Result<(), Seen> {
        while let Some((at, _)) = self.expiry.front() {
            if *at >= now {
                break;
            }
            if let Some((_, old)) = self.expiry.pop_front() {
                self.seen.remove(&old);
            }
        }
        if self.seen.contains(token) {
            return Err(Seen::Replayed);
        }
        if self.seen.len() >= self.cap {
            return Err(Seen::Full);
        }
        self.seen.insert(token.to_string());
        // Expiry times arrive nearly in order; keep the queue sorted so the front is oldest.
        let at = self.expiry.partition_point(|(t, _)| *t <= expires);
        self.expiry.insert(at, (expires, token.to_string()));
        Ok(())
    }

    fn forget(&mut self, token: &str) {
        if self.seen.remove(token) {
            self.expiry.retain(|(_, t)| t != token);
        }
    }
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
    let received = receive_body(
        ctx,
        peer,
        headers,
        body,
        &["multipart/form-data", super::form::URLENCODED],
    )
    .await?;
    let form = Form::read(
        headers,
        received.body,
        &[
            "body-mime",
            "recipient",
            "sender",
            "timestamp",
            "token",
            "signature",
        ],
    )
    .await?;
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
    let now = intake::now_secs();
    let age = now.abs_diff(ts);
    if age > ctx.replay_window_secs {
        return Err(refused_auth(
            "stale-timestamp",
            format!(
                "timestamp is {age} s away from the server's clock; the replay window is {} s",
                ctx.replay_window_secs
            ),
        ));
    }
    let Some(raw) = form.bytes("body-mime") else {
        return Err(super::bad_payload(
            "form field `body-mime` is missing: the route's forward() URL must end in `mime`",
        ));
    };
    let delivered = Delivered {
        provider: CHANNEL,
        raw: raw.to_vec(),
        mail_from: form
            .text("sender")?
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        rcpt_to: split_addresses(form.required("recipient")?),
        remote_addr: received.remote_addr,
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
    let response = publish(ctx, delivered, received.held).await;
    let stored = response
        .as_ref()
        .is_ok_and(|r| r.status() == StatusCode::ACCEPTED);
    if !stored {
        lock(mailgun).forget(token);
    }
    response
}

/// The token set; a poisoned lock (a panic while holding it) still holds a valid set.
fn lock(mailgun: &Mailgun) -> std::sync::MutexGuard<'_, Tokens> {
    mailgun
        .tokens
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    #[test]
    fn tokens_are_taken_once_within_their_window_and_bounded() {
        let mut t = Tokens::new(2);
        assert_eq!(t.take("a", 100, 400), Ok(()));
        assert_eq!(t.take("a", 101, 401), Err(Seen::Replayed));
        assert_eq!(t.take("b", 102, 402), Ok(()));
        assert_eq!(
            t.take("c", 103, 403),
            Err(Seen::Full),
            "full of live tokens"
        );
        // Once `a` left its window it is forgotten (its timestamp is stale by then anyway).
        assert_eq!(t.take("c", 401, 701), Ok(()));
        assert_eq!(t.seen.len(), 2);
        t.forget("c");
        assert_eq!(
            t.take("c", 402, 702),
            Ok(()),
            "a failed write's token is usable again"
        );
    }
}
