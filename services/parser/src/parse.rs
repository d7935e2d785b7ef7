//! `parse_message`: raw MIME bytes to a [`ParsedEmail`], the pure function behind both the
//! processor and `mailstream parse`.
//!
//! mail-parser does the MIME work (structure, transfer encodings, charsets, RFC 2047/2231); the
//! modules of this crate normalize what it found. The whole step runs under `catch_unwind`:
//! mail-parser 0.11 can overflow integer arithmetic on some malformed input when built with
//! overflow checks (debug builds, the fuzzer), and such a message must become a `mime-panic`
//! failure rather than take the process down.
//!
//! Input that is not an email at all fails with `mime-unparseable`: empty input, input in which
//! mail-parser finds no header field, and input whose top-level header has none of the fields
//! every email carries (From, Sender, To, Cc, Date, Subject, Message-ID, Received, MIME-Version,
//! Content-Type, Return-Path).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, LazyLock};

use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::{Message, MessageParser, MimeHeaders, PartType};
use mailstream_runtime::records::{Envelope, ParsedEmail};

use crate::attachments::{self, Extracted};
use crate::autoreply;
use crate::bodies;
use crate::details;
use crate::form;
use crate::forward;
use crate::invite;
use crate::limits::{self, CutBody};
use crate::normalize;
use crate::redact::Redactor;
use crate::reply;
use crate::settings::AttachmentPolicy;
use crate::signals;

/// What `parse_message` needs besides the bytes: where the email came from, and the limits.
#[derive(Debug, Clone)]
pub struct ParseContext {
    pub ingest_id: String,
    /// Milliseconds since the epoch.
    pub received_at: i64,
    pub envelope: Envelope,
    pub policy: AttachmentPolicy,
    /// The longest body kept in the record ([`crate::limits`]).
    pub max_body_bytes: usize,
    /// What is masked before the record is written ([`crate::redact`]); by default cards and
    /// IBANs, uncounted.
    pub redactor: Arc<Redactor>,
    /// Authserv-ids of our receiving MTAs, lower-case: whose `Authentication-Results` count.
    pub trusted_authserv_ids: Arc<[String]>,
}

/// `ids` (authserv-ids from a setting or an option) as [`ParseContext::trusted_authserv_ids`]
/// takes them: trimmed, lower-case.
pub fn trusted_authserv_ids(ids: &[String]) -> Arc<[String]> {
    ids.iter()
        .map(|id| id.trim().to_ascii_lowercase())
        .collect()
}

impl Default for ParseContext {
    fn default() -> Self {
        Self {
            ingest_id: String::new(),
            received_at: 0,
            envelope: Envelope::default(),
            policy: AttachmentPolicy::default(),
            max_body_bytes: limits::DEFAULT_MAX_BODY_BYTES,
            redactor: Arc::default(),
            trusted_authserv_ids: Arc::new([]),
        }
    }
}

/// Why a message could not be parsed: `class` is the dead-letter class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFailure {
    pub class: &'static str,
    pub reason: String,
}

impl std::fmt::Display for ParseFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.class, self.reason)
    }
}

impl std::error::Error for ParseFailure {}

/// A parsed message with the decoded bytes of its attachments (same order as the record's).
#[derive(Debug, Clone)]
pub struct Parsed {
    pub record: ParsedEmail,
    pub attachment_bytes: Vec<Vec<u8>>,
    /// Bodies cut to the limits, whole, for the blob store.
    pub cut_bodies: Vec<CutBody>,
}

/// mail-parser's header dispatch table, built once.
pub(crate) static MIME: LazyLock<MessageParser> = LazyLock::new(MessageParser::default);

/// Header fields of which an email has at least one.
const EMAIL_FIELDS: &[&str] = &[
    "From",
    "Sender",
    "To",
    "Cc",
    "Date",
    "Subject",
    "Message-ID",
    "Received",
    "MIME-Version",
    "Content-Type",
    "Return-Path",
];

/// Parses and normalizes one message.
pub fn parse_message(raw: &[u8], ctx: &ParseContext) -> Result<ParsedEmail, ParseFailure> {
    guarded(|| build(raw, ctx, false)).map(|p| p.record)
}

/// [`parse_message`], also returning the attachment bytes.
pub fn parse_with_attachments(raw: &[u8], ctx: &ParseContext) -> Result<Parsed, ParseFailure> {
    guarded(|| build(raw, ctx, true))
}

/// Runs `f`, turning a panic into a `mime-panic` failure.
fn guarded<T>(f: impl FnOnce() -> Result<T, ParseFailure>) -> Result<T, ParseFailure> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(ParseFailure {
            class: "mime-panic",
            reason: format!("the MIME parser panicked: {what}"),
        })
    })
}

fn unparseable(reason: impl Into<String>) -> ParseFailure {
    ParseFailure {
        class: "mime-unparseable",
        reason: reason.into(),
    }
}

fn build(raw: &[u8], ctx: &ParseContext, keep_bytes: bool) -> Result<Parsed, ParseFailure> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(unparseable("the message is empty"));
    }
    let message = MIME
        .parse(raw)
        .ok_or_else(|| unparseable("no header field found: this is not an RFC 5322 message"))?;
    let root = message.root_part();
    if !root.headers.iter().any(|h| {
        EMAIL_FIELDS
            .iter()
            .any(|f| h.name.as_str().eq_ignore_ascii_case(f))
    }) {
        let seen: Vec<String> = root
            .headers
            .iter()
            .take(3)
            .map(|h| h.name.as_str().chars().take(40).collect::<String>())
            .collect();
        return Err(unparseable(format!(
            "no email header field (From, To, Date, Subject, Message-ID, ...) in the header; found {}",
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            }
        )));
    }

    let mut warnings = Vec::new();
    let (message_id, message_id_generated) = message_id(&message, &mut warnings);
    let from = normalize::addresses(message.from().into_iter(), "From", &mut warnings)
        .into_iter()
        .next();
    if from.is_none() {
        warnings.push("no usable From address".into());
    }
    let sender = normalize::addresses(message.sender().into_iter(), "Sender", &mut warnings)
        .into_iter()
        .next();
    let reply_to = normalize::addresses(message.reply_to().into_iter(), "Reply-To", &mut warnings);
    let to = normalize::addresses(message.all_to(), "To", &mut warnings);
    let cc = normalize::addresses(message.all_cc(), "Cc", &mut warnings);
    let bcc = normalize::addresses(message.all_bcc(), "Bcc", &mut warnings);
    let subject = message
        .subject()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty());
    let date = normalize::date(&message, &mut warnings);
    let in_reply_to = normalize::message_ids(message.in_reply_to())
        .into_iter()
        .next();
    let references = normalize::message_ids(message.references());

    structure_warnings(&message, &mut warnings);
    let (text, html) = bodies::bodies(&message);
    let split = text
        .as_deref()
        .map(|t| reply::split_with_html(t, html.as_deref()));
    let mut extracted: Vec<Extracted> =
        attachments::extract(&message, &ctx.policy, keep_bytes, &mut warnings);
    let smime = signals::smime(&message);
    if let Some((kind, warning)) = smime {
        warnings.extend(warning.map(str::to_string));
        // A detached signature is reported as `smime`, not kept as a file of the email.
        if kind == signals::SMIME_SIGNED {
            extracted.retain(|e| !signals::is_smime_signature(&e.record.content_type));
        }
    }

    let from_email = from.as_ref().map(|a| a.email.as_str());
    let mut record = ParsedEmail {
        message_id,
        message_id_generated,
        ingest_id: ctx.ingest_id.clone(),
        received_at: ctx.received_at,
        envelope_rcpt_to: ctx
            .envelope
            .rcpt_to
            .iter()
            .filter_map(|r| normalize::email(r))
            .collect(),
        envelope_mail_from: ctx.envelope.mail_from.as_deref().and_then(normalize::email),
        date,
        in_reply_to,
        references,
        sender,
        reply_to,
        to,
        cc,
        bcc,
        auth: signals::auth(&message, &ctx.trusted_authserv_ids),
        auto_reply: signals::auto_reply(
            &message,
            &autoreply::Context {
                subject: subject.as_deref(),
                text: split
                    .as_ref()
                    .map(|s| s.stripped.as_str())
                    .filter(|s| !s.trim().is_empty())
                    .or(text.as_deref()),
                from: from_email,
                sent_ms: date.or(Some(ctx.received_at)),
            },
        ),
        bounce: signals::bounce(
            &message,
            from_email,
            subject.as_deref(),
            null_sender(&message, &ctx.envelope),
        ),
        list: signals::list(&message),
        headers: normalize::headers(&message),
        subject,
        from,
        stripped_text: split.as_ref().map(|s| s.stripped.clone()),
        reply_stripping: split.as_ref().map(|s| s.status),
        signature: split.and_then(|s| s.signature),
        text,
        html,
        attachments: extracted.iter().map(|e| e.record.clone()).collect(),
        warnings,
        truncated: Vec::new(),
        forwarded: None,
        form: None,
        smime: smime.map(|(kind, _)| kind.to_string()),
        meeting: invite::detect(&message),
        contact_details: None,
    };
    // Before the bodies are cut: the whole bodies kept in the blob store are masked too.
    ctx.redactor.record(&mut record);
    // Who the lead is, when it is not From: a forward's original sender, a form's person.
    let forwarded_signature = forward::detect(&message, &mut record, &ctx.redactor);
    form::detect(&mut record, &ctx.redactor);
    // What the lead says about themselves: the form's fields, else their signature.
    details::detect(&mut record, forwarded_signature.as_deref());
    let cut_bodies = limits::bound(&mut record, ctx.max_body_bytes);
    let mut attachment_bytes: Vec<Vec<u8>> = extracted.into_iter().map(|e| e.bytes).collect();
    attachment_bytes.truncate(record.attachments.len());
    Ok(Parsed {
        record,
        attachment_bytes,
        cut_bodies,
    })
}

/// The normalized Message-ID, or a generated one (flagged, with a warning).
fn message_id(message: &Message<'_>, warnings: &mut Vec<String>) -> (String, bool) {
    if let Some(id) = message.message_id().and_then(normalize::message_id) {
        let raw = message.header_raw("Message-ID").unwrap_or_default().trim();
        let well_formed = raw.starts_with('<')
            && raw.ends_with('>')
            && raw.contains('@')
            && !raw[1..raw.len() - 1].contains(|c: char| c.is_whitespace() || c == '<' || c == '>');
        if !well_formed {
            warnings.push(format!("malformed Message-ID `{raw}` repaired"));
        }
        return (id, false);
    }
    if let Some(raw) = message.header_raw("Message-ID")
        && let Some(id) = normalize::message_id(raw)
    {
        warnings.push(format!("malformed Message-ID `{}` repaired", raw.trim()));
        return (id, false);
    }
    warnings.push("no Message-ID; generated one from a hash of the content".into());
    (normalize::generated_message_id(message), true)
}

/// Warnings about the MIME structure: broken multiparts, undecodable parts, unknown charsets.
fn structure_warnings(message: &Message<'_>, warnings: &mut Vec<String>) {
    for (i, part) in message.parts.iter().enumerate() {
        let ct = part.content_type();
        if ct.is_some_and(|c| c.ctype().eq_ignore_ascii_case("multipart"))
            && !matches!(part.body, PartType::Multipart(_))
        {
            warnings.push(format!(
                "part {i}: multipart without a usable boundary; read as text"
            ));
        }
        if part.is_encoding_problem {
            warnings.push(format!(
                "part {i}: transfer encoding could not be decoded cleanly; kept as found"
            ));
        }
        if let Some(charset) = ct.and_then(|c| c.attribute("charset"))
            && matches!(part.body, PartType::Text(_) | PartType::Html(_))
            && charset_decoder(charset.as_bytes()).is_none()
            && !is_utf8_alias(charset)
        {
            warnings.push(format!(
                "part {i}: unknown charset `{charset}`; decoded as UTF-8"
            ));
        }
    }
    if message.header_raw("MIME-Version").is_none() && message.parts.len() > 1 {
        warnings.push("multipart message without MIME-Version".into());
    }
}

/// Whether the email came from the null sender `<>` (how bounces are sent): a `Return-Path: <>`
/// header, or a real SMTP envelope (one with recipients) without a MAIL FROM address.
fn null_sender(message: &Message<'_>, envelope: &Envelope) -> bool {
    let return_path_null = message.header_raw("Return-Path").is_some_and(|r| {
        r.trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .trim()
            .is_empty()
    });
    return_path_null || (envelope.mail_from.is_none() && !envelope.rcpt_to.is_empty())
}

fn is_utf8_alias(charset: &str) -> bool {
    matches!(
        charset.to_ascii_lowercase().as_str(),
        "utf-8" | "utf8" | "us-ascii" | "ascii" | "unicode-1-1-utf-8"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_mime_panic_failure() {
        let failure = guarded::<()>(|| panic!("attempt to add with overflow"))
            .expect_err("a panic is an error");
        assert_eq!(failure.class, "mime-panic");
        assert!(failure.reason.contains("attempt to add with overflow"));
    }

    #[test]
    fn non_email_is_unparseable() {
        let ctx = ParseContext::default();
        for input in [
            &b""[..],
            b"  \r\n",
            b"hello world",
            b"X-Custom: 1\r\n\r\nbody",
        ] {
            let failure = parse_message(input, &ctx).expect_err("not an email");
            assert_eq!(failure.class, "mime-unparseable", "{input:?}");
        }
    }
}
