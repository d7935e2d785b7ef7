//! Header normalization: message ids, mailboxes, the Date, and the decoded header list.
//!
//! mail-parser already decodes RFC 2047 encoded words and RFC 2231 parameters; this module turns
//! its values into the record's canonical forms:
//! - message ids lose their angle brackets and whitespace, and their domain is lower-cased
//!   (the local part is case-sensitive and kept);
//! - addresses get the same treatment, display names are unquoted and whitespace-collapsed, and
//!   a name equal to the address is dropped;
//! - every header is listed in order with its value unfolded and decoded.

use mail_parser::parsers::MessageStream;
use mail_parser::{Address as MpAddress, HeaderValue, Message};
use mailstream_runtime::records::{Address, Header};
use sha2::{Digest, Sha256};

/// Normalizes one message id: `<AbC@Example.COM>` → `AbC@example.com`. `None` when empty.
pub fn message_id(raw: &str) -> Option<String> {
    let trimmed: String = raw
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '<' && *c != '>')
        .collect();
    if trimmed.is_empty() {
        return None;
    }
    Some(lower_domain(&trimmed))
}

/// Lower-cases what follows the last `@`.
fn lower_domain(addr: &str) -> String {
    match addr.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_lowercase()),
        None => addr.to_string(),
    }
}

/// The message ids of an id-list header (`In-Reply-To`, `References`), normalized, in order.
pub fn message_ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(t) => t.split_whitespace().filter_map(message_id).collect(),
        HeaderValue::TextList(list) => list.iter().filter_map(|t| message_id(t)).collect(),
        _ => Vec::new(),
    }
}

/// Normalizes an email address: angle brackets and whitespace removed, domain lower-cased.
pub fn email(raw: &str) -> Option<String> {
    let cleaned: String = raw
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .trim_end_matches('.')
        .to_string();
    if cleaned.is_empty() {
        return None;
    }
    Some(lower_domain(&cleaned))
}

/// Cleans a decoded display name: quotes stripped, whitespace collapsed, empty → `None`.
pub fn display_name(raw: &str, email: &str) -> Option<String> {
    let collapsed = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    let unquoted = collapsed
        .trim_matches(|c| c == '"' || c == '\'')
        .trim()
        .to_string();
    if unquoted.is_empty() || unquoted.eq_ignore_ascii_case(email) {
        None
    } else {
        Some(unquoted)
    }
}

/// Every mailbox of an address header (groups flattened), normalized. Entries without an
/// address are reported in `warnings` and skipped.
pub fn addresses<'a, 'x: 'a>(
    values: impl Iterator<Item = &'a MpAddress<'x>>,
    header: &str,
    warnings: &mut Vec<String>,
) -> Vec<Address> {
    let mut out = Vec::new();
    for addr in values.flat_map(|v| v.iter()) {
        match addr.address.as_deref().and_then(email) {
            Some(email) => {
                if !email.contains('@') {
                    warnings.push(format!("{header}: address `{email}` has no domain"));
                }
                let name = addr.name.as_deref().and_then(|n| display_name(n, &email));
                out.push(Address { email, name });
            }
            None => {
                if let Some(name) = addr.name.as_deref() {
                    warnings.push(format!("{header}: `{name}` has no address; skipped"));
                }
            }
        }
    }
    out
}

/// The Date header in milliseconds since the epoch; a present but unusable Date is a warning.
pub fn date(message: &Message<'_>, warnings: &mut Vec<String>) -> Option<i64> {
    let raw = message.header_raw("Date")?;
    match message.date() {
        Some(d) if d.is_valid() => d.to_timestamp().checked_mul(1000),
        _ => {
            warnings.push(format!("invalid Date header `{}`; ignored", raw.trim()));
            None
        }
    }
}

/// All top-level headers in order, values unfolded and RFC 2047-decoded.
pub fn headers(message: &Message<'_>) -> Vec<Header> {
    let raw = message.raw_message();
    message
        .root_part()
        .headers
        .iter()
        .map(|h| {
            let start = (h.offset_start as usize).min(raw.len());
            let end = (h.offset_end as usize).clamp(start, raw.len());
            Header {
                name: h.name.as_str().to_string(),
                value: decode_unstructured(&raw[start..end]),
            }
        })
        .collect()
}

/// Decodes a raw header value as unstructured text (RFC 2047 words, folding removed).
pub fn decode_unstructured(raw: &[u8]) -> String {
    match MessageStream::new(raw).parse_unstructured() {
        HeaderValue::Text(text) => text.trim().to_string(),
        HeaderValue::TextList(list) => list.join(" ").trim().to_string(),
        _ => String::from_utf8_lossy(raw)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The deterministic id of a message without a Message-ID: a hash of the headers that do not
/// change in transit (From, To, Cc, Date, Subject) and of the body, so two deliveries of the same
/// email (different Received headers) get the same id.
pub fn generated_message_id(message: &Message<'_>) -> String {
    let mut hasher = Sha256::new();
    for name in ["From", "To", "Cc", "Date", "Subject"] {
        hasher.update(name.as_bytes());
        hasher.update(b":");
        hasher.update(
            message
                .header_raw(name)
                .unwrap_or_default()
                .trim()
                .as_bytes(),
        );
        hasher.update(b"\n");
    }
    let raw = message.raw_message();
    let body_start = (message.root_part().offset_body as usize).min(raw.len());
    hasher.update(&raw[body_start..]);
    let hex: String = hasher
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("mailstream-{hex}@generated")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_normalized() {
        assert_eq!(
            message_id(" <AbC.12@Mail.Example.COM> ").as_deref(),
            Some("AbC.12@mail.example.com")
        );
        assert_eq!(message_id("<>"), None);
        assert_eq!(message_id("no-domain").as_deref(), Some("no-domain"));
    }

    #[test]
    fn addresses_are_normalized() {
        assert_eq!(
            email("<John.Doe+crm@Example.COM>").as_deref(),
            Some("John.Doe+crm@example.com")
        );
        assert_eq!(
            display_name("  \"Doe,   John\" ", "x@y").as_deref(),
            Some("Doe, John")
        );
        assert_eq!(display_name("x@Y", "x@y"), None);
    }

    #[test]
    fn unstructured_values_are_decoded() {
        assert_eq!(
            decode_unstructured(
                b" =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n =?ISO-8859-1?Q?_f=FCr_Sie?=\r\n"
            ),
            "Grüße für Sie"
        );
    }
}
