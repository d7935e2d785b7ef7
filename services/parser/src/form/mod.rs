//! Website form notifications: the lead is the person who filled the form in.
//!
//! A site's contact form (WordPress Contact Form 7, Gravity Forms, WPForms, Elementor; HubSpot,
//! Typeform, Webflow, Jotform, ... in [`words`]) mails its notification from a robot or role
//! address, often with the person in Reply-To, and lists the fields as `Label: value` lines,
//! label and value on lines of their own, or an HTML table. [`detect`] reads those fields into
//! [`FormLead`] (person, phone, company, message, and every pair in order) when the structure
//! is clear, and leaves the email alone otherwise. Clear means all of:
//!
//! 1. the email comes from a website: a robot or role sender (`noreply@`, `wordpress@`,
//!    `info@`, ...), a form service's domain, a site mailer (`X-Mailer: PHPMailer`), or a
//!    form plugin's or notification's phrase (`sent from a contact form on`, `New form
//!    submission`);
//! 2. at least two fields of known roles (name, email, phone, company, message) are listed;
//! 3. there is a person's address: an email field's value, else Reply-To (not a robot's).
//!
//! Delivery reports, replies and forwards are never form notifications. The fields are read
//! from the text body (already masked by the redactor), else from the HTML's tables; at most
//! [`MAX_FIELDS`] pairs, each bounded.

mod fields;
mod words;

use std::sync::LazyLock;

use mailstream_runtime::records::{Address, FormLead, Header, ParsedEmail};
use regex::Regex;

use self::words::{NOTIFICATION_PHRASES, PROVIDERS, ROBOTS, Role, SITE_MAILERS};
use crate::bodies::re;
use crate::forward::is_reply_subject;
use crate::normalize;
use crate::redact::Redactor;

/// The most label/value pairs kept.
pub const MAX_FIELDS: usize = 40;
/// The longest name or address of the person kept.
const MAX_PERSON_BYTES: usize = 1024;
/// An upper bound of the encoded `form` record: the pairs, phone, company and message (values),
/// the person, and a generous 1 KiB for the rest (part of [`crate::limits::max_record_bytes`]).
pub const MAX_ENCODED_BYTES: usize = MAX_FIELDS
    * (fields::MAX_LABEL_BYTES + fields::MAX_VALUE_BYTES + 20)
    + 3 * (fields::MAX_VALUE_BYTES + 10)
    + 2 * (MAX_PERSON_BYTES + 10)
    + 1024;
/// The largest HTML body whose tables are read (a notification's is a few KiB; a newsletter's
/// larger).
const MAX_HTML_BYTES: usize = 64 * 1024;

/// Fills `record.form` when `record` is a website form's notification.
pub fn detect(record: &mut ParsedEmail, redactor: &Redactor) {
    if record.bounce.is_some()
        || record.forwarded.is_some()
        || record.subject.as_deref().is_some_and(is_reply_subject)
    {
        return;
    }
    // The cheap tests first: most mail is neither from a robot nor a form service.
    let robot = record
        .from
        .iter()
        .chain(&record.sender)
        .any(|a| is_robot(&a.email));
    let phrases = phrases(record);
    let provider = provider(record, &phrases);
    let site = phrases
        .iter()
        .any(|p| SITE_MAILERS.contains(&p.as_str()) || NOTIFICATION_PHRASES.contains(&p.as_str()));
    if provider.is_none() && !robot && !site {
        return;
    }
    let mut pairs = record
        .text
        .as_deref()
        .map(fields::from_text)
        .unwrap_or_default();
    // A table's cells are pairs the text made of the HTML may have run together.
    let tables = record
        .html
        .as_deref()
        .filter(|h| h.len() <= MAX_HTML_BYTES && (h.contains("<td") || h.contains("<TD")));
    if let Some(html) = tables {
        let from_html = fields::from_html(html);
        if known(&from_html) > known(&pairs) {
            pairs = from_html;
        }
    }
    if known(&pairs) < 2 {
        return;
    }
    let value = |role: Role| {
        pairs
            .iter()
            .find(|(r, _, v)| *r == Some(role) && !v.is_empty())
            .map(|(_, _, v)| v.clone())
    };
    let reply_to = record
        .reply_to
        .iter()
        .find(|a| !is_robot(&a.email) && Some(&a.email) != record.from.as_ref().map(|f| &f.email));
    let email = value(Role::Email)
        .as_deref()
        .and_then(first_address)
        .or_else(|| reply_to.map(|a| a.email.clone()));
    let Some(email) = email else {
        return;
    };
    let name = value(Role::Name)
        .or_else(|| {
            let full = [value(Role::FirstName), value(Role::LastName)]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            Some(full).filter(|n| !n.is_empty())
        })
        .or_else(|| {
            reply_to
                .filter(|a| a.email == email)
                .and_then(|a| a.name.clone())
        })
        .and_then(|n| normalize::display_name(&n, &email));
    let mut form = FormLead {
        provider: provider.unwrap_or("generic").into(),
        person: Some(Address {
            email: fields::bounded(&email, MAX_PERSON_BYTES),
            name: name.map(|n| fields::bounded(&n, MAX_PERSON_BYTES)),
        }),
        phone: value(Role::Phone),
        company: value(Role::Company),
        message: value(Role::Message),
        fields: pairs
            .into_iter()
            .map(|(_, name, value)| Header { name, value })
            .collect(),
    };
    for text in [&mut form.phone, &mut form.company, &mut form.message]
        .into_iter()
        .flatten()
    {
        redactor.in_place(text);
    }
    for field in &mut form.fields {
        redactor.in_place(&mut field.value);
    }
    record.form = Some(form);
}

/// How many pairs have a known role.
fn known(pairs: &[fields::Pair]) -> usize {
    pairs.iter().filter(|(role, _, _)| role.is_some()).count()
}

/// The form service or plugin that sent `record`, by the sender's domain or one of the
/// `phrases` found.
fn provider(record: &ParsedEmail, phrases: &[String]) -> Option<&'static str> {
    let domain = record
        .from
        .as_ref()
        .and_then(|a| a.email.rsplit_once('@'))
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    let by_domain = PROVIDERS.iter().find(|p| {
        p.domains
            .iter()
            .any(|d| domain == *d || domain.ends_with(&format!(".{d}")))
    });
    by_domain
        .or_else(|| {
            PROVIDERS.iter().find(|p| {
                p.phrases
                    .iter()
                    .any(|phrase| phrases.iter().any(|f| f == phrase))
            })
        })
        .map(|p| p.name)
}

/// Every phrase of a provider, a site mailer or a notification: one case-insensitive scan of
/// literals.
static PHRASES: LazyLock<Regex> = LazyLock::new(|| {
    let mut all: Vec<&str> = PROVIDERS
        .iter()
        .flat_map(|p| p.phrases.iter().copied())
        .chain(SITE_MAILERS.iter().copied())
        .chain(NOTIFICATION_PHRASES.iter().copied())
        .collect();
    all.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    all.dedup();
    let alternation: Vec<String> = all.iter().map(|p| regex::escape(p)).collect();
    re(&format!("(?i){}", alternation.join("|")))
});

/// The phrases ([`PHRASES`]) in the subject, the mailer and the start and end of the text
/// (where plugins put their footer), lower case.
fn phrases(record: &ParsedEmail) -> Vec<String> {
    let text = record.text.as_deref().unwrap_or_default();
    let mut tail_start = text.len().saturating_sub(2048).max(2048).min(text.len());
    while !text.is_char_boundary(tail_start) {
        tail_start -= 1;
    }
    let mut head_end = text.len().min(2048);
    while !text.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mailer = record
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("X-Mailer"))
        .map(|h| h.value.as_str());
    [
        record.subject.as_deref().unwrap_or_default(),
        &text[..head_end],
        &text[tail_start.max(head_end)..],
    ]
    .into_iter()
    .chain(mailer)
    .flat_map(|s| PHRASES.find_iter(s).map(|m| m.as_str().to_lowercase()))
    .collect()
}

fn is_robot(email: &str) -> bool {
    let local = email.rsplit_once('@').map_or(email, |(l, _)| l);
    let base = local.split_once('+').map_or(local, |(b, _)| b);
    ROBOTS.contains(&base.to_ascii_lowercase().as_str())
}

/// The first address in a field's value (`ann@x.com`, `<ann@x.com>`, `mailto:ann@x.com`).
fn first_address(value: &str) -> Option<String> {
    value
        .split(|c: char| c.is_whitespace() || "<>()[],;\"'".contains(c))
        .map(|w| w.trim_start_matches("mailto:").trim_end_matches('.'))
        .find(|w| {
            w.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
            })
        })
        .and_then(normalize::email)
}

#[cfg(test)]
mod tests;
