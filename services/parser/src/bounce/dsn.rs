//! The machine-readable reports: RFC 3464 delivery status notifications and RFC 5965 (ARF)
//! feedback reports.
//!
//! | part | fields read | gives |
//! |---|---|---|
//! | `message/delivery-status` (also `message/global-delivery-status`, `text/delivery-status`) | per-message block: `Reporting-MTA`; one block per recipient: `Final-Recipient` (else `Original-Recipient`, else `X-Actual-Recipient`), `Original-Recipient`, `Action`, `Status`, `Diagnostic-Code` (continuation lines unfolded), `Remote-MTA` | one recipient each |
//! | `message/feedback-report` | `Feedback-Type`, `Original-Rcpt-To` (else `Removal-Recipient`) | the complaint's reason and recipients |
//!
//! Field names are case-insensitive; the address type (`rfc822;`) is dropped; a block without a
//! recipient is the per-message one.

use std::sync::LazyLock;

use mailstream_runtime::records::BounceRecipient;
use regex::Regex;

use crate::bodies::re;
use crate::normalize;

static STATUS: LazyLock<Regex> = LazyLock::new(|| re(r"(?-u:\b)([245]\.\d{1,3}\.\d{1,3})(?-u:\b)"));

/// The first `x.y.z` status code in `text`.
pub fn status_code(text: &str) -> Option<String> {
    STATUS
        .captures(text)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().to_string())
}

/// The fields of one block, names lower-cased, continuation lines unfolded.
fn fields(block: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    out
}

/// An address field's address: `rfc822; <a@b>` → `a@b`.
fn address(value: &str) -> Option<String> {
    let value = value.split_once(';').map_or(value, |(_, a)| a);
    // A source route (`<@relay.example:user@host>`) is dropped.
    let value = value.trim().trim_start_matches('<').trim_end_matches('>');
    let value = value.rsplit_once(':').map_or(value, |(_, a)| a);
    // A pipe or a file with the address among its words: the address.
    let value = if value.contains(char::is_whitespace) {
        value
            .split_whitespace()
            .find(|w| w.contains('@') && !w.starts_with('|'))?
    } else {
        value
    };
    normalize::email(value).filter(|a| {
        a.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
    })
}

/// The recipients of a delivery-status body, with the reporting MTA.
pub fn delivery_status(body: &str) -> Vec<BounceRecipient> {
    let normalized = body.replace("\r\n", "\n");
    let mut recipients: Vec<BounceRecipient> = Vec::new();
    for block in normalized.split("\n\n") {
        let mut recipient = BounceRecipient::default();
        let mut alternatives = Vec::new();
        for (name, value) in fields(block) {
            let value = value.trim();
            let text = || Some(value.to_string()).filter(|v| !v.is_empty());
            match name.as_str() {
                "final-recipient" => {
                    if let Some(a) = address(value) {
                        recipient.address = a;
                    }
                }
                "original-recipient" => recipient.original = address(value),
                "x-actual-recipient" => alternatives.extend(address(value)),
                "action" => {
                    recipient.action = text().map(|a| {
                        a.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_ascii_lowercase()
                    })
                }
                "status" => recipient.status = status_code(value),
                "diagnostic-code" => recipient.diagnostic = text(),
                "remote-mta" => {
                    recipient.remote_mta = text().map(|v| {
                        v.split_once(';')
                            .map_or(v.as_str(), |(_, h)| h)
                            .trim()
                            .to_string()
                    })
                }
                _ => {}
            }
        }
        if recipient.address.is_empty() {
            match recipient.original.clone().or(alternatives.pop()) {
                Some(a) => recipient.address = a,
                None => continue,
            }
        }
        if recipient
            .original
            .as_deref()
            .is_some_and(|o| o.eq_ignore_ascii_case(&recipient.address))
        {
            recipient.original = None;
        }
        if recipient.status.is_none() {
            recipient.status = recipient.diagnostic.as_deref().and_then(status_code);
        }
        if !recipients
            .iter()
            .any(|r| r.address.eq_ignore_ascii_case(&recipient.address))
        {
            recipients.push(recipient);
        }
    }
    recipients
}

/// A feedback report: (feedback type, recipients named in it).
pub fn feedback_report(body: &str) -> (Option<String>, Vec<String>) {
    let normalized = body.replace("\r\n", "\n");
    let mut kind = None;
    let mut recipients = Vec::new();
    for (name, value) in fields(&normalized) {
        match name.as_str() {
            "feedback-type" => kind = Some(value.trim().to_ascii_lowercase()),
            "original-rcpt-to" | "removal-recipient" => {
                if let Some(a) = address(&value)
                    && !recipients.contains(&a)
                {
                    recipients.push(a);
                }
            }
            _ => {}
        }
    }
    (kind, recipients)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_per_recipient_with_folded_diagnostics() {
        let recipients = delivery_status(
            "Reporting-MTA: dns; mx.example.com\n\nFinal-Recipient: rfc822; Nobody@Example.com\nOriginal-Recipient: rfc822;alias@example.com\nAction: failed\nStatus: 5.1.1\nRemote-MTA: dns; mx.example.org\nDiagnostic-Code: smtp; 550 5.1.1 <nobody@example.com>:\n  Recipient address rejected: User unknown\n\nFinal-Recipient: rfc822; later@example.com\nAction: delayed\nStatus: 4.4.1\n",
        );
        assert_eq!(recipients.len(), 2);
        assert_eq!(recipients[0].address, "Nobody@example.com");
        assert_eq!(recipients[0].original.as_deref(), Some("alias@example.com"));
        assert_eq!(recipients[0].action.as_deref(), Some("failed"));
        assert_eq!(recipients[0].remote_mta.as_deref(), Some("mx.example.org"));
        assert_eq!(
            recipients[0].diagnostic.as_deref(),
            Some("smtp; 550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown")
        );
        assert_eq!(recipients[1].action.as_deref(), Some("delayed"));
        assert_eq!(recipients[1].status.as_deref(), Some("4.4.1"));
    }

    #[test]
    fn feedback_type_and_recipient() {
        let (kind, rcpts) = feedback_report(
            "Feedback-Type: abuse\nUser-Agent: SomeGenerator/1.0\nVersion: 1\nOriginal-Rcpt-To: <user@example.com>\n",
        );
        assert_eq!(kind.as_deref(), Some("abuse"));
        assert_eq!(rcpts, ["user@example.com"]);
    }
}
