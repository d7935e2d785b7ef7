//! HMAC-SHA256 request signatures: the scheme the HTTP intake verifies
//! (`services/ingest/src/http/signature.rs`) and the notifier signs its webhooks with, so one
//! receiver-side check serves both.
//!
//! The signed payload (v2) is the bytes `v2 LF {timestamp} LF {rcpt_to} LF {mail_from} LF
//! {body}`; `{timestamp}` is the `X-Mailstream-Timestamp` header (unix seconds), the envelope
//! fields are empty for a request that carries no envelope (every outgoing webhook), and the
//! signature is hex in `X-Mailstream-Signature`, prefixed `sha256=`. A receiver refuses a
//! timestamp too far from its clock, so a captured request cannot be replayed later.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

pub type HmacSha256 = Hmac<Sha256>;

/// Header carrying the signing time, unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-mailstream-timestamp";
/// Header carrying the signature: `sha256=` and the hex HMAC-SHA256.
pub const SIGNATURE_HEADER: &str = "x-mailstream-signature";

/// A MAC keyed with `secret` that has already taken the v2 payload up to the body; feed it the
/// body. `None` only in theory (HMAC takes keys of any length).
pub fn v2_mac(
    secret: &Secret,
    timestamp: &str,
    rcpt_to: &[u8],
    mail_from: &[u8],
) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes()).ok()?;
    mac.update(b"v2\n");
    mac.update(timestamp.as_bytes());
    mac.update(b"\n");
    mac.update(rcpt_to);
    mac.update(b"\n");
    mac.update(mail_from);
    mac.update(b"\n");
    Some(mac)
}

/// The `X-Mailstream-Signature` value of `body` sent without an envelope at `timestamp`.
pub fn sign_body(secret: &Secret, timestamp: &str, body: &[u8]) -> String {
    let Some(mut mac) = v2_mac(secret, timestamp, b"", b"") else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_v2_payload_without_an_envelope() {
        let secret = Secret::new("0123456789abcdef0123");
        let signature = sign_body(&secret, "1700000000", b"{\"a\":1}");
        // Computed independently: the whole v2 payload at once.
        let mut mac = HmacSha256::new_from_slice(b"0123456789abcdef0123").expect("key");
        mac.update(b"v2\n1700000000\n\n\n{\"a\":1}");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(signature, format!("sha256={expected}"));
        assert_ne!(signature, sign_body(&secret, "1700000001", b"{\"a\":1}"));
    }
}
