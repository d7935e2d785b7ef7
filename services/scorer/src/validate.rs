//! Semantic checks of a parsed rules file, and its compilation into [`Condition`]s.
//!
//! Parsing ([`crate::rules`]) makes sure each key exists and has the right type; this file checks
//! what the values *say* (a regex compiles, a list is not empty, a header name is a header name, an
//! authentication result exists, thresholds and byte bounds are in order, ids are unique) and
//! builds the compiled condition at the same time, so the two can never disagree. Every problem is
//! collected, not just the first, each prefixed with the rule and the key it concerns.

use std::fmt::Display;

use crate::condition::{
    AttachmentMatch, AuthCheck, Condition, DomainMatch, HeaderTest, LinksMatch, TextMatch, Words,
};
use crate::rules::{
    AUTH_RESULTS, AttachmentSpec, AuthSpec, ConditionSpec, DomainSpec, HeaderSpec, InSpec,
    LinksSpec, TextSpec,
};

pub(crate) const DUPLICATE_ID: &str = "is used by more than one rule; ids must be unique";

pub(crate) fn rule_label(id: Option<&str>, index: usize) -> String {
    match id.filter(|id| !id.trim().is_empty()) {
        Some(id) => format!("rule `{id}`"),
        None => format!("rules[{index}]"),
    }
}

/// Collects problems of one rule, each prefixed with the rule and the key.
pub(crate) struct Checker<'a> {
    pub(crate) label: String,
    pub(crate) problems: &'a mut Vec<String>,
}

impl Checker<'_> {
    pub(crate) fn bad(&mut self, key: &str, message: impl Display) {
        self.problems
            .push(format!("{}: key `{key}`: {message}", self.label));
    }
}

pub(crate) fn check_id(id: &str, check: &mut Checker<'_>) {
    if id.is_empty() {
        check.bad("id", "must not be empty");
    } else if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        check.bad("id", "may hold only letters, digits, '.', '_' and '-'");
    }
}

pub(crate) fn compile_condition(
    spec: &ConditionSpec,
    key: &str,
    check: &mut Checker<'_>,
) -> Option<Condition> {
    match spec {
        ConditionSpec::Subject(t) => {
            compile_text(t, &format!("{key}.subject"), check).map(Condition::Subject)
        }
        ConditionSpec::Body(t) => {
            compile_text(t, &format!("{key}.body"), check).map(Condition::Body)
        }
        ConditionSpec::SenderEmail(t) => {
            compile_text(t, &format!("{key}.sender_email"), check).map(Condition::SenderEmail)
        }
        ConditionSpec::Recipient(t) => {
            compile_text(t, &format!("{key}.recipient"), check).map(Condition::Recipient)
        }
        ConditionSpec::Header(h) => compile_header(h, &format!("{key}.header"), check),
        ConditionSpec::SenderDomain(d) => {
            compile_domain(d, &format!("{key}.sender_domain"), check).map(Condition::SenderDomain)
        }
        ConditionSpec::Attachment(a) => {
            compile_attachment(a, &format!("{key}.attachment"), check).map(Condition::Attachment)
        }
        ConditionSpec::Auth(a) => {
            compile_auth(a, &format!("{key}.auth"), check).map(Condition::Auth)
        }
        ConditionSpec::TargetAccount(b) => Some(Condition::TargetAccount(*b)),
        ConditionSpec::FreeMail(b) => Some(Condition::FreeMail(*b)),
        ConditionSpec::KnownContact(b) => Some(Condition::KnownContact(*b)),
        ConditionSpec::Links(l) => {
            compile_links(l, &format!("{key}.links"), check).map(Condition::Links)
        }
        ConditionSpec::Language(spec) => {
            code_list(spec, &format!("{key}.language"), 2..=3, check).map(Condition::Language)
        }
        ConditionSpec::Country(spec) => {
            code_list(spec, &format!("{key}.country"), 2..=2, check).map(Condition::Country)
        }
        ConditionSpec::Intent(spec) => {
            code_list(spec, &format!("{key}.intent"), 1..=64, check).map(Condition::Intent)
        }
        ConditionSpec::Any(list) => {
            compile_list(list, &format!("{key}.any"), check).map(Condition::Any)
        }
        ConditionSpec::All(list) => {
            compile_list(list, &format!("{key}.all"), check).map(Condition::All)
        }
        ConditionSpec::Not(inner) => compile_condition(inner, &format!("{key}.not"), check)
            .map(|c| Condition::Not(Box::new(c))),
    }
}

/// Lower-cased codes of `spec.in` (`language`: ISO 639 codes, `country`: two letters,
/// `intent`: names), each `lengths` long and made of letters (intents: also digits, `-`, `_`).
fn code_list(
    spec: &InSpec,
    key: &str,
    lengths: std::ops::RangeInclusive<usize>,
    check: &mut Checker<'_>,
) -> Option<Vec<String>> {
    let key = format!("{key}.in");
    if spec.within.is_empty() {
        check.bad(&key, "needs at least one value");
        return None;
    }
    let mut codes = Vec::with_capacity(spec.within.len());
    for item in &spec.within {
        let code = item.trim().to_ascii_lowercase();
        let letters_only = *lengths.end() <= 3;
        let fits = lengths.contains(&code.len())
            && code.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || (!letters_only && (b.is_ascii_digit() || matches!(b, b'-' | b'_')))
            });
        if fits {
            codes.push(code);
        } else {
            check.bad(
                &key,
                format!(
                    "`{item}` is not a valid value here ({}-{} {})",
                    lengths.start(),
                    lengths.end(),
                    if letters_only {
                        "letters"
                    } else {
                        "lower-case letters, digits, '-' or '_'"
                    }
                ),
            );
        }
    }
    (codes.len() == spec.within.len()).then_some(codes)
}

fn compile_list(
    list: &[ConditionSpec],
    key: &str,
    check: &mut Checker<'_>,
) -> Option<Vec<Condition>> {
    if list.is_empty() {
        check.bad(key, "needs at least one condition");
        return None;
    }
    // Every item is compiled (not stopping at the first bad one), so all problems are reported.
    let compiled: Vec<Option<Condition>> = list
        .iter()
        .enumerate()
        .map(|(i, c)| compile_condition(c, &format!("{key}[{i}]"), check))
        .collect();
    compiled.into_iter().collect()
}

fn compile_words(words: &[String], key: &str, check: &mut Checker<'_>) -> Option<Words> {
    if words.is_empty() {
        check.bad(key, "needs at least one word");
        return None;
    }
    let trimmed: Vec<String> = words.iter().map(|w| w.trim().to_string()).collect();
    if trimmed.iter().any(String::is_empty) {
        check.bad(key, "has an empty word");
        return None;
    }
    Words::new(&trimmed).map_err(|e| check.bad(key, e)).ok()
}

fn compile_regex(pattern: &str, key: &str, check: &mut Checker<'_>) -> Option<regex::Regex> {
    if pattern.is_empty() {
        check.bad(key, "the regex is empty (it would match everything)");
        return None;
    }
    regex::Regex::new(pattern)
        .map_err(|e| {
            // The regex crate's message spans lines (pattern, caret, reason): keep one.
            let text = e.to_string();
            let reason = text
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("error:"))
                .map_or_else(|| text.replace('\n', " "), |r| r.trim().to_string());
            check.bad(key, format!("invalid regex {pattern:?}: {reason}"));
        })
        .ok()
}

fn compile_text(spec: &TextSpec, key: &str, check: &mut Checker<'_>) -> Option<TextMatch> {
    match (&spec.contains_any, &spec.matches) {
        (Some(words), None) => {
            compile_words(words, &format!("{key}.contains_any"), check).map(TextMatch::Words)
        }
        (None, Some(pattern)) => {
            compile_regex(pattern, &format!("{key}.matches"), check).map(TextMatch::Regex)
        }
        (Some(_), Some(_)) => {
            check.bad(
                key,
                "give contains_any or matches, not both (use any/all to combine)",
            );
            None
        }
        (None, None) => {
            check.bad(
                key,
                "needs contains_any (a list of words) or matches (a regex)",
            );
            None
        }
    }
}

fn compile_header(spec: &HeaderSpec, key: &str, check: &mut Checker<'_>) -> Option<Condition> {
    let name = spec.name.trim();
    let name_ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic() && c != ':');
    if !name_ok {
        check.bad(
            &format!("{key}.name"),
            "must be a header field name such as X-Priority (printable ASCII, no ':')",
        );
    }
    let given = [
        spec.contains_any.is_some(),
        spec.matches.is_some(),
        spec.present.is_some(),
    ];
    let test = match given.iter().filter(|g| **g).count() {
        1 => {
            if let Some(words) = &spec.contains_any {
                compile_words(words, &format!("{key}.contains_any"), check)
                    .map(|w| HeaderTest::Text(TextMatch::Words(w)))
            } else if let Some(pattern) = &spec.matches {
                compile_regex(pattern, &format!("{key}.matches"), check)
                    .map(|r| HeaderTest::Text(TextMatch::Regex(r)))
            } else {
                spec.present.map(HeaderTest::Present)
            }
        }
        0 => {
            check.bad(key, "needs one of contains_any, matches or present");
            None
        }
        _ => {
            check.bad(key, "give only one of contains_any, matches or present");
            None
        }
    };
    let test = test?;
    name_ok.then(|| Condition::Header {
        name: name.to_string(),
        test,
    })
}

fn compile_domain(spec: &DomainSpec, key: &str, check: &mut Checker<'_>) -> Option<DomainMatch> {
    match (&spec.within, &spec.matches) {
        (Some(list), None) => {
            let domains = domain_list(list, &format!("{key}.in"), check)?;
            Some(DomainMatch::In(domains))
        }
        (None, Some(pattern)) => {
            compile_regex(pattern, &format!("{key}.matches"), check).map(DomainMatch::Regex)
        }
        (Some(_), Some(_)) => {
            check.bad(key, "give in or matches, not both");
            None
        }
        (None, None) => {
            check.bad(key, "needs in (a list of domains) or matches (a regex)");
            None
        }
    }
}

/// Lower-cased, trimmed domains (a leading `@` or `.` dropped); refuses addresses and blanks.
fn domain_list(list: &[String], key: &str, check: &mut Checker<'_>) -> Option<Vec<String>> {
    if list.is_empty() {
        check.bad(key, "needs at least one domain");
        return None;
    }
    let mut domains = Vec::with_capacity(list.len());
    let mut ok = true;
    for item in list {
        let domain = item
            .trim()
            .trim_start_matches(['@', '.'])
            .trim_end_matches('.')
            .to_lowercase();
        if domain.is_empty() || domain.contains('@') || domain.contains(char::is_whitespace) {
            check.bad(key, format!("{item:?} is not a domain"));
            ok = false;
        }
        domains.push(domain);
    }
    ok.then_some(domains)
}

fn compile_attachment(
    spec: &AttachmentSpec,
    key: &str,
    check: &mut Checker<'_>,
) -> Option<AttachmentMatch> {
    let mut ok = true;
    let mut types = Vec::new();
    if let Some(list) = &spec.types {
        if list.is_empty() {
            check.bad(
                &format!("{key}.types"),
                "is empty (leave it out to match any type)",
            );
            ok = false;
        }
        for t in list {
            let t = t.trim().trim_start_matches('.').to_ascii_lowercase();
            if t.is_empty() {
                check.bad(&format!("{key}.types"), "has an empty type");
                ok = false;
            }
            types.push(t);
        }
    }
    for (name, value) in [("min_bytes", spec.min_bytes), ("max_bytes", spec.max_bytes)] {
        if value.is_some_and(|v| v < 0) {
            check.bad(&format!("{key}.{name}"), "must not be negative");
            ok = false;
        }
    }
    if let (Some(min), Some(max)) = (spec.min_bytes, spec.max_bytes)
        && min > max
    {
        check.bad(
            &format!("{key}.min_bytes"),
            format!("{min} is above max_bytes ({max})"),
        );
        ok = false;
    }
    ok.then_some(AttachmentMatch {
        types,
        min_bytes: spec.min_bytes,
        max_bytes: spec.max_bytes,
        executable: spec.executable,
    })
}

fn compile_auth(
    spec: &AuthSpec,
    key: &str,
    check: &mut Checker<'_>,
) -> Option<Vec<(AuthCheck, String)>> {
    let mut checks = Vec::new();
    let mut ok = true;
    for (which, value) in [
        (AuthCheck::Spf, &spec.spf),
        (AuthCheck::Dkim, &spec.dkim),
        (AuthCheck::Dmarc, &spec.dmarc),
    ] {
        let Some(value) = value else { continue };
        let value = value.trim().to_ascii_lowercase();
        if !AUTH_RESULTS.contains(&value.as_str()) {
            check.bad(
                &format!("{key}.{}", which.name()),
                format!(
                    "{value:?} is not a result (one of {})",
                    AUTH_RESULTS.join(", ")
                ),
            );
            ok = false;
        }
        checks.push((which, value));
    }
    if checks.is_empty() && ok {
        check.bad(key, "needs at least one of spf, dkim, dmarc");
        return None;
    }
    ok.then_some(checks)
}

fn compile_links(spec: &LinksSpec, key: &str, check: &mut Checker<'_>) -> Option<LinksMatch> {
    match (spec.suspicious, &spec.hosts) {
        (Some(want), None) => Some(LinksMatch::Suspicious(want)),
        (None, Some(hosts)) => {
            domain_list(hosts, &format!("{key}.hosts"), check).map(LinksMatch::Hosts)
        }
        (Some(_), Some(_)) => {
            check.bad(key, "give suspicious or hosts, not both");
            None
        }
        (None, None) => {
            check.bad(
                key,
                "needs suspicious (true/false) or hosts (a list of domains)",
            );
            None
        }
    }
}
