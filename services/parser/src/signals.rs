//! Signals about how an email was sent: authentication results, automatic replies, bounces and
//! mailing lists.
//!
//! - **auth**: the topmost `Authentication-Results` header whose authserv-id (RFC 8601: the
//!   token before its first `;`) is one of `trusted_authserv_ids`, our own receiving MTAs, gives
//!   `spf=`, `dkim=` and `dmarc=`; a header another server or the sender wrote is ignored (RFC
//!   8601 §5: a consumer trusts only its own), so a sender cannot forge a `pass`. With no trusted
//!   id, or no header of one, the results stay empty; `Received-SPF`, which names no server,
//!   is not read.
//! - **auto_reply** (RFC 3834 headers, then phrases in many languages), in classes:
//!   [`crate::autoreply`].
//! - **bounce**: delivery reports (DSNs and the prose formats of MTAs, delays, challenges,
//!   complaints), per recipient and classified: [`crate::bounce`].
//! - **list**: `List-Id` (angle-bracketed id) and `Precedence`.
//! - **smime** (RFC 8551): `signed` when the message is S/MIME signed (a detached signature,
//!   `multipart/signed` with a PKCS #7 protocol, whose content is the email as usual; or opaque
//!   `signed-data`, whose content inside the signature is not read), `encrypted` for
//!   `enveloped-data` (nothing of it can be read without the recipient's key). The signature is
//!   reported, not verified: that needs the sender's certificate chain.

use std::sync::LazyLock;

use mail_parser::{Message, MimeHeaders};
use mailstream_runtime::records::{AuthResults, AutoReply, Bounce, ListInfo};
use regex::Regex;

use crate::bodies::re;
use crate::normalize;

static AUTH_RESULT: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)(?:^|[;\s])(spf|dkim|dmarc)\s*=\s*([a-z]+)"));
/// The authserv-id of an `Authentication-Results` value: its first token, lower-case, without
/// a version number or comment (`mx.example.com 1; spf=pass` is `mx.example.com`).
fn authserv_id(value: &str) -> String {
    let head = value.split(';').next().unwrap_or_default();
    let head = head.split('(').next().unwrap_or_default();
    head.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// SPF, DKIM and DMARC results from the topmost `Authentication-Results` header of one of
/// `trusted` (authserv-ids, lower-case).
pub fn auth(message: &Message<'_>, trusted: &[String]) -> AuthResults {
    let mut auth = AuthResults::default();
    let ours =
        header_texts(message, "Authentication-Results").find(|v| trusted.contains(&authserv_id(v)));
    if let Some(value) = ours {
        for caps in AUTH_RESULT.captures_iter(&value) {
            let (Some(method), Some(result)) = (caps.get(1), caps.get(2)) else {
                continue;
            };
            let result = Some(result.as_str().to_ascii_lowercase());
            match method.as_str().to_ascii_lowercase().as_str() {
                "spf" if auth.spf.is_none() => auth.spf = result,
                "dkim" if auth.dkim.is_none() => auth.dkim = result,
                "dmarc" if auth.dmarc.is_none() => auth.dmarc = result,
                _ => {}
            }
        }
    }
    auth
}

/// The automatic reply (out-of-office, left the company, unsubscribe, other) `message` is: see
/// [`crate::autoreply`].
pub fn auto_reply(message: &Message<'_>, ctx: &crate::autoreply::Context<'_>) -> Option<AutoReply> {
    crate::autoreply::detect(message, ctx)
}

/// The delivery report (bounce, delay, challenge or complaint) in `message`: see [`crate::bounce`].
pub fn bounce(
    message: &Message<'_>,
    from: Option<&str>,
    subject: Option<&str>,
    envelope_null_sender: bool,
) -> Option<Bounce> {
    crate::bounce::detect(message, from, subject, envelope_null_sender)
}

/// The message is S/MIME signed.
pub const SMIME_SIGNED: &str = "signed";
/// The message is S/MIME encrypted.
pub const SMIME_ENCRYPTED: &str = "encrypted";

/// Whether `content_type` is an S/MIME signature part (`application/pkcs7-signature`).
pub fn is_smime_signature(content_type: &str) -> bool {
    matches!(
        content_type,
        "application/pkcs7-signature" | "application/x-pkcs7-signature"
    )
}

/// What S/MIME made of the message, if anything, and a warning when its content cannot be read
/// (opaque signed or encrypted).
pub fn smime(message: &Message<'_>) -> Option<(&'static str, Option<&'static str>)> {
    let ct = message.root_part().content_type()?;
    let lower = |v: &str| v.to_ascii_lowercase();
    let subtype = ct.subtype().map(lower).unwrap_or_default();
    let param = |name: &str| ct.attribute(name).map(lower);
    match (lower(ct.ctype()).as_str(), subtype.as_str()) {
        ("multipart", "signed")
            if param("protocol").is_some_and(|p| is_smime_signature(p.trim_matches('"'))) =>
        {
            Some((SMIME_SIGNED, None))
        }
        ("application", "pkcs7-mime" | "x-pkcs7-mime") => match param("smime-type").as_deref() {
            Some("signed-data") => Some((
                SMIME_SIGNED,
                Some("S/MIME opaque signature: the signed content is inside it and was not read"),
            )),
            Some("compressed-data") | Some("certs-only") => None,
            _ => Some((
                SMIME_ENCRYPTED,
                Some("S/MIME encrypted: the content cannot be read without the recipient's key"),
            )),
        },
        _ => None,
    }
}

/// Mailing-list markers, when there are any.
pub fn list(message: &Message<'_>) -> Option<ListInfo> {
    let list_id = header_text(message, "List-Id").and_then(|v| {
        let id = match (v.rfind('<'), v.rfind('>')) {
            (Some(start), Some(end)) if start < end => v[start + 1..end].trim().to_string(),
            _ => v.trim().to_string(),
        };
        (!id.is_empty()).then(|| id.to_lowercase())
    });
    let precedence = header_text(message, "Precedence").map(|v| v.trim().to_ascii_lowercase());
    (list_id.is_some() || precedence.is_some()).then_some(ListInfo {
        list_id,
        precedence,
    })
}

/// The first (topmost) top-level header called `name`, decoded and unfolded.
pub(crate) fn header_text(message: &Message<'_>, name: &str) -> Option<String> {
    header_texts(message, name).next()
}

/// Every top-level header called `name`, top to bottom, decoded and unfolded (empty ones left
/// out).
fn header_texts<'a>(message: &'a Message<'_>, name: &'a str) -> impl Iterator<Item = String> + 'a {
    let raw = message.raw_message();
    message
        .root_part()
        .headers
        .iter()
        .filter(move |h| h.name.as_str().eq_ignore_ascii_case(name))
        .map(move |h| {
            let start = (h.offset_start as usize).min(raw.len());
            let end = (h.offset_end as usize).clamp(start, raw.len());
            normalize::decode_unstructured(&raw[start..end])
        })
        .filter(|v| !v.is_empty())
}
