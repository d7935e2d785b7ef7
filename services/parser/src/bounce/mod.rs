//! Delivery reports: bounces (RFC 3464 and the prose formats of MTAs and providers), delay
//! warnings, challenge-response requests and complaints (RFC 5965 feedback reports).
//!
//! | report | recognised by | recipients from | class |
//! |---|---|---|---|
//! | feedback report | `multipart/report; report-type=feedback-report`, or a `message/feedback-report` part; an Amazon SES complaint | `Original-Rcpt-To`, else the reported message's `To` | `complaint` (reason: the feedback type) |
//! | DSN | a `message/delivery-status` part (anywhere) | its per-recipient blocks ([`dsn`]) | per recipient ([`classify`]) |
//! | Amazon SES notification | JSON with `notificationType` | its recipient lists ([`mta::ses_notification`]) | per recipient |
//! | prose bounce | a `mailer-daemon`/`postmaster` sender or one named `Mail Delivery …`, the null sender with a report subject or text, `X-Failed-Recipients`, or a report subject with report text ([`mta`]) | the report's lines ([`mta::recipients`]), `X-Failed-Recipients`, else the returned message's single `To` | per recipient; all `delayed` in a delay warning |
//! | challenge | a challenge-response or whitelist request (subject or first lines: `please confirm`, `verify … sender`, `approved senders`, `whitelist`, Boxbe, Spam Arrest, ...) | the sender | `challenge` |
//!
//! Never a recipient in prose: the reporter (From), the report's own recipients and envelope
//! (the original sender), the returned message's From, Sender, Reply-To and Return-Path,
//! mailing-list addresses (`List-Post`, `List-Owner`, ... of either message, and the returned
//! message's `To` when it came through a list) and robot mailboxes (`mailer-daemon`,
//! `postmaster`, `abuse`, ...).
//!
//! The report's class is its worst recipient's (in order: `hard`, `soft`, `undetermined`,
//! `complaint`, `delayed`, `challenge`, `delivered`); `failed_recipients` lists only the failed
//! ones (`hard`, `soft`, `undetermined`), so a delay, a challenge or a complaint is never read as
//! a failed delivery.

pub mod classify;
pub mod dsn;
pub mod mta;

use std::collections::HashSet;
use std::sync::LazyLock;

use mail_parser::{HeaderValue, Message, MimeHeaders, PartType};
use mailstream_runtime::records::{Bounce, BounceRecipient};
use regex::Regex;

use crate::bodies::re;
use crate::normalize;
use crate::parse::MIME;
use crate::signals::header_text;

static BOUNCE_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)(undeliver|undelivered|delivery (status notification|failure|has failed|failed|problem|report|notification)|returned mail|mail delivery (failed|failure|system)|failure notice|non[- ]?delivery|delivery (is )?delayed|could not (be )?deliver|returned to sender|mail failure|delivery error|unzustellbar|non remis|no entregado|niet bezorgd|não entregue|non recapitato|не доставлено|配信|送信できません|error sending)",
    )
});
static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| re(r"[A-Za-z0-9._%+\-=]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}"));
/// An Amazon SES notification, looked for in the raw bytes (no text conversion needed).
static SES: LazyLock<regex::bytes::Regex> =
    LazyLock::new(|| regex::bytes::Regex::new("\"notificationType\"").expect("a literal pattern"));
static ROBOT_NAME: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)(mailer.?daemon|mail delivery|postmaster|delivery (status|subsystem))")
});
static CHALLENGE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)(challenge.?response|please confirm (that )?(you|your (e-?mail|message|address))|confirm (that )?you are (a )?(human|real)|verify (that )?you are (a )?(human|real|not a robot)|verify your (e-?mail|message|address) (to|so)|(approved|accepted|trusted|allowed) senders? list|whitelist|white-list|boxbe|spam ?arrest|mailblocks|choicemail|sender verification (request|required)|your message is (being )?(held|awaiting|pending) (for )?(verification|approval|confirmation)|requires? (sender )?(verification|confirmation) before)",
    )
});
/// Mailboxes of robots, never a failed recipient in prose.
const ROBOT_LOCAL_PARTS: &[&str] = &[
    "mailer-daemon",
    "mailerdaemon",
    "mail-daemon",
    "postmaster",
    "abuse",
    "hostmaster",
    "double-bounce",
    "noreply",
    "no-reply",
    "root",
];

/// The delivery report in `message`, if it is one.
pub fn detect(
    message: &Message<'_>,
    from: Option<&str>,
    subject: Option<&str>,
    null_sender: bool,
) -> Option<Bounce> {
    let root = message.root_part();
    let report_type = root
        .content_type()
        .filter(|ct| {
            ct.ctype().eq_ignore_ascii_case("multipart")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("report"))
        })
        .and_then(|ct| ct.attribute("report-type"))
        .map(str::to_ascii_lowercase);
    // The text and the report in it are read lazily: for the many messages that are no report,
    // neither the HTML-to-text conversion nor the scan for a returned message is needed.
    let text = std::cell::OnceCell::new();
    let text = || -> &str {
        text.get_or_init(|| {
            // A multipart with a broken boundary is one text part that is listed as no body.
            message
                .body_text(0)
                .or_else(|| match &root.body {
                    PartType::Text(text) => Some(text.clone()),
                    _ => None,
                })
                .unwrap_or_default()
        })
    };
    let report = std::cell::OnceCell::new();
    let report = || *report.get_or_init(|| mta::report_section(text()));

    if let Some(recipient) = jmrp_recipient(message) {
        return Some(summarize(
            vec![BounceRecipient {
                address: recipient,
                class: Bounce::COMPLAINT.into(),
                reason: Some("abuse".into()),
                ..BounceRecipient::default()
            }],
            "complaint (Microsoft JMRP: X-HmXmrOriginalRecipient)".into(),
        ));
    }
    let feedback = part_text(message, &[("message", "feedback-report")]);
    if report_type.as_deref() == Some("feedback-report") || feedback.is_some() {
        return Some(complaint(message, feedback.as_deref().unwrap_or_default()));
    }
    if let Some(status) = part_text(
        message,
        &[
            ("message", "delivery-status"),
            ("message", "global-delivery-status"),
            ("text", "delivery-status"),
        ],
    ) {
        let recipients = dsn::delivery_status(&status);
        if !recipients.is_empty() {
            let delay = mta::is_delay_warning(subject, report());
            let evidence = match report_type.as_deref() {
                Some("delivery-status") => "multipart/report; report-type=delivery-status",
                _ => "message/delivery-status",
            };
            return Some(assemble(recipients, evidence.into(), report(), delay));
        }
    }
    let from_aws =
        from.is_some_and(|f| f.ends_with("amazonaws.com") || f.ends_with("amazonses.com"));
    if (from_aws || SES.is_match(message.raw_message()))
        && let Some((kind, recipients)) = mta::ses_notification(text())
    {
        let evidence = format!("Amazon SES notification: {kind}");
        return Some(assemble(recipients, evidence, "", false));
    }

    let from_name = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.name())
        .unwrap_or_default();
    let local = from
        .and_then(|f| f.rsplit_once('@'))
        .map(|(l, _)| l.to_ascii_lowercase())
        .unwrap_or_default();
    let subject_says = subject.is_some_and(|s| BOUNCE_SUBJECT.is_match(s));
    let failed_header = header_text(message, "X-Failed-Recipients");
    let evidence = if local == "mailer-daemon" || local == "postmaster" {
        format!("From: {}", from.unwrap_or_default())
    } else if from.is_none() && ROBOT_NAME.is_match(from_name) {
        format!("From: {from_name}")
    } else if null_sender && (subject_says || mta::looks_like_report(report())) {
        format!("null sender, Subject: {}", subject.unwrap_or_default())
    } else if let Some(header) = &failed_header {
        format!("X-Failed-Recipients: {header}")
    } else if subject_says && mta::looks_like_report(report()) {
        format!("Subject: {}", subject.unwrap_or_default())
    } else {
        return challenge(message, from, subject, text);
    };

    let returned = returned_headers(message, text());
    let (reporter, senders) = skip_lists(message, from, returned.as_ref());
    let not_a_recipient = |a: &str| skipped(&reporter, a);
    let is_skipped = |a: &str| skipped(&reporter, a) || senders.contains(&a.to_ascii_lowercase());
    // The original sender is a recipient only when nobody else is (a message to oneself).
    let report = report();
    let mut found = mta::recipients(report, &is_skipped, &is_skipped);
    if found.is_empty() {
        found = mta::recipients(report, &not_a_recipient, &is_skipped);
    }
    let mut recipients: Vec<BounceRecipient> = found
        .into_iter()
        .map(|f| BounceRecipient {
            address: f.address,
            status: dsn::status_code(&f.detail),
            diagnostic: Some(f.detail).filter(|d| !d.is_empty()),
            ..BounceRecipient::default()
        })
        .collect();
    for address in failed_header
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(|entry| EMAIL.find(entry))
        .filter_map(|m| normalize::email(m.as_str()))
    {
        if !recipients
            .iter()
            .any(|r| r.address.eq_ignore_ascii_case(&address))
        {
            recipients.push(BounceRecipient {
                address,
                ..BounceRecipient::default()
            });
        }
    }
    if recipients.is_empty()
        && let Some(returned) = &returned
        && !returned.via_list
        && let [only] = returned.to.as_slice()
        && !is_skipped(only)
    {
        recipients.push(BounceRecipient {
            address: only.clone(),
            ..BounceRecipient::default()
        });
    }
    let delay = mta::is_delay_warning(subject, report);
    Some(assemble(recipients, evidence, report, delay))
}

/// The complained-about recipient of a Microsoft (Hotmail, Outlook.com) junk-mail report: the
/// attached message carries `X-HmXmrOriginalRecipient`.
fn jmrp_recipient(message: &Message<'_>) -> Option<String> {
    message.parts.iter().find_map(|part| match &part.body {
        PartType::Message(inner) => inner
            .header_raw("X-HmXmrOriginalRecipient")
            .and_then(normalize::email),
        _ => None,
    })
}

/// The first part of one of these types, as text.
fn part_text(message: &Message<'_>, types: &[(&str, &str)]) -> Option<String> {
    message.parts.iter().find_map(|part| {
        types
            .iter()
            .any(|(t, s)| part.is_content_type(t, s))
            .then(|| match &part.body {
                PartType::Message(inner) => {
                    String::from_utf8_lossy(inner.raw_message()).into_owned()
                }
                _ => String::from_utf8_lossy(part.contents()).into_owned(),
            })
    })
}

/// Classifies each recipient and sums the report up.
fn assemble(
    mut recipients: Vec<BounceRecipient>,
    evidence: String,
    report: &str,
    delay: bool,
) -> Bounce {
    let report_reason = classify::reason(report, None);
    let report_status = dsn::status_code(report);
    for r in &mut recipients {
        if r.class == Bounce::COMPLAINT {
            continue;
        }
        let status = r.status.clone().or_else(|| report_status.clone());
        let reason = classify::reason(r.diagnostic.as_deref().unwrap_or_default(), None)
            .or_else(|| classify::reason("", status.as_deref()))
            .or(report_reason);
        let action = if delay && r.action.is_none() {
            Some("delayed")
        } else {
            r.action.as_deref()
        };
        let class = classify::class(action, reason, status.as_deref());
        // A transient SES bounce (or any `soft` set by the reader) is kept soft unless hard.
        if !(r.class == Bounce::SOFT && class != Bounce::HARD) {
            r.class = class.to_string();
        }
        r.reason = reason.map(str::to_string);
        if r.status.is_none() {
            r.status = status;
        }
    }
    summarize(recipients, evidence)
}

/// The report-level fields from the recipients.
fn summarize(recipients: Vec<BounceRecipient>, evidence: String) -> Bounce {
    let worst = recipients
        .iter()
        .map(|r| r.class.as_str())
        .max_by_key(|c| classify::severity(c))
        .unwrap_or(Bounce::UNDETERMINED)
        .to_string();
    let lead = recipients
        .iter()
        .find(|r| r.class == worst)
        .or(recipients.first());
    Bounce {
        failed_recipients: recipients
            .iter()
            .filter(|r| mailstream_runtime::records::is_failure_class(&r.class))
            .map(|r| r.address.clone())
            .collect(),
        status: lead.and_then(|r| r.status.clone()),
        reason: lead.and_then(|r| r.reason.clone()),
        evidence,
        class: worst,
        recipients,
    }
}

/// An ARF feedback report.
fn complaint(message: &Message<'_>, report: &str) -> Bounce {
    let (kind, mut addresses) = dsn::feedback_report(report);
    if addresses.is_empty()
        && let Some(returned) = returned_headers(message, "")
    {
        addresses = returned.to;
    }
    addresses.retain(|a| a.contains('@'));
    let recipients = addresses
        .into_iter()
        .map(|address| BounceRecipient {
            address,
            class: Bounce::COMPLAINT.into(),
            reason: kind.clone(),
            ..BounceRecipient::default()
        })
        .collect::<Vec<_>>();
    Bounce {
        failed_recipients: Vec::new(),
        status: None,
        evidence: "feedback report (RFC 5965)".into(),
        class: Bounce::COMPLAINT.into(),
        reason: kind,
        recipients,
    }
}

/// A challenge-response or whitelist request.
fn challenge<'t>(
    message: &Message<'_>,
    from: Option<&str>,
    subject: Option<&str>,
    text: impl FnOnce() -> &'t str,
) -> Option<Bounce> {
    // A person may write these words; a challenge is sent by a machine.
    let subject_phrase = subject.and_then(|s| CHALLENGE.find(s));
    let automatic = subject_phrase.is_some()
        || header_text(message, "Auto-Submitted").is_some_and(|v| !v.eq_ignore_ascii_case("no"))
        || header_text(message, "X-Autoreply").is_some()
        || header_text(message, "Precedence").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "bulk" | "junk" | "auto_reply"
            )
        });
    if !automatic {
        return None;
    }
    let head: String = text().lines().take(12).collect::<Vec<_>>().join(" ");
    let phrase = subject_phrase
        .or_else(|| CHALLENGE.find(&head))?
        .as_str()
        .to_string();
    let recipients = from
        .map(|address| BounceRecipient {
            address: address.to_string(),
            class: Bounce::CHALLENGE.into(),
            ..BounceRecipient::default()
        })
        .into_iter()
        .collect();
    Some(Bounce {
        evidence: format!("challenge: {phrase}"),
        class: Bounce::CHALLENGE.into(),
        recipients,
        ..Bounce::default()
    })
}

/// What the returned (original) message says about its sender and recipients.
struct Returned {
    senders: Vec<String>,
    to: Vec<String>,
    lists: Vec<String>,
    via_list: bool,
}

/// The headers of the returned message: an attached `message/rfc822`, a `text/rfc822-headers`
/// part, or the text after the report in a one-part bounce.
fn returned_headers(message: &Message<'_>, text: &str) -> Option<Returned> {
    for part in message.parts.iter().skip(1) {
        if let PartType::Message(inner) = &part.body {
            return Some(read_returned(inner));
        }
        if part.is_content_type("text", "rfc822-headers") {
            return MIME.parse(part.contents()).map(|m| read_returned(&m));
        }
    }
    let report_len = mta::report_section(text).len();
    if report_len >= text.len() {
        return None;
    }
    let rest = &text[report_len..];
    // Skip the marker line unless it is itself a header.
    let start = if rest.contains(": ") && rest.lines().next().is_some_and(|l| l.contains(": ")) {
        0
    } else {
        rest.find('\n').map_or(rest.len(), |n| n + 1)
    };
    MIME.parse(rest[start..].trim_start().as_bytes())
        .map(|m| read_returned(&m))
}

fn read_returned(message: &Message<'_>) -> Returned {
    let emails = |value: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        value
            .map(|a| {
                a.iter()
                    .filter_map(|a| a.address())
                    .filter_map(normalize::email)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut senders = emails(message.from());
    senders.extend(emails(message.sender()));
    senders.extend(emails(message.reply_to()));
    if let Some(path) = message.return_path().as_text().and_then(normalize::email) {
        senders.push(path);
    }
    let lists = list_addresses(message);
    let via_list = !lists.is_empty() || message.header_raw("List-Id").is_some();
    Returned {
        senders,
        to: emails(message.to()),
        lists,
        via_list,
    }
}

/// Addresses in a message's `List-*` headers.
fn list_addresses(message: &Message<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for name in [
        "List-Post",
        "List-Owner",
        "List-Help",
        "List-Subscribe",
        "List-Unsubscribe",
    ] {
        let value = match message.header(name) {
            Some(HeaderValue::Text(t)) => t.to_string(),
            Some(HeaderValue::TextList(list)) => list.join(","),
            Some(HeaderValue::Address(a)) => a
                .iter()
                .filter_map(|a| a.address())
                .collect::<Vec<_>>()
                .join(","),
            _ => message.header_raw(name).unwrap_or_default().to_string(),
        };
        for part in value.split([',', '<', '>', ' ']) {
            let part = part.trim();
            let addr = part.strip_prefix("mailto:").unwrap_or(part);
            let addr = addr.split('?').next().unwrap_or_default();
            if addr.contains('@')
                && let Some(a) = normalize::email(addr)
            {
                out.push(a);
            }
        }
    }
    out
}

/// Addresses that are never a failed recipient of this report (the reporter, lists), and those
/// of the original sender (a recipient only where a line names them), lower-cased.
fn skip_lists(
    message: &Message<'_>,
    from: Option<&str>,
    returned: Option<&Returned>,
) -> (HashSet<String>, HashSet<String>) {
    let lower = |a: &str| a.to_ascii_lowercase();
    let mut reporter: HashSet<String> = from.into_iter().map(lower).collect();
    reporter.extend(list_addresses(message).iter().map(|a| lower(a)));
    let mut senders: HashSet<String> = HashSet::new();
    for list in [message.to(), message.cc()].into_iter().flatten() {
        senders.extend(
            list.iter()
                .filter_map(|a| a.address())
                .filter_map(normalize::email)
                .map(|a| lower(&a)),
        );
    }
    if let Some(path) = message.return_path().as_text().and_then(normalize::email) {
        senders.insert(lower(&path));
    }
    if let Some(returned) = returned {
        senders.extend(returned.senders.iter().map(|a| lower(a)));
        reporter.extend(returned.lists.iter().map(|a| lower(a)));
        if returned.via_list {
            reporter.extend(returned.to.iter().map(|a| lower(a)));
        }
    }
    (reporter, senders)
}

fn skipped(skip: &HashSet<String>, address: &str) -> bool {
    let lower = address.to_ascii_lowercase();
    let local = lower.rsplit_once('@').map_or(lower.as_str(), |(l, _)| l);
    skip.contains(&lower) || ROBOT_LOCAL_PARTS.contains(&local)
}
