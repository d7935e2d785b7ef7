//! Automatic replies, in classes: out-of-office (with the return date), left the company
//! (the contact is inactive; with the replacement when one is named), unsubscribe requests
//! (opt-out), and any other automatic answer.
//!
//! | evidence | read from |
//! |---|---|
//! | automatic (RFC 3834) | `Auto-Submitted` other than `no`, `X-Autoreply`, `X-Autorespond`, `X-Auto-Reply`, `Precedence: auto_reply` (`X-Auto-Response-Suppress` is not one: senders set it) |
//! | class phrase | the subject and the first lines of the new text (quotes removed), [`phrases`] |
//!
//! | class | when | also |
//! |---|---|---|
//! | `unsubscribe` | an unsubscribe phrase, in a message that is not itself list mail | — |
//! | `left-company` | a left-the-company phrase, in an automatic message (header, or an automatic-reply subject) | `replacement`: the first other address named after the phrase, with the name before it |
//! | `out-of-office` | an out-of-office phrase (subject or text) | `return_date` ([`dates`]) |
//! | `auto-reply` | automatic, no class phrase | — |
//!
//! `kind` keeps its meaning (`auto-replied`, `auto-generated`, ... from the header, else the
//! class); `language` is the language of the classifying phrase.

mod dates;
pub mod phrases;

use std::sync::LazyLock;

use chrono::DateTime;
use mail_parser::Message;
use mailstream_runtime::records::{Address, AutoReply};
use regex::Regex;

use crate::bodies::re;
use crate::normalize;
use crate::signals::header_text;
use phrases::{LEFT_COMPANY_PHRASES, OUT_OF_OFFICE_PHRASES, UNSUBSCRIBE_PHRASES};

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| re(r"[A-Za-z0-9._%+\-=]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}"));

/// Lines of the new text read for phrases, and their bytes at most.
const HEAD_LINES: usize = 12;
const HEAD_BYTES: usize = 2000;

/// What the parser knows of the email besides its MIME structure.
pub struct Context<'a> {
    pub subject: Option<&'a str>,
    /// The new text (quotes and signature removed), else the whole text.
    pub text: Option<&'a str>,
    /// The sender, never its own replacement.
    pub from: Option<&'a str>,
    /// When it was sent (milliseconds since the epoch): the year of dates without one.
    pub sent_ms: Option<i64>,
}

/// The automatic reply `message` is, if it is one.
pub fn detect(message: &Message<'_>, ctx: &Context<'_>) -> Option<AutoReply> {
    let header = automatic_header(message);
    let head = head(ctx.text.unwrap_or_default());
    let subject = ctx.subject.unwrap_or_default();
    let find = |phrases: &phrases::Phrases| {
        phrases
            .find(subject)
            .map(|(p, l)| (format!("subject: {p}"), l))
            .or_else(|| phrases.find(head).map(|(p, l)| (format!("body: {p}"), l)))
    };
    let is_list =
        message.header_raw("List-Id").is_some() || message.header_raw("List-Unsubscribe").is_some();
    let automatic_subject = OUT_OF_OFFICE_PHRASES.find(subject).is_some();

    let (class, (evidence, language)) =
        if let Some(found) = (!is_list).then(|| find(&UNSUBSCRIBE_PHRASES)).flatten() {
            (AutoReply::UNSUBSCRIBE, found)
        } else if let Some(found) = (header.is_some() || automatic_subject)
            .then(|| find(&LEFT_COMPANY_PHRASES))
            .flatten()
        {
            (AutoReply::LEFT_COMPANY, found)
        } else if let Some(found) = find(&OUT_OF_OFFICE_PHRASES) {
            (AutoReply::OUT_OF_OFFICE, found)
        } else {
            let (name, value) = header?;
            return Some(AutoReply {
                kind: kind_of(name, &value),
                evidence: format!("{name}: {value}"),
                ..AutoReply::default()
            });
        };
    let kind = match &header {
        Some((name, value)) if class != AutoReply::OUT_OF_OFFICE => kind_of(name, value),
        _ => class.to_string(),
    };
    let evidence = match &header {
        Some((name, value)) => format!("{name}: {value}; {evidence}"),
        None => evidence,
    };
    let full_head = format!("{subject}\n{head}");
    Some(AutoReply {
        kind,
        evidence,
        class: class.into(),
        return_date: (class == AutoReply::OUT_OF_OFFICE)
            .then(|| {
                let sent = ctx
                    .sent_ms
                    .and_then(DateTime::from_timestamp_millis)
                    .map(|d| d.date_naive());
                dates::return_date(&full_head, sent, language == "en")
            })
            .flatten(),
        replacement: (class == AutoReply::LEFT_COMPANY)
            .then(|| replacement(head, ctx.from))
            .flatten(),
        language: Some(language.to_string()),
    })
}

/// The automatic-reply header, if any: (name, value).
fn automatic_header(message: &Message<'_>) -> Option<(&'static str, String)> {
    if let Some(value) = header_text(message, "Auto-Submitted") {
        let kind = value.split(';').next().unwrap_or_default().trim();
        if !kind.is_empty() && !kind.eq_ignore_ascii_case("no") {
            return Some(("Auto-Submitted", value));
        }
    }
    for name in ["X-Autoreply", "X-Autorespond", "X-Auto-Reply"] {
        if let Some(value) = header_text(message, name) {
            return Some((name, value));
        }
    }
    header_text(message, "Precedence")
        .filter(|v| v.trim().eq_ignore_ascii_case("auto_reply"))
        .map(|v| ("Precedence", v))
}

/// `auto-replied`, `auto-generated`, ... from the header.
fn kind_of(name: &str, value: &str) -> String {
    if name == "Auto-Submitted" {
        value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    } else {
        "auto-replied".into()
    }
}

/// The first lines of the text, at most [`HEAD_BYTES`].
fn head(text: &str) -> &str {
    let mut end = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i == HEAD_LINES || end + line.len() > HEAD_BYTES {
            break;
        }
        end += line.len();
    }
    &text[..end]
}

/// The first address in `head` other than the sender's, with the name written before it.
fn replacement(head: &str, from: Option<&str>) -> Option<Address> {
    let found = EMAIL
        .find_iter(head)
        .find(|m| from.is_none_or(|f| !f.eq_ignore_ascii_case(m.as_str())))?;
    let email = normalize::email(found.as_str())?;
    let line_start = head[..found.start()].rfind('\n').map_or(0, |n| n + 1);
    let before = head[line_start..found.start()].trim_end_matches(|c: char| {
        c.is_whitespace() || matches!(c, '<' | '(' | '[' | ':' | ',' | '-' | '–' | '"')
    });
    // The capitalised words right before the address (up to three): `contact Jane Doe (`.
    let words: Vec<&str> = before
        .split_whitespace()
        .rev()
        .take_while(|w| w.chars().next().is_some_and(char::is_uppercase))
        .take(3)
        .collect();
    let name = (!words.is_empty()).then(|| {
        words
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" ")
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_string()
    });
    Some(Address {
        name: name
            .filter(|n| !n.is_empty())
            .and_then(|n| normalize::display_name(&n, &email)),
        email,
    })
}
