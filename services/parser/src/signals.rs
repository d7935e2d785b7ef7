//! Signals about how an email was sent: authentication results, automatic replies, bounces and
//! mailing lists.
//!
//! - **auth**: the first (topmost, so added by the nearest receiving server) `Authentication-Results`
//!   header gives `spf=`, `dkim=` and `dmarc=`; `Received-SPF` fills SPF when that header has none.
//! - **auto_reply** (RFC 3834): `Auto-Submitted` other than `no`, `X-Autoreply`, `X-Autorespond`,
//!   `X-Auto-Response-Suppress` is not one (senders set it); then out-of-office phrases in the
//!   subject or the first lines of the body, in English, German, French, Spanish and Dutch.
//! - **bounce**: a `multipart/report; report-type=delivery-status` (RFC 3464) gives the failed
//!   recipients (`Final-Recipient` with `Action: failed`) and the status; without one, a sender
//!   `mailer-daemon@` / `postmaster@` (or a null envelope sender with a failure subject) marks a
//!   bounce, with recipients from `X-Failed-Recipients` and the status found in the body.
//! - **list**: `List-Id` (angle-bracketed id) and `Precedence`.

use std::sync::LazyLock;

use mail_parser::{Message, MimeHeaders};
use mailstream_runtime::records::{AuthResults, AutoReply, Bounce, ListInfo};
use regex::Regex;

use crate::bodies::re;
use crate::normalize;

static AUTH_RESULT: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)(?:^|[;\s])(spf|dkim|dmarc)\s*=\s*([a-z]+)"));
static OUT_OF_OFFICE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)(out of (the )?office|automatic reply|auto[- ]?reply|autoreply|away from (the |my )?office|on (annual )?leave|on vacation|i am (currently )?away|abwesenheitsnotiz|automatische antwort|abwesend|réponse automatique|absence du bureau|je suis absent|respuesta automática|fuera de la oficina|afwezig|automatisch antwoord)",
    )
});
static DSN_STATUS: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?-u:\b)([245]\.\d{1,3}\.\d{1,3})(?-u:\b)"));
static BOUNCE_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)(undeliver|delivery (status notification|failure|has failed)|returned mail|mail delivery failed|failure notice|non[- ]?delivery)",
    )
});
static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| re(r"[A-Za-z0-9._%+\-=]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}"));

/// SPF, DKIM and DMARC results.
pub fn auth(message: &Message<'_>) -> AuthResults {
    let mut auth = AuthResults::default();
    if let Some(value) = header_text(message, "Authentication-Results") {
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
    if auth.spf.is_none()
        && let Some(value) = header_text(message, "Received-SPF")
    {
        auth.spf = value
            .split_whitespace()
            .next()
            .map(|w| w.trim_end_matches([';', ':']).to_ascii_lowercase());
    }
    auth
}

/// Evidence of an automatic reply.
pub fn auto_reply(
    message: &Message<'_>,
    subject: Option<&str>,
    text: Option<&str>,
) -> Option<AutoReply> {
    let ooo_phrase = |s: &str| OUT_OF_OFFICE.find(s).map(|m| m.as_str().to_string());
    let subject_phrase = subject.and_then(ooo_phrase);
    let body_head: String = text
        .unwrap_or_default()
        .lines()
        .take(5)
        .collect::<Vec<_>>()
        .join(" ");
    let body_phrase = ooo_phrase(&body_head);
    if let Some(value) = header_text(message, "Auto-Submitted") {
        let kind = value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if !kind.is_empty() && kind != "no" {
            let kind = if subject_phrase.is_some() || body_phrase.is_some() {
                "out-of-office".to_string()
            } else {
                kind
            };
            return Some(AutoReply {
                kind,
                evidence: format!("Auto-Submitted: {value}"),
            });
        }
    }
    for name in ["X-Autoreply", "X-Autorespond", "X-Auto-Reply"] {
        if let Some(value) = header_text(message, name) {
            let kind = if subject_phrase.is_some() || body_phrase.is_some() {
                "out-of-office"
            } else {
                "auto-replied"
            };
            return Some(AutoReply {
                kind: kind.into(),
                evidence: format!("{name}: {value}"),
            });
        }
    }
    if let Some(phrase) = subject_phrase {
        return Some(AutoReply {
            kind: "out-of-office".into(),
            evidence: format!("subject: {phrase}"),
        });
    }
    if let Some(phrase) = body_phrase {
        return Some(AutoReply {
            kind: "out-of-office".into(),
            evidence: format!("body: {phrase}"),
        });
    }
    None
}

/// Evidence of a delivery failure report.
pub fn bounce(
    message: &Message<'_>,
    from: Option<&str>,
    subject: Option<&str>,
    envelope_null_sender: bool,
) -> Option<Bounce> {
    let root = message.root_part();
    let is_report = root.is_content_type("multipart", "report")
        && root
            .content_type()
            .and_then(|ct| ct.attribute("report-type"))
            .is_some_and(|t| t.eq_ignore_ascii_case("delivery-status"));
    if is_report {
        let mut bounce = Bounce {
            evidence: "multipart/report; report-type=delivery-status".into(),
            ..Bounce::default()
        };
        for part in &message.parts {
            if part.is_content_type("message", "delivery-status") {
                read_delivery_status(&String::from_utf8_lossy(part.contents()), &mut bounce);
            }
        }
        if bounce.failed_recipients.is_empty() {
            bounce.failed_recipients = failed_recipients_header(message);
        }
        return Some(bounce);
    }
    let local = from
        .and_then(|f| f.split('@').next())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let evidence = if local == "mailer-daemon" || local == "postmaster" {
        format!("From: {}", from.unwrap_or_default())
    } else if envelope_null_sender && subject.is_some_and(|s| BOUNCE_SUBJECT.is_match(s)) {
        format!("null sender, Subject: {}", subject.unwrap_or_default())
    } else {
        return None;
    };
    let text = message.body_text(0).unwrap_or_default();
    let mut failed = failed_recipients_header(message);
    if failed.is_empty() {
        failed = EMAIL
            .find_iter(&text)
            .map(|m| m.as_str())
            .filter_map(normalize::email)
            .filter(|e| Some(e.as_str()) != from)
            .take(1)
            .collect();
    }
    Some(Bounce {
        failed_recipients: failed,
        status: DSN_STATUS
            .captures(&text)
            .and_then(|c| c.get(1))
            .map(|m| m.as_str().to_string()),
        evidence,
    })
}

/// Reads the per-recipient fields of a `message/delivery-status` body.
fn read_delivery_status(body: &str, bounce: &mut Bounce) {
    // Blocks: the per-message block first, then one per recipient, separated by blank lines.
    let normalized = body.replace("\r\n", "\n");
    for block in normalized.split("\n\n") {
        let mut recipient = None;
        let mut action = None;
        let mut status = None;
        for line in block.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "final-recipient" => {
                    recipient = normalize::email(value.split_once(';').map_or(value, |(_, a)| a));
                }
                "original-recipient" if recipient.is_none() => {
                    recipient = normalize::email(value.split_once(';').map_or(value, |(_, a)| a));
                }
                "action" => action = Some(value.to_ascii_lowercase()),
                "status" => {
                    status = DSN_STATUS
                        .captures(value)
                        .and_then(|c| c.get(1))
                        .map(|m| m.as_str().to_string())
                }
                _ => {}
            }
        }
        let failed = action.as_deref().is_none_or(|a| a == "failed");
        if let Some(recipient) = recipient
            && failed
        {
            if !bounce.failed_recipients.contains(&recipient) {
                bounce.failed_recipients.push(recipient);
            }
            if bounce.status.is_none() {
                bounce.status = status;
            }
        }
    }
}

fn failed_recipients_header(message: &Message<'_>) -> Vec<String> {
    header_text(message, "X-Failed-Recipients")
        .map(|v| v.split(',').filter_map(normalize::email).collect())
        .unwrap_or_default()
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
fn header_text(message: &Message<'_>, name: &str) -> Option<String> {
    let raw = message.raw_message();
    message
        .root_part()
        .headers
        .iter()
        .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .map(|h| {
            let start = (h.offset_start as usize).min(raw.len());
            let end = (h.offset_end as usize).clamp(start, raw.len());
            normalize::decode_unstructured(&raw[start..end])
        })
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_status_blocks() {
        let mut bounce = Bounce::default();
        read_delivery_status(
            "Reporting-MTA: dns; mx.example.com\n\nFinal-Recipient: rfc822; Nobody@Example.com\nAction: failed\nStatus: 5.1.1 (no such user)\n\nFinal-Recipient: rfc822; ok@example.com\nAction: delayed\nStatus: 4.4.1\n",
            &mut bounce,
        );
        assert_eq!(
            bounce.failed_recipients,
            vec!["Nobody@example.com".to_string()]
        );
        assert_eq!(bounce.status.as_deref(), Some("5.1.1"));
    }
}
