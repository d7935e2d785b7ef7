//! Phone numbers in free text, normalized to E.164 by `phonenumber` (Google's libphonenumber
//! metadata): a run of digits and separators is a number only when it is valid in its
//! country's numbering plan, so dates, postcodes, order and account numbers fall away.

use std::sync::LazyLock;

use phonenumber::{Mode, country};
use regex::Regex;

use super::words::{FAX_LABELS, GENERIC_CC_TLDS};
use crate::bodies::re;

/// The most phone numbers kept.
pub const MAX_PHONES: usize = 3;

/// A run that may be a phone number: an optional `+` or `00`, then digits and the separators
/// people write (spaces, dots, dashes, slashes, parentheses), starting and ending with a digit.
static CANDIDATE: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?:\+|\b00)?\(?\d[\d \u{a0}().\-/]{5,24}\d"));

/// The trunk prefix some write after the country code (`+49 (0)30 ...`).
static TRUNK: LazyLock<Regex> = LazyLock::new(|| re(r"\(\s*0\s*\)"));

/// The region whose national numbers a sender at `domain` writes: its country-code top-level
/// domain (`acme.de` → DE, `acme.co.uk` → GB); none for generic ones (`.com`, `.io`).
pub fn region_of(domain: &str) -> Option<country::Id> {
    let tld = domain.rsplit('.').next()?.to_ascii_lowercase();
    if tld.len() != 2 || GENERIC_CC_TLDS.contains(&tld.as_str()) {
        return None;
    }
    let code = if tld == "uk" {
        "GB".to_string()
    } else {
        tld.to_ascii_uppercase()
    };
    code.parse().ok()
}

/// The phone numbers of `lines` in E.164, in order, each once, at most [`MAX_PHONES`]; what
/// follows a fax label on a line is passed over. National numbers are read in `region`;
/// without one only numbers written internationally count.
pub fn numbers<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    region: Option<country::Id>,
) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for line in lines {
        // ASCII lower case keeps every byte offset of `line`.
        let lower = line.to_ascii_lowercase();
        let fax = FAX_LABELS
            .iter()
            .filter_map(|label| label_at(&lower, label))
            .min()
            .unwrap_or(line.len());
        for candidate in CANDIDATE.find_iter(&line[..fax]) {
            if let Some(number) = normalize(candidate.as_str(), region)
                && !found.contains(&number)
            {
                found.push(number);
                if found.len() == MAX_PHONES {
                    return found;
                }
            }
        }
    }
    found
}

/// `text` in E.164 when it is a valid number (read in `region` unless international).
fn normalize(text: &str, region: Option<country::Id>) -> Option<String> {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    if !(7..=15).contains(&digits) {
        return None;
    }
    let trimmed = text.trim();
    let international = trimmed.starts_with('+') || trimmed.starts_with("00");
    let written = if international {
        let without_trunk = TRUNK.replace_all(trimmed, " ");
        match without_trunk.strip_prefix("00") {
            Some(rest) => format!("+{rest}"),
            None => without_trunk.into_owned(),
        }
    } else {
        region?;
        trimmed.to_string()
    };
    let number = phonenumber::parse(if international { None } else { region }, &written).ok()?;
    phonenumber::is_valid(&number).then(|| number.format().mode(Mode::E164).to_string())
}

/// Where `lower` first carries `label` as a word of its own (`Fax:`, `F: +49...`), not inside
/// another (`Fairfax`).
fn label_at(lower: &str, label: &str) -> Option<usize> {
    lower
        .match_indices(label)
        .find(|(at, _)| {
            let before = lower[..*at].chars().next_back();
            let after = lower[at + label.len()..].chars().next();
            !before.is_some_and(char::is_alphanumeric)
                && (label.ends_with([':', '.']) || !after.is_some_and(char::is_alphanumeric))
        })
        .map(|(at, _)| at)
}
