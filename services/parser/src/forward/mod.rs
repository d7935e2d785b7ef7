//! Forwarded mail: when a colleague forwards a customer's email, the lead is the customer.
//!
//! [`detect`] finds the message an email forwards and reads its sender, date, subject and
//! body into [`Forwarded`], with the email's From as the forwarder:
//!
//! - **attached** (`message/rfc822` parts, Outlook's and Gmail's "forward as attachment"): the
//!   embedded message's own headers and text;
//! - **inline** ([`block`]): a forward banner (`---------- Forwarded message ---------`,
//!   `Begin forwarded message:`, `-------- Weitergeleitete Nachricht --------`, ...) and the
//!   header block under it; or an `-----Original Message-----` banner or a bare
//!   `From:`/`Sent:`/`To:`/`Subject:` block (Outlook) when the subject says forward (`Fwd:`,
//!   `FW:`, `WG:`, `TR:`, `RV:`, ... in [`words`]), since Outlook writes the same block above
//!   replies. Banners and labels are the reply stripper's, in all its locales.
//!
//! A chain of forwards is followed to its innermost message, the original (`depth` counts the
//! steps), iteratively and at most [`MAX_DEPTH`] deep, each step reading on from the last, so
//! hostile nesting costs one pass over the text. Delivery reports and automatic replies (which
//! quote or attach the message they answer), mail from robots (`mailer-daemon@`, `no-reply@`:
//! a report the bounce reader did not recognise), and replies (`Re:`, `AW:`, ...), are not
//! forwards. The original's body is its new content (its own quotes and signature removed by
//! [`crate::reply`]), masked by the record's redactor and cut to [`MAX_BODY_BYTES`]; its
//! signature goes to [`crate::details`] (the lead's contact details), not into the record.

mod block;
mod date;
mod words;

use mail_parser::{Message, MimeHeaders, PartType};
use mailstream_runtime::records::{Address, Forwarded, ParsedEmail, Truncation};

use crate::bodies;
use crate::limits::cut;
use crate::normalize;
use crate::redact::Redactor;
use crate::reply;

pub use block::{is_forward_subject, is_reply_subject};

/// The deepest forward followed in a chain.
pub const MAX_DEPTH: usize = 16;
/// The longest original body kept (cut at a character boundary, named in `truncated`).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest subject, date text, name or address kept.
const MAX_FIELD_BYTES: usize = 1024;
/// An upper bound of the encoded `forwarded` record: the body, six bounded strings, and a
/// generous 1 KiB for the rest (part of [`crate::limits::max_record_bytes`]).
pub const MAX_ENCODED_BYTES: usize = MAX_BODY_BYTES + 6 * (MAX_FIELD_BYTES + 10) + 1024;

/// A forwarded original as found: its record, and the signature its author signed with (split
/// off its body, so not in [`Forwarded::body`]).
struct Found {
    forwarded: Forwarded,
    signature: Option<String>,
}

/// The message `record` (parsed from `message`) forwards, if it forwards one, into
/// `record.forwarded`. Returns the original's signature (masked), which
/// [`crate::details`] reads the lead's contact details from.
pub fn detect(
    message: &Message<'_>,
    record: &mut ParsedEmail,
    redactor: &Redactor,
) -> Option<String> {
    if record.bounce.is_some() || record.auto_reply.is_some() {
        return None;
    }
    let subject = record.subject.as_deref().unwrap_or_default();
    let robot = record
        .from
        .as_ref()
        .is_some_and(|a| words::is_robot(&a.email));
    if is_reply_subject(subject) || robot {
        return None;
    }
    let found = attached(message).or_else(|| {
        record
            .text
            .as_deref()
            .and_then(|text| inline(text, subject, 0))
    });
    let (mut found, mut signature) =
        found.map_or((None, None), |f| (Some(f.forwarded), f.signature));
    if let Some(signature) = &mut signature {
        redactor.in_place(signature);
    }
    if let Some(original) = &mut found {
        original.forwarder = record.from.clone().map(bounded_address);
        if original.depth as usize >= MAX_DEPTH {
            record.warnings.push(format!(
                "a chain of more than {MAX_DEPTH} forwards: the {MAX_DEPTH}th message is taken as the original"
            ));
        }
        if original.from.is_none() {
            record
                .warnings
                .push("forwarded message without a sender address: the lead stays From".into());
        }
        if let Some(body) = &mut original.body {
            redactor.in_place(body);
            if body.len() > MAX_BODY_BYTES {
                record.truncated.push(Truncation {
                    field: "forwarded.body".into(),
                    original_size: body.len() as i64,
                    blob_uri: None,
                });
                cut(body, MAX_BODY_BYTES);
            }
        }
        if let Some(subject) = &mut original.subject {
            redactor.in_place(subject);
        }
    }
    record.forwarded = found;
    signature
}

/// The innermost message of a chain of `message/rfc822` attachments, then of inline forwards
/// in its text.
fn attached(message: &Message<'_>) -> Option<Found> {
    let mut current = message;
    let mut depth = 0;
    while depth < MAX_DEPTH {
        let digest = current.content_type().is_some_and(|c| {
            c.subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("digest"))
        });
        let report = current.content_type().is_some_and(|c| {
            c.subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
        });
        if digest || report {
            break;
        }
        let Some(inner) = current.parts.iter().find_map(|p| match &p.body {
            PartType::Message(m) => Some(m),
            _ => None,
        }) else {
            break;
        };
        current = inner;
        depth += 1;
    }
    if depth == 0 {
        return None;
    }
    let text = bodies::bodies(current).0;
    let subject = current.subject().map(collapse);
    let remaining = MAX_DEPTH - depth;
    if remaining > 0
        && let Some(mut deeper) = text
            .as_deref()
            .and_then(|t| inline(t, subject.as_deref().unwrap_or_default(), remaining))
    {
        deeper.forwarded.depth += depth as i32;
        deeper.forwarded.format = Forwarded::ATTACHED.into();
        return Some(deeper);
    }
    let mut ignored = Vec::new();
    let (body, signature) = text
        .as_deref()
        .map(reply::split)
        .map_or((None, None), |s| (Some(s.stripped), s.signature));
    let forwarded = Forwarded {
        from: normalize::addresses(current.from().into_iter(), "From", &mut ignored)
            .into_iter()
            .next()
            .map(bounded_address),
        date: normalize::date(current, &mut ignored),
        date_text: current
            .header_raw("Date")
            .map(|d| bounded(d.trim().to_string())),
        subject: subject.map(bounded),
        body,
        forwarder: None,
        format: Forwarded::ATTACHED.into(),
        depth: depth as i32,
    };
    Some(Found {
        forwarded,
        signature,
    })
}

/// The innermost inline forward in `text` whose subject is `subject`, following at most
/// `MAX_DEPTH - already` forwards. The caller adds its own depth.
fn inline(text: &str, subject: &str, already: usize) -> Option<Found> {
    let lines: Vec<&str> = text.lines().collect();
    let (mut start, mut end, mut depth) = (0, lines.len(), 0);
    let mut subject = subject.to_string();
    let mut found: Option<(block::Block, usize, usize)> = None;
    let mut steps = 0;
    while steps + already < MAX_DEPTH {
        let forward_subject = is_forward_subject(&subject);
        let Some(marker) = block::find(&lines, start, end, depth, forward_subject) else {
            break;
        };
        let forward = marker.banner == Some(true) || forward_subject;
        if !forward {
            break;
        }
        let head = block::read(&lines, &marker, end);
        let body_end = block::body_end(&lines, head.body_start, end, marker.depth);
        steps += 1;
        (start, end, depth) = (head.body_start, body_end, marker.depth);
        subject = head.subject.clone().unwrap_or_default();
        found = Some((head, body_end, marker.depth));
    }
    let (head, body_end, quote) = found?;
    let body: Vec<&str> = lines[head.body_start.min(body_end)..body_end]
        .iter()
        .filter_map(|l| block::unquote(l, quote))
        .collect();
    let split = reply::split(&body.join("\n"));
    let forwarded = Forwarded {
        from: head.from.as_deref().and_then(address).map(bounded_address),
        date: head.date.as_deref().and_then(date::parse),
        date_text: head.date.map(bounded),
        subject: head.subject.map(bounded),
        body: Some(split.stripped).filter(|b| !b.trim().is_empty()),
        forwarder: None,
        format: Forwarded::INLINE.into(),
        depth: steps as i32,
    };
    Some(Found {
        forwarded,
        signature: split.signature,
    })
}

/// The mailbox a forward's `From:` line names: `Ann Lee <ann@x.com>`, `"Lee, Ann"
/// <ann@x.com>`, `Ann Lee [mailto:ann@x.com]`, `*Ann Lee* <ann@x.com>`, `ann@x.com (Ann
/// Lee)`, `ann@x.com`. `None` without an address.
fn address(value: &str) -> Option<Address> {
    let at = value.find('@')?;
    let is_part = |c: char| !c.is_whitespace() && !"<>()[]\"',;:".contains(c);
    let begin = value[..at]
        .char_indices()
        .rev()
        .find(|(_, c)| !is_part(*c))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let end = value[at..]
        .char_indices()
        .find(|(_, c)| !is_part(*c))
        .map_or(value.len(), |(i, _)| at + i);
    let raw = &value[begin..end];
    let domain = raw.rsplit_once('@').map(|(_, d)| d)?;
    if begin == at || !domain.contains('.') {
        return None;
    }
    let email = normalize::email(raw)?;
    let name: String = format!("{} {}", &value[..begin], &value[end..])
        .replace("mailto:", " ")
        .chars()
        .filter(|c| !"<>()[]*\"".contains(*c))
        .collect();
    let name = normalize::display_name(name.trim().trim_matches(','), &email);
    Some(Address { email, name })
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn bounded(mut s: String) -> String {
    cut(&mut s, MAX_FIELD_BYTES);
    s
}

fn bounded_address(a: Address) -> Address {
    Address {
        email: bounded(a.email),
        name: a.name.map(bounded),
    }
}

#[cfg(test)]
mod tests;
