//! The HTTP intake's signatures: HMAC-SHA256 with the shared `hmac_secret`, hex in
//! `X-Mailstream-Signature` (optionally prefixed `sha256=`), over one of two payloads:
//!
//! - **v2** (covers the envelope): the bytes
//!   `v2 LF {timestamp} LF {rcpt_to} LF {mail_from} LF {body}`, where `{timestamp}` is
//!   `X-Mailstream-Timestamp`, `{rcpt_to}` and `{mail_from}` are the values of
//!   `X-Mailstream-Rcpt-To` and `X-Mailstream-Mail-From` exactly as sent, without leading
//!   and trailing spaces or tabs (empty when the header is absent), and LF is one `\n` byte.
//!   Header values cannot contain LF, so the fields cannot be shifted into each other (a dot
//!   separator could: addresses contain dots).
//! - **v1** (the first scheme, body only): `{timestamp}.{body}`. Accepted only when neither
//!   envelope header is sent, so a v1 signature can never vouch for a recipient.
//!
//! The two payloads cannot be confused: a v1 payload starts with the digits of a timestamp,
//! a v2 payload with `v2`. The v2 payload is built by [`mailstream_runtime::signing`], the
//! scheme the notifier signs its webhooks with. Both MACs are computed while the body streams
//! in; the comparison is constant-time (`verify_slice`).

use hmac::Mac;
use mailstream_runtime::signing::{self, HmacSha256};

use crate::config::Secret;

/// Which payload a valid signature covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    V1,
    V2,
}

/// The envelope fields of the v2 payload: the header values as sent (trimmed), if present.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignedEnvelope<'a> {
    pub rcpt_to: Option<&'a [u8]>,
    pub mail_from: Option<&'a [u8]>,
}

impl SignedEnvelope<'_> {
    fn present(&self) -> bool {
        self.rcpt_to.is_some() || self.mail_from.is_some()
    }

    /// The v2 MAC of this envelope, fed up to the body.
    fn v2_mac(&self, secret: &Secret, timestamp: &str) -> Option<HmacSha256> {
        signing::v2_mac(
            secret,
            timestamp,
            self.rcpt_to.unwrap_or_default(),
            self.mail_from.unwrap_or_default(),
        )
    }
}

/// Checks a signature while the body streams through [`Verifier::update`].
pub struct Verifier {
    v1: Option<HmacSha256>,
    v2: HmacSha256,
    expected: Vec<u8>,
}

impl Verifier {
    /// `None` when `signature` is not hex (optionally `sha256=`-prefixed) or the key is
    /// unusable.
    pub fn new(
        secret: &Secret,
        timestamp: &str,
        envelope: SignedEnvelope<'_>,
        signature: &str,
    ) -> Option<Self> {
        let expected = hex::decode(signature.strip_prefix("sha256=").unwrap_or(signature)).ok()?;
        let v2 = envelope.v2_mac(secret, timestamp)?;
        let v1 = if envelope.present() {
            None
        } else {
            // HMAC takes keys of any length, so this fails only in theory.
            let mut v1 = HmacSha256::new_from_slice(secret.expose().as_bytes()).ok()?;
            v1.update(timestamp.as_bytes());
            v1.update(b".");
            Some(v1)
        };
        Some(Self { v1, v2, expected })
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.v2.update(chunk);
        if let Some(v1) = &mut self.v1 {
            v1.update(chunk);
        }
    }

    /// The scheme the signature matched, if any.
    pub fn verify(self) -> Option<Scheme> {
        if self.v2.verify_slice(&self.expected).is_ok() {
            return Some(Scheme::V2);
        }
        self.v1
            .filter(|v1| v1.clone().verify_slice(&self.expected).is_ok())
            .map(|_| Scheme::V1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("0123456789abcdef0123")
    }

    fn check(envelope: SignedEnvelope<'_>, signature: &str, body: &[u8]) -> Option<Scheme> {
        let mut v = Verifier::new(&secret(), "1700000000", envelope, signature)?;
        for chunk in body.chunks(3) {
            v.update(chunk);
        }
        v.verify()
    }

    /// The v2 signature (hex) of a request: what a client computes, the whole payload at once.
    fn sign_v2(
        secret: &Secret,
        timestamp: &str,
        envelope: SignedEnvelope<'_>,
        body: &[u8],
    ) -> String {
        let payload = [
            b"v2\n",
            timestamp.as_bytes(),
            b"\n",
            envelope.rcpt_to.unwrap_or_default(),
            b"\n",
            envelope.mail_from.unwrap_or_default(),
            b"\n",
            body,
        ]
        .concat();
        let mut m = HmacSha256::new_from_slice(secret.expose().as_bytes()).expect("key");
        m.update(&payload);
        hex::encode(m.finalize().into_bytes())
    }

    fn sign_v1(body: &[u8]) -> String {
        let mut m = HmacSha256::new_from_slice(secret().expose().as_bytes()).expect("key");
        m.update(b"1700000000.");
        m.update(body);
        hex::encode(m.finalize().into_bytes())
    }

    #[test]
    fn v2_covers_the_envelope() {
        let env = SignedEnvelope {
            rcpt_to: Some(b"deals@in.example.com"),
            mail_from: Some(b"a@b.test"),
        };
        let sig = sign_v2(&secret(), "1700000000", env, b"body");
        assert_eq!(check(env, &sig, b"body"), Some(Scheme::V2));
        assert_eq!(
            check(env, &format!("sha256={sig}"), b"body"),
            Some(Scheme::V2)
        );
        let tampered = SignedEnvelope {
            rcpt_to: Some(b"ceo@in.example.com"),
            ..env
        };
        assert_eq!(check(tampered, &sig, b"body"), None);
        // Moving bytes between fields changes the payload.
        let shifted = SignedEnvelope {
            rcpt_to: Some(b"deals@in.example.com\na@b.test"),
            mail_from: None,
        };
        assert_eq!(check(shifted, &sig, b"body"), None);
        assert_eq!(check(env, &sig, b"bodY"), None);
    }

    #[test]
    fn v1_only_without_envelope_headers() {
        let sig = sign_v1(b"body");
        assert_eq!(
            check(SignedEnvelope::default(), &sig, b"body"),
            Some(Scheme::V1)
        );
        let env = SignedEnvelope {
            rcpt_to: Some(b"x@in.example.com"),
            mail_from: None,
        };
        assert_eq!(
            check(env, &sig, b"body"),
            None,
            "v1 cannot vouch for a recipient"
        );
        let v2 = sign_v2(&secret(), "1700000000", SignedEnvelope::default(), b"body");
        assert_eq!(
            check(SignedEnvelope::default(), &v2, b"body"),
            Some(Scheme::V2)
        );
        assert!(check(SignedEnvelope::default(), "not hex", b"body").is_none());
    }

    #[test]
    fn accepts_what_the_notifier_signs() {
        let body = br#"{"event":"hot_lead"}"#;
        let sig = signing::sign_body(&secret(), "1700000000", body);
        assert!(sig.starts_with("sha256="));
        assert_eq!(
            check(SignedEnvelope::default(), &sig, body),
            Some(Scheme::V2)
        );
        let env = SignedEnvelope {
            rcpt_to: Some(b"x@in.example.com"),
            mail_from: None,
        };
        assert_eq!(check(env, &sig, body), None);
    }
}
