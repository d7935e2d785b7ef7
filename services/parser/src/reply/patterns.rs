//! The locale tables of [`super::locales`] compiled once per process into a few regexes (one
//! alternation per kind of marker, all locales together) and a [`RegexSet`] for the labels of
//! a quoted header block, plus the cheap byte tests that spare the regexes most body lines.

use std::sync::LazyLock;

use regex::{Regex, RegexSet};

use super::locales::{LOCALES, Locale};
use crate::bodies::re;

/// The kinds of header-block labels, in [`LABELS`] order.
pub const FROM: usize = 0;

/// `From:`, `Sent:`, `To:`, `Subject:`, `Cc:` at the start of a line, in every locale; one
/// pass says which a line is.
pub static LABELS: LazyLock<RegexSet> = LazyLock::new(|| {
    let kinds: [fn(&Locale) -> &[&str]; 5] =
        [|l| l.from, |l| l.sent, |l| l.to, |l| l.subject, |l| l.cc];
    let patterns: Vec<String> = kinds
        .iter()
        .map(|kind| format!(r"(?i)^\s*[*_]?\s*(?:{})\s*[*_]?\s*[:：]", words(kind)))
        .collect();
    RegexSet::new(patterns).expect("label patterns compile")
});

/// A banner opening an original or forwarded message.
pub static BANNER: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"(?i)^\s*(?:(?:-{{2,}}|_{{2,}}|={{2,}}|\*{{2,}})\s*(?:{dashed})\s*(?:-{{2,}}|_{{2,}}|={{2,}}|\*{{2,}})?\s*[:：]?|(?:-{{2,}}\s*)?(?:{colon})\s*[:：]\s*-*)\s*$",
        dashed = words(|l| l.dashed_banners),
        colon = words(|l| l.colon_banners),
    ))
});

/// The verb an attribution ends with (`... wrote:`), at the end of the joined lines.
pub static ATTRIBUTION_END: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"(?i)(?:^|[^\p{{L}}]|[\p{{Han}}\p{{Hiragana}}\p{{Katakana}}\p{{Hangul}}])(?:{})\s*[:：]?\s*$",
        words(|l| l.attribution_end)
    ))
});

/// The verb in the middle, the name and address after it (`... schrieb Ann <a@x.com>:`).
pub static ATTRIBUTION_VERB: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"(?i)(?:^|\s)(?:{})\s.{{0,160}}[:：]\s*$",
        words(|l| l.attribution_end)
    ))
});

/// The first words of an attribution (`On`, `Am`, `Le`, `W dniu`).
pub static ATTRIBUTION_START: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"(?i)^\s*(?:{})[\s,]",
        words(|l| l.attribution_start)
    ))
});

/// A line that starts with a date: a digit, or a short weekday name and then a digit, or a
/// weekday name and a comma (`30.09.2017, ...`, `tir. 18. apr.`, `Wednesday, 17 November`).
pub static DATE_FIRST: LazyLock<Regex> =
    LazyLock::new(|| re(r"^\s*(?:\d|\p{L}{1,4}\.?,?\s+\d|\p{L}{5,12},\s+\d)"));

/// A time of day (`09:00`, `18.30`): what an attribution without a verb must carry.
pub static TIME: LazyLock<Regex> = LazyLock::new(|| re(r"\d{1,2}[:.]\d{2}"));

/// An address and a colon ending the joined lines (`Ann <ann@x.com>:`, Gmail's attribution in
/// locales without a verb).
pub static ADDRESS_COLON: LazyLock<Regex> =
    LazyLock::new(|| re(r"@[^\s@]+\s*>?\s*\)?\s*>?\s*[:：]\s*$"));

/// A mobile or client footer (`Sent from my iPhone`), possibly after one word (the device, in
/// locales that name it first).
pub static FOOTER: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"(?i)^\s*(?:[\p{{L}}\p{{N}}'’-]+\s?)?(?:{})(?:\s|$|\p{{L}}|\p{{N}})",
        words(|l| l.footers)
    ))
});

/// A closing (`Best regards,`) alone on its line, possibly followed by punctuation or emoji.
pub static SIGN_OFF: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"(?i)^\s*(?:{})\s*[,.!:;\-–—]*[\s\p{{So}}\p{{Sk}}]*$",
        words(|l| l.sign_offs)
    ))
});

/// A line of only rule characters (`____`, `-----`, `====`), at least three.
pub fn is_rule(line: &str) -> bool {
    let t = line.trim();
    t.chars().count() >= 2
        && t.chars()
            .all(|c| matches!(c, '-' | '_' | '=' | '*' | '—' | '–'))
}

/// Whether `line` may open a header block or a banner: a colon near its start (a label), or a
/// rule character first. Spares [`LABELS`] and [`BANNER`] almost every line of prose.
pub fn may_be_label_or_banner(line: &str) -> bool {
    let t = line.trim_start();
    if t.starts_with(['-', '_', '=', '*']) {
        return true;
    }
    let head = &t.as_bytes()[..t.len().min(80)];
    // `：` (U+FF1A) is EF BC 9A in UTF-8.
    head.contains(&b':') || head.contains(&0x9A) && head.windows(3).any(|w| w == "：".as_bytes())
}

/// Whether `line` may end an attribution: it ends with a colon (or a verb without one), once
/// trailing dashes are set aside.
pub fn may_end_attribution(line: &str) -> bool {
    let t = line.trim_end().trim_end_matches(['-', ' ']);
    t.ends_with([':', '：'])
        || t.len() >= 5 && {
            let tail = t.as_bytes();
            let tail = &tail[tail.len().saturating_sub(6)..];
            let tail = String::from_utf8_lossy(tail).to_ascii_lowercase();
            tail.ends_with("wrote") || tail.ends_with("writes")
        }
}

/// The alternation of one kind of word over all locales (see [`alternation`]).
fn words(kind: impl Fn(&Locale) -> &[&str]) -> String {
    let all: Vec<&str> = LOCALES
        .iter()
        .flat_map(|l| kind(l).iter().copied())
        .collect();
    alternation(&all)
}

/// A regex alternation of `words`: escaped, de-duplicated, longest first, spaces matching
/// any run of whitespace.
pub(crate) fn alternation(words: &[&str]) -> String {
    let mut all = words.to_vec();
    all.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    all.dedup();
    all.iter()
        .map(|w| regex::escape(w).replace(' ', r"\s+"))
        .collect::<Vec<_>>()
        .join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles_and_matches_its_own_words() {
        for locale in LOCALES {
            for w in locale.from {
                assert!(
                    LABELS.matches(&format!("{w}: Ann <a@x.com>")).matched(FROM),
                    "{w}"
                );
            }
            for w in locale.dashed_banners {
                assert!(BANNER.is_match(&format!("----- {w} -----")), "{w}");
            }
            for w in locale.colon_banners {
                assert!(BANNER.is_match(&format!("{w}:")), "{w}");
            }
            for w in locale.sign_offs {
                assert!(SIGN_OFF.is_match(&format!("{w},")), "{w}");
            }
            for w in locale.footers {
                assert!(FOOTER.is_match(&format!("{w} iPhone")), "{w}");
            }
            for w in locale.attribution_end {
                assert!(ATTRIBUTION_END.is_match(&format!("Ann {w}:")), "{w}");
            }
        }
        assert!(DATE_FIRST.is_match("tir. 18. apr. 2017 kl. 13:09"));
        assert!(ADDRESS_COLON.is_match("Ann <a@x.com>:"));
        assert!(!ATTRIBUTION_START.is_match("One outstanding question"));
    }
}
