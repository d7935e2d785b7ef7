//! Contact details: what the lead says about themselves, for the CRM contact's empty fields.
//!
//! - **A form notification** ([`crate::form`]) gives them as fields: the person's name, the
//!   company, the phone.
//! - **Otherwise the lead's signature**, as the reply stripping split it off ([`crate::reply`]):
//!   the email's own, or for a forward the original's ([`crate::forward`]: the original's author
//!   is the lead; the forwarder's signature is never read), with the lead's domain for phone
//!   numbers and the website. None for a delivery report or a mailing list's post (its footer is
//!   the list's), nor for a forward that names no original sender. Its lines give, each only
//!   when the line is unambiguous:
//!   - the **name**: the first line of two to four capitalized words (the sign-off passed over);
//!   - the **title**: a line naming a job in one of nine languages ([`words::TITLE_WORDS`]),
//!     whose part after `|`, `,`, ` - ` or ` at ` is the company when it is one;
//!   - the **company**: a line ending with a legal form (`GmbH`, `Inc.`, `S.A.`, `Oy`, ...);
//!   - **phone numbers** in E.164 ([`phone`]), valid in their country's numbering plan (the
//!     sender's country-code domain gives the country of national numbers), no fax;
//!   - the **website**: the first `http(s)://` or `www.` link that is not a social profile or a
//!     mail client's, as its origin (`https://acme.de`), one on the sender's domain first.
//!
//! Every value is bounded ([`MAX_VALUE_BYTES`]); the text was masked by the redactor before.

mod phone;
mod words;

#[cfg(test)]
mod tests;

use std::sync::LazyLock;

use mailstream_runtime::records::{Address, ContactDetails, ParsedEmail};
use regex::Regex;

use self::words::{COMPANY_WORDS, DEPARTMENT_WORDS, NOT_A_WEBSITE, TITLE_WORDS};
use crate::bodies::re;
use crate::reply::patterns::SIGN_OFF;

use phone::region_of;

/// The longest name, title, company or website kept.
pub const MAX_VALUE_BYTES: usize = 200;
/// An upper bound of the encoded `contact_details` record (part of
/// [`crate::limits::max_record_bytes`]).
pub const MAX_ENCODED_BYTES: usize = 4 * (MAX_VALUE_BYTES + 10) + phone::MAX_PHONES * 30 + 64;
/// Signature lines read: a signature is short; what follows is a disclaimer.
const MAX_LINES: usize = 15;

/// A job title's words, whole and case-insensitive.
static TITLE: LazyLock<Regex> = LazyLock::new(|| whole_words(TITLE_WORDS));

/// A department's words, whole and case-insensitive.
static DEPARTMENT: LazyLock<Regex> = LazyLock::new(|| whole_words(DEPARTMENT_WORDS));

/// A line ending with a company's legal form.
static COMPANY: LazyLock<Regex> = LazyLock::new(|| {
    let words: Vec<String> = COMPANY_WORDS.iter().map(|w| regex::escape(w)).collect();
    re(&format!(r"(?i)\S\s+(?:{})\s*[,.]?\s*$", words.join("|")))
});

/// A link: `http(s)://` or `www.` up to the next space or bracket.
static LINK: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\b(?:https?://|www\.)[^\s<>()\[\]|,;]+"));

/// Where a title line's company starts: ` | `, ` - `, ` – `, `, `, ` at `, ` @ `, ` bei `, ` chez `.
static TITLE_SPLIT: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)\s+[|\-–—@]\s+|,\s+|\s+(?:at|bei|chez|en|presso|bij)\s+"));

/// Fills `record.contact_details` from its form, else from the lead's signature: the email's,
/// or `forwarded_signature` (the original's, [`crate::forward::detect`]) when it is a forward.
pub fn detect(record: &mut ParsedEmail, forwarded_signature: Option<&str>) {
    let details = match (&record.form, &record.forwarded) {
        (Some(_), _) => from_form(record),
        _ if record.bounce.is_some() || record.list.is_some() => None,
        (None, Some(original)) => original
            .from
            .as_ref()
            .and_then(|lead| from_signature(forwarded_signature?, Some(lead))),
        (None, None) => record
            .signature
            .as_deref()
            .and_then(|signature| from_signature(signature, record.from.as_ref())),
    };
    record.contact_details = details;
}

fn from_form(record: &ParsedEmail) -> Option<ContactDetails> {
    let form = record.form.as_ref()?;
    let region = domain(form.person.as_ref()).and_then(|d| region_of(&d));
    let details = ContactDetails {
        source: ContactDetails::FORM.into(),
        name: form
            .person
            .as_ref()
            .and_then(|p| p.name.clone())
            .map(bounded),
        title: None,
        company: form.company.clone().map(bounded),
        phones: form
            .phone
            .as_deref()
            .map(|p| phone::numbers([p], region))
            .unwrap_or_default(),
        website: None,
    };
    Some(details).filter(|d| !is_empty(d))
}

/// The details in `signature`, written by `lead`.
fn from_signature(signature: &str, lead: Option<&Address>) -> Option<ContactDetails> {
    let sender_domain = domain(lead);
    let lines: Vec<&str> = signature
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !SIGN_OFF.is_match(l))
        .take(MAX_LINES)
        .collect();
    let mut details = ContactDetails {
        source: ContactDetails::SIGNATURE.into(),
        phones: phone::numbers(
            lines.iter().copied(),
            sender_domain.as_deref().and_then(region_of),
        ),
        website: website(&lines, sender_domain.as_deref()),
        ..ContactDetails::default()
    };
    for line in lines.iter().filter(|l| is_plain(l)) {
        if TITLE.is_match(line) {
            let parts = title_line(line);
            for (field, value) in [
                (&mut details.name, parts.name),
                (&mut details.title, parts.title),
                (&mut details.company, parts.company),
            ] {
                if field.is_none() {
                    *field = value.map(bounded);
                }
            }
        } else if details.name.is_none() && is_name(line) {
            details.name = Some(bounded(line.to_string()));
        } else if details.company.is_none() && COMPANY.is_match(line) {
            details.company = Some(bounded(line.trim_end_matches([',', ';']).to_string()));
        }
    }
    Some(details).filter(|d| !is_empty(d))
}

/// The lower-case domain of `address`.
fn domain(address: Option<&Address>) -> Option<String> {
    address
        .and_then(|a| a.email.rsplit_once('@'))
        .map(|(_, d)| d.to_ascii_lowercase())
}

fn is_empty(d: &ContactDetails) -> bool {
    d.name.is_none()
        && d.title.is_none()
        && d.company.is_none()
        && d.phones.is_empty()
        && d.website.is_none()
}

/// A line that can be a name, title or company: short, no address, link or number in it.
fn is_plain(line: &str) -> bool {
    line.chars().count() <= 80
        && !line.contains(['@', ':', '/'])
        && !line.chars().any(|c| c.is_ascii_digit())
}

/// Two to four words, each starting with a capital (`Ann-Marie O'Neil`, `Dr. Jürgen Weiß`),
/// none a title's or a company's word.
fn is_name(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    (2..=4).contains(&words.len())
        && words.iter().all(|w| {
            w.chars().next().is_some_and(char::is_uppercase)
                && w.chars()
                    .all(|c| c.is_alphabetic() || matches!(c, '-' | '\'' | '’' | '.'))
        })
        && !TITLE.is_match(line)
        && !COMPANY.is_match(line)
}

/// What one line naming a job says.
#[derive(Default)]
struct TitleLine {
    name: Option<String>,
    title: Option<String>,
    company: Option<String>,
}

/// A title line split at its separators (`Tom Baker | Procurement | Client Corp`, `Head of IT,
/// Acme GmbH`, `CTO at Acme`): the part naming the job is the title, a name before it the
/// name, and a part after it the company when it can be one (a legal form, or not a region's
/// abbreviation such as `EMEA`).
fn title_line(line: &str) -> TitleLine {
    let mut parts = TITLE_SPLIT
        .split(line)
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .peekable();
    let mut out = TitleLine::default();
    if let Some(first) = parts.next_if(|p| is_name(p)) {
        out.name = Some(first.to_string());
    }
    for part in parts {
        if out.title.is_none() && TITLE.is_match(part) {
            out.title = Some(part.to_string());
        } else if out.title.is_some() && out.company.is_none() && is_company_part(part) {
            out.company = Some(part.to_string());
        }
    }
    out
}

/// Whether the part after a title can be a company: one with a legal form, or any but a job,
/// a department or a short all-capitals word (a region: `EMEA`, `DACH`).
fn is_company_part(part: &str) -> bool {
    let abbreviation =
        part.chars().count() <= 5 && part.chars().all(|c| c.is_uppercase() || !c.is_alphabetic());
    COMPANY.is_match(part) || !(abbreviation || TITLE.is_match(part) || DEPARTMENT.is_match(part))
}

/// The website of the signature: its first link that is not a social profile's or a mail
/// client's, one on `sender_domain` first, as `https://host`.
fn website(lines: &[&str], sender_domain: Option<&str>) -> Option<String> {
    let hosts: Vec<String> = lines
        .iter()
        .flat_map(|line| LINK.find_iter(line))
        .filter_map(|link| host_of(link.as_str()))
        .filter(|host| {
            !NOT_A_WEBSITE
                .iter()
                .any(|n| host == n || host.ends_with(&format!(".{n}")))
        })
        .collect();
    let own = sender_domain.and_then(|domain| {
        hosts.iter().find(|h| {
            *h == domain || h.ends_with(&format!(".{domain}")) || domain.ends_with(&format!(".{h}"))
        })
    });
    own.or(hosts.first())
        .map(|host| bounded(format!("https://{host}")))
}

/// The lower-case host of a link, `www.` kept; `None` unless it has a dot and only host
/// characters.
fn host_of(link: &str) -> Option<String> {
    let lower = link.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .unwrap_or(&lower);
    let host = rest
        .split(['/', '?', '#', ':'])
        .next()?
        .trim_end_matches('.');
    let valid = host.contains('.')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
    valid.then(|| host.to_string())
}

/// A case-insensitive regex of `words`, each whole.
fn whole_words(words: &[&str]) -> Regex {
    let mut sorted: Vec<&str> = words.to_vec();
    sorted.sort_by_key(|w| std::cmp::Reverse(w.len()));
    let alternation: Vec<String> = sorted.iter().map(|w| regex::escape(w)).collect();
    re(&format!(
        r"(?i)(?:^|[^\w])(?:{})(?:$|[^\w])",
        alternation.join("|")
    ))
}

/// `value` cut to [`MAX_VALUE_BYTES`].
fn bounded(mut value: String) -> String {
    crate::limits::cut(&mut value, MAX_VALUE_BYTES);
    value
}
