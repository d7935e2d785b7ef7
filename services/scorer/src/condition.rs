//! Compiled rule conditions and how each is tested against one email.
//!
//! A rules file is validated and compiled once ([`crate::rules`]); what it compiles to lives here,
//! with regexes and word lists ready, so scoring a record never parses a pattern. Each test returns
//! the *evidence* of a match: a short text for the analyst that says what matched (the configured
//! word, a header name, an attachment's file name and size, `spf=pass dkim=pass`, a link's host).
//! Evidence never quotes an email address or more of a body than the configured word itself.

use std::cell::OnceCell;

use mailstream_runtime::records::{Attachment, ResolvedEmail};
use regex::{Regex, RegexBuilder};

use crate::language;
use crate::links::{self, Link};

/// At most this many items (attachments, links) are named in one piece of evidence.
const MAX_LISTED: usize = 3;

/// A compiled condition on one field of a resolved email (or a combination of conditions).
#[derive(Debug)]
pub enum Condition {
    Subject(TextMatch),
    Body(TextMatch),
    Header {
        name: String,
        test: HeaderTest,
    },
    SenderDomain(DomainMatch),
    SenderEmail(TextMatch),
    Recipient(TextMatch),
    Attachment(AttachmentMatch),
    /// Every listed (check, expected result) pair must hold.
    Auth(Vec<(AuthCheck, String)>),
    TargetAccount(bool),
    FreeMail(bool),
    KnownContact(bool),
    Links(LinksMatch),
    /// The body's language is one of these ISO codes ([`crate::language`]).
    Language(Vec<String>),
    /// The sender domain's country is one of these.
    Country(Vec<String>),
    /// The intent decided by the `intents` rules is one of these ([`crate::routing`]).
    Intent(Vec<String>),
    Any(Vec<Condition>),
    All(Vec<Condition>),
    Not(Box<Condition>),
}

/// A test on a piece of text: whole words (case-insensitive) or a regex.
#[derive(Debug)]
pub enum TextMatch {
    Words(Words),
    Regex(Regex),
}

/// A list of words or phrases, each matched case-insensitively as whole words.
#[derive(Debug)]
pub struct Words {
    words: Vec<(String, Regex)>,
}

/// What a `header` condition tests on the header(s) of that name.
#[derive(Debug)]
pub enum HeaderTest {
    Text(TextMatch),
    Present(bool),
}

/// A test on the sender's domain.
#[derive(Debug)]
pub enum DomainMatch {
    /// The domain is one of these, or a subdomain of one (lower-case).
    In(Vec<String>),
    Regex(Regex),
}

/// An attachment that has all of the given properties.
#[derive(Debug, Default)]
pub struct AttachmentMatch {
    /// File extensions (`pdf`) or MIME types (`application/pdf`), lower-case; empty = any type.
    pub types: Vec<String>,
    pub min_bytes: Option<i64>,
    pub max_bytes: Option<i64>,
    pub executable: Option<bool>,
}

/// An authentication result the parser recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthCheck {
    Spf,
    Dkim,
    Dmarc,
}

/// A test on the links in the email's text and HTML.
#[derive(Debug)]
pub enum LinksMatch {
    /// `true`: some link is suspicious (see [`crate::links`]); `false`: none is.
    Suspicious(bool),
    /// Some link goes to one of these hosts or a subdomain of one (lower-case).
    Hosts(Vec<String>),
}

/// One email being scored, with what several conditions need computed at most once.
pub struct Candidate<'a> {
    pub email: &'a ResolvedEmail,
    links: OnceCell<Vec<Link>>,
    language: OnceCell<Option<String>>,
    /// Set once the `intents` rules decided it; `None` while they run.
    intent: Option<String>,
}

impl<'a> Candidate<'a> {
    pub fn new(email: &'a ResolvedEmail) -> Self {
        Self {
            email,
            links: OnceCell::new(),
            language: OnceCell::new(),
            intent: None,
        }
    }

    /// The body's language, detected once ([`language::detect`]).
    pub fn language(&self) -> Option<&str> {
        self.language
            .get_or_init(|| self.body().and_then(language::detect))
            .as_deref()
    }

    /// The sender domain's country ([`language::country_of`]).
    pub fn country(&self) -> Option<String> {
        self.email
            .sender_domain
            .as_deref()
            .and_then(language::country_of)
    }

    /// Records the intent the `intents` rules decided, for later conditions to test.
    pub fn set_intent(&mut self, intent: &str) {
        self.intent = Some(intent.to_string());
    }

    /// The text a `body` condition looks at: what the lead wrote ([`ParsedEmail::lead_text`]:
    /// a form's message, a forwarded original's body, the reply without quotes and signature,
    /// else the whole text, which the parser derives from the HTML when there is no text part).
    ///
    /// [`ParsedEmail::lead_text`]: mailstream_runtime::records::ParsedEmail::lead_text
    fn body(&self) -> Option<&'a str> {
        self.email.email.lead_text()
    }

    fn links(&self) -> &[Link] {
        self.links.get_or_init(|| {
            let email = &self.email.email;
            links::extract(self.body(), email.html.as_deref())
        })
    }
}

impl Words {
    /// Compiles `words` (already trimmed and non-empty). Whitespace inside a phrase matches any
    /// run of whitespace; a word boundary is required at each end that is a word character.
    pub fn new(words: &[String]) -> Result<Self, String> {
        let mut compiled = Vec::with_capacity(words.len());
        for word in words {
            let regex = RegexBuilder::new(&word_pattern(word))
                .case_insensitive(true)
                .build()
                .map_err(|e| format!("word {word:?}: {e}"))?;
            compiled.push((word.clone(), regex));
        }
        Ok(Self { words: compiled })
    }

    /// The configured words found in `text`, in list order.
    fn found<'w>(&'w self, text: &str) -> impl Iterator<Item = &'w str> {
        self.words
            .iter()
            .filter(move |(_, re)| re.is_match(text))
            .map(|(word, _)| word.as_str())
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn word_pattern(word: &str) -> String {
    let body = word
        .split_whitespace()
        .map(regex::escape)
        .collect::<Vec<_>>()
        .join(r"\s+");
    let start = if word.chars().next().is_some_and(is_word_char) {
        r"\b"
    } else {
        ""
    };
    let end = if word.chars().last().is_some_and(is_word_char) {
        r"\b"
    } else {
        ""
    };
    format!("{start}{body}{end}")
}

fn quoted(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("{w:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `a, b, c (+2 more)`.
fn listed(items: Vec<String>) -> String {
    let extra = items.len().saturating_sub(MAX_LISTED);
    let mut text = items
        .into_iter()
        .take(MAX_LISTED)
        .collect::<Vec<_>>()
        .join(", ");
    if extra > 0 {
        text.push_str(&format!(" (+{extra} more)"));
    }
    text
}

impl TextMatch {
    /// `mentions "demo", "pricing"` or `matches /re/` when `text` matches.
    fn test(&self, text: &str) -> Option<String> {
        match self {
            TextMatch::Words(words) => {
                let found: Vec<&str> = words.found(text).collect();
                (!found.is_empty()).then(|| format!("mentions {}", quoted(&found)))
            }
            TextMatch::Regex(re) => re
                .is_match(text)
                .then(|| format!("matches /{}/", re.as_str())),
        }
    }

    /// Like [`TextMatch::test`] over several texts: the words found in any of them, or the
    /// regex matching one of them.
    fn test_any<'t>(&self, texts: impl Iterator<Item = &'t str>) -> Option<String> {
        match self {
            TextMatch::Words(words) => {
                let mut found: Vec<&str> = Vec::new();
                for text in texts {
                    for word in words.found(text) {
                        if !found.contains(&word) {
                            found.push(word);
                        }
                    }
                }
                // Report in list order, whatever text each word was found in.
                let order = |w: &&str| words.words.iter().position(|(x, _)| x == *w);
                found.sort_by_key(order);
                (!found.is_empty()).then(|| format!("mentions {}", quoted(&found)))
            }
            TextMatch::Regex(re) => {
                let mut texts = texts;
                texts
                    .any(|t| re.is_match(t))
                    .then(|| format!("matches /{}/", re.as_str()))
            }
        }
    }
}

impl AuthCheck {
    pub fn name(self) -> &'static str {
        match self {
            AuthCheck::Spf => "spf",
            AuthCheck::Dkim => "dkim",
            AuthCheck::Dmarc => "dmarc",
        }
    }
}

/// Well-known MIME types of the file extensions an `attachment` condition may name.
fn mime_types_of(extension: &str) -> &'static [&'static str] {
    match extension {
        "pdf" => &["application/pdf"],
        "docx" => &["application/vnd.openxmlformats-officedocument.wordprocessingml.document"],
        "doc" => &["application/msword"],
        "xlsx" => &["application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"],
        "xls" => &["application/vnd.ms-excel"],
        "pptx" => &["application/vnd.openxmlformats-officedocument.presentationml.presentation"],
        "ppt" => &["application/vnd.ms-powerpoint"],
        "odt" => &["application/vnd.oasis.opendocument.text"],
        "rtf" => &["application/rtf", "text/rtf"],
        "csv" => &["text/csv"],
        "txt" => &["text/plain"],
        "ics" => &["text/calendar"],
        "zip" => &["application/zip"],
        "png" => &["image/png"],
        "jpg" | "jpeg" => &["image/jpeg"],
        "gif" => &["image/gif"],
        _ => &[],
    }
}

impl AttachmentMatch {
    fn type_matches(&self, attachment: &Attachment) -> bool {
        if self.types.is_empty() {
            return true;
        }
        let extension = attachment
            .filename
            .as_deref()
            .and_then(|f| f.rsplit_once('.'))
            .map(|(_, ext)| ext.to_ascii_lowercase());
        let declared = attachment.content_type.to_ascii_lowercase();
        let sniffed = attachment
            .sniffed_type
            .as_deref()
            .map(str::to_ascii_lowercase);
        let is_mime = |m: &str| declared == m || sniffed.as_deref() == Some(m);
        self.types.iter().any(|t| {
            if t.contains('/') {
                is_mime(t)
            } else {
                extension.as_deref() == Some(t.as_str())
                    || mime_types_of(t).iter().any(|m| is_mime(m))
            }
        })
    }

    fn matches(&self, attachment: &Attachment) -> bool {
        self.type_matches(attachment)
            && self.min_bytes.is_none_or(|min| attachment.size >= min)
            && self.max_bytes.is_none_or(|max| attachment.size <= max)
            && self.executable.is_none_or(|e| attachment.executable == e)
    }

    fn describe(attachment: &Attachment) -> String {
        match attachment.filename.as_deref() {
            Some(name) => format!("{name} ({} bytes)", attachment.size),
            None => format!("({}, {} bytes)", attachment.content_type, attachment.size),
        }
    }
}

fn in_domains(domain: &str, list: &[String]) -> bool {
    list.iter().any(|d| {
        domain == d
            || domain
                .strip_suffix(d.as_str())
                .is_some_and(|p| p.ends_with('.'))
    })
}

impl Condition {
    /// The field or combinator this condition tests, for messages.
    pub fn describe(&self) -> String {
        match self {
            Condition::Subject(_) => "subject".into(),
            Condition::Body(_) => "body".into(),
            Condition::Header { name, .. } => format!("header {name}"),
            Condition::SenderDomain(_) => "sender_domain".into(),
            Condition::SenderEmail(_) => "sender_email".into(),
            Condition::Recipient(_) => "recipient".into(),
            Condition::Attachment(_) => "attachment".into(),
            Condition::Auth(_) => "auth".into(),
            Condition::TargetAccount(_) => "target_account".into(),
            Condition::FreeMail(_) => "free_mail".into(),
            Condition::KnownContact(_) => "known_contact".into(),
            Condition::Links(_) => "links".into(),
            Condition::Language(_) => "language".into(),
            Condition::Country(_) => "country".into(),
            Condition::Intent(_) => "intent".into(),
            Condition::Any(_) => "any".into(),
            Condition::All(_) => "all".into(),
            Condition::Not(inner) => format!("not {}", inner.describe()),
        }
    }

    /// The evidence of a match, or `None` when the condition does not hold for `candidate`.
    pub fn test(&self, candidate: &Candidate<'_>) -> Option<String> {
        let resolved = candidate.email;
        let email = &resolved.email;
        match self {
            Condition::Subject(m) => email
                .subject
                .as_deref()
                .and_then(|s| m.test(s))
                .map(|e| format!("subject {e}")),
            Condition::Body(m) => candidate
                .body()
                .and_then(|b| m.test(b))
                .map(|e| format!("body {e}")),
            Condition::Header { name, test } => {
                let mut values = email
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| h.value.as_str())
                    .peekable();
                match test {
                    HeaderTest::Present(true) => values
                        .peek()
                        .is_some()
                        .then(|| format!("header {name} present")),
                    HeaderTest::Present(false) => values
                        .peek()
                        .is_none()
                        .then(|| format!("header {name} absent")),
                    HeaderTest::Text(m) => m.test_any(values).map(|e| format!("header {name} {e}")),
                }
            }
            Condition::SenderDomain(m) => {
                let domain = resolved.sender_domain.as_deref()?.to_ascii_lowercase();
                let hit = match m {
                    DomainMatch::In(list) => in_domains(&domain, list),
                    DomainMatch::Regex(re) => re.is_match(&domain),
                };
                hit.then(|| format!("sender domain {domain}"))
            }
            Condition::SenderEmail(m) => resolved
                .sender_email
                .as_deref()
                .and_then(|s| m.test(s))
                .map(|e| format!("sender address {e}")),
            Condition::Recipient(m) => m
                .test_any(resolved.recipients.iter().map(String::as_str))
                .map(|e| format!("recipient {e}")),
            Condition::Attachment(m) => {
                let hits: Vec<String> = email
                    .attachments
                    .iter()
                    .filter(|a| m.matches(a))
                    .map(AttachmentMatch::describe)
                    .collect();
                (!hits.is_empty()).then(|| format!("attachment {}", listed(hits)))
            }
            Condition::Auth(checks) => {
                let results = &email.auth;
                let all = checks.iter().all(|(check, expected)| {
                    let got = match check {
                        AuthCheck::Spf => &results.spf,
                        AuthCheck::Dkim => &results.dkim,
                        AuthCheck::Dmarc => &results.dmarc,
                    };
                    got.as_deref()
                        .is_some_and(|g| g.eq_ignore_ascii_case(expected))
                });
                all.then(|| {
                    checks
                        .iter()
                        .map(|(check, expected)| format!("{}={expected}", check.name()))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
            }
            Condition::Language(codes) => candidate
                .language()
                .filter(|l| codes.iter().any(|c| c == l))
                .map(|l| format!("language {l}")),
            Condition::Country(codes) => candidate
                .country()
                .filter(|c| codes.contains(c))
                .map(|c| format!("country {c}")),
            Condition::Intent(intents) => candidate
                .intent
                .as_deref()
                .filter(|i| intents.iter().any(|want| want == i))
                .map(|i| format!("intent {i}")),
            Condition::TargetAccount(want) => {
                let account = resolved.account.as_ref().filter(|a| a.target_account);
                match (want, account) {
                    (true, Some(a)) => {
                        let name = a.name.as_deref().or(a.domain.as_deref());
                        Some(format!(
                            "target account {}",
                            name.unwrap_or(a.account_id.as_str())
                        ))
                    }
                    (false, None) => Some("not a target account".into()),
                    _ => None,
                }
            }
            Condition::FreeMail(want) => (resolved.free_mail == *want).then(|| {
                if *want {
                    "free-mail sender domain".into()
                } else {
                    "not a free-mail sender domain".into()
                }
            }),
            Condition::KnownContact(want) => match (want, &resolved.contact) {
                (true, Some(c)) => Some(format!("known contact {}", c.contact_id)),
                (false, None) => Some("sender is not a known contact".into()),
                _ => None,
            },
            Condition::Links(LinksMatch::Suspicious(want)) => {
                let mut seen: Vec<String> = Vec::new();
                for link in candidate.links() {
                    if let Some(reason) = links::suspicion(link) {
                        let item = format!("{} ({reason})", link.host);
                        if !seen.contains(&item) {
                            seen.push(item);
                        }
                    }
                }
                match (want, seen.is_empty()) {
                    (true, false) => Some(format!("suspicious link {}", listed(seen))),
                    (false, true) => Some("no suspicious link".into()),
                    _ => None,
                }
            }
            Condition::Links(LinksMatch::Hosts(hosts)) => {
                let mut seen: Vec<String> = Vec::new();
                for link in candidate.links() {
                    if in_domains(&link.host, hosts) && !seen.contains(&link.host) {
                        seen.push(link.host.clone());
                    }
                }
                (!seen.is_empty()).then(|| format!("link host {}", listed(seen)))
            }
            Condition::Any(conditions) => {
                // Every branch is tested, so the evidence names everything that matched.
                let hits: Vec<String> = conditions
                    .iter()
                    .filter_map(|c| c.test(candidate))
                    .collect();
                (!hits.is_empty()).then(|| hits.join("; "))
            }
            Condition::All(conditions) => conditions
                .iter()
                .map(|c| c.test(candidate))
                .collect::<Option<Vec<String>>>()
                .map(|hits| hits.join("; ")),
            Condition::Not(inner) => match inner.test(candidate) {
                Some(_) => None,
                None => Some(format!("no match for {}", inner.describe())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> TextMatch {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        TextMatch::Words(Words::new(&list).expect("compiles"))
    }

    #[test]
    fn words_match_whole_words_case_insensitively_in_list_order() {
        let m = words(&["demo", "pricing", "act now", "100%"]);
        assert_eq!(
            m.test("PRICING and a Demo please").as_deref(),
            Some(r#"mentions "demo", "pricing""#)
        );
        assert_eq!(m.test("demonstration, repricing"), None);
        assert_eq!(
            m.test("Act\n  NOW: 100% off").as_deref(),
            Some(r#"mentions "act now", "100%""#)
        );
        assert_eq!(
            words(&["demo"]).test("demo@in.example.com").as_deref(),
            Some(r#"mentions "demo""#)
        );
    }

    #[test]
    fn domains_match_themselves_and_subdomains_only() {
        let list = vec!["acme.io".to_string()];
        assert!(in_domains("acme.io", &list));
        assert!(in_domains("eu.acme.io", &list));
        assert!(!in_domains("notacme.io", &list));
        assert!(!in_domains("acme.io.evil.com", &list));
    }
}
