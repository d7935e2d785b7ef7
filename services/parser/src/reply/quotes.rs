//! Finding quoted history in a plain-text body, line by line.
//!
//! 1. A **separator** cuts everything from it on: a banner (`-----Original Message-----`,
//!    `Begin forwarded message:`, in every locale of [`super::locales`]) or a header block (a
//!    `From:` label followed within six lines by two more labels: `Sent:`/`Date:`, `To:`,
//!    `Subject:`, `Cc:`, in any locale). Rule lines, blank lines and labels right above it
//!    (`====`, `Message du : ...`) go with it.
//! 2. An **attribution** (one to three lines ending with a locale's verb, `... wrote:`, or with
//!    an address and a colon after a date and time, `30.09.2017, 18.30, "Ann" <a@x.com>:`) is dropped when `>`
//!    quoted lines follow it (bottom-posting and interleaved replies keep the unquoted lines
//!    after the quote), and cuts everything when what follows is not `>`-prefixed (HTML mail
//!    converted to text). Without a start word (`On`, `Am`, `Le`, ...), a date or an address it
//!    counts only right above a `>` quote.
//! 3. `>`-quoted lines are dropped, and so is an unquoted line that continues a long quoted
//!    line mid-sentence without a blank line between (a quote the sender's client wrapped).
//!
//! Lines that look like a marker but were not cut (a lone `From: ...` label, a `... wrote:`
//! that did not qualify) are counted, so the caller can call the result unsure.

use super::patterns::{
    ADDRESS_COLON, ATTRIBUTION_END, ATTRIBUTION_START, ATTRIBUTION_VERB, BANNER, DATE_FIRST, FROM,
    LABELS, TIME, is_rule, may_be_label_or_banner, may_end_attribution,
};

/// What the quote scan found.
#[derive(Debug, Default)]
pub struct Quotes {
    /// Indices of the lines that are new content (signature still included).
    pub kept: Vec<usize>,
    /// Where the quoted history starts, when a separator or an attribution cut the text.
    pub cut: Option<usize>,
    /// Whether `>`-quoted lines (or an attribution above them) were dropped.
    pub dropped_quotes: bool,
    /// Kept lines that look like a quote marker but did not qualify as one.
    pub doubtful: usize,
}

fn is_quoted(line: &str) -> bool {
    line.trim_start().starts_with('>')
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

/// Scans `lines` for quoted history.
pub fn scan(lines: &[&str]) -> Quotes {
    let mut q = Quotes::default();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if is_quoted(line) {
            q.dropped_quotes = true;
            i += 1;
            continue;
        }
        if is_lazy_continuation(lines, i) {
            i += 1;
            continue;
        }
        if may_be_label_or_banner(line) && is_separator(lines, i) {
            let start = extend_upwards(lines, i);
            q.kept.retain(|&k| k < start);
            q.cut = Some(start);
            break;
        }
        // An address wrapped onto a line of its own (`... <ann@x.com` / `>:`) ends there.
        let wrapped_end = lines
            .get(i + 1)
            .is_some_and(|next| matches!(next.trim(), ">:" | ">："));
        if wrapped_end || may_end_attribution(line) {
            let found = if wrapped_end {
                attribution_ending_at(lines, i, ">:")
            } else {
                attribution_ending_at(lines, i, "")
            };
            if let Some(start) = found {
                let last = i + usize::from(wrapped_end);
                q.kept.retain(|&k| k < start);
                match (last + 1..lines.len()).find(|&k| !is_blank(lines[k])) {
                    Some(k) if is_quoted(lines[k]) => {
                        q.dropped_quotes = true;
                        i = last + 1;
                        continue;
                    }
                    _ => {
                        q.cut = Some(start);
                        break;
                    }
                }
            }
            if ATTRIBUTION_END.is_match(line.trim_end()) {
                q.doubtful += 1;
            }
        } else if may_be_label_or_banner(line) && LABELS.matches(line).matched(FROM) {
            q.doubtful += 1;
        }
        q.kept.push(i);
        i += 1;
    }
    if q.cut.is_some() {
        // The rule lines and blank lines that closed the new content belong to the quote.
        while q
            .kept
            .last()
            .is_some_and(|&k| is_blank(lines[k]) || is_rule(lines[k]))
        {
            q.kept.pop();
        }
    }
    q
}

/// An unquoted line right below a long quoted line that goes on mid-sentence (lower case
/// first): the rest of a quoted line that a client wrapped without repeating the `>`. An
/// answer written right below a quote starts a sentence and is kept.
fn is_lazy_continuation(lines: &[&str], i: usize) -> bool {
    i > 0
        && is_quoted(lines[i - 1])
        && lines[i - 1].trim_end().chars().count() >= 60
        && lines[i]
            .trim_start()
            .chars()
            .next()
            .is_some_and(char::is_lowercase)
}

/// Whether the line at `i` opens a banner or a header block.
fn is_separator(lines: &[&str], i: usize) -> bool {
    if BANNER.is_match(lines[i]) {
        return true;
    }
    if !LABELS.matches(lines[i]).matched(FROM) {
        return false;
    }
    let others = lines
        .iter()
        .skip(i + 1)
        .take(6)
        .filter(|l| may_be_label_or_banner(l))
        .map(|l| LABELS.matches(l))
        .filter(|m| m.matched_any() && !m.matched(FROM))
        .count();
    others >= 2
}

/// The first line of the block that ends at a separator at `i`: blank lines, rule lines and
/// header labels right above it go with it.
fn extend_upwards(lines: &[&str], i: usize) -> usize {
    let mut start = i;
    while start > 0 {
        let above = lines[start - 1];
        let label = may_be_label_or_banner(above) && LABELS.is_match(above);
        if is_blank(above) || is_rule(above) || label {
            start -= 1;
        } else {
            break;
        }
    }
    start
}

/// The first line of an attribution ending at line `end` (then `suffix`), if one does.
fn attribution_ending_at(lines: &[&str], end: usize, suffix: &str) -> Option<usize> {
    // The window: up to three unquoted, non-blank lines ending at `end`.
    let mut first = end;
    while first > 0
        && end - first < 2
        && !is_blank(lines[first - 1])
        && !is_quoted(lines[first - 1])
    {
        first -= 1;
    }
    // It starts at the last line of the window with a start word (`On`), else at the first
    // that starts with a date or has the address (`Ann <a@x.com>, 8 Oca 2024 ... yazdı:`),
    // else at `end`.
    let start = (first..=end)
        .rev()
        .find(|&k| ATTRIBUTION_START.is_match(lines[k]))
        .or_else(|| {
            (first..=end).find(|&k| DATE_FIRST.is_match(lines[k]) || lines[k].contains('@'))
        })
        .unwrap_or(end);
    let joined: String = lines[start..=end]
        .iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ")
        + suffix;
    let joined = joined.trim_matches(|c: char| c == '-' || c.is_whitespace());
    let starts = ATTRIBUTION_START.is_match(joined);
    let dated = joined.chars().any(|c| c.is_ascii_digit());
    let addressed = joined.contains('@');
    let above_quote = (end + 1..lines.len())
        .find(|&k| !is_blank(lines[k]))
        .is_some_and(|k| is_quoted(lines[k]));
    let verb_last = ATTRIBUTION_END.is_match(joined);
    let qualifies = (verb_last && (starts || dated || addressed || above_quote))
        || (addressed && ATTRIBUTION_VERB.is_match(joined))
        || (TIME.is_match(joined)
            && (starts || DATE_FIRST.is_match(joined))
            && ADDRESS_COLON.is_match(joined));
    qualifies.then_some(start)
}
