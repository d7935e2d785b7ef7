//! Redaction before persistence: payment card numbers (14 to 19 digits passing the Luhn check;
//! 13 would catch millisecond timestamps, and 13-digit cards are no longer issued),
//! IBANs (ISO 13616 check digits and the country's BBAN format) and the deployment's own
//! patterns (national ids: `redact_patterns`) are masked in the subject, the bodies and the
//! signature of the `parsed` record, before it is written. Everything downstream reads the
//! masked text: the `scored` topic analysts read, what the CRM receives, and the whole bodies
//! kept in the blob store when a body is cut. The raw message is not rewritten: it stays in the
//! `raw-email` topic (and the claim-check store) until their retention removes it.
//!
//! A card keeps its last four digits and an IBAN its country code and last four characters
//! (what a person needs to recognise it); separators stay, so the text keeps its shape. A
//! pattern's whole match is masked. What was masked is counted by kind, per field it was masked
//! in (`mailstream_parser_redactions_total{kind}`; the reply-stripped text and the HTML
//! alternative repeat the body's values), never logged. In HTML a value split by tags is not
//! seen.
//!
//! The mask is a function of the text alone, so a replay masks the same characters.

use std::borrow::Cow;
use std::sync::LazyLock;

use mailstream_runtime::records::ParsedEmail;
use prometheus::IntCounterVec;
use regex::Regex;

/// What a masked character becomes.
const MASK: char = '*';

/// The kinds counted (`kind` label).
pub const KINDS: [&str; 3] = ["card", "iban", "pattern"];

/// 14 to 19 digits, single spaces or dashes between them, not glued to other digits.
static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d(?:[ -]?\d){13,18}\b").expect("static regex"));

/// A country code, two check digits and 11 to 30 letters or digits, in blocks or not.
static IBAN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b").expect("static regex"));

/// Masks cards, IBANs and the configured patterns; counts what it masked when given a counter.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    patterns: Vec<Regex>,
    counts: Option<IntCounterVec>,
}

impl Redactor {
    /// The built-in kinds plus `patterns` (regular expressions), or each pattern's error.
    pub fn new(patterns: &[String]) -> Result<Self, Vec<String>> {
        let mut compiled = Vec::new();
        let mut errors = Vec::new();
        for (i, pattern) in patterns.iter().enumerate() {
            match Regex::new(pattern) {
                Ok(regex) if regex.is_match("") => errors.push(format!(
                    "pattern {} matches the empty string: it would mask nothing but cost a scan",
                    i + 1
                )),
                Ok(regex) => compiled.push(regex),
                Err(e) => errors.push(format!("pattern {}: {e}", i + 1)),
            }
        }
        if errors.is_empty() {
            Ok(Self {
                patterns: compiled,
                counts: None,
            })
        } else {
            Err(errors)
        }
    }

    /// Counts what is masked into `counter` (labelled by [`KINDS`]).
    pub fn counting(mut self, counter: IntCounterVec) -> Self {
        for kind in KINDS {
            counter.with_label_values(&[kind]);
        }
        self.counts = Some(counter);
        self
    }

    /// Masks every field of `record` that carries free text.
    pub fn record(&self, record: &mut ParsedEmail) {
        for field in [
            &mut record.subject,
            &mut record.text,
            &mut record.stripped_text,
            &mut record.html,
            &mut record.signature,
        ] {
            if let Some(text) = field.as_mut() {
                self.in_place(text);
            }
        }
    }

    /// Masks `text` in place.
    pub fn in_place(&self, text: &mut String) {
        if let Cow::Owned(masked) = self.text(text) {
            *text = masked;
        }
    }

    /// `text` with cards, IBANs and patterns masked (borrowed when there was nothing to mask).
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        let cards = mask_matches(&mut out, &CARD, card);
        let ibans = mask_matches(&mut out, &IBAN, iban);
        let mut patterns = 0;
        for pattern in &self.patterns {
            patterns += mask_matches(&mut out, pattern, |m| Some(mask_all(m)));
        }
        if let Some(counts) = &self.counts {
            for (kind, n) in KINDS.into_iter().zip([cards, ibans, patterns]) {
                if n > 0 {
                    counts.with_label_values(&[kind]).inc_by(n as u64);
                }
            }
        }
        out
    }
}

/// Replaces each match of `regex` in `text` for which `mask` returns a masked form; how many.
fn mask_matches(
    text: &mut Cow<'_, str>,
    regex: &Regex,
    mask: impl Fn(&str) -> Option<String>,
) -> usize {
    let mut replaced = 0;
    let mut out = String::new();
    let mut last = 0;
    for found in regex.find_iter(text) {
        if let Some(masked) = mask(found.as_str()) {
            out.push_str(&text[last..found.start()]);
            out.push_str(&masked);
            last = found.end();
            replaced += 1;
        }
    }
    if replaced > 0 {
        out.push_str(&text[last..]);
        *text = Cow::Owned(out);
    }
    replaced
}

/// A card number masked but for its last four digits, if `candidate` is one.
fn card(candidate: &str) -> Option<String> {
    let digits: String = candidate.chars().filter(char::is_ascii_digit).collect();
    if !(14..=19).contains(&digits.len()) || !luhn::valid(&digits) {
        return None;
    }
    Some(keep_last(candidate, 4, 0))
}

/// An IBAN masked but for its country code and last four characters, if `candidate` is one.
fn iban(candidate: &str) -> Option<String> {
    let electronic: String = candidate.chars().filter(|c| *c != ' ').collect();
    electronic.parse::<iban::Iban>().ok()?;
    Some(keep_last(candidate, 4, 2))
}

/// `text` with every letter and digit masked but the first `head` and the last `tail` of them.
fn keep_last(text: &str, tail: usize, head: usize) -> String {
    let total = text.chars().filter(char::is_ascii_alphanumeric).count();
    let mut seen = 0;
    text.chars()
        .map(|c| {
            if !c.is_ascii_alphanumeric() {
                return c;
            }
            seen += 1;
            if seen <= head || seen > total.saturating_sub(tail) {
                c
            } else {
                MASK
            }
        })
        .collect()
}

/// Every character of `text` but whitespace masked.
fn mask_all(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_whitespace() { c } else { MASK })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(patterns: &[&str]) -> Redactor {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        Redactor::new(&patterns).expect("valid patterns")
    }

    #[test]
    fn card_numbers_that_pass_luhn_keep_their_last_four_digits() {
        let r = redactor(&[]);
        assert_eq!(
            r.text("Card: 4111 1111 1111 1111, exp 12/29."),
            "Card: **** **** **** 1111, exp 12/29."
        );
        assert_eq!(
            r.text("pay with 5500-0000-0000-0004"),
            "pay with ****-****-****-0004"
        );
        assert_eq!(
            r.text("378282246310005"),
            "***********0005",
            "Amex, 15 digits"
        );
        // Not cards: a failing checksum, too short, an order number glued to letters, a
        // millisecond timestamp (13 digits, here one that passes the Luhn check).
        assert!(luhn::valid("1705107600002"));
        for kept in [
            "4111 1111 1111 1112",
            "call 555 0100 2233",
            "order A41111111111111111",
            "at 1705107600002 ms",
        ] {
            assert_eq!(r.text(kept), kept);
        }
    }

    #[test]
    fn ibans_keep_their_country_and_last_four_characters() {
        let r = redactor(&[]);
        assert_eq!(
            r.text("IBAN DE89 3704 0044 0532 0130 00 please"),
            "IBAN DE** **** **** **** **30 00 please"
        );
        assert_eq!(r.text("GB82WEST12345698765432"), "GB****************5432");
        // A wrong check digit is not an IBAN.
        assert_eq!(
            r.text("DE88 3704 0044 0532 0130 00"),
            "DE88 3704 0044 0532 0130 00"
        );
    }

    #[test]
    fn configured_patterns_are_masked_whole_and_bad_ones_named() {
        let r = redactor(&[r"\b\d{3}-\d{2}-\d{4}\b"]);
        assert_eq!(r.text("SSN 078-05-1120 on file"), "SSN *********** on file");
        let errors = Redactor::new(&["(".into(), "x*".into()]).expect_err("two bad patterns");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("pattern 1: "), "{errors:?}");
        assert!(errors[1].contains("matches the empty string"), "{errors:?}");
    }

    #[test]
    fn what_is_masked_is_counted_by_kind() {
        let counter =
            IntCounterVec::new(prometheus::Opts::new("redactions_total", "test"), &["kind"])
                .expect("metric");
        let r = redactor(&[r"secret-\d+"]).counting(counter.clone());
        let mut record = ParsedEmail {
            subject: Some("card 4111111111111111".into()),
            text: Some("GB82 WEST 1234 5698 7654 32 and secret-7".into()),
            ..ParsedEmail::default()
        };
        r.record(&mut record);
        assert_eq!(record.subject.as_deref(), Some("card ************1111"));
        assert_eq!(
            record.text.as_deref(),
            Some("GB** **** **** **** **54 32 and ********")
        );
        let count = |kind: &str| counter.with_label_values(&[kind]).get();
        assert_eq!((count("card"), count("iban"), count("pattern")), (1, 1, 1));
    }
}
