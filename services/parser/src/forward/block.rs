//! Inline forwards in a plain-text body: the banner or header block that opens a forwarded
//! message, its header fields, and where its body starts and ends.
//!
//! A forwarded message opens with a banner (`---------- Forwarded message ---------`,
//! `Begin forwarded message:`, `-----Original Message-----`, in every locale of
//! [`crate::reply::locales`]) followed by a header block, or with the header block alone
//! (Outlook's `From:` / `Sent:` / `To:` / `Subject:` under a rule). Clients that quote what
//! they forward (`> From: ...`, or HTML blockquotes made text) are read at the quote depth of
//! the marker: the lines of the forwarded message are unquoted that many levels, and a line
//! quoted less ends it.

use std::sync::LazyLock;

use regex::Regex;

use super::words::{FORWARD_PREFIXES, FORWARD_STEMS, REPLY_PREFIXES};
use crate::bodies::re;
use crate::reply::locales::{LOCALES, Locale};
use crate::reply::patterns::alternation;

/// The header fields a forward's block names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    From,
    Sent,
    To,
    Subject,
    Cc,
}

/// The words of one kind of label in a locale.
type Words = fn(&Locale) -> &[&str];

const KINDS: [(Label, Words); 5] = [
    (Label::From, |l| l.from),
    (Label::Sent, |l| l.sent),
    (Label::To, |l| l.to),
    (Label::Subject, |l| l.subject),
    (Label::Cc, |l| l.cc),
];

/// One regex per label kind, capturing the value after the colon (Gmail's HTML made text
/// writes `*From:*`).
static LABELS: LazyLock<Vec<(Label, Regex)>> = LazyLock::new(|| {
    KINDS
        .iter()
        .map(|(label, kind)| {
            let pattern = format!(
                r"(?i)^\s*[*_]?\s*(?:{})\s*[*_]?\s*[:：]\s*[*_]?\s*(.*)$",
                words(kind)
            );
            (*label, re(&pattern))
        })
        .collect()
});

/// A banner opening an original or forwarded message, in every locale.
static BANNER: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"(?i)^\s*(?:(?:-{{2,}}|_{{2,}}|={{2,}}|\*{{2,}})\s*(?:{dashed})\s*(?:-{{2,}}|_{{2,}}|={{2,}}|\*{{2,}})?\s*[:：]?|(?:-{{2,}}\s*)?(?:{colon})\s*[:：]\s*-*)\s*$",
        dashed = words(|l| l.dashed_banners),
        colon = words(|l| l.colon_banners),
    ))
});

/// A subject that starts with a forward prefix (after an optional `[tag]`).
static FORWARD_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"(?i)^\s*(?:\[[^\]]{{0,60}}\]\s*)?(?:{})\s*(?:\[\d+\]|\(\d+\))?\s*[:：]",
        alternation(FORWARD_PREFIXES)
    ))
});

/// A subject that starts with a reply prefix.
static REPLY_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"(?i)^\s*(?:\[[^\]]{{0,60}}\]\s*)?(?:{})\s*(?:\[\d+\]|\(\d+\))?\s*[:：]",
        alternation(REPLY_PREFIXES)
    ))
});

/// Whether the subject says the email forwards something (`Fwd:`, `WG:`, `TR:`, ...).
pub fn is_forward_subject(subject: &str) -> bool {
    FORWARD_SUBJECT.is_match(subject)
}

/// Whether the subject says the email is a reply (`Re:`, `AW:`, `SV:`, ...).
pub fn is_reply_subject(subject: &str) -> bool {
    REPLY_SUBJECT.is_match(subject)
}

/// Whether a banner announces a forward (`Forwarded message`, `Weitergeleitete Nachricht`)
/// rather than an original message (which Outlook writes above replies too).
pub fn is_forward_banner(banner: &str) -> bool {
    let lower = banner.to_lowercase();
    FORWARD_STEMS.iter().any(|s| lower.contains(s))
}

/// How many `>` quote a line, and the line without them.
pub fn quote_depth(line: &str) -> (usize, &str) {
    let mut rest = line;
    let mut depth = 0;
    loop {
        let t = rest.trim_start();
        match t.strip_prefix('>') {
            Some(after) => {
                depth += 1;
                rest = after;
            }
            None => return (depth, if depth == 0 { line } else { t }),
        }
    }
}

/// `line` without `depth` levels of `>` quoting; `None` when it is quoted less.
pub fn unquote(line: &str, depth: usize) -> Option<&str> {
    let mut rest = line;
    for _ in 0..depth {
        rest = rest.trim_start().strip_prefix('>')?;
    }
    Some(if depth == 0 {
        rest
    } else {
        rest.strip_prefix(' ').unwrap_or(rest)
    })
}

/// The label a line starts with, and its value.
pub fn label(line: &str) -> Option<(Label, &str)> {
    let t = line.trim_start();
    let head = &t.as_bytes()[..t.len().min(80)];
    if !head.contains(&b':') && !head.windows(3).any(|w| w == "：".as_bytes()) {
        return None;
    }
    LABELS.iter().find_map(|(label, regex)| {
        let caps = regex.captures(line)?;
        Some((*label, caps.get(1).map_or("", |m| m.as_str()).trim()))
    })
}

/// Where a forwarded message opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The banner's line, or the `From:` line of a block without one.
    pub line: usize,
    /// The quote depth of that line.
    pub depth: usize,
    /// `Some(true)` for a forward banner, `Some(false)` for an `Original message` banner,
    /// `None` for a header block without a banner.
    pub banner: Option<bool>,
}

/// The first banner or header block in `lines[start..end]` quoted at least `min_depth` deep.
/// Without `blocks`, only banners count (a header block under a subject without a forward
/// prefix is quoted history), which spares the label patterns every line.
pub fn find(
    lines: &[&str],
    start: usize,
    end: usize,
    min_depth: usize,
    blocks: bool,
) -> Option<Marker> {
    let end = end.min(lines.len());
    (start..end).find_map(|i| {
        let (depth, t) = quote_depth(lines[i]);
        let trimmed = t.trim_start();
        let cheap = trimmed.starts_with(['-', '_', '=', '*'])
            || trimmed.as_bytes()[..trimmed.len().min(80)].contains(&b':')
            || trimmed.contains('：');
        if depth < min_depth || !cheap {
            return None;
        }
        if BANNER.is_match(t) {
            return Some(Marker {
                line: i,
                depth,
                banner: Some(is_forward_banner(t)),
            });
        }
        let block = blocks && LABELS[0].1.is_match(t) && {
            let others = lines[i + 1..end]
                .iter()
                .take(8)
                .filter_map(|l| unquote(l, depth).and_then(label))
                .filter(|(l, _)| *l != Label::From)
                .count();
            others >= 2
        };
        block.then_some(Marker {
            line: i,
            depth,
            banner: None,
        })
    })
}

/// The header fields of a forwarded message and where its body starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Block {
    pub from: Option<String>,
    pub date: Option<String>,
    pub subject: Option<String>,
    /// The first line after the block.
    pub body_start: usize,
}

/// Reads the header block that follows `marker` (at its line when it has no banner), up to
/// `end`.
pub fn read(lines: &[&str], marker: &Marker, end: usize) -> Block {
    let end = end.min(lines.len());
    let mut block = Block::default();
    let mut i = marker.line + usize::from(marker.banner.is_some());
    let mut seen = 0;
    let mut blanks = 0;
    let mut last: Option<Label> = None;
    while i < end && i < marker.line + 24 {
        let Some(line) = unquote(lines[i], marker.depth) else {
            break;
        };
        if line.trim().is_empty() {
            if seen > 0 || blanks == 3 {
                break;
            }
            blanks += 1;
            i += 1;
            continue;
        }
        match label(line) {
            Some((kind, value)) => {
                let value = value.trim_matches(['*', '_', ' ']).trim();
                let slot = match kind {
                    Label::From => &mut block.from,
                    Label::Sent => &mut block.date,
                    Label::Subject => &mut block.subject,
                    Label::To | Label::Cc => &mut None,
                };
                if slot.is_none() && !value.is_empty() {
                    *slot = Some(value.to_string());
                }
                seen += 1;
                last = Some(kind);
            }
            // A wrapped To or Cc list goes on; any other line opens the body.
            None if matches!(last, Some(Label::To | Label::Cc)) && line.contains('@') => {}
            None if seen > 0 => break,
            None => {}
        }
        i += 1;
    }
    block.body_start = i;
    block
}

/// The end of the forwarded message whose body starts at `start`: the first line quoted less
/// than `depth`, else `end`.
pub fn body_end(lines: &[&str], start: usize, end: usize, depth: usize) -> usize {
    let end = end.min(lines.len());
    if depth == 0 {
        return end;
    }
    (start..end)
        .find(|&k| !lines[k].trim().is_empty() && unquote(lines[k], depth).is_none())
        .unwrap_or(end)
}

/// The alternation of one kind of word over all locales: escaped, de-duplicated, longest
/// first, spaces matching any run of whitespace.
fn words(kind: impl Fn(&Locale) -> &[&str]) -> String {
    alternation(
        &LOCALES
            .iter()
            .flat_map(|l| kind(l).iter().copied())
            .collect::<Vec<_>>(),
    )
}
