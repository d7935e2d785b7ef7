//! Reports in prose: the non-DSN formats of MTAs and providers, and Amazon SES notifications.
//!
//! The report text is the first text part, cut where the returned message starts. The
//! recipients are the addresses that begin a line of it (possibly in `<>`, after a bullet or a
//! `Recipient:`-style label, or as `>>> RCPT TO:<a@b>` in a transcript), and what follows each up
//! to the next is what the server said about it; when no line begins with one, every address in
//! the report counts. Addresses of the reporter, of the original sender and of mailing lists
//! are never recipients ([`super`] decides which).
//!
//! | family | recognised by (any of) | recipients |
//! |---|---|---|
//! | Postfix | `This is the mail system at host`, `could not be delivered to one or more recipients` | `<a@b>: host … said: …` |
//! | Exim (also Mail.ru, Yandex, 1&1, GMX) | `This message was created automatically by mail delivery software`, `following address(es) failed` | indented address, then the SMTP error |
//! | qmail (also Yahoo, X2, Verizon) | `This is the qmail-send program`, `wasn't able to deliver your message`, `unable to deliver your message to the following address` | `<a@b>:` then the remote answer |
//! | Sendmail (V5 and V8) | `Transcript of session follows`, `had permanent fatal errors` | `<a@b>... reason`, `>>> RCPT To:<a@b>`; else the unsent message's `To` |
//! | Exchange 2003/2007, Office 365, Outlook.com | `did not reach the following recipient`, `Delivery has failed to these recipients`, `Your message (couldn't\|wasn't) be delivered` | the address line, then the reason |
//! | Domino / Lotus Notes, GroupWise | `was not delivered to:`, `Failure Reasons`, `undeliverable to the following` | address line |
//! | Gmail, Google Workspace, Google Groups | `Delivery to the following recipient failed`, `Address not found`, `wasn't delivered to` | address line; else the returned message's `To` |
//! | OpenSMTPD, DragonFly, Courier, IMail, m-FILTER, Zoho, Mimecast, others | `error has occurred while attempting to deliver`, `error delivering your mail to`, `Unknown user:` … | address line or any address |
//! | Amazon SES (JSON via SNS) | `"notificationType"` | `bouncedRecipients`, `complainedRecipients`, `delivery.recipients` |
//!
//! A warning that the mail is still being retried (subject `Delay`, `Warning: could not send`,
//! or `will continue trying`, `has not yet been delivered`, `This is a warning message only` in
//! the text) makes every recipient `delayed`.

use std::sync::LazyLock;

use mailstream_runtime::records::{Bounce, BounceRecipient};
use regex::Regex;
use serde_json::Value;

use crate::bodies::re;
use crate::normalize;

/// Where the returned message starts in a one-part report.
static RETURNED: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?im)^[ \t]*-*[ \t]*(original message|unsent message|returned message|below (this line )?is a copy|this is a copy of|message headers follow|original message follows|headers of the original|the original message headers|-+ ?original message|\w* ?message header follows|bounced e-?mail:)|^from \S+@\S+ +\w{3} \w{3} |^(received|return-path|dkim-signature|x-received|x-google-smtp-source): ?\S",
    )
});
/// An address that begins a line, possibly after a bullet, a label or in a transcript.
static LINE_RECIPIENT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"(?im)^[ \t>*•\-]*(?:(?:(?:final-|original-|failed |invalid |unknown |bad )?(?:recipients?|address(?:es)?|users?|rcpt to|mailbox|destinataire|empfänger|destinatario)(?: address)?(?:\(es\)|\(s\))?[ \t]*:[ \t]*)(?:rfc822[ \t]*;[ \t]*)?)?[<"'(]?([A-Za-z0-9._%+\-=/!#$&'*?^`{|}~]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,})"#,
    )
});
static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| re(r"[A-Za-z0-9._%+\-=]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}"));
/// Phrases of the formats above (and their translations) that say the text is a failure report.
static REPORT_PHRASE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)(this is the mail system at|could not be delivered|created automatically by mail delivery software|address(\(es\))? failed|qmail-send program|wasn'?t able to deliver|unable to deliver|transcript of session follows|permanent fatal errors|did not reach the following|delivery has failed|couldn'?t be delivered|wasn'?t delivered|was not delivered|failure reasons|undeliverable|delivery to the following recipient|address not found|error has occurred while attempting to deliver|error delivering your mail|delivery (status notification|failure|failed)|failed permanently|permanent error|unknown user|user unknown|returned to sender|не может быть доставлено|не доставлено|unzustellbar|nicht zugestellt|non remis|no se pudo entregar|non è stato possibile|kon niet worden bezorgd)",
    )
});
static DELAY_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)(\(delay\)|delayed mail|delivery (is )?delayed|mail delivery delayed|warning: (could not send|message .{0,60}delayed)|still being retried|delivery status notification \(delay\)|not yet been delivered)",
    )
});
static DELAY_TEXT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)(this is (just )?a warning message only|will (continue|keep) (trying|to try)|has not (yet )?been delivered yet|has not yet been delivered|still (trying|being retried)|delivery (attempts )?will continue|no action is required on your part|will retry (for|until|again))",
    )
});

/// What the report says about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub address: String,
    /// The text about it (up to the next recipient), whitespace collapsed.
    pub detail: String,
}

/// The report part of a one-part bounce: everything before the returned message.
pub fn report_section(text: &str) -> &str {
    // The marker must not be the first line: some reports start with their own headline.
    match RETURNED.find_iter(text).find(|m| m.start() > 0) {
        Some(m) => &text[..m.start()],
        None => text,
    }
}

/// Whether `text` reads like a failure report of one of the known formats.
pub fn looks_like_report(text: &str) -> bool {
    REPORT_PHRASE.is_match(text)
}

/// Whether the report is a warning that delivery is still being retried.
pub fn is_delay_warning(subject: Option<&str>, report: &str) -> bool {
    subject.is_some_and(|s| DELAY_SUBJECT.is_match(s)) || DELAY_TEXT.is_match(report)
}

/// Longest `detail` kept per recipient.
const MAX_DETAIL_CHARS: usize = 600;

/// The recipients a prose report names. An address that begins a line is skipped when
/// `skip_line` is true for it (robots, the reporter, lists); any other address also when
/// `skip` is (the original sender too, who is named in transcripts and greetings).
pub fn recipients(
    report: &str,
    skip_line: &dyn Fn(&str) -> bool,
    skip: &dyn Fn(&str) -> bool,
) -> Vec<Found> {
    let mut lines: Vec<(usize, usize, String)> = Vec::new(); // (start of address, end, address)
    for caps in LINE_RECIPIENT.captures_iter(report) {
        let Some(m) = caps.get(1) else { continue };
        if let Some(address) = normalize::email(m.as_str())
            && !skip_line(&address)
        {
            lines.push((m.start(), m.end(), address));
        }
    }
    let mut found: Vec<Found> = Vec::new();
    if lines.is_empty() {
        let detail = collapse(report);
        for m in EMAIL.find_iter(report) {
            if let Some(address) = normalize::email(m.as_str())
                && !skip(&address)
            {
                push(&mut found, address, detail.clone());
            }
        }
        return found;
    }
    for (i, (_, end, address)) in lines.iter().enumerate() {
        let next = lines
            .get(i + 1)
            .map_or(report.len(), |(start, _, _)| *start);
        // The next recipient's line starts before its address: cut at that line's start.
        let until = report[..next]
            .rfind('\n')
            .filter(|n| *n > *end)
            .unwrap_or(next);
        let detail = collapse(report.get(*end..until).unwrap_or_default());
        push(&mut found, address.clone(), detail);
    }
    found
}

fn push(found: &mut Vec<Found>, address: String, detail: String) {
    match found
        .iter_mut()
        .find(|f| f.address.eq_ignore_ascii_case(&address))
    {
        Some(existing) if existing.detail.trim().is_empty() => existing.detail = detail,
        Some(_) => {}
        None => found.push(Found { address, detail }),
    }
}

/// Whitespace collapsed, leading punctuation dropped, at most [`MAX_DETAIL_CHARS`].
fn collapse(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    joined
        .trim_start_matches(['>', ':', '.', ' ', ',', ';', '"', '\''])
        .chars()
        .take(MAX_DETAIL_CHARS)
        .collect()
}

/// An Amazon SES notification (bare, or inside an SNS envelope): its class-setting type and
/// recipients. `None` when `text` is not one.
pub fn ses_notification(text: &str) -> Option<(String, Vec<BounceRecipient>)> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    let json = text.get(start..=end)?;
    // Some relays break lines over 998 characters with `!` and a folded line.
    let mut value: Value = serde_json::from_str(json)
        .or_else(|_| serde_json::from_str(&json.replace("!\n ", "").replace("!\r\n ", "")))
        .ok()?;
    if let Some(inner) = value.get("Message").and_then(Value::as_str) {
        value = serde_json::from_str(inner).ok()?;
    }
    let kind = value
        .get("notificationType")
        .or_else(|| value.get("eventType"))?
        .as_str()?
        .to_ascii_lowercase();
    let str_of = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .filter(|s| !s.is_empty())
    };
    let mut recipients = Vec::new();
    match kind.as_str() {
        "bounce" => {
            let bounce = value.get("bounce")?;
            let transient = str_of(bounce, "bounceType").is_some_and(|t| t != "Permanent");
            let remote_mta = str_of(bounce, "reportingMTA");
            for r in bounce.get("bouncedRecipients")?.as_array()? {
                let Some(address) = str_of(r, "emailAddress").and_then(|a| normalize::email(&a))
                else {
                    continue;
                };
                recipients.push(BounceRecipient {
                    address,
                    action: str_of(r, "action"),
                    status: str_of(r, "status"),
                    diagnostic: str_of(r, "diagnosticCode"),
                    remote_mta: remote_mta.clone(),
                    class: if transient {
                        Bounce::SOFT.into()
                    } else {
                        String::new()
                    },
                    ..BounceRecipient::default()
                });
            }
        }
        "complaint" => {
            let complaint = value.get("complaint")?;
            let reason = str_of(complaint, "complaintFeedbackType");
            for r in complaint.get("complainedRecipients")?.as_array()? {
                if let Some(address) = str_of(r, "emailAddress").and_then(|a| normalize::email(&a))
                {
                    recipients.push(BounceRecipient {
                        address,
                        class: Bounce::COMPLAINT.into(),
                        reason: reason.clone(),
                        ..BounceRecipient::default()
                    });
                }
            }
        }
        "delivery" => {
            let delivery = value.get("delivery")?;
            let status = str_of(delivery, "smtpResponse");
            for r in delivery.get("recipients")?.as_array()? {
                if let Some(address) = r.as_str().and_then(normalize::email) {
                    recipients.push(BounceRecipient {
                        address,
                        action: Some("delivered".into()),
                        diagnostic: status.clone(),
                        ..BounceRecipient::default()
                    });
                }
            }
        }
        _ => return None,
    }
    Some((kind, recipients))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(report: &str) -> Vec<String> {
        let skip = |a: &str| a.starts_with("postmaster@");
        recipients(report, &skip, &skip)
            .into_iter()
            .map(|f| f.address)
            .collect()
    }

    #[test]
    fn line_recipients_with_their_details() {
        let report = "The following address(es) failed:\n\n  one@example.org\n    SMTP error from remote mail server after RCPT TO:<one@example.org>:\n    550 5.1.1 User unknown\n\n  two@example.org\n    552 Mailbox full\n\nContact postmaster@example.net\n";
        let skip = |a: &str| a.starts_with("postmaster@");
        let found = recipients(report, &skip, &skip);
        assert_eq!(found.len(), 2);
        assert!(found[0].detail.contains("User unknown"), "{found:?}");
        assert!(!found[0].detail.contains("Mailbox full"));
        assert!(found[1].detail.contains("Mailbox full"));
    }

    #[test]
    fn qmail_sendmail_and_prose() {
        assert_eq!(
            addresses("<a@example.jp>:\nRemote host said: 550 no mailbox\n"),
            ["a@example.jp"]
        );
        assert_eq!(
            addresses(
                ">>> RCPT To:<b@example.com>\n<<< 550 5.1.1 <b@example.com>... User unknown\n"
            ),
            ["b@example.com"]
        );
        assert_eq!(
            addresses("There was an error delivering your mail to <c@example.com>.\n"),
            ["c@example.com"]
        );
    }

    #[test]
    fn the_returned_message_is_cut_off() {
        let text = "Sorry.\n<a@example.jp>:\nno mailbox\n--- Below this line is a copy of the message.\nTo: list@example.org\n";
        assert!(!report_section(text).contains("list@"));
    }
}
