//! Size limits of a parsed record: every email the intake accepts, however large or hostile,
//! yields a `parsed` record far under the topic's cap, and so do the `resolved` and `scored`
//! records that embed it. Nothing is cut silently: each cut names its field in `truncated`
//! (with the size before the cut) and, for bodies, where the whole value is kept.
//!
//! | part | limit | over it |
//! |---|---|---|
//! | `text`, `html` | `max_body_bytes` each (setting, default 1 MiB) | cut at a character boundary; the whole body goes to the blob store when the parser stores blobs |
//! | `stripped_text` | left out (null) when it equals `text`: a body is carried once | otherwise cut like the bodies |
//! | `signature`, `subject`, addresses, display names, header values | [`MAX_FIELD_BYTES`] each | cut |
//! | message ids (`message_id`, `in_reply_to`, `references`) | [`MAX_ID_BYTES`] each | replaced by its first bytes and a SHA-256 of the whole: stable, so dedupe and threads still match |
//! | address lists (`to`, `cc`, `bcc`, `reply_to`) | [`MAX_LIST_ENTRIES`] each, [`MAX_ADDRESS_BYTES_TOTAL`] together | later entries dropped |
//! | envelope and bounce recipients | [`MAX_LIST_ENTRIES`] and [`MAX_BOUNCE_RECIPIENTS`]; [`MAX_ID_BYTES`] each | later entries dropped |
//! | bounce recipients' details, auto-reply fields | diagnostic [`MAX_DIAGNOSTIC_BYTES`]; original recipient, remote MTA [`MAX_HOST_BYTES`]; class, reason, status, action, date, language [`MAX_SHORT_BYTES`]; replacement like an address | cut |
//! | `references` | [`MAX_REFERENCES`] | the first and the latest kept (RFC 5322 §3.6.4) |
//! | `headers` | [`MAX_HEADERS`] entries, [`MAX_HEADER_BYTES_TOTAL`] together | later headers dropped |
//! | `attachments` | [`MAX_LIST_ENTRIES`]; names and types [`MAX_NAME_BYTES`] each, [`MAX_ATTACHMENT_BYTES_TOTAL`] together | later parts dropped (their bytes are not stored) |
//! | `warnings`, evidence | [`MAX_WARNINGS`], [`MAX_NAME_BYTES`] each | later warnings dropped |
//! | `forwarded`, `form` | the original's body 64 KiB, its other strings 1 KiB ([`crate::forward`]); 40 pairs, labels 128 bytes, values 4 KiB, the person 1 KiB ([`crate::form`]) | cut when read (`forwarded.body` named in `truncated`), later pairs dropped |
//!
//! [`max_record_bytes`] bounds the encoded record for a `max_body_bytes`: about 6.6 MB with
//! the default 1 MiB, under the 8 MiB `parsed` cap with room for what the resolver and scorer
//! add. The parser's settings refuse a `max_body_bytes` whose bound would not leave that room.

use mailstream_runtime::blob::shortened;
use mailstream_runtime::records::{Address, ParsedEmail, Truncation};

/// The longest single string (subject, address, display name, header value, signature).
pub const MAX_FIELD_BYTES: usize = 16 * 1024;
/// The longest message id or recipient path kept as it is.
pub const MAX_ID_BYTES: usize = 1024;
/// Bounce recipients kept (in `failed_recipients`, and in `recipients` with their details).
pub const MAX_BOUNCE_RECIPIENTS: usize = 100;
/// The longest short value: classes, reasons, status codes, DSN actions, dates.
pub const MAX_SHORT_BYTES: usize = 64;
/// The longest bounce diagnostic (what the remote server said) kept per recipient.
pub const MAX_DIAGNOSTIC_BYTES: usize = 512;
/// The longest bounce `original` recipient or `remote_mta` kept (addresses are at most 254).
pub const MAX_HOST_BYTES: usize = 256;
/// Bytes of attachment names, content ids and types kept over all attachments.
pub const MAX_ATTACHMENT_BYTES_TOTAL: usize = 256 * 1024;
/// The longest attachment file name, content id or type, warning or evidence.
pub const MAX_NAME_BYTES: usize = 1024;
/// Entries kept of each address list, of the envelope recipients and of the attachments.
pub const MAX_LIST_ENTRIES: usize = 1000;
/// Bytes of addresses and names kept over all address lists together.
pub const MAX_ADDRESS_BYTES_TOTAL: usize = 512 * 1024;
/// References kept: the first and the latest.
pub const MAX_REFERENCES: usize = 100;
/// Header fields kept, and their bytes (names and values) together.
pub const MAX_HEADERS: usize = 1000;
pub const MAX_HEADER_BYTES_TOTAL: usize = 256 * 1024;
/// Warnings kept.
pub const MAX_WARNINGS: usize = 100;

/// The default `max_body_bytes`.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// A body cut to its limit, with the whole value for the blob store.
#[derive(Debug, Clone)]
pub struct CutBody {
    /// Index of its entry in the record's `truncated` list.
    pub entry: usize,
    pub whole: String,
}

/// An upper bound of the encoded size of a record within these limits, for `max_body_bytes`
/// (strings count their bytes plus a length prefix; fixed fields a generous 1 KiB).
pub fn max_record_bytes(max_body_bytes: usize) -> usize {
    let entry = 10; // length prefix or fixed-width fields of one list entry
    let bodies = 3 * max_body_bytes;
    let fields = 5 * MAX_FIELD_BYTES + 2 * (MAX_ID_BYTES + 80) + 1024;
    let addresses = MAX_ADDRESS_BYTES_TOTAL + 4 * MAX_LIST_ENTRIES * 2 * entry;
    let headers = MAX_HEADER_BYTES_TOTAL + MAX_HEADERS * 2 * entry;
    // sha256 hex, sniffed type, blob URI and the fixed fields of each attachment
    let attachments = MAX_ATTACHMENT_BYTES_TOTAL + MAX_LIST_ENTRIES * 400;
    let references = MAX_REFERENCES * (MAX_ID_BYTES + 80 + entry);
    let recipients = (MAX_LIST_ENTRIES + MAX_BOUNCE_RECIPIENTS) * (MAX_ID_BYTES + 80 + entry);
    let notes = (MAX_WARNINGS + 2) * (MAX_NAME_BYTES + entry) + 64 * 100;
    // bounce details per recipient (the address is counted with the recipients above):
    // original, remote MTA, diagnostic, four short fields
    let bounce_details = MAX_BOUNCE_RECIPIENTS
        * (2 * MAX_HOST_BYTES + MAX_DIAGNOSTIC_BYTES + 4 * MAX_SHORT_BYTES + 8 * entry)
        + 6 * MAX_SHORT_BYTES
        + MAX_ID_BYTES
        + MAX_NAME_BYTES;
    bodies
        + fields
        + addresses
        + headers
        + attachments
        + references
        + recipients
        + notes
        + bounce_details
        + crate::forward::MAX_ENCODED_BYTES
        + crate::form::MAX_ENCODED_BYTES
        + crate::invite::MAX_ENCODED_BYTES
        + crate::details::MAX_ENCODED_BYTES
}

/// Bounds `record` in place; returns the bodies that were cut, with their whole text.
pub fn bound(record: &mut ParsedEmail, max_body_bytes: usize) -> Vec<CutBody> {
    let mut cuts = Cuts::default();
    if record.stripped_text.is_some() && record.stripped_text == record.text {
        record.stripped_text = None;
    }
    let mut bodies = Vec::new();
    for (field, body) in [
        ("text", &mut record.text),
        ("html", &mut record.html),
        ("stripped_text", &mut record.stripped_text),
    ] {
        if let Some(value) = body
            && value.len() > max_body_bytes
        {
            let whole = value.clone();
            cut(value, max_body_bytes);
            cuts.note(field, whole.len());
            bodies.push(CutBody {
                entry: cuts.entries.len() - 1,
                whole,
            });
        }
    }
    cuts.string(&mut record.signature, "signature", MAX_FIELD_BYTES);
    cuts.string(&mut record.subject, "subject", MAX_FIELD_BYTES);
    cuts.id(&mut record.message_id, "message_id");
    if let Some(id) = record.in_reply_to.as_mut() {
        cuts.id(id, "in_reply_to");
    }
    bound_references(&mut record.references, &mut cuts);
    let mut address_budget = MAX_ADDRESS_BYTES_TOTAL;
    for address in record.from.iter_mut().chain(record.sender.iter_mut()) {
        cuts.address(address, &mut address_budget);
    }
    for (field, list) in [
        ("to", &mut record.to),
        ("cc", &mut record.cc),
        ("bcc", &mut record.bcc),
        ("reply_to", &mut record.reply_to),
    ] {
        cuts.addresses(list, field, &mut address_budget);
    }
    cuts.list(
        &mut record.envelope_rcpt_to,
        "envelope_rcpt_to",
        MAX_LIST_ENTRIES,
    );
    for rcpt in &mut record.envelope_rcpt_to {
        cuts.text(rcpt, "envelope_rcpt_to", MAX_ID_BYTES);
    }
    if let Some(from) = record.envelope_mail_from.as_mut() {
        cuts.text(from, "envelope_mail_from", MAX_FIELD_BYTES);
    }
    bound_headers(record, &mut cuts);
    bound_attachments(record, &mut cuts);
    if let Some(auto) = record.auto_reply.as_mut() {
        cuts.text(&mut auto.evidence, "auto_reply.evidence", MAX_NAME_BYTES);
        cuts.text(&mut auto.class, "auto_reply.class", MAX_SHORT_BYTES);
        cuts.string(
            &mut auto.return_date,
            "auto_reply.return_date",
            MAX_SHORT_BYTES,
        );
        cuts.string(&mut auto.language, "auto_reply.language", MAX_SHORT_BYTES);
        if let Some(replacement) = auto.replacement.as_mut() {
            cuts.text(
                &mut replacement.email,
                "auto_reply.replacement",
                MAX_ID_BYTES,
            );
            cuts.string(
                &mut replacement.name,
                "auto_reply.replacement",
                MAX_NAME_BYTES,
            );
        }
    }
    if let Some(bounce) = record.bounce.as_mut() {
        cuts.text(&mut bounce.evidence, "bounce.evidence", MAX_NAME_BYTES);
        cuts.list(
            &mut bounce.failed_recipients,
            "bounce.failed_recipients",
            MAX_BOUNCE_RECIPIENTS,
        );
        for rcpt in &mut bounce.failed_recipients {
            cuts.text(rcpt, "bounce.failed_recipients", MAX_ID_BYTES);
        }
        cuts.text(&mut bounce.class, "bounce.class", MAX_SHORT_BYTES);
        cuts.string(&mut bounce.reason, "bounce.reason", MAX_SHORT_BYTES);
        cuts.string(&mut bounce.status, "bounce.status", MAX_SHORT_BYTES);
        cuts.list(
            &mut bounce.recipients,
            "bounce.recipients",
            MAX_BOUNCE_RECIPIENTS,
        );
        for rcpt in &mut bounce.recipients {
            cuts.text(&mut rcpt.address, "bounce.recipients", MAX_ID_BYTES);
            cuts.string(&mut rcpt.original, "bounce.recipients", MAX_ID_BYTES);
            cuts.string(&mut rcpt.diagnostic, "bounce.recipients", MAX_NAME_BYTES);
            for short in [
                &mut rcpt.action,
                &mut rcpt.status,
                &mut rcpt.remote_mta,
                &mut rcpt.reason,
            ] {
                cuts.string(short, "bounce.recipients", MAX_SHORT_BYTES);
            }
            cuts.text(&mut rcpt.class, "bounce.recipients", MAX_SHORT_BYTES);
        }
    }
    cuts.list(&mut record.warnings, "warnings", MAX_WARNINGS);
    for warning in &mut record.warnings {
        cut(warning, MAX_NAME_BYTES);
    }
    if !cuts.entries.is_empty() {
        let names: Vec<&str> = cuts.entries.iter().map(|t| t.field.as_str()).collect();
        if record.warnings.len() >= MAX_WARNINGS {
            record.warnings.truncate(MAX_WARNINGS - 1);
        }
        record
            .warnings
            .push(format!("over the size limits, cut: {}", names.join(", ")));
    }
    record.truncated = cuts.entries;
    bodies
}

/// Keeps the first reference and the latest ones.
fn bound_references(references: &mut Vec<String>, cuts: &mut Cuts) {
    if references.len() > MAX_REFERENCES {
        cuts.note("references", references.len());
        let latest = references.len() - (MAX_REFERENCES - 1);
        references.drain(1..latest);
    }
    for id in references.iter_mut() {
        cuts.id(id, "references");
    }
}

fn bound_attachments(record: &mut ParsedEmail, cuts: &mut Cuts) {
    let before = record.attachments.len();
    let mut budget = MAX_ATTACHMENT_BYTES_TOTAL;
    let mut kept = 0;
    for attachment in &mut record.attachments {
        if kept == MAX_LIST_ENTRIES {
            break;
        }
        cuts.string(
            &mut attachment.filename,
            "attachments.filename",
            MAX_NAME_BYTES,
        );
        cuts.string(
            &mut attachment.content_id,
            "attachments.content_id",
            MAX_NAME_BYTES,
        );
        cuts.text(
            &mut attachment.content_type,
            "attachments.content_type",
            MAX_NAME_BYTES,
        );
        let size = attachment.filename.as_ref().map_or(0, String::len)
            + attachment.content_id.as_ref().map_or(0, String::len)
            + attachment.content_type.len();
        if size > budget {
            break;
        }
        budget -= size;
        kept += 1;
    }
    if kept < before {
        record.attachments.truncate(kept);
        cuts.note("attachments", before);
    }
}

fn bound_headers(record: &mut ParsedEmail, cuts: &mut Cuts) {
    let before = record.headers.len();
    let mut budget = MAX_HEADER_BYTES_TOTAL;
    let mut kept = 0;
    for header in &mut record.headers {
        if kept == MAX_HEADERS {
            break;
        }
        cut(&mut header.name, MAX_NAME_BYTES);
        if header.value.len() > MAX_FIELD_BYTES {
            cuts.note("headers.value", header.value.len());
            cut(&mut header.value, MAX_FIELD_BYTES);
        }
        let size = header.name.len() + header.value.len();
        if size > budget {
            break;
        }
        budget -= size;
        kept += 1;
    }
    if kept < before {
        record.headers.truncate(kept);
        cuts.note("headers", before);
    }
}

/// The cuts made so far, one entry per field.
#[derive(Default)]
struct Cuts {
    entries: Vec<Truncation>,
}

impl Cuts {
    /// Records that `field` was cut from `original_size` (bytes, or entries for a list); a
    /// field cut several times (each of many headers) keeps its first entry.
    fn note(&mut self, field: &str, original_size: usize) {
        if self.entries.iter().any(|t| t.field == field) {
            return;
        }
        self.entries.push(Truncation {
            field: field.to_string(),
            original_size: original_size as i64,
            blob_uri: None,
        });
    }

    fn text(&mut self, value: &mut String, field: &str, max: usize) {
        if value.len() > max {
            self.note(field, value.len());
            cut(value, max);
        }
    }

    fn string(&mut self, value: &mut Option<String>, field: &str, max: usize) {
        if let Some(value) = value.as_mut() {
            self.text(value, field, max);
        }
    }

    fn list<T>(&mut self, list: &mut Vec<T>, field: &str, max: usize) {
        if list.len() > max {
            self.note(field, list.len());
            list.truncate(max);
        }
    }

    /// An id over the limit is replaced by its first bytes and a digest of the whole: the
    /// same long id always maps to the same short one, so dedupe and threads still work.
    fn id(&mut self, id: &mut String, field: &str) {
        if let Some(short) = shortened(id, MAX_ID_BYTES, MAX_ID_BYTES / 2) {
            self.note(field, id.len());
            *id = short;
        }
    }

    fn address(&mut self, address: &mut Address, budget: &mut usize) {
        self.text(&mut address.email, "address", MAX_FIELD_BYTES);
        self.string(&mut address.name, "address.name", MAX_FIELD_BYTES);
        let size = address.email.len() + address.name.as_ref().map_or(0, String::len);
        *budget = budget.saturating_sub(size);
    }

    fn addresses(&mut self, list: &mut Vec<Address>, field: &str, budget: &mut usize) {
        let before = list.len();
        let mut kept = 0;
        for address in list.iter_mut() {
            if kept == MAX_LIST_ENTRIES || *budget == 0 {
                break;
            }
            self.address(address, budget);
            kept += 1;
        }
        if kept < before {
            list.truncate(kept);
            self.note(field, before);
        }
    }
}

/// Cuts `value` to at most `max` bytes, at a character boundary.
pub(crate) fn cut(value: &mut String, max: usize) {
    if value.len() <= max {
        return;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailstream_runtime::records::Header;

    fn email() -> ParsedEmail {
        ParsedEmail {
            message_id: "a@example.com".into(),
            text: Some("hello".into()),
            stripped_text: Some("hello".into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_default_bound_leaves_room_under_the_parsed_cap() {
        let bound = max_record_bytes(DEFAULT_MAX_BODY_BYTES);
        // 6.4 MB since bounces carry per-recipient details, 6.6 MB with a forward's original
        // and a form's fields, 6.67 MB with a meeting; the settings keep 512 KiB for the
        // resolver and scorer under the 8 MiB cap.
        assert!(bound < 6_700_000, "{bound}");
    }

    #[test]
    fn a_body_equal_to_its_stripped_text_is_carried_once() {
        let mut record = email();
        let cut_bodies = bound(&mut record, DEFAULT_MAX_BODY_BYTES);
        assert!(cut_bodies.is_empty());
        assert_eq!(record.text.as_deref(), Some("hello"));
        assert_eq!(record.stripped_text, None);
        assert!(record.truncated.is_empty());
    }

    #[test]
    fn long_bodies_are_cut_at_a_character_boundary_and_kept_whole_for_the_blob_store() {
        let mut record = email();
        let long = "é".repeat(1000); // 2,000 bytes
        record.text = Some(long.clone());
        record.stripped_text = Some(format!("{long}x"));
        let cut_bodies = bound(&mut record, 1001);
        assert_eq!(record.text.as_deref().map(str::len), Some(1000));
        assert_eq!(cut_bodies.len(), 2);
        assert_eq!(cut_bodies[0].whole, long);
        let fields: Vec<&str> = record.truncated.iter().map(|t| t.field.as_str()).collect();
        assert_eq!(fields, ["text", "stripped_text"]);
        assert_eq!(record.truncated[0].original_size, 2000);
        assert_eq!(record.truncated[1].original_size, 2001);
        assert!(record.warnings.iter().any(|w| w.contains("text")));
    }

    #[test]
    fn a_long_id_becomes_a_stable_digest_form() {
        let mut a = email();
        a.message_id = format!("{}@example.com", "x".repeat(40_000));
        let mut b = a.clone();
        bound(&mut a, DEFAULT_MAX_BODY_BYTES);
        bound(&mut b, DEFAULT_MAX_BODY_BYTES);
        assert!(a.message_id.len() <= MAX_ID_BYTES);
        assert!(a.message_id.contains("~sha256:"));
        assert_eq!(a.message_id, b.message_id);
    }

    #[test]
    fn lists_and_headers_are_bounded_and_named() {
        let mut record = email();
        record.to = (0..5000)
            .map(|i| Address {
                email: format!("user{i}@example.com"),
                name: None,
            })
            .collect();
        record.headers = (0..3000)
            .map(|i| Header {
                name: format!("X-H{i}"),
                value: "v".repeat(500),
            })
            .collect();
        record.references = (0..500).map(|i| format!("r{i}@x")).collect();
        bound(&mut record, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(record.to.len(), MAX_LIST_ENTRIES);
        assert!(record.headers.len() < 3000);
        let header_bytes: usize = record
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum();
        assert!(header_bytes <= MAX_HEADER_BYTES_TOTAL);
        assert_eq!(record.references.len(), MAX_REFERENCES);
        assert_eq!(record.references[0], "r0@x");
        assert_eq!(record.references.last().map(String::as_str), Some("r499@x"));
        for field in ["to", "headers", "references"] {
            assert!(
                record.truncated.iter().any(|t| t.field == field),
                "{field} not named: {:?}",
                record.truncated
            );
        }
    }
}
